//! # enrich-profile: an async operator that adds a user profile to each event
//!
//! The example for weir's async I/O slots (world
//! `weir:plugin/async-operator`, `wit/async-io.wit`). For every JSON event
//! it reads a field (default `user`), looks the profile up, and emits the
//! event with a `profile` field added (`null` when there is none). The
//! lookup is one of:
//!
//! * `lookup = "kv"`: `async-io.kv-get` on a `postgres-kv` connection
//!   (`store`), i.e. `SELECT value::text FROM table WHERE key = $1`;
//! * `lookup = "sql"`: `async-io.sql` on a `postgres` connection
//!   (`connection`) running `query` with the field as `$1`; the first
//!   column of the first row is the profile;
//! * `lookup = "http"`: `GET` on `url` with `{key}` replaced by the field;
//!   200 is the profile, 404 means none, 5xx is worth a retry.
//!
//! A profile that is JSON is embedded as JSON, anything else as a string.
//! A failed lookup is *transient* (the host retries it, then dead-letters
//! the record); an event that is not JSON or lacks the field is
//! *permanent* (dead-lettered at once).
//!
//! ```toml
//! [connections.profiles]
//! type = "postgres-kv"
//! url = "postgres://weir@localhost:5432/app"
//! table = "user_profiles"
//! key-column = "user_id"
//! value-column = "profile"
//!
//! [[operators]]
//! name = "enrich"
//! plugin = "enrich-profile"
//! config = { lookup = "kv", store = "profiles" }
//! async = { capacity = 64, timeout = "500ms", connections = ["profiles"], dead-letter = "failed" }
//! ```
//!
//! Built with `weir-sdk-async` ([`AsyncOperator`] and
//! `export_async_operator!`); the logic ([`Enricher`]) is plain Rust behind
//! a small [`Lookups`] trait, tested natively with `cargo test`.

use serde::Deserialize;
use weir_sdk_async::{io, AsyncOperator, Error, Info, Output, Record};

/// Where profiles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lookup {
    /// `async-io.kv-get`.
    Kv,
    /// `async-io.sql`.
    Sql,
    /// `async-io.http`.
    Http,
}

/// The operator's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// How to look profiles up.
    pub lookup: Lookup,
    /// The event field holding the user id.
    #[serde(default = "default_field")]
    pub field: String,
    /// `kv`: the key-value connection.
    pub store: Option<String>,
    /// `sql`: the connection.
    pub connection: Option<String>,
    /// `sql`: the statement, with the user id as `$1`.
    pub query: Option<String>,
    /// `http`: the URL, `{key}` replaced by the user id.
    pub url: Option<String>,
}

fn default_field() -> String {
    "user".into()
}

/// Why a record could not be enriched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying.
    Transient(String),
    /// Not worth retrying.
    Permanent(String),
}

/// What the host provides: the three lookups.
pub trait Lookups {
    /// `kv-get`.
    fn kv(&mut self, store: &str, key: &str) -> Result<Option<String>, String>;
    /// `sql` with one text parameter: the first column of the first row.
    fn sql(&mut self, connection: &str, query: &str, key: &str) -> Result<Option<String>, String>;
    /// `http` GET: `(status, body)`.
    fn http_get(&mut self, url: &str) -> Result<(u16, Vec<u8>), String>;
}

/// The operator's logic.
#[derive(Debug, Clone)]
pub struct Enricher {
    config: Config,
}

impl Enricher {
    /// Checks the config.
    pub fn new(config_json: &str) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config_json).map_err(|e| format!("invalid config for enrich-profile: {e}"))?;
        let missing = |k: &str| format!("enrich-profile: lookup = {:?} needs `{k}` in the operator's config", config.lookup);
        match config.lookup {
            Lookup::Kv if config.store.is_none() => return Err(missing("store")),
            Lookup::Sql if config.connection.is_none() => return Err(missing("connection")),
            Lookup::Sql if config.query.is_none() => return Err(missing("query")),
            Lookup::Http if config.url.is_none() => return Err(missing("url")),
            _ => {}
        }
        Ok(Self { config })
    }

    /// Enriches one JSON value.
    pub fn enrich(&self, value: &[u8], io: &mut dyn Lookups) -> Result<Vec<u8>, Failure> {
        let mut event: serde_json::Value = serde_json::from_slice(value).map_err(|e| Failure::Permanent(format!("the value is not JSON: {e}")))?;
        let key = match event.get(&self.config.field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(Failure::Permanent(format!("the event has no string or number field {:?}", self.config.field))),
        };
        let c = &self.config;
        let profile = match c.lookup {
            Lookup::Kv => io.kv(c.store.as_deref().unwrap_or_default(), &key).map_err(Failure::Transient)?,
            Lookup::Sql => io.sql(c.connection.as_deref().unwrap_or_default(), c.query.as_deref().unwrap_or_default(), &key).map_err(Failure::Transient)?,
            Lookup::Http => {
                let url = c.url.as_deref().unwrap_or_default().replace("{key}", &key);
                match io.http_get(&url).map_err(Failure::Transient)? {
                    (200, body) => Some(String::from_utf8_lossy(&body).into_owned()),
                    (404, _) => None,
                    (s, body) if s >= 500 => return Err(Failure::Transient(format!("{url}: HTTP {s}: {}", String::from_utf8_lossy(&body)))),
                    (s, _) => return Err(Failure::Permanent(format!("{url}: HTTP {s}"))),
                }
            }
        };
        let profile = match profile {
            None => serde_json::Value::Null,
            Some(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        };
        match &mut event {
            serde_json::Value::Object(map) => {
                map.insert("profile".into(), profile);
            }
            _ => return Err(Failure::Permanent("the event is not a JSON object".into())),
        }
        Ok(serde_json::to_vec(&event).expect("JSON"))
    }
}

/// The host's lookups, through the SDK's `io` calls.
struct Host;

impl Lookups for Host {
    fn kv(&mut self, store: &str, key: &str) -> Result<Option<String>, String> {
        io::kv_get(store, key)
    }

    fn sql(&mut self, connection: &str, query: &str, key: &str) -> Result<Option<String>, String> {
        let rows = io::sql(connection, query, &[io::SqlValue::Text(key.to_owned())])?;
        Ok(rows.rows.into_iter().next().and_then(|r| r.into_iter().next()).flatten())
    }

    fn http_get(&mut self, url: &str) -> Result<(u16, Vec<u8>), String> {
        let r = io::get(url)?;
        Ok((r.status, r.body))
    }
}

impl AsyncOperator for Enricher {
    type Config = serde_json::Value;

    fn open(config: serde_json::Value, _info: &Info) -> Result<Self, Error> {
        Enricher::new(&config.to_string()).map_err(Error::Permanent)
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let value = self.enrich(record.value, &mut Host).map_err(|f| match f {
            Failure::Transient(m) => Error::Transient(m),
            Failure::Permanent(m) => Error::Permanent(m),
        })?;
        out.emit(record.key, &value, record.timestamp);
        Ok(())
    }
}

weir_sdk_async::export_async_operator!(Enricher);

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        calls: Vec<String>,
        answer: Result<Option<String>, String>,
    }

    impl Lookups for Fake {
        fn kv(&mut self, store: &str, key: &str) -> Result<Option<String>, String> {
            self.calls.push(format!("kv {store} {key}"));
            self.answer.clone()
        }
        fn sql(&mut self, connection: &str, query: &str, key: &str) -> Result<Option<String>, String> {
            self.calls.push(format!("sql {connection} {query} {key}"));
            self.answer.clone()
        }
        fn http_get(&mut self, url: &str) -> Result<(u16, Vec<u8>), String> {
            self.calls.push(format!("get {url}"));
            match &self.answer {
                Ok(Some(b)) => Ok((200, b.clone().into_bytes())),
                Ok(None) => Ok((404, Vec::new())),
                Err(e) => Ok((503, e.clone().into_bytes())),
            }
        }
    }

    #[test]
    fn adds_the_profile() {
        let e = Enricher::new(r#"{"lookup":"kv","store":"p"}"#).unwrap();
        let mut io = Fake { calls: vec![], answer: Ok(Some(r#"{"tier":"gold"}"#.into())) };
        let out = e.enrich(br#"{"id":1,"user":"u1"}"#, &mut io).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":1,"profile":{"tier":"gold"},"user":"u1"}"#);
        assert_eq!(io.calls, ["kv p u1"]);
    }

    #[test]
    fn missing_profiles_are_null_and_failures_are_classified() {
        let e = Enricher::new(r#"{"lookup":"http","url":"http://h/p/{key}"}"#).unwrap();
        let mut io = Fake { calls: vec![], answer: Ok(None) };
        assert_eq!(String::from_utf8(e.enrich(br#"{"user":"a"}"#, &mut io).unwrap()).unwrap(), r#"{"profile":null,"user":"a"}"#);
        assert_eq!(io.calls, ["get http://h/p/a"]);
        let mut io = Fake { calls: vec![], answer: Err("down".into()) };
        assert!(matches!(e.enrich(br#"{"user":"a"}"#, &mut io), Err(Failure::Transient(_))));
        assert!(matches!(e.enrich(b"nope", &mut io), Err(Failure::Permanent(_))));
        assert!(Enricher::new(r#"{"lookup":"sql","connection":"c"}"#).unwrap_err().contains("query"));
    }
}
