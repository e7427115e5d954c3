//! Object storage behind one small interface, shared by everything in weir
//! that keeps whole objects somewhere: the object storage sink's output and
//! checkpoints in a bucket (`checkpoint.store`).
//!
//! A [`Destination`] is parsed from a URL (`s3://BUCKET/PREFIX`,
//! `file:///DIR`, or a directory path); [`Store::open`] turns it and the
//! [`S3Settings`] into a client; [`Store`] puts an object whole (a reader sees
//! all of it or nothing), gets, lists and deletes.

#![deny(missing_docs)]

mod store;

pub use store::{ObjectMeta, Store, temp_name};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where objects go, parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and a key prefix (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
}

impl Destination {
    /// Parses `url`; relative directories resolve against `base`.
    pub fn parse(url: &str, base: &Path) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("must name the destination, e.g. \"s3://bucket/prefix\" or \"file:///var/lib/weir/out\"".into());
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
                return Err(format!("{bucket:?} is not an S3 bucket name (lowercase letters, digits, `-` and `.`); write e.g. \"s3://my-bucket/events\""));
            }
            let prefix = prefix.trim_matches('/').to_owned();
            if let Some(m) = check_key_part(&prefix) {
                return Err(format!("the key prefix {prefix:?} {m}"));
            }
            return Ok(Self::S3 { bucket: bucket.to_owned(), prefix });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!("{url:?}: a file URL needs an absolute path, e.g. \"file:///var/lib/weir/out\"; write a relative directory without `file://`"));
            }
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(format!("the scheme {scheme:?} is not supported; use \"s3://bucket/prefix\", \"file:///dir\" or a directory path"));
        }
        Ok(Self::Local(base.join(url)))
    }
}

/// Why a key part (a prefix, a path template) is unusable, or `None`.
pub fn check_key_part(part: &str) -> Option<&'static str> {
    if part.starts_with('/') {
        return Some("must not start with `/`");
    }
    if part.split('/').any(|s| s == ".." || s == ".") {
        return Some("must not contain `.` or `..` segments");
    }
    if part.contains("//") || part.contains('\\') || part.contains('\0') {
        return Some("must not contain `//`, `\\` or NUL");
    }
    None
}

/// How to reach an S3-compatible server: the keys every S3 destination
/// takes, with the names they have in pipeline files (`endpoint`,
/// `region`, `path-style`, `access-key-id-env`, `secret-access-key-env`,
/// `credentials-file`, `request-timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The endpoint URL of an S3-compatible server (default: AWS).
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// Path-style requests (`http://host/bucket/key`), which local servers
    /// need; default virtual-hosted style.
    pub path_style: bool,
    /// Environment variable holding the access key id (default
    /// `AWS_ACCESS_KEY_ID`).
    pub access_key_id_env: Option<String>,
    /// Environment variable holding the secret access key (default
    /// `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key_env: Option<String>,
    /// A file with `aws_access_key_id = …` and `aws_secret_access_key = …`
    /// lines (and optionally `aws_session_token`), instead of the
    /// environment.
    pub credentials_file: Option<PathBuf>,
    /// Longest time one request may take before it counts as failed.
    pub request_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id_env: None,
            secret_access_key_env: None,
            credentials_file: None,
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl S3Settings {
    /// Checks the settings against `destination` without I/O; every
    /// problem as `(key, message)`, the key as pipeline files spell it.
    pub fn check(&self, destination: &Destination) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match destination {
            Destination::Local(_) => {
                for (key, set) in [
                    ("endpoint", self.endpoint.is_some()),
                    ("region", self.region.is_some()),
                    ("path-style", self.path_style),
                    ("access-key-id-env", self.access_key_id_env.is_some()),
                    ("secret-access-key-env", self.secret_access_key_env.is_some()),
                    ("credentials-file", self.credentials_file.is_some()),
                ] {
                    if set {
                        problems.push((key, "only used with an \"s3://\" url; remove it or change the url".into()));
                    }
                }
            }
            Destination::S3 { .. } => {
                if let Some(endpoint) = &self.endpoint
                    && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                {
                    problems.push(("endpoint", format!("{endpoint:?} is not an http:// or https:// URL; write e.g. \"http://localhost:9000\"")));
                }
                if self.credentials_file.is_some() && (self.access_key_id_env.is_some() || self.secret_access_key_env.is_some()) {
                    problems.push(("credentials-file", "set either `credentials-file` or the `*-env` keys, not both".into()));
                }
            }
        }
        if self.request_timeout.is_zero() {
            problems.push(("request-timeout", "must be above 0".into()));
        }
        problems
    }

    /// The access key id, secret and session token, from the credentials
    /// file or the environment; errors name the key to fix.
    pub fn credentials(&self) -> Result<(String, String, Option<String>), String> {
        if let Some(file) = &self.credentials_file {
            let text = std::fs::read_to_string(file).map_err(|e| format!("credentials-file: cannot read {}: {e}", file.display()))?;
            let mut id = None;
            let mut secret = None;
            let mut token = None;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else { continue };
                let v = v.trim().to_owned();
                match k.trim() {
                    "aws_access_key_id" => id = Some(v),
                    "aws_secret_access_key" => secret = Some(v),
                    "aws_session_token" => token = Some(v),
                    _ => {}
                }
            }
            return match (id, secret) {
                (Some(id), Some(secret)) => Ok((id, secret, token)),
                _ => Err(format!(
                    "credentials-file: {} needs `aws_access_key_id = …` and `aws_secret_access_key = …` lines",
                    file.display()
                )),
            };
        }
        let id_var = self.access_key_id_env.as_deref().unwrap_or("AWS_ACCESS_KEY_ID");
        let secret_var = self.secret_access_key_env.as_deref().unwrap_or("AWS_SECRET_ACCESS_KEY");
        let read = |key: &str, var: &str| {
            std::env::var(var).map_err(|_| {
                format!("{key}: the environment variable {var} is not set (or not UTF-8); set it, or name another variable or a `credentials-file`")
            })
        };
        let id = read("access-key-id-env", id_var)?;
        let secret = read("secret-access-key-env", secret_var)?;
        Ok((id, secret, std::env::var("AWS_SESSION_TOKEN").ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_keys_on_a_local_destination_are_named() {
        let s = S3Settings { endpoint: Some("http://h:1".into()), path_style: true, ..S3Settings::default() };
        let keys: Vec<_> = s.check(&Destination::Local("/x".into())).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["endpoint", "path-style"]);
        let s3 = Destination::S3 { bucket: "b".into(), prefix: String::new() };
        assert!(s.check(&s3).is_empty());
        let bad = S3Settings { endpoint: Some("h:1".into()), request_timeout: Duration::ZERO, ..S3Settings::default() };
        let keys: Vec<_> = bad.check(&s3).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["endpoint", "request-timeout"]);
    }
}
