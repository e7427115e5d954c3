//! The connectors built into weir, registered in one place.
//!
//! The pipeline crate knows no connector by name: it parses, checks and
//! opens sources and sinks through a [`Registry`]. This crate is the one
//! place that lists weir's own; the `weir` binary, `weir serve` and the
//! benchmarks use [`builtin`]. Adding a connector is a crate whose config
//! implements [`weir_connector::registry::SourceConfig`] or
//! [`weir_connector::registry::SinkConfig`], plus one line here.
//!
//! The order is the order in which messages list the types.

use std::sync::Arc;
pub use weir_connector::registry::Registry;

/// Every connector weir ships.
pub fn builtin() -> Arc<Registry> {
    Arc::new(
        Registry::default()
            .with_source::<weir_connector_generator::GeneratorConfig>()
            .with_source::<weir_connector_file::FileSourceConfig>()
            .with_source::<weir_connector_kafka::KafkaSourceConfig>()
            .with_source::<weir_connector_postgres_cdc::PostgresCdcConfig>()
            .with_source::<weir_connector_http::HttpSourceConfig>()
            .with_source::<weir_connector_wasm::PluginSourceConfig>()
            .with_sink::<weir_connector_file::StdoutSinkConfig>()
            .with_sink::<weir_connector_file::FileSinkConfig>()
            .with_sink::<weir_connector::DiscardConfig>()
            .with_sink::<weir_connector_kafka::KafkaSinkConfig>()
            .with_sink::<weir_connector_postgres::PostgresSinkConfig>()
            .with_sink::<weir_connector_object_store::ObjectStoreSinkConfig>()
            .with_sink::<weir_connector_http::HttpSinkConfig>()
            .with_sink::<weir_connector_wasm::PluginSinkConfig>(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_type_is_registered_once_in_message_order() {
        let r = super::builtin();
        assert_eq!(r.source_types().collect::<Vec<_>>(), ["generator", "file", "kafka", "postgres-cdc", "http", "wasm"]);
        assert_eq!(r.sink_types().collect::<Vec<_>>(), ["stdout", "file", "discard", "kafka", "postgres", "object-store", "http", "wasm"]);
    }
}
