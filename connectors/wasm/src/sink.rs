//! `[sinks.NAME] type = "wasm"`.

use crate::{PluginConnectorConfig, Runner, Setup};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use weir_connector::services::Services;
use weir_connector::registry::{ConfigContext, FieldErrors, SinkConfig};
use weir_connector::{Committable, ConnectorContext, ConnectorError, Sink, WaitObserver};
use weir_wasm::SinkInstance;

/// A sink section whose connector is a plugin (world `weir:plugin/sink`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct PluginSinkConfig {
    /// The settings every plugin connector has.
    pub connector: PluginConnectorConfig,
}

impl SinkConfig for PluginSinkConfig {
    const TYPE: &'static str = "wasm";

    fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
        self.connector.prepare(cx)
    }

    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(PluginSink::open(&self.connector, ctx)?))
    }

    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError> {
        self.connector.check(services, "sink")
    }

    fn plugin(&self) -> Option<&str> {
        Some(&self.connector.plugin)
    }
}

/// One subtask of a sink plugin: weir's [`Sink`] calls, each one call into
/// the plugin.
pub struct PluginSink {
    runner: Runner,
    instance: SinkInstance,
    waits: Arc<OnceLock<Arc<dyn WaitObserver>>>,
    setup: Setup,
}

impl std::fmt::Debug for PluginSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSink").field("plugin", &self.runner.plugin.name).finish()
    }
}

impl PluginSink {
    /// Loads the plugin and opens its instance for the context's subtask.
    pub fn open(config: &PluginConnectorConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let waits = Arc::new(OnceLock::new());
        let section = format!("sinks.{}", ctx.name);
        let (mut runner, setup) = config.prepare_run(ctx, &section, waits.clone())?;
        let plugin = runner.plugin.clone();
        let instance = runner.call("open", SinkInstance::open(&plugin, &setup.info, setup.limits, setup.io.clone()))?;
        runner.opened();
        Ok(Self { runner, instance, waits, setup })
    }

    /// Swaps in a new version offered since the last look. Called where
    /// the running instance holds nothing of its own: right after a
    /// `pre-commit` (the new one commits that handle) or a `flush`. The new
    /// instance starts as a restored one with nothing to publish.
    fn take_offer(&mut self) -> Result<(), ConnectorError> {
        let Some(new) = self.setup.offered(&self.runner) else { return Ok(()) };
        if !self.setup.info.checkpointing {
            self.runner.call("flush", self.instance.flush())?;
        }
        let (info, limits, io) = (&self.setup.info, self.setup.limits, self.setup.io.clone());
        let opened = self.runner.trial(&new, "open", SinkInstance::open(&new, info, limits, io)).and_then(|mut instance| {
            self.runner.trial(&new, "start", instance.start(Some(Vec::new())))?;
            Ok(instance)
        });
        self.setup.settle(&mut self.runner, &mut self.instance, new, opened);
        Ok(())
    }
}

impl Sink for PluginSink {
    fn start(&mut self, recovered: Option<&[Committable]>) -> Result<(), ConnectorError> {
        let recovered = recovered.map(|r| r.iter().map(|c| (c.checkpoint, c.handle.clone())).collect());
        self.runner.call("start", self.instance.start(recovered))
    }

    fn write(&mut self, batch: &[u8], records: usize) -> Result<(), ConnectorError> {
        if !self.setup.info.checkpointing {
            self.take_offer()?;
        }
        let records = u32::try_from(records).unwrap_or(u32::MAX);
        self.runner.call("write", self.instance.write(batch, records))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.runner.call("flush", self.instance.flush())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Vec<u8>, ConnectorError> {
        let handle = self.runner.call("pre-commit", self.instance.pre_commit(checkpoint))?;
        self.runner.took_part(checkpoint);
        self.take_offer()?;
        Ok(handle)
    }

    fn commit(&mut self, checkpoint: u64, handle: &[u8]) -> Result<(), ConnectorError> {
        self.runner.call("commit", self.instance.commit(checkpoint, handle))?;
        self.runner.completed(checkpoint);
        Ok(())
    }

    fn observe_waits(&mut self, observer: Arc<dyn WaitObserver>) {
        let _ = self.waits.set(observer);
    }
}
