//! For tests: what a piece of code counted, checked against the table.
//!
//! ```
//! let ((), counted) = weir_events::testing::capture(|| {
//!     weir_events::emit(weir_events::CheckpointAbandoned { pipeline: "p", id: 3 });
//! });
//! counted.assert_compliant();
//! assert_eq!(counted.value("weir_checkpoints_abandoned_total", &[("pipeline", "p")]), Some(1.0));
//! ```

use crate::metric::{self, Kind};
use metrics::Key;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// One metric recorded during [`capture`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Its labels, in the order recorded.
    pub labels: Vec<(String, String)>,
    /// A counter's total, a gauge's last value, a histogram's number of
    /// observations.
    pub value: f64,
}

/// What [`capture`] recorded.
#[derive(Debug, Clone, Default)]
pub struct Counted(pub Vec<Recorded>);

/// Runs `f` with a recorder of its own (for the current thread only) and
/// returns what it counted.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Counted) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let r = metrics::with_local_recorder(&recorder, f);
    let recorded = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key): (MetricKind, Key) = key.into_parts();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let (kind, value) = match (kind, value) {
                (_, DebugValue::Counter(n)) => (Kind::Counter, n as f64),
                (_, DebugValue::Gauge(g)) => (Kind::Gauge, g.0),
                (_, DebugValue::Histogram(h)) => (Kind::Histogram, h.len() as f64),
            };
            Recorded {
                name: key.name().to_owned(),
                kind,
                labels,
                value,
            }
        })
        .collect();
    (r, Counted(recorded))
}

impl Counted {
    /// The value of the metric `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|r| {
                r.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| r.labels.iter().any(|(rk, rv)| rk == k && rv == v))
            })
            .map(|r| r.value)
    }

    /// Panics unless every metric recorded is in [`metric::ALL`] with its
    /// type and exactly its labels, in order.
    pub fn assert_compliant(&self) {
        for r in &self.0 {
            let m = metric::find(&r.name)
                .unwrap_or_else(|| panic!("{} is not in weir_events::metric::ALL", r.name));
            assert_eq!(r.kind, m.kind, "{}: recorded as a {:?}", r.name, r.kind);
            let names: Vec<&str> = r.labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, m.labels, "{}: labels", r.name);
        }
    }
}
