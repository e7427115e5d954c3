//! The start-up check of the target table: the sink reads the table's real
//! columns from the catalog and resolves the configured mapping against
//! them before any data flows. Every mismatch is reported at once, each
//! naming the config field and the column (`columns.amount: column "amount"
//! of public.orders has type money, which the postgres sink cannot write`).

use crate::config::{PostgresSinkConfig, WriteMode};
use std::fmt;
use tokio_postgres::Client;

/// A column type the sink writes in binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `boolean`.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `numeric`.
    Numeric,
    /// `text`, `varchar`, `char`, `name`.
    Text,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `bytea`.
    Bytea,
    /// `uuid`.
    Uuid,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    Timestamptz,
    /// `date`.
    Date,
}

impl PgType {
    /// The type of a catalog type oid, `None` when the sink cannot write it.
    pub fn from_oid(oid: u32) -> Option<Self> {
        Some(match oid {
            16 => Self::Bool,
            21 => Self::Int2,
            23 => Self::Int4,
            20 => Self::Int8,
            700 => Self::Float4,
            701 => Self::Float8,
            1700 => Self::Numeric,
            25 | 1043 | 1042 | 19 => Self::Text,
            114 => Self::Json,
            3802 => Self::Jsonb,
            17 => Self::Bytea,
            2950 => Self::Uuid,
            1114 => Self::Timestamp,
            1184 => Self::Timestamptz,
            1082 => Self::Date,
            _ => return None,
        })
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A top-level field of the record's JSON value.
    Field(String),
    /// The record key.
    Key,
    /// The whole record value.
    Value,
    /// The record timestamp (ms since 1970).
    Timestamp,
    /// The checkpoint whose epoch the record belongs to.
    Checkpoint,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Field(name) => write!(f, "field {name:?}"),
            Source::Key => f.write_str("@key"),
            Source::Value => f.write_str("@value"),
            Source::Timestamp => f.write_str("@timestamp"),
            Source::Checkpoint => f.write_str("@checkpoint"),
        }
    }
}

impl Source {
    fn parse(s: &str) -> Self {
        match s {
            "@key" => Self::Key,
            "@value" => Self::Value,
            "@timestamp" => Self::Timestamp,
            "@checkpoint" => Self::Checkpoint,
            field => Self::Field(field.to_owned()),
        }
    }
}

/// A mapped column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name (unquoted).
    pub name: String,
    /// Binary representation.
    pub ty: PgType,
    /// The catalog's name of its type, for messages.
    pub type_name: String,
    /// Where its value comes from.
    pub source: Source,
    /// `NOT NULL`.
    pub not_null: bool,
}

/// The target table as the sink writes it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Quoted, schema-qualified name.
    pub table: String,
    /// Mapped columns, in COPY order.
    pub columns: Vec<Column>,
    /// Upsert key column indexes into `columns`.
    pub key: Vec<usize>,
}

/// Double-quotes an identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes each dot-separated part of a possibly schema-qualified name.
pub fn quote_qualified(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

struct CatalogColumn {
    name: String,
    oid: u32,
    type_name: String,
    not_null: bool,
    has_default: bool,
    generated: bool,
}

/// Reads the table's columns and resolves the configured mapping.
/// `Err` holds every problem as `(field, message)`, or a database error.
pub async fn resolve(client: &Client, config: &PostgresSinkConfig) -> Result<Target, Resolve> {
    let row = client
        .query_opt(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            &[&config.table],
        )
        .await
        .map_err(Resolve::Db)?;
    let Some(row) = row else {
        return Err(Resolve::Problems(vec![(
            "table".into(),
            format!(
                "table {:?} does not exist in the database (searched with the connection's search_path); \
                 create it first: weir never creates or alters a target table",
                config.table
            ),
        )]));
    };
    let oid: u32 = row.get(0);
    let table: String = row.get(1);
    let kind: String = row.get(2);
    if !matches!(kind.as_str(), "r" | "p") {
        return Err(Resolve::Problems(vec![("table".into(), format!("{table} is not a table (relkind {kind}); name a table"))]));
    }
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef, \
             (a.attgenerated <> '' OR a.attidentity = 'a') \
             FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(Resolve::Db)?;
    let catalog: Vec<CatalogColumn> = rows
        .iter()
        .map(|r| CatalogColumn {
            name: r.get(0),
            oid: r.get(1),
            type_name: r.get(2),
            not_null: r.get(3),
            has_default: r.get(4),
            generated: r.get(5),
        })
        .collect();
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    let names = || catalog.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let wanted: Vec<(String, String, Source)> = match &config.columns {
        Some(map) => map.iter().map(|(col, src)| (format!("columns.{col}"), col.clone(), Source::parse(src))).collect(),
        None => catalog
            .iter()
            .filter(|c| !c.generated)
            .map(|c| ("columns".to_owned(), c.name.clone(), Source::Field(c.name.clone())))
            .collect(),
    };
    for (field, name, source) in wanted {
        let Some(c) = catalog.iter().find(|c| c.name == name) else {
            problems.push((field, format!("table {table} has no column {name:?}; its columns are: {}", names())));
            continue;
        };
        if c.generated {
            problems.push((field, format!("column {name:?} of {table} is generated (or GENERATED ALWAYS AS IDENTITY) and cannot be written; remove it from `columns`")));
            continue;
        }
        let Some(ty) = PgType::from_oid(c.oid) else {
            problems.push((
                field,
                format!(
                    "column {name:?} of {table} has type {}, which the postgres sink cannot write; it writes boolean, smallint, integer, \
                     bigint, real, double precision, numeric, text, varchar, char, json, jsonb, bytea, uuid, timestamp, timestamptz and date",
                    c.type_name
                ),
            ));
            continue;
        };
        columns.push(Column { name: c.name.clone(), ty, type_name: c.type_name.clone(), source, not_null: c.not_null });
    }
    if config.columns.is_some() {
        for c in catalog.iter().filter(|c| c.not_null && !c.has_default && !c.generated) {
            if !columns.iter().any(|m| m.name == c.name) && !problems.iter().any(|(f, _)| f == &format!("columns.{}", c.name)) {
                problems.push((
                    "columns".into(),
                    format!("column {:?} of {table} is NOT NULL without a default, but `columns` does not map it; add it", c.name),
                ));
            }
        }
    }
    let mut key = Vec::new();
    if config.mode == WriteMode::Upsert {
        for k in &config.key {
            match columns.iter().position(|c| &c.name == k) {
                Some(i) => key.push(i),
                None => problems.push(("key".into(), format!("key column {k:?} is not a mapped column of {table}; mapped: {}", columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")))),
            }
        }
        let indexes = client
            .query(
                "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL GROUP BY i.indexrelid",
                &[&oid],
            )
            .await
            .map_err(Resolve::Db)?;
        let mut want: Vec<String> = config.key.clone();
        want.sort();
        if !indexes.iter().any(|r| r.get::<_, Vec<String>>(0) == want) {
            problems.push((
                "key".into(),
                format!(
                    "no primary key or unique index of {table} covers exactly ({}), which ON CONFLICT needs; \
                     create one: CREATE UNIQUE INDEX ON {table} ({})",
                    config.key.join(", "),
                    config.key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if problems.is_empty() { Ok(Target { table, columns, key }) } else { Err(Resolve::Problems(problems)) }
}

/// Why [`resolve`] failed.
#[derive(Debug)]
pub enum Resolve {
    /// The mapping does not fit the table.
    Problems(Vec<(String, String)>),
    /// The catalog could not be read.
    Db(tokio_postgres::Error),
}
