//! PostgreSQL for async operators: a connection pool per subtask and
//! connection, parameter conversion, rows as text, key-value lookups.
//!
//! A pool opens connections lazily, up to `max-connections` (default: the
//! operator's capacity, at most 64): PostgreSQL runs one statement at a
//! time per connection, so `capacity` slots waiting on slow queries need
//! that many connections to overlap. Each connection prepares a statement
//! once and reuses it.
//!
//! Rows are read as a stream and converted to text one by one, counting
//! their size against the operator's `async.max-response`: a query that
//! returns more fails there, instead of the host collecting every row
//! first (one row is still read whole before it is counted).

use bytes::BytesMut;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use weir_wasm::{SqlRows, SqlValue};

type BoxError = Box<dyn StdError + Sync + Send>;

/// Largest pool a subtask opens by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Most PostgreSQL sessions a source or sink plugin's subtask opens per
/// granted connection, unless the connection sets `max-connections`. The
/// plugin's calls, and so its queries, run one at a time on the task
/// thread: one session serves it (sessions open on first use).
pub const PLUGIN_CONNECTOR_POOL_SIZE: usize = 1;

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// Connections of one subtask to one `[connections.NAME]`.
pub struct Pool {
    name: String,
    config: tokio_postgres::Config,
    tls: Option<postgres_openssl::MakeTlsConnector>,
    endpoint: String,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).field("endpoint", &self.endpoint).finish()
    }
}

impl Pool {
    /// A pool for connection `name` (no I/O yet).
    pub fn new(name: &str, config: &crate::config::ConnectionConfig, size: usize, application: &str) -> Result<Self, String> {
        let (url, env, file, _) = config.endpoint();
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| format!("connections.{name}.url: {e}"))?;
        if let Some(p) = weir_connector_postgres::config::read_password(env, file).map_err(|e| format!("connections.{name}.{e}"))? {
            pg.password(p);
        }
        pg.connect_timeout(config.connect_timeout());
        pg.application_name(application);
        let c = config.postgres();
        let tls = weir_connector_postgres::tls::connector(c.tls, c.tls_ca_file.as_deref()).map_err(|e| format!("connections.{name}.{e}"))?;
        if tls.is_some() {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let endpoint = weir_connector_postgres::writer::describe(&pg);
        Ok(Self { name: name.to_owned(), config: pg, tls, endpoint, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(size.max(1))) })
    }

    /// Runs one statement on a pooled connection; its rows as text, at most
    /// `max` bytes of them (see [`RowBudget`]).
    pub async fn query(&self, sql: &str, params: &[SqlValue], max: &RowBudget<'_>) -> Result<SqlRows, String> {
        let _permit = self.permits.acquire().await.map_err(|_| "the pool is closed".to_owned())?;
        let pooled = self.idle.lock().expect("pool lock").pop();
        let mut conn = match pooled {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect().await?,
        };
        let result = self.run(&mut conn, sql, params, max).await;
        if !conn.client.is_closed() {
            self.idle.lock().expect("pool lock").push(conn);
        }
        result
    }

    async fn connect(&self) -> Result<Conn, String> {
        let failed = |e: tokio_postgres::Error| format!("connection {:?}: cannot connect to PostgreSQL at {}: {}", self.name, self.endpoint, describe_error(&e));
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(failed)?;
                tokio::spawn(connection);
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(Conn { client, statements: HashMap::new() })
    }

    async fn run(&self, conn: &mut Conn, sql: &str, params: &[SqlValue], max: &RowBudget<'_>) -> Result<SqlRows, String> {
        let fail = |e: tokio_postgres::Error| format!("connection {:?} ({}): {}", self.name, self.endpoint, describe_error(&e));
        let statement = match conn.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = conn.client.prepare(sql).await.map_err(fail)?;
                if conn.statements.len() < 256 {
                    conn.statements.insert(sql.to_owned(), s.clone());
                }
                s
            }
        };
        if statement.params().len() != params.len() {
            return Err(format!("the statement takes {} parameter(s) but {} were passed", statement.params().len(), params.len()));
        }
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let stream = conn.client.query_raw(&statement, params.iter()).await.map_err(fail)?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = stream.next().await {
            let row = row_to_text(&row.map_err(fail)?)?;
            bytes = bytes.saturating_add(row.iter().map(|v| ROW_VALUE_BYTES + v.as_ref().map_or(0, String::len)).sum::<usize>());
            if bytes > max.bytes {
                // Dropping the stream discards the rows still to come.
                return Err(format!(
                    "the SQL result ({} rows, {bytes} bytes or more) is larger than {} ({} bytes); select fewer rows or columns, or raise it",
                    rows.len() + 1,
                    max.setting,
                    max.bytes
                ));
            }
            rows.push(row);
        }
        Ok(SqlRows { columns: statement.columns().iter().map(|c| c.name().to_owned()).collect(), rows })
    }
}

fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// The most bytes of rows one query may hand to a plugin, and the setting
/// that says so (for the error).
#[derive(Debug, Clone, Copy)]
pub struct RowBudget<'a> {
    /// Bytes: the rows' values as text, plus [`ROW_VALUE_BYTES`] each.
    pub bytes: usize,
    /// The setting, e.g. `operators[1].async.max-response`.
    pub setting: &'a str,
}

/// What each value of a row counts besides its text (a NULL too): what
/// holding it costs the host, so that many small values are bounded too.
pub const ROW_VALUE_BYTES: usize = 16;

/// One row as text, a value of the WIT `sql-rows` record.
fn row_to_text(row: &tokio_postgres::Row) -> Result<Vec<Option<String>>, String> {
    let mut values = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let v: Option<Text> = row.try_get(i).map_err(|_| {
            let c = &row.columns()[i];
            format!("column {:?} has type {}, which weir does not convert; cast it to text in the query ({}::text)", c.name(), c.type_(), c.name())
        })?;
        values.push(v.map(|t| t.0));
    }
    Ok(values)
}

/// A parameter, converted to the type the statement expects.
#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

fn is_text(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN)
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mismatch = |what: &str| -> BoxError { format!("cannot pass {what} as a {ty} parameter; pass text and cast in SQL ($1::text::{ty})").into() };
        match self.0 {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Boolean(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            SqlValue::Boolean(b) if is_text(ty) => b.to_string().as_str().to_sql(&Type::TEXT, out),
            SqlValue::Boolean(_) => Err(mismatch("a boolean")),
            SqlValue::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i).map_err(|_| format!("{i} does not fit a smallint parameter"))?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i).map_err(|_| format!("{i} does not fit an integer parameter"))?.to_sql(ty, out),
                Type::INT8 => i.to_sql(ty, out),
                Type::OID => u32::try_from(*i).map_err(|_| format!("{i} is not an oid"))?.to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ if is_text(ty) => i.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(mismatch("an integer")),
            },
            SqlValue::Float(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::FLOAT8 => f.to_sql(ty, out),
                _ if is_text(ty) => f.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(mismatch("a float")),
            },
            SqlValue::Text(s) => {
                let parse_err = |kind: &str| -> BoxError { format!("{s:?} is not {kind} (the parameter is a {ty})").into() };
                match *ty {
                    _ if is_text(ty) => s.as_str().to_sql(&Type::TEXT, out),
                    Type::JSON => {
                        out.extend_from_slice(s.as_bytes());
                        Ok(IsNull::No)
                    }
                    Type::JSONB => {
                        out.extend_from_slice(&[1]);
                        out.extend_from_slice(s.as_bytes());
                        Ok(IsNull::No)
                    }
                    Type::INT2 => s.trim().parse::<i16>().map_err(|_| parse_err("a smallint"))?.to_sql(ty, out),
                    Type::INT4 => s.trim().parse::<i32>().map_err(|_| parse_err("an integer"))?.to_sql(ty, out),
                    Type::INT8 => s.trim().parse::<i64>().map_err(|_| parse_err("a bigint"))?.to_sql(ty, out),
                    Type::FLOAT4 => s.trim().parse::<f32>().map_err(|_| parse_err("a number"))?.to_sql(ty, out),
                    Type::FLOAT8 => s.trim().parse::<f64>().map_err(|_| parse_err("a number"))?.to_sql(ty, out),
                    Type::BOOL => match s.trim().to_ascii_lowercase().as_str() {
                        "true" | "t" | "yes" | "on" | "1" => true.to_sql(ty, out),
                        "false" | "f" | "no" | "off" | "0" => false.to_sql(ty, out),
                        _ => Err(parse_err("a boolean")),
                    },
                    _ => Err(mismatch("text")),
                }
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A result value as text.
struct Text(String);

impl<'a> FromSql<'a> for Text {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Text(match *ty {
            Type::BOOL => bool::from_sql(ty, raw)?.to_string(),
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::OID => u32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT4 => f32::from_sql(ty, raw)?.to_string(),
            Type::FLOAT8 => f64::from_sql(ty, raw)?.to_string(),
            Type::JSONB => {
                let (version, text) = raw.split_first().ok_or("empty jsonb value")?;
                if *version != 1 {
                    return Err(format!("unsupported jsonb version {version}").into());
                }
                std::str::from_utf8(text)?.to_owned()
            }
            _ => std::str::from_utf8(raw)?.to_owned(),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty)
            || matches!(*ty, Type::BOOL | Type::INT2 | Type::INT4 | Type::INT8 | Type::OID | Type::FLOAT4 | Type::FLOAT8 | Type::JSON | Type::JSONB)
    }
}

/// `"schema"."table"` from `schema.table` (each part quoted).
pub fn quote_qualified(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.trim().replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: SqlValue, ty: Type) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        Param(&v).to_sql(&ty, &mut out).map(|_| out.to_vec()).map_err(|e| e.to_string())
    }

    #[test]
    fn parameters_convert_to_the_statement_types() {
        assert_eq!(encode(SqlValue::Text("42".into()), Type::INT8).unwrap(), 42i64.to_be_bytes());
        assert_eq!(encode(SqlValue::Int(7), Type::INT4).unwrap(), 7i32.to_be_bytes());
        assert_eq!(encode(SqlValue::Int(7), Type::TEXT).unwrap(), b"7");
        assert!(encode(SqlValue::Int(1 << 40), Type::INT4).unwrap_err().contains("does not fit"));
        assert!(encode(SqlValue::Text("x".into()), Type::INT4).unwrap_err().contains("is not an integer"));
        assert!(encode(SqlValue::Text("x".into()), Type::TIMESTAMP).unwrap_err().contains("::text::timestamp"));
        assert_eq!(encode(SqlValue::Text("{}".into()), Type::JSONB).unwrap(), b"\x01{}");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_qualified("public.user profiles"), "\"public\".\"user profiles\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
