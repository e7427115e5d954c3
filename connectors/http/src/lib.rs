//! HTTP in and out: the HTTP source takes webhooks (see [`source`] and
//! [`spool`]); the HTTP sink sends records to an endpoint in batched
//! requests.
//!
//! ```toml
//! [sinks.hook]
//! type = "http"
//! url = "https://api.example.com/v1/events"
//! bearer-token-env = "EVENTS_TOKEN"
//! format = "json"                 # a JSON array per request; or "ndjson"
//! batch = { records = 500, bytes = "1MiB" }
//! ```
//!
//! # Design
//!
//! With checkpoints, the records of each epoch are staged in a local file
//! ([`weir_connector::staging`], as the file, Kafka, PostgreSQL and object
//! storage sinks do) and sent only once the checkpoint that covers them is
//! complete. The requests of an epoch are cut from its staged records
//! deterministically (`batch.records`, `batch.bytes`), and each carries an
//! idempotency key `weir-PIPELINE-SINK-SUBTASK-CHECKPOINT-SEQ`: after a
//! crash, the restored checkpoint's epoch is sent again as the very same
//! requests, so a receiver that remembers the keys it has processed
//! (as Stripe-style APIs do) sees every record exactly once; one that
//! ignores them sees some twice (at-least-once).
//!
//! Requests are sent one at a time from the task thread, over a kept-alive
//! connection ([`client`]). A request without an answer, or answered 408,
//! 425, 429 or 5xx, is retried with exponential backoff (at least as long
//! as the server's `Retry-After`) until `retry.give-up-after`, while the
//! pipeline waits: a slow or down receiver backpressures the sources
//! instead of filling memory. Any other answer outside 2xx, or a request
//! that still fails after the retries, is written to the dead letters
//! (`on-failure = "dead-letter"`, one JSON file per request named by its
//! key) or stops the pipeline (`on-failure = "fail"`). Records that are not
//! JSON go to the dead letters before any request is made.
//!
//! Without checkpoints, records are sent as they are written.

pub mod client;
mod config;
pub mod server;
mod sink;
pub mod source;
pub mod spool;

pub use config::{BatchConfig, Format, HttpSinkConfig, Method, OnFailure, default_dead_letter_dir, default_staging_dir};
pub use sink::{HttpSink, MID_PUBLISH, Stats};
pub use source::{BodyFormat, HttpSource, HttpSourceConfig, default_spool_dir};

mod registration {
    use crate::{HttpSink, HttpSinkConfig, HttpSource, HttpSourceConfig};
    use weir_connector::registry::{ConfigContext, FieldErrors, SinkConfig, SourceConfig, keys_of};
    use weir_connector::{ConnectorContext, ConnectorError, Sink, Source};

    impl SourceConfig for HttpSourceConfig {
        const TYPE: &'static str = "http";

        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            self.checkpointing = cx.checkpointing;
            self.tls_cert_file = self.tls_cert_file.as_deref().map(|f| cx.resolve(f));
            self.tls_key_file = self.tls_key_file.as_deref().map(|f| cx.resolve(f));
            self.spool_dir = Some(match &self.spool_dir {
                Some(d) => cx.resolve(d),
                None => crate::default_spool_dir(cx.base, cx.pipeline, cx.name),
            });
            self.validate()
        }

        fn max_parallelism(&self) -> Option<u32> {
            Some(1)
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> {
            Ok(Box::new(HttpSource::open(self, ctx)?))
        }
    }

    impl SinkConfig for HttpSinkConfig {
        const TYPE: &'static str = "http";

        fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
            self.checkpointing = cx.checkpointing;
            self.tls_ca_file = self.tls_ca_file.as_deref().map(|f| cx.resolve(f));
            self.staging_dir = Some(match &self.staging_dir {
                Some(d) => cx.resolve(d),
                None => crate::default_staging_dir(cx.base, cx.pipeline, cx.name),
            });
            self.dead_letter_dir = Some(match &self.dead_letter_dir {
                Some(d) => cx.resolve(d),
                None => crate::default_dead_letter_dir(cx.base, cx.pipeline, cx.name),
            });
            self.validate()
        }

        fn nested_sections() -> Vec<(&'static str, Vec<&'static str>)> {
            vec![("retry", keys_of::<weir_connector::config::RetryConfig>()), ("batch", keys_of::<crate::BatchConfig>())]
        }

        fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
            Ok(Box::new(HttpSink::open(self.clone(), ctx)?))
        }
    }
}
