//! The `async-io` imports of one operator subtask: grants, the HTTP client
//! and the PostgreSQL pools.

use crate::config::{AsyncConfig, ConnectionConfig};
use crate::http::{parse_url, HttpClient};
use crate::pg::{quote_ident, quote_qualified, Pool, RowBudget, DEFAULT_MAX_CONNECTIONS};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weir_wasm::{HttpResponse, IoFuture, IoProvider, SqlRows, SqlValue};

struct KvStore {
    pool: Arc<Pool>,
    sql: String,
}

/// What a plugin may reach through `async-io`: an async operator's
/// `async` table, or a source or sink plugin's section.
#[derive(Debug, Clone, Copy)]
pub struct Grants<'a> {
    /// `host:port` it may call over HTTP.
    pub allow_http: &'a [String],
    /// The `[connections.*]` it may use.
    pub connections: &'a [String],
    /// Largest response handed to it.
    pub max_response: usize,
    /// PostgreSQL sessions per connection, unless the connection sets its own.
    pub pool_size: usize,
}

/// Serves one subtask's slots.
pub struct Io {
    /// `operators[i].async`, for messages.
    path: String,
    allow_http: Vec<(String, u16)>,
    max_response: usize,
    http: Arc<HttpClient>,
    sql: HashMap<String, Arc<Pool>>,
    kv: HashMap<String, Arc<KvStore>>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").field("path", &self.path).field("allow_http", &self.allow_http).finish()
    }
}

impl Io {
    /// The grants and pools of one async operator's subtask
    /// (`application` names its PostgreSQL sessions). No I/O: connections
    /// open on first use.
    pub fn new(path: &str, config: &AsyncConfig, connections: &BTreeMap<String, ConnectionConfig>, application: &str) -> Result<Self, String> {
        let grants = Grants { allow_http: &config.allow_http, connections: &config.connections, max_response: config.max_response.0 as usize, pool_size: config.capacity.min(DEFAULT_MAX_CONNECTIONS) };
        Self::with_grants(path, &grants, connections, application)
    }

    /// The grants and pools of any plugin instance (`path` is the table
    /// that grants them, for messages). No I/O.
    pub fn with_grants(path: &str, grants: &Grants<'_>, connections: &BTreeMap<String, ConnectionConfig>, application: &str) -> Result<Self, String> {
        let allow_http = grants.allow_http.iter().filter_map(|h| crate::config::parse_host_port(h).ok()).collect();
        let mut sql = HashMap::new();
        let mut kv = HashMap::new();
        for name in grants.connections {
            let c = connections.get(name).ok_or_else(|| format!("{path}.connections: no connection {name:?}; define it as [connections.{name}]"))?;
            let size = c.endpoint().3.unwrap_or(grants.pool_size);
            let pool = Arc::new(Pool::new(name, c, size, application)?);
            match c {
                ConnectionConfig::Postgres(_) => {
                    sql.insert(name.clone(), pool);
                }
                ConnectionConfig::PostgresKv(_, k) => {
                    let query = format!(
                        "SELECT {}::text FROM {} WHERE {} = $1 LIMIT 1",
                        quote_ident(&k.value_column),
                        quote_qualified(&k.table),
                        quote_ident(&k.key_column)
                    );
                    kv.insert(name.clone(), Arc::new(KvStore { pool, sql: query }));
                }
            }
        }
        Ok(Self { path: path.to_owned(), allow_http, max_response: grants.max_response, http: Arc::new(HttpClient::default()), sql, kv })
    }

    /// The bound of what one request hands the plugin, and its setting.
    fn max_response(&self) -> (usize, String) {
        (self.max_response, format!("{}.max-response", self.path))
    }

    fn not_granted(&self, kind: &str, name: &str) -> String {
        let have: Vec<&str> = match kind {
            "sql" => self.sql.keys().map(String::as_str).collect(),
            _ => self.kv.keys().map(String::as_str).collect(),
        };
        let want = if kind == "sql" { "type = \"postgres\"" } else { "type = \"postgres-kv\"" };
        format!(
            "{kind}: no connection {name:?} granted to this plugin; define [connections.{name}] with {want} and list it in {}.connections (granted: [{}])",
            self.path,
            have.join(", ")
        )
    }
}

impl IoProvider for Io {
    fn http(&self, method: String, url: String, headers: Vec<(String, String)>, body: Vec<u8>) -> IoFuture<HttpResponse> {
        let target = match parse_url(&url) {
            Ok(t) => t,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if !self.allow_http.iter().any(|(h, p)| *h == target.host && *p == target.port) {
            let msg = format!(
                "http: host {}:{} is not allowed; add \"{}:{}\" to {}.allow-http in the pipeline file (allowed: [{}])",
                target.host,
                target.port,
                target.host,
                target.port,
                self.path,
                self.allow_http.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(", ")
            );
            return Box::pin(async move { Err(msg) });
        }
        let client = self.http.clone();
        let max = self.max_response;
        Box::pin(async move { client.request(&method, &target, &headers, &body, max).await })
    }

    fn sql(&self, connection: String, query: String, params: Vec<SqlValue>) -> IoFuture<SqlRows> {
        let Some(pool) = self.sql.get(&connection).cloned() else {
            let msg = self.not_granted("sql", &connection);
            return Box::pin(async move { Err(msg) });
        };
        let (max, setting) = self.max_response();
        Box::pin(async move { pool.query(&query, &params, &RowBudget { bytes: max, setting: &setting }).await })
    }

    fn kv_get(&self, store: String, key: String) -> IoFuture<Option<String>> {
        let Some(kv) = self.kv.get(&store).cloned() else {
            let msg = self.not_granted("kv-get", &store);
            return Box::pin(async move { Err(msg) });
        };
        let (max, setting) = self.max_response();
        Box::pin(async move {
            let rows = kv.pool.query(&kv.sql, &[SqlValue::Text(key)], &RowBudget { bytes: max, setting: &setting }).await?;
            Ok(rows.rows.into_iter().next().and_then(|row| row.into_iter().next().flatten()))
        })
    }
}
