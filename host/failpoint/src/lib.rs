//! Failpoints: named steps of a checkpoint where crash tests kill the process or inject an
//! error.
//!
//! They are armed by the `WEIR_FAILPOINTS` environment variable, read once per process: a
//! comma-separated list of `name` (fires the first time the point is reached) or `name@N`
//! (fires the first time the point is reached for checkpoint id `N`). Each entry fires at most
//! once. An unknown name or a malformed entry disarms all points, with a message on stderr.
//!
//! Points used across weir:
//!
//! | name | where | effect |
//! |------|-------|--------|
//! | `after-barrier-injection` | runtime, after sources emit the barrier | abort |
//! | `after-state-write` | runtime, after an operator subtask's state file is written | abort |
//! | `after-sink-pre-commit` | runtime, after a sink pre-commits | abort |
//! | `before-completion` | `weir_checkpoint::CheckpointWriter::complete`, the manifest is synced but not renamed | abort |
//! | `state-file-half` | `weir_checkpoint::CheckpointWriter::write_file`, half of the bytes are written and synced | abort |
//! | `disk-full` | `weir_checkpoint::CheckpointWriter::write_file` | returns an I/O error of kind `StorageFull` |
//! | `after-postgres-commit` | the PostgreSQL sink, after an epoch's transaction commits | abort |
//! | `object-store-mid-publish` | the object storage sink, after the first objects of a checkpoint are uploaded | abort |
//! | `http-mid-publish` | the HTTP sink, after the first request of a checkpoint is answered | abort |
//!
//! An aborting point prints `weir: failpoint NAME reached at checkpoint N; aborting the
//! process` to stderr first, so a test can tell the crash it asked for from a real one.
//!
//! This crate depends on no other weir crate, so a connector can place a point without
//! depending on the checkpoint store.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The environment variable that arms failpoints.
pub const ENV: &str = "WEIR_FAILPOINTS";

/// Every failpoint name weir knows; `WEIR_FAILPOINTS` may only name these.
pub const POINTS: &[&str] = &[
    "after-barrier-injection",
    "after-state-write",
    "after-sink-pre-commit",
    "before-completion",
    "state-file-half",
    "disk-full",
    "after-postgres-commit",
    "object-store-mid-publish",
    "http-mid-publish",
];

/// If `name` is armed for `checkpoint`, prints why and aborts the process.
pub fn hit(name: &str, checkpoint: u64) {
    global().hit(name, checkpoint);
}

/// If `name` is armed for `checkpoint`, the error it injects (`disk-full`: kind
/// `StorageFull`, "No space left on device (failpoint disk-full)").
pub fn error(name: &str, checkpoint: u64) -> Option<io::Error> {
    global().error(name, checkpoint)
}

/// The failpoints armed by `WEIR_FAILPOINTS`, parsed on first use.
pub fn global() -> &'static Arc<Failpoints> {
    static GLOBAL: OnceLock<Arc<Failpoints>> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        Arc::new(Failpoints::parse(&spec).unwrap_or_else(|e| {
            weir_events::emit(weir_events::SettingIgnored { variable: ENV, value: &spec, why: &format!("{e}; no failpoint is armed") });
            Failpoints::default()
        }))
    })
}

/// A set of armed failpoints (the process-wide one comes from `WEIR_FAILPOINTS`).
#[derive(Debug, Default)]
pub struct Failpoints {
    entries: Vec<Armed>,
}

#[derive(Debug)]
struct Armed {
    name: String,
    at: Option<u64>,
    fired: AtomicBool,
}

impl Failpoints {
    /// Parses the `WEIR_FAILPOINTS` syntax.
    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let mut entries = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, at) = match item.split_once('@') {
                Some((name, n)) => {
                    let n = n
                        .parse::<u64>()
                        .map_err(|_| format!("`{item}`: expected name@CHECKPOINT-ID, e.g. disk-full@3"))?;
                    (name, Some(n))
                }
                None => (item, None),
            };
            if !POINTS.contains(&name) {
                return Err(format!("unknown failpoint `{name}` (known: {})", POINTS.join(", ")));
            }
            entries.push(Armed { name: name.to_string(), at, fired: AtomicBool::new(false) });
        }
        Ok(Failpoints { entries })
    }

    /// True (once) when `name` is armed for `checkpoint`; for a crash after partial work, the
    /// caller does the work and then calls [`die`].
    pub fn fires(&self, name: &str, checkpoint: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == name && e.at.is_none_or(|n| n == checkpoint) && !e.fired.swap(true, Ordering::SeqCst))
    }

    /// Aborts the process if `name` fires.
    pub fn hit(&self, name: &str, checkpoint: u64) {
        if self.fires(name, checkpoint) {
            die(name, checkpoint);
        }
    }

    /// The injected error if `name` fires.
    pub fn error(&self, name: &str, checkpoint: u64) -> Option<io::Error> {
        self.fires(name, checkpoint).then(|| match name {
            "disk-full" => io::Error::new(io::ErrorKind::StorageFull, "No space left on device (failpoint disk-full)"),
            _ => io::Error::other(format!("injected failure (failpoint {name})")),
        })
    }
}

/// Prints the failpoint message and aborts.
pub fn die(name: &str, checkpoint: u64) -> ! {
    eprintln!("weir: failpoint {name} reached at checkpoint {checkpoint}; aborting the process");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fire_once() {
        let fp = Failpoints::parse(" disk-full@3 , before-completion,").unwrap();
        assert!(fp.error("disk-full", 2).is_none(), "armed for checkpoint 3 only");
        let e = fp.error("disk-full", 3).expect("fires at 3");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(e.to_string(), "No space left on device (failpoint disk-full)");
        assert!(fp.error("disk-full", 3).is_none(), "fires once");
        assert!(fp.fires("before-completion", 9));
        assert!(!fp.fires("before-completion", 10));
        assert!(!fp.fires("state-file-half", 1));
        assert!(Failpoints::parse("").unwrap().entries.is_empty());
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let e = Failpoints::parse("disk-full@x").unwrap_err();
        assert!(e.contains("`disk-full@x`"), "{e}");
        let e = Failpoints::parse("disk-ful").unwrap_err();
        assert!(e.contains("unknown failpoint `disk-ful`") && e.contains("state-file-half"), "{e}");
    }
}
