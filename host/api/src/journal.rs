//! What a pipeline tells its user, in that pipeline's events.
//!
//! A pipeline run reports through `tracing` only (see `weir_events`): a
//! foreground `weir run` prints its warnings, errors and notices on stderr.
//! `weir serve` logs the same, and this [`Journal`] also keeps them in the
//! events of the pipeline they belong to, so the API and the UI show what
//! `weir run` would have printed. It is a `tracing` layer: the `weir` binary
//! installs [`Journal::layer`] beside its log output and hands the journal
//! to [`crate::serve`].
//!
//! An event belongs to a pipeline through its `pipeline` field, or the
//! `pipeline` field of a span it happens in (the supervisor runs each
//! pipeline inside one). It is kept when it is a warning, an error or a
//! notice (`weir_events::NOTICE`); the supervisor's own messages are not
//! (it records them itself).

use crate::supervisor::Slot;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Routes pipelines' log events to their slots. Cheap to clone.
#[derive(Clone, Default)]
pub struct Journal {
    routes: Arc<Mutex<HashMap<String, Weak<Slot>>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// The `tracing` layer that feeds this journal. It asks only for what
    /// it keeps (and the supervisor's spans), so installing it does not
    /// make the process build debug events it would drop (nor forward
    /// every `log` record of its dependencies).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let wanted = filter_fn(|m| m.target() == weir_events::NOTICE || *m.level() <= Level::WARN || (m.is_span() && m.target().starts_with("weir_api")));
        JournalLayer { routes: self.routes.clone() }.with_filter(wanted.with_max_level_hint(LevelFilter::INFO))
    }

    /// From now on, events of pipeline `name` go to `slot`.
    pub(crate) fn attach(&self, name: &str, slot: &Arc<Slot>) {
        self.routes.lock().expect("journal lock").insert(name.to_owned(), Arc::downgrade(slot));
    }

    /// Events of pipeline `name` no longer go to `slot`.
    pub(crate) fn detach(&self, name: &str, slot: &Arc<Slot>) {
        let mut routes = self.routes.lock().expect("journal lock");
        if routes.get(name).is_some_and(|w| w.as_ptr() == Arc::as_ptr(slot)) {
            routes.remove(name);
        }
    }
}

struct JournalLayer {
    routes: Arc<Mutex<HashMap<String, Weak<Slot>>>>,
}

/// The `pipeline` field of a span, kept in its extensions.
struct SpanPipeline(String);

#[derive(Default)]
struct Fields {
    message: String,
    pipeline: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "pipeline" => self.pipeline = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "pipeline" => self.pipeline = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            _ => {
                let _ = write!(self.rest, " {}={value:?}", field.name());
            }
        }
    }
}

impl<S> Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(pipeline), Some(span)) = (fields.pipeline, ctx.span(id)) {
            span.extensions_mut().insert(SpanPipeline(pipeline));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let notice = meta.target() == weir_events::NOTICE;
        // `weir_api`: the supervisor records its own messages itself.
        if !(notice || *meta.level() <= Level::WARN) || meta.target().starts_with("weir_api") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let pipeline = fields.pipeline.or_else(|| {
            ctx.event_scope(event)?.from_root().find_map(|span| span.extensions().get::<SpanPipeline>().map(|p| p.0.clone()))
        });
        let Some(pipeline) = pipeline else { return };
        let Some(slot) = self.routes.lock().expect("journal lock").get(&pipeline).and_then(Weak::upgrade) else { return };
        let level = if notice {
            "info"
        } else if *meta.level() == Level::ERROR {
            "error"
        } else {
            "warn"
        };
        // Events are sentences; one with fields only is shown by its fields.
        let what = if fields.message.is_empty() { fields.rest.trim().to_owned() } else { fields.message };
        slot.record(level, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Issue 15: what a run tells its user reaches its events in `weir serve`.
    #[test]
    fn warnings_errors_and_notices_of_a_pipeline_reach_its_events() {
        let journal = Journal::default();
        let slot = Arc::new(Slot::new("orders", std::path::Path::new("pipelines/orders.toml")));
        let other = Arc::new(Slot::new("clicks", std::path::Path::new("pipelines/clicks.toml")));
        journal.attach("orders", &slot);
        journal.attach("clicks", &other);
        let subscriber = tracing_subscriber::registry().with(journal.layer());
        tracing::subscriber::with_default(subscriber, || {
            weir_events::emit(weir_events::CheckpointRestored { pipeline: "orders", id: 4, savepoint: false, dir: std::path::Path::new("cp/4"), finished: false });
            weir_events::emit(weir_events::CheckpointFailed { pipeline: "orders", id: 5, reason: "disk full" });
            tracing::info!(target: "weir_pipeline", pipeline = "orders", "an info line is not kept");
            tracing::error!(target: "weir_pipeline", pipeline = "clicks", "another pipeline's error");
            tracing::warn!(target: "weir_pipeline", "a warning that names no pipeline is not kept");
            tracing::info_span!("run", pipeline = "orders").in_scope(|| tracing::warn!(target: "weir_pipeline", "a warning in the run's span"));
            tracing::warn!(pipeline = "orders", "the supervisor's own messages are recorded by it, not here");
        });
        journal.detach("orders", &slot);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(journal.layer()), || {
            tracing::warn!(target: "weir_pipeline", pipeline = "orders", "after the run: not kept");
        });
        let events: Vec<(&str, String)> = slot.info().events.iter().map(|e| (e.level, e.what.clone())).collect();
        assert_eq!(
            events,
            [
                ("info", "resuming from checkpoint 4 (cp/4)".to_owned()),
                ("warn", "checkpoint failed: disk full; the pipeline keeps running and the next checkpoint retries".to_owned()),
                ("warn", "a warning in the run's span".to_owned()),
            ]
        );
        let other: Vec<String> = other.info().events.iter().map(|e| format!("{}: {}", e.level, e.what)).collect();
        assert_eq!(other, ["error: another pipeline's error"]);
    }
}
