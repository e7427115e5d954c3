//! Pipeline files (`Pipeline::parse`, what `weir check`, `weir run` and
//! `weir serve` read first), with every built-in connector, and the plan
//! `weir check` prints for a valid one.
//!
//! Checks beyond "no panic": a file is either a pipeline or at least one
//! error, and every error names a non-empty message; a valid pipeline's
//! names and parallelism are within the documented bounds. Plugin files
//! are found (empty files stand for the bundled plugins) but not loaded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weir_pipeline::{LoadOptions, Pipeline, Plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    static OPTIONS: OnceLock<LoadOptions> = OnceLock::new();
    let options = OPTIONS.get_or_init(|| LoadOptions::new(weir_connectors::builtin()).plugin_dir(Some(plugin_dir())));
    match Pipeline::parse(std::path::Path::new("/nonexistent/weir-fuzz/p.toml"), text, options) {
        Ok(p) => {
            weir_pipeline::check_name(&p.name).expect("a valid pipeline has a valid name");
            assert!((1..=weir_pipeline::MAX_PARALLELISM).contains(&p.parallelism));
            for op in &p.operators {
                weir_pipeline::check_name(&op.name).expect("a valid operator name");
            }
            let _ = Plan::new(&p).describe();
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            assert!(errors.iter().all(|e| !e.message.is_empty()), "an error without a message: {errors:?}");
        }
    }
});

/// A plugin directory with empty files named like the bundled plugins, so
/// that operators naming them pass the checks (nothing is loaded).
fn plugin_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-fuzz-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary plugin directory");
    for name in ["json-filter", "running-sum", "identity", "enrich-profile", "window-count", "skew-key", "split-words", "slow"] {
        std::fs::write(dir.join(format!("{name}.wasm")), b"").expect("a plugin file");
    }
    dir
}
