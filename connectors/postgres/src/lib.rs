//! The PostgreSQL sink: records into a table, fast, exactly once.
//!
//! ```toml
//! [sinks.db]
//! type = "postgres"
//! url = "postgres://weir@localhost:5432/app"
//! password-env = "WEIR_PG_PASSWORD"
//! table = "public.events"
//! columns = { id = "id", user_name = "user", amount = "amount", at = "@timestamp" }
//! mode = "append"                 # or "upsert" with key = ["id"]
//! delivery = "exactly-once"       # or "at-least-once"
//! batch = { rows = 10000, bytes = "8MiB", max-delay = "500ms" }
//! ```
//!
//! # Design: where the rows of an epoch live
//!
//! Exactly-once needs the rows of a checkpoint epoch to become visible
//! together, only once the checkpoint is complete, and never twice. Three
//! places could hold them between the barrier and the commit: an open
//! transaction (lost with the connection, so a crash between pre-commit and
//! commit would lose the epoch unless prepared transactions, i.e. XA, are
//! used), a staging table (every row written twice by the database: about
//! half the throughput of a plain COPY), or a local durable spill. This sink
//! spills, through weir's one staging mechanism ([`weir_connector::staging`],
//! files `SUBTASK.*` in `spill-dir/PIPELINE/SINK`):
//! [`Sink::write`](weir_connector::Sink::write) appends the batch's frames to
//! a file (no per-record work on the task thread), `pre_commit` fsyncs and
//! seals it under the checkpoint's id and returns a handle naming it, and
//! `commit` queues it for the writer thread, which publishes it in
//! **one transaction**: binary `COPY` in statements of `batch.rows` rows,
//! the dead letters, and the upsert of the progress row
//! `(pipeline, sink, subtask) -> checkpoint`. The database does the work of
//! one COPY per row, and the writer thread publishes epoch N while the task
//! thread spills epoch N+1.
//!
//! A handle lists every epoch not yet known to be published, so a crash at
//! any moment leaves the latest complete checkpoint naming every spill file
//! that may still be unpublished. On restore, [`Sink::start`]
//! (weir_connector::Sink::start) publishes them in order; the progress row
//! (read `FOR UPDATE` in the publishing transaction) makes a replay of a
//! published epoch a no-op; then the staging cleanup rule removes every
//! other spill file of the subtask (epochs after the checkpoint, files a
//! crash left half written). A fresh start removes them all and resets the
//! progress row.
//!
//! # Faults
//!
//! A connection error, a server shutdown (`pg_terminate_backend`,
//! `pg_ctl stop`), a serialization failure or a statement timeout makes the
//! writer reconnect with exponential backoff and full jitter and redo the
//! whole epoch (nothing of it was committed). Meanwhile the sink stops
//! taking records once two committed epochs are waiting, which the task
//! reports as backpressure. Only after `reconnect.give-up-after` without a
//! successful write does the pipeline fail. A row the database rejects
//! (SQLSTATE class 22, data exception, or 23, integrity constraint) goes to
//! the dead-letter table with the error text, SQLSTATE, and its position
//! (checkpoint and index in this subtask's input), in the same transaction.
//!
//! # Modules
//!
//! - [`config`]: the pipeline-file settings.
//! - [`schema`]: the start-up check of the table against the mapping.
//! - [`encode`]: records to binary COPY rows.
//! - [`writer`]: the thread that talks to PostgreSQL.

pub mod config;
pub mod encode;
pub mod schema;
mod sink;
pub mod tls;
pub mod writer;

pub use config::{Delivery, PostgresSinkConfig, WriteMode};
pub use sink::PostgresSink;

impl weir_connector::registry::SinkConfig for PostgresSinkConfig {
    const TYPE: &'static str = "postgres";

    fn prepare(&mut self, cx: &weir_connector::registry::ConfigContext<'_>) -> weir_connector::registry::FieldErrors {
        self.spill_dir = cx.resolve(&self.spill_dir);
        self.password_file = self.password_file.as_deref().map(|f| cx.resolve(f));
        self.tls_ca_file = self.tls_ca_file.as_deref().map(|f| cx.resolve(f));
        self.validate()
    }

    fn nested_sections() -> Vec<(&'static str, Vec<&'static str>)> {
        use weir_connector::registry::keys_of;
        vec![
            ("batch", keys_of::<config::BatchConfig>()),
            ("reconnect", keys_of::<config::ReconnectConfig>()),
            ("dead-letter", keys_of::<config::DeadLetterConfig>()),
        ]
    }

    fn open(&self, ctx: &weir_connector::ConnectorContext) -> Result<Box<dyn weir_connector::Sink>, weir_connector::ConnectorError> {
        Ok(Box::new(PostgresSink::open(self.clone(), ctx)?))
    }

    /// Each lane is a pipeline of its own name: its progress rows (and so
    /// its exactly-once fence) and its spill area are its own, and every
    /// lane writes the same table.
    fn per_lane(&self) -> bool {
        true
    }
}
