//! Where the `weir` binary's log goes.
//!
//! Libraries print nothing: they log through `tracing` (typed events,
//! `weir_events`). This binary decides what a user sees:
//!
//! * every command writes the log to stderr, filtered by `-v` / `WEIR_LOG`
//!   (a foreground command shows warnings and errors by default, `weir
//!   serve` also what it does);
//! * in the foreground, notices (`weir_events::NOTICE`: resuming from a
//!   checkpoint, records re-issued) are printed whatever the filter, as
//!   `weir: PIPELINE: message`, like a command's own output;
//! * `weir serve` logs notices like any info line, and its [`Journal`]
//!   keeps each pipeline's warnings, errors and notices in that pipeline's
//!   events for the API.

use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use weir_api::Journal;

/// Installs the process's subscriber. `filter` is an `EnvFilter` directive;
/// `journal` is `Some` for `weir serve`.
pub fn init(filter: &str, journal: Option<&Journal>) {
    // Under systemd (JOURNAL_STREAM set) the journal adds timestamps and
    // colour codes would be noise; the same without a terminal.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal() && !journald).with_writer(std::io::stderr);
    let fmt = if journald { fmt.without_time().boxed() } else { fmt.boxed() };
    let env = EnvFilter::new(filter);
    match journal {
        Some(journal) => tracing_subscriber::registry().with(fmt.with_filter(env)).with(journal.layer()).init(),
        None => {
            // The level hints keep the process's maximum level that of the
            // filter: nothing more verbose is built (or forwarded from `log`).
            let not_notice = filter_fn(|m| m.target() != weir_events::NOTICE).with_max_level_hint(LevelFilter::TRACE);
            let notice = filter_fn(|m| m.target() == weir_events::NOTICE).with_max_level_hint(LevelFilter::INFO);
            tracing_subscriber::registry().with(fmt.with_filter(env.and(not_notice))).with(Notices.with_filter(notice)).init();
        }
    }
}

/// Prints notices as `weir: PIPELINE: message` on stderr.
struct Notices;

#[derive(Default)]
struct Notice {
    pipeline: String,
    message: String,
}

impl Visit for Notice {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "pipeline" {
            self.pipeline = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "pipeline" => self.pipeline = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Notices {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut n = Notice::default();
        event.record(&mut n);
        eprintln!("weir: {}: {}", n.pipeline, n.message);
    }
}
