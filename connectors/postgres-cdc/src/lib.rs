//! The PostgreSQL change data capture source: the inserts, updates and
//! deletes of chosen tables, read through logical replication.
//!
//! ```toml
//! [sources.orders]
//! type = "postgres-cdc"
//! url = "postgres://weir@localhost:5432/app"
//! password-env = "WEIR_PG_PASSWORD"
//! tables = ["public.orders", "public.customers"]
//! snapshot = "initial"            # the tables' rows first, then the changes; or "never"
//! ```
//!
//! # Design
//!
//! weir creates a publication for the tables and a logical replication
//! slot with PostgreSQL's built-in `pgoutput` decoder (nothing to install
//! on the server: a stock PostgreSQL 10+ with `wal_level = logical`), and
//! reads the slot over a replication connection ([`wire`]: tokio-postgres
//! does not speak that sub-protocol). Each change becomes a record
//! ([`pgoutput`] has the format).
//!
//! **Initial snapshot.** The slot is created with an exported snapshot;
//! a second connection reads every row of the tables in a repeatable-read
//! transaction on that snapshot, through a cursor, while the replication
//! connection waits; the stream then starts at the slot's consistent point.
//! So every row is seen exactly once: in the snapshot or as a later change.
//!
//! **Positions and exactly-once.** The source's checkpointed position is
//! the end LSN of the last whole transaction it emitted, plus, when a
//! checkpoint falls inside a transaction, that transaction's commit LSN and
//! the number of its changes already emitted. A restore starts the stream
//! at that LSN and skips those changes. PostgreSQL is told the position
//! (the slot's `confirmed_flush_lsn`, which lets it recycle WAL) only once
//! a checkpoint holding it is complete; so a crash replays from the last
//! checkpoint, and a completed checkpoint never leaves the slot holding
//! WAL behind it. Between transactions, keepalives move the position to the
//! server's WAL end, so quiet tables on a busy server do not pin WAL.
//!
//! A checkpoint taken during the initial snapshot cannot be resumed (the
//! exported snapshot dies with its connection): restoring it stops with a
//! message that says to start with `--fresh`.
//!
//! **Faults.** A lost replication connection (the server restarted, a
//! network cut) is retried with exponential backoff from the position
//! reached, up to `reconnect.give-up-after`; a server error that is not a
//! disconnect fails the pipeline with the server's message.

pub mod config;
pub mod pgoutput;
mod source;
pub mod wire;

pub use config::PostgresCdcConfig;
pub use source::PostgresCdcSource;

impl weir_connector::registry::SourceConfig for PostgresCdcConfig {
    const TYPE: &'static str = "postgres-cdc";

    fn prepare(&mut self, cx: &weir_connector::registry::ConfigContext<'_>) -> weir_connector::registry::FieldErrors {
        self.password_file = self.password_file.as_deref().map(|f| cx.resolve(f));
        self.tls_ca_file = self.tls_ca_file.as_deref().map(|f| cx.resolve(f));
        self.checkpointing = cx.checkpointing;
        self.default_name = config::default_name(cx.pipeline, cx.name);
        self.validate()
    }

    fn nested_sections() -> Vec<(&'static str, Vec<&'static str>)> {
        vec![("reconnect", weir_connector::registry::keys_of::<weir_connector_postgres::config::ReconnectConfig>())]
    }

    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }

    fn open(&self, ctx: &weir_connector::ConnectorContext) -> Result<Box<dyn weir_connector::Source>, weir_connector::ConnectorError> {
        Ok(Box::new(PostgresCdcSource::open(self.clone(), ctx)?))
    }
}
