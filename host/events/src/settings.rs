//! Process-wide settings read from the environment.

use crate::Event;

/// The `tracing` target of these events (`WEIR_LOG=weir::settings=debug` shows them all).
const TARGET: &str = "weir::settings";

/// An environment variable weir reads (a test knob such as
/// `WEIR_FAILPOINTS`) holds something it cannot use; it is ignored.
#[derive(Debug)]
pub struct SettingIgnored<'a> {
    /// The variable.
    pub variable: &'a str,
    /// Its value.
    pub value: &'a str,
    /// What is wrong and what to write instead.
    pub why: &'a str,
}

impl Event for SettingIgnored<'_> {
    fn emit(self) {
        tracing::warn!(target: TARGET, variable = self.variable, "ignoring {}={:?}: {}", self.variable, self.value, self.why);
    }
}
