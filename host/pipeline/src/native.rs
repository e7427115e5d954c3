//! Operators compiled into the host, by plugin name ([`NativeOperators`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use weir_sdk::native::Factory;

/// Operators compiled into the host, by plugin name: how a Rust program
/// runs an operator written with `weir-sdk` natively in a pipeline, behind
/// the same task loop as the Wasm operators.
///
/// ```no_run
/// # use weir_sdk::{Context, Error, NoConfig, OpenContext, Operator, Output, Record};
/// # struct Shout;
/// # impl Operator for Shout {
/// #     type Config = NoConfig;
/// #     fn open(_: NoConfig, _: &OpenContext) -> Result<Self, Error> { Ok(Shout) }
/// #     fn process(&mut self, r: Record<'_>, out: &mut Output, _: &mut Context) -> Result<(), Error> { out.forward(&r); Ok(()) }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (pipeline, engine): (weir_pipeline::Pipeline, weir_wasm::Engine) = todo!();
/// // Every operator whose `plugin = "shout"` runs `Shout` natively.
/// let native = weir_pipeline::NativeOperators::default().with::<Shout>("shout");
/// weir_pipeline::run(&pipeline, &engine, &weir_pipeline::RunOptions { native, ..Default::default() })?;
/// # Ok(()) }
/// ```
///
/// The pipeline file is unchanged, and still validated and loaded as it is
/// for a Wasm run: the plugin file must exist (it names the version in
/// reports, and `weir` itself runs the same file), but it is not
/// instantiated. Each subtask of such an operator is a
/// [`weir_task::NativeStage`] with the keyed state (backend, key groups,
/// restore) a Wasm subtask would get. It is for measuring what Wasm costs
/// (`weir-bench events-agg`), and for embedding trusted Rust operators: a
/// native operator is not isolated (no memory or CPU limit, no sandbox) and
/// is not hot-reloaded; its timers fire as a Wasm operator's do.
///
/// Given in [`crate::RunOptions::native`], keyed by the plugin name the
/// pipeline file gives the operators.
#[derive(Clone, Default)]
pub struct NativeOperators {
    factories: BTreeMap<String, Arc<dyn Factory>>,
}

impl fmt::Debug for NativeOperators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl NativeOperators {
    /// Runs operator `O` wherever the pipeline names plugin `plugin`.
    pub fn with<O: weir_sdk::Operator + Send>(self, plugin: &str) -> Self {
        self.with_factory(plugin, weir_sdk::native::factory::<O>())
    }

    /// Opens the instances of plugin `plugin` with `factory`: one that
    /// wraps [`weir_sdk::native::factory`] to observe the calls (the
    /// benchmark times them this way).
    pub fn with_factory(mut self, plugin: &str, factory: Arc<dyn Factory>) -> Self {
        self.factories.insert(plugin.to_owned(), factory);
        self
    }

    /// The factory registered for `plugin`, if any.
    pub(crate) fn get(&self, plugin: &str) -> Option<&dyn Factory> {
        self.factories.get(plugin).map(|f| &**f)
    }
}
