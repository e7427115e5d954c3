//! `weir.toml`: the service's configuration.
//!
//! ```toml
//! pipelines = "pipelines"          # directory of pipeline files (*.toml), watched
//! # plugin-dir = "plugins"         # plugins for every pipeline, instead of each file's plugin-dir
//!
//! [api]
//! listen = "127.0.0.1:8080"        # REST API and web UI
//! # token = "..."                  # bearer token for mutating calls; or the env var below
//! token-env = "WEIR_API_TOKEN"
//! # allowed-hosts = ["weir.internal"] # host names besides localhost and IP addresses
//! # max-connections = 256          # open connections at once
//! # header-timeout = "10s"         # to send a request's headers (and idle between requests)
//! # idle-timeout = "60s"           # longest a connection moves no byte (outside a call)
//!
//! [restart]
//! strategy = "exponential-backoff" # or "fixed-delay"
//! delay = "1s"                     # first delay (fixed-delay: every delay)
//! max-delay = "1m"                 # exponential-backoff: the cap
//! multiplier = 2.0                 # exponential-backoff: growth per attempt
//! max-attempts = 5                 # failures in a row before the pipeline is reported failed
//! reset-after = "5m"               # a run this long resets the count
//!
//! # [metrics]
//! # listen = "127.0.0.1:9249"      # Prometheus /metrics of every pipeline
//! ```
//!
//! Relative paths are relative to the directory of `weir.toml`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a failed pipeline is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The same delay before every restart.
    FixedDelay,
    /// `delay`, then times `multiplier` per failure, up to `max-delay`.
    #[default]
    ExponentialBackoff,
}

/// `[restart]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RestartConfig {
    /// Fixed delay or exponential backoff.
    pub strategy: Strategy,
    /// Delay before the first restart.
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub delay: Duration,
    /// Longest delay (exponential backoff).
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub max_delay: Duration,
    /// Growth of the delay per failure (exponential backoff).
    pub multiplier: f64,
    /// Failures in a row after which the pipeline stays failed (0: never give up).
    pub max_attempts: u32,
    /// A run that lasted this long resets the failure count.
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub reset_after: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::ExponentialBackoff,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            max_attempts: 5,
            reset_after: Duration::from_secs(300),
        }
    }
}

impl RestartConfig {
    /// The delay before restart number `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        match self.strategy {
            Strategy::FixedDelay => self.delay,
            Strategy::ExponentialBackoff => {
                let factor = self.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
                Duration::from_secs_f64((self.delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64()))
            }
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ApiConfig {
    /// Address of the REST API and the web UI.
    pub listen: SocketAddr,
    /// Bearer token for mutating calls (prefer `token-env`).
    pub token: Option<String>,
    /// Environment variable holding the token.
    pub token_env: String,
    /// Host names the API answers to besides `localhost`, IP addresses and
    /// the listen address (`Host` and `Origin` are checked against them, to
    /// refuse DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, counted from
    /// the moment the server waits for them (so also the longest a
    /// keep-alive connection stays idle between requests).
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub header_timeout: Duration,
    /// Longest a connection may move no byte in either direction while no
    /// call is being answered (a client that stops reading its answer).
    #[serde(deserialize_with = "weir_connector::config::duration")]
    pub idle_timeout: Duration,
}

/// The least characters of a bearer token (`api.token` or `token-env`).
pub const MIN_TOKEN_LEN: usize = 16;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            token_env: "WEIR_API_TOKEN".into(),
            allowed_hosts: Vec::new(),
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Serve Prometheus `/metrics` here.
    pub listen: Option<SocketAddr>,
}

/// The whole `weir.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeConfig {
    /// Directory of pipeline files.
    #[serde(default = "default_pipelines")]
    pub pipelines: PathBuf,
    /// Plugin directory for every pipeline (default: each file's `plugin-dir`).
    pub plugin_dir: Option<PathBuf>,
    /// `[api]`.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[restart]`.
    #[serde(default)]
    pub restart: RestartConfig,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Seconds between two scans of the pipelines directory.
    #[serde(default = "default_scan", deserialize_with = "weir_connector::config::duration")]
    pub scan_interval: Duration,
    /// Longest wait for a pipeline's final checkpoint on shutdown.
    #[serde(default = "default_grace", deserialize_with = "weir_connector::config::duration")]
    pub shutdown_timeout: Duration,
}

fn default_pipelines() -> PathBuf {
    PathBuf::from("pipelines")
}

fn default_scan() -> Duration {
    Duration::from_secs(2)
}

fn default_grace() -> Duration {
    Duration::from_secs(60)
}

impl ServeConfig {
    /// Reads and validates `weir.toml`; relative paths become relative to its directory.
    pub fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        // By position and key, with secrets redacted: the toml crate's own
        // message quotes the source line (which may be `token = "..."`).
        let mut c: ServeConfig = toml::from_str(&text).map_err(|e| format!("{}: {}", file.display(), weir_connector::secrets::toml_error(&e, &text)))?;
        let base = file.parent().unwrap_or(Path::new("."));
        c.pipelines = base.join(&c.pipelines);
        c.plugin_dir = c.plugin_dir.map(|d| base.join(d));
        let mut errors = Vec::new();
        if !c.pipelines.is_dir() {
            errors.push(format!("pipelines: {} is not a directory; create it or point `pipelines` at your pipeline files", c.pipelines.display()));
        }
        if c.restart.multiplier < 1.0 || !c.restart.multiplier.is_finite() {
            errors.push(format!("restart.multiplier: {} must be at least 1.0", c.restart.multiplier));
        }
        if c.restart.max_delay < c.restart.delay {
            errors.push("restart.max-delay: must not be shorter than restart.delay".into());
        }
        match (&c.api.token, std::env::var(&c.api.token_env)) {
            (Some(t), _) => errors.extend(token_problem(t, "api.token")),
            (None, Ok(t)) => errors.extend(token_problem(&t, &format!("${} (api.token-env)", c.api.token_env))),
            (None, Err(std::env::VarError::NotUnicode(_))) => errors.push(format!("${} (api.token-env): not valid UTF-8", c.api.token_env)),
            (None, Err(std::env::VarError::NotPresent)) => {}
        }
        for (i, h) in c.api.allowed_hosts.iter().enumerate() {
            if let Some(why) = crate::http::host_problem(h) {
                errors.push(format!("api.allowed-hosts[{i}]: {h:?} {why}"));
            }
        }
        if !(1..=1_000_000).contains(&c.api.max_connections) {
            errors.push(format!("api.max-connections: {} must be between 1 and 1000000", c.api.max_connections));
        }
        for (key, d) in [("api.header-timeout", c.api.header_timeout), ("api.idle-timeout", c.api.idle_timeout)] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                errors.push(format!("{key}: {d:?} must be between 1ms and 1h"));
            }
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(format!("{} has {} problem(s):\n  {}", file.display(), errors.len(), errors.join("\n  ")))
        }
    }

    /// The bearer token for mutating calls, if one is configured.
    pub fn token(&self) -> Option<String> {
        self.api.token.clone().or_else(|| std::env::var(&self.api.token_env).ok().filter(|t| !t.is_empty()))
    }
}

/// Why `token` (read from `source`) cannot be the bearer token, if it
/// cannot: the same rule for `api.token` and the environment variable. An
/// empty variable counts as unset (the API stays read-only).
pub fn token_problem(token: &str, source: &str) -> Option<String> {
    if token.is_empty() && source.starts_with('$') {
        return None;
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        return Some(format!("{source}: use at least {MIN_TOKEN_LEN} characters (this one has {})", token.chars().count()));
    }
    if token.trim() != token || token.chars().any(char::is_control) {
        return Some(format!("{source}: must not start or end with whitespace or hold control characters"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a token from the environment obeys the rule of `api.token`.
    #[test]
    fn short_tokens_are_refused_from_either_source() {
        assert!(token_problem("short", "api.token").is_some_and(|m| m.contains("at least 16")));
        assert!(token_problem("short", "$WEIR_API_TOKEN (api.token-env)").is_some_and(|m| m.starts_with("$WEIR_API_TOKEN")));
        assert_eq!(token_problem("", "$WEIR_API_TOKEN (api.token-env)"), None, "an empty variable leaves the API read-only");
        assert!(token_problem("", "api.token").is_some());
        assert!(token_problem(" 0123456789abcdef", "api.token").is_some());
        assert_eq!(token_problem("0123456789abcdef", "api.token"), None);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let r = RestartConfig { delay: Duration::from_millis(100), max_delay: Duration::from_millis(500), ..Default::default() };
        let d: Vec<u64> = (1..=5).map(|a| r.delay(a).as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        let f = RestartConfig { strategy: Strategy::FixedDelay, delay: Duration::from_millis(300), ..Default::default() };
        assert_eq!(f.delay(4), Duration::from_millis(300));
    }
}
