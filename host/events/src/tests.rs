//! Every event counts under a name of the table, with the table's labels;
//! the documentation lists exactly the table.

use crate::testing::capture;
use crate::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn every_event_counts_what_the_table_says() {
    let ((), counted) = capture(|| {
        let dir = Path::new("/tmp/cp/7");
        emit(CheckpointCompleted {
            pipeline: "p",
            id: 7,
            savepoint: false,
            last: false,
            bytes: 100,
            duration: Duration::from_millis(20),
            alignment: Duration::from_millis(3),
            inflight_bytes: 0,
            unaligned: false,
            sync: Duration::ZERO,
            dir,
        });
        emit(CheckpointFailed {
            pipeline: "p",
            id: 8,
            reason: "disk full",
        });
        emit(CheckpointAbandoned {
            pipeline: "p",
            id: 9,
        });
        emit(CheckpointUnusable {
            pipeline: "p",
            warning: "checkpoint 6 is unusable",
        });
        emit(CheckpointRestored {
            pipeline: "p",
            id: 7,
            savepoint: false,
            dir,
            finished: true,
        });
        emit(InFlightReissued {
            pipeline: "p",
            operator: "enrich",
            subtask: 0,
            records: 3,
        });
        emit(PluginVersion {
            pipeline: "p",
            operator: "op",
            plugin: "sum",
            version: "abc",
            active: true,
        });
        emit(ReloadRejected {
            pipeline: "p",
            operator: "op",
            plugin: "sum",
            version: "bad",
            running: "abc",
            reason: "no",
        });
        emit(ConnectorPluginChanged {
            pipeline: "p",
            connector: "sinks.out",
            plugin: "webhook-sink",
            version: "def",
            when: "after its next pre-commit",
        });
        emit(ConnectorPluginSwapped { pipeline: "p", connector: "sinks.out", subtask: 0, from: "abc", to: "def", failure: None });
        emit(ConnectorPluginSwapped { pipeline: "p", connector: "sinks.out", subtask: 1, from: "abc", to: "def", failure: Some("open failed") });
        emit(ReloadAccepted {
            pipeline: "p",
            operator: "op",
            plugin: "sum",
            from: "abc",
            to: "def",
            load_ms: 1,
            cached: false,
            open_ms: 1,
            when: "now",
        });
        emit(ReloadDone {
            pipeline: "p",
            operator: "op",
            version: "def",
            subtasks: 2,
            migrated: false,
            latency_ms: 5,
        });
        emit(ReloadKept {
            pipeline: "p",
            operator: "op",
            version: "def",
            why: "it passed its probation on every subtask",
        });
        emit(ReloadRolledBack {
            pipeline: "p",
            operator: "op",
            plugin: "sum",
            failed: "ghi",
            restored: "def",
            reason: "trap",
        });
        emit(KafkaConsumerLag {
            pipeline: "p",
            source: "in",
            subtask: 1,
            topic: "t",
            partition: 2,
            lag: 40,
        });
        emit(KafkaPartitionsPaused {
            pipeline: "p",
            source: "in",
            subtask: 1,
        });
        emit(KafkaPartitionsResumed {
            pipeline: "p",
            source: "in",
            subtask: 1,
        });
        emit(KafkaDeliveryFailed {
            pipeline: "p",
            sink: "out",
            subtask: 0,
            topic: "t",
            partition: 0,
            error: &std::io::Error::other("broker gone"),
        });
        emit(SettingIgnored {
            variable: "WEIR_X",
            value: "?",
            why: "write A=B",
        });
        let a = AsyncSlotMetrics::register("p", "enrich", 0, 8);
        a.usage(2, 5);
        a.attempt(Duration::from_millis(5));
        a.timed_out(Duration::from_secs(1));
        a.retried(1, "timed out");
        a.dead_lettered("a record", 2, "timed out");
    });
    counted.assert_compliant();
    let v = |name: &str, labels: &[(&str, &str)]| counted.value(name, labels);
    assert_eq!(
        v("weir_checkpoint_last_id", &[("pipeline", "p")]),
        Some(7.0)
    );
    assert_eq!(
        v("weir_checkpoints_completed_total", &[("pipeline", "p")]),
        Some(1.0)
    );
    assert_eq!(
        v("weir_checkpoints_failed_total", &[("pipeline", "p")]),
        Some(1.0)
    );
    assert_eq!(
        v("weir_checkpoints_abandoned_total", &[("pipeline", "p")]),
        Some(1.0)
    );
    for outcome in ["rejected", "accepted", "rolled_back"] {
        assert_eq!(
            v("weir_plugin_reloads_total", &[("outcome", outcome)]),
            Some(1.0),
            "{outcome}"
        );
    }
    assert_eq!(
        v("weir_operator_plugin_version", &[("version", "abc")]),
        Some(1.0)
    );
    assert_eq!(
        v(
            "weir_kafka_consumer_lag",
            &[("pipeline", "p"), ("partition", "2")]
        ),
        Some(40.0)
    );
    assert_eq!(
        v(
            "weir_kafka_source_pauses_total",
            &[("pipeline", "p"), ("source", "in"), ("subtask", "1")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "weir_kafka_sink_delivery_failures_total",
            &[("pipeline", "p"), ("sink", "out")]
        ),
        Some(1.0)
    );
    assert_eq!(v("weir_async_slots", &[("operator", "enrich")]), Some(8.0));
    assert_eq!(
        v("weir_async_in_flight", &[("operator", "enrich")]),
        Some(5.0)
    );
    assert_eq!(
        v("weir_async_call_seconds", &[("operator", "enrich")]),
        Some(1.0)
    );
    for name in [
        "weir_async_timeouts_total",
        "weir_async_retries_total",
        "weir_async_dead_lettered_total",
    ] {
        assert_eq!(
            v(
                name,
                &[("pipeline", "p"), ("operator", "enrich"), ("subtask", "0")]
            ),
            Some(1.0),
            "{name}"
        );
    }
}

#[test]
fn a_metric_outside_the_table_is_not_compliant() {
    let ((), counted) =
        capture(|| metrics::counter!("weir_made_up_total", "pipeline" => "p").increment(1));
    assert!(std::panic::catch_unwind(|| counted.assert_compliant()).is_err());
    let ((), counted) =
        capture(|| metrics::counter!("weir_checkpoints_failed_total", "sink" => "s").increment(1));
    assert!(
        std::panic::catch_unwind(|| counted.assert_compliant()).is_err(),
        "a missing pipeline label"
    );
}

/// The user documentation (README.md or a page under docs/).
fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "md") {
                files.push(path);
            }
        }
    }
    files.retain(|f| f.is_file());
    files
}

/// Issue 15: the metrics table of the docs is generated from
/// `metric::ALL`; `BLESS=1 cargo test -p weir-events` rewrites it.
#[test]
fn the_docs_list_exactly_the_metric_table() {
    let table = metric::markdown_table();
    let header = table.lines().next().unwrap();
    let mut found = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        if let Some(start) = lines.iter().position(|l| *l == header) {
            let end = lines[start..]
                .iter()
                .position(|l| !l.starts_with('|'))
                .map_or(lines.len(), |n| start + n);
            found.push((
                file,
                text.clone(),
                lines[start..end].join("\n") + "\n",
                start,
                end,
            ));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "exactly one documentation page holds the metrics table (a line `{header}`): {:?}",
        found.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let (file, text, documented, start, end) = found.pop().unwrap();
    if documented != table && std::env::var_os("BLESS").is_some() {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = lines[..start].join("\n") + "\n" + &table + &lines[end..].join("\n");
        if text.ends_with('\n') {
            out.push('\n');
        }
        std::fs::write(&file, out).unwrap();
        return;
    }
    assert_eq!(
        documented,
        table,
        "{} differs from weir_events::metric::ALL; run BLESS=1 cargo test -p weir-events to rewrite it",
        file.display()
    );
    // Metric names in the prose must exist too.
    let families: std::collections::BTreeSet<&str> = metric::ALL
        .iter()
        .map(|m| m.name.split('_').nth(1).unwrap())
        .collect();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(rest) = word.strip_prefix("weir_")
                && rest.split('_').next().is_some_and(|f| families.contains(f))
                && rest.contains('_')
            {
                assert!(
                    metric::find(word).is_some(),
                    "{} names `{word}`, which is no metric",
                    file.display()
                );
            }
        }
    }
}
