//! `[sources.NAME] type = "wasm"`.

use crate::{PluginConnectorConfig, Runner, Setup};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weir_connector::services::Services;
use weir_connector::registry::{ConfigContext, FieldErrors, SourceConfig};
use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Poll, Source};
use weir_wasm::{Polled, SourceInstance};

/// A source section whose connector is a plugin (world `weir:plugin/source`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct PluginSourceConfig {
    /// The settings every plugin connector has.
    pub connector: PluginConnectorConfig,
}

impl SourceConfig for PluginSourceConfig {
    const TYPE: &'static str = "wasm";

    fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
        self.connector.prepare(cx)
    }

    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(PluginSource::open(&self.connector, ctx)?))
    }

    fn check(&self, services: &Services) -> Result<Option<String>, ConnectorError> {
        self.connector.check(services, "source")
    }

    fn plugin(&self) -> Option<&str> {
        Some(&self.connector.plugin)
    }
}

/// One subtask of a source plugin.
pub struct PluginSource {
    runner: Runner,
    instance: SourceInstance,
    setup: Setup,
}

impl std::fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSource").field("plugin", &self.runner.plugin.name).finish()
    }
}

impl PluginSource {
    /// Loads the plugin and opens its instance for the context's subtask.
    pub fn open(config: &PluginConnectorConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let section = format!("sources.{}", ctx.name);
        let (mut runner, setup) = config.prepare_run(ctx, &section, Arc::new(OnceLock::new()))?;
        let plugin = runner.plugin.clone();
        let instance = runner.call("open", SourceInstance::open(&plugin, &setup.info, setup.limits, setup.io.clone()))?;
        runner.opened();
        Ok(Self { runner, instance, setup })
    }

    /// Swaps in a new version offered since the last look, restored to
    /// `position` (the running version's, taken just now); `None` takes the
    /// running version's snapshot first.
    fn take_offer(&mut self, position: Option<&[u8]>) {
        let Some(new) = self.setup.offered(&self.runner) else { return };
        let position = match position {
            Some(p) => Ok(p.to_vec()),
            None => self.runner.trial(&self.runner.plugin, "snapshot", self.instance.snapshot()).map_err(|e| format!("the running version's {e}")),
        };
        let (info, limits, io) = (&self.setup.info, self.setup.limits, self.setup.io.clone());
        let opened = position.and_then(|position| {
            let mut instance = self.runner.trial(&new, "open", SourceInstance::open(&new, info, limits, io))?;
            // Positions by subtask, as from a checkpoint at this
            // parallelism; only this subtask's is known (the others run
            // on), so theirs are empty: nothing to restore.
            let mut positions = vec![Vec::new(); self.setup.info.parallelism as usize];
            positions[self.setup.info.subtask as usize] = position;
            self.runner.trial(&new, "restore", instance.restore(&positions))?;
            Ok(instance)
        });
        self.setup.settle(&mut self.runner, &mut self.instance, new, opened);
    }
}

impl Source for PluginSource {
    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError> {
        if !self.setup.info.checkpointing {
            self.take_offer(None);
        }
        let max = u32::try_from(target_bytes).unwrap_or(u32::MAX);
        match self.runner.call("poll", self.instance.poll(max))? {
            Polled::Ready(frames) => {
                // The plugin's bytes are checked before they enter the
                // pipeline: a malformed batch stops it here, naming the plugin.
                let records = match weir_format::count(&frames) {
                    Ok(n) => n,
                    Err(e) => {
                        let why = format!(
                            "plugin {}: `poll` returned {} bytes that are not records in weir's frame format ({e}); build them with weir_format::BatchWriter or your SDK's writer",
                            self.runner.plugin.name,
                            frames.len()
                        );
                        self.runner.failed(&why);
                        return Err(ConnectorError::user(why));
                    }
                };
                out.extend_raw(&frames, records);
                Ok(Poll::Ready)
            }
            Polled::Idle(ms) => Ok(Poll::Idle(Duration::from_millis(u64::from(ms.max(1))))),
            Polled::Finished => Ok(Poll::Finished),
        }
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        let position = self.runner.call("snapshot", self.instance.snapshot())?;
        self.runner.took_part(0);
        self.take_offer(Some(&position));
        Ok(position)
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        let positions: Vec<Vec<u8>> = positions.iter().map(|p| p.to_vec()).collect();
        self.runner.call("restore", self.instance.restore(&positions))
    }

    fn checkpoint_complete(&mut self, checkpoint: u64, position: &[u8]) -> Result<(), ConnectorError> {
        self.runner.call("checkpoint-complete", self.instance.checkpoint_complete(checkpoint, position))?;
        self.runner.completed(checkpoint);
        Ok(())
    }
}
