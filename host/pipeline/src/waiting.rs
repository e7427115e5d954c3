//! Why a checkpoint has not completed yet, in words (issue 17).
//!
//! Under backpressure an aligned barrier waits behind every buffer queued
//! ahead of it, and a checkpoint that completes in milliseconds on an idle
//! pipeline takes a minute. The user sees no recovery point and sinks that
//! publish nothing; this module says where the barrier is and how long it
//! will take: "checkpoint 7 has waited 12 s for alignment at enrich[1]:
//! 6,400 records are queued ahead of its barrier, ~9 s at the current
//! rate; enable unaligned checkpoints or fix enrich".
//!
//! The barrier of a checkpoint is where the acknowledgements stop: a task
//! that has not acknowledged while every task feeding it has is the one
//! its barrier is queued at (its *frontier*). Of those, the one with the
//! longest estimated wait (records queued in its input gate over the
//! records it takes per second) is named. A source on the frontier is
//! waiting for an output buffer to send its barrier. The figures are the
//! task metrics the monitor already samples, read when asked, so a
//! pipeline pays nothing for this until someone looks.

use crate::checkpoints::PendingCheckpoint;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_metrics::GraphTask;

/// A checkpoint pending for less than this is not reported: an aligned
/// checkpoint of a pipeline that keeps up completes in milliseconds.
pub const REPORTED_AFTER: Duration = Duration::from_secs(2);

/// A checkpoint that waits, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointWait {
    /// The checkpoint's id.
    pub id: u64,
    /// `checkpoint` or `savepoint`.
    pub kind: String,
    /// Time since it was triggered, in milliseconds.
    pub waited_ms: u64,
    /// The task its barrier is queued at, `name[subtask]`.
    pub task: String,
    /// Records queued ahead of the barrier in that task's input.
    pub queued_records: u64,
    /// At the task's current rate, how long those take, in milliseconds
    /// (`None`: the task takes no records now).
    pub eta_ms: Option<u64>,
    /// What to do about it.
    pub advice: String,
    /// All of it in one sentence.
    pub sentence: String,
}

/// One task subtask as the explanation sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskFigures<'a> {
    /// Its chain (an index into the graph).
    pub chain: usize,
    /// Chain name.
    pub name: &'a str,
    /// Subtask index.
    pub subtask: u32,
    /// Records waiting in its input gate now.
    pub queued_records: u64,
    /// Records it takes per second (windowed).
    pub rate: f64,
}

/// Explains `pending`, or `None` when it is younger than
/// [`REPORTED_AFTER`] or every task has acknowledged it (it is being
/// written). `tasks` is in the coordinator's task order; `bottleneck` is
/// the task the analysis names, if any (what to fix); `unaligned` tells
/// whether the pipeline's checkpoints may overtake the queues already.
pub fn explain(pending: &PendingCheckpoint, graph: &[GraphTask], tasks: &[TaskFigures<'_>], bottleneck: Option<&str>, unaligned: bool) -> Option<CheckpointWait> {
    let waited = pending.started.elapsed();
    if waited < REPORTED_AFTER {
        return None;
    }
    let waiting_chain = |c: usize| pending.waiting.iter().any(|&t| tasks.get(t).is_some_and(|f| f.chain == c));
    let eta = |f: &TaskFigures<'_>| (f.rate >= 0.5).then(|| (f.queued_records as f64 / f.rate * 1000.0) as u64);
    let frontier = pending
        .waiting
        .iter()
        .filter_map(|&t| tasks.get(t))
        .filter(|f| graph.get(f.chain).is_none_or(|g| g.upstreams.iter().all(|&u| !waiting_chain(u))))
        .max_by_key(|f| (eta(f).unwrap_or(u64::MAX), f.queued_records))?;
    let source = graph.get(frontier.chain).is_some_and(|g| g.upstreams.is_empty());
    let kind = if pending.savepoint { "savepoint" } else { "checkpoint" };
    let fix = bottleneck.unwrap_or(frontier.name);
    let advice = if pending.savepoint {
        format!("savepoints are always aligned; fix {fix}")
    } else if unaligned {
        format!("fix {fix}")
    } else {
        format!("enable unaligned checkpoints or fix {fix}")
    };
    let task = format!("{}[{}]", frontier.name, frontier.subtask);
    let secs = waited.as_secs();
    let eta_ms = eta(frontier);
    let sentence = if source {
        format!("{kind} {} has waited {secs} s at {task}, whose output is backpressured: its barrier waits for a free buffer; {advice}", pending.id)
    } else {
        let at = match eta_ms {
            Some(ms) => format!("~{} s at the current rate", (ms + 500) / 1000),
            None => "and none are moving".to_owned(),
        };
        let records = grouped(frontier.queued_records);
        let what = if frontier.queued_records == 1 { "record is" } else { "records are" };
        format!("{kind} {} has waited {secs} s for alignment at {task}: {records} {what} queued ahead of its barrier, {at}; {advice}", pending.id)
    };
    Some(CheckpointWait {
        id: pending.id,
        kind: kind.to_owned(),
        waited_ms: waited.as_millis() as u64,
        task,
        queued_records: frontier.queued_records,
        eta_ms,
        advice,
        sentence,
    })
}

/// 6400 -> "6,400".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn graph() -> Vec<GraphTask> {
        let t = |name: &str, upstream: Option<usize>| GraphTask { name: name.into(), upstreams: upstream.into_iter().collect(), hash_input: false };
        vec![t("gen", None), t("filter", Some(0)), t("enrich", Some(1)), t("sum", Some(2))]
    }

    fn figures() -> Vec<TaskFigures<'static>> {
        let f = |chain, name, subtask, queued_records, rate| TaskFigures { chain, name, subtask, queued_records, rate };
        vec![
            f(0, "gen", 0, 0, 900.0),
            f(1, "filter", 0, 1300, 450.0),
            f(1, "filter", 1, 5200, 450.0),
            f(2, "enrich", 0, 6400, 710.0),
            f(2, "enrich", 1, 6400, 700.0),
            f(3, "sum", 0, 0, 700.0),
            f(3, "sum", 1, 0, 700.0),
        ]
    }

    fn pending(waiting: Vec<usize>, waited: Duration, savepoint: bool) -> PendingCheckpoint {
        PendingCheckpoint { id: 7, savepoint, started: Instant::now() - waited, waiting, unaligned_mode: false }
    }

    #[test]
    fn names_the_task_its_barrier_is_queued_at_with_the_records_ahead() {
        // The filters have acknowledged; both enrich subtasks wait, so the
        // barrier is queued at enrich, and the slower of the two is named.
        let w = explain(&pending(vec![3, 4, 5, 6], Duration::from_secs(12), false), &graph(), &figures(), Some("enrich"), false).unwrap();
        assert_eq!(w.task, "enrich[1]");
        assert_eq!(
            w.sentence,
            "checkpoint 7 has waited 12 s for alignment at enrich[1]: 6,400 records are queued ahead of its barrier, ~9 s at the current rate; \
             enable unaligned checkpoints or fix enrich"
        );
        assert_eq!(w.eta_ms, Some(9142));
    }

    #[test]
    fn a_task_whose_upstream_still_waits_is_not_the_frontier() {
        let w = explain(&pending(vec![2, 3, 4, 5, 6], Duration::from_secs(3), false), &graph(), &figures(), None, false).unwrap();
        assert_eq!(w.task, "filter[1]", "{w:?}");
        assert!(w.sentence.ends_with("or fix filter"), "{}", w.sentence);
    }

    #[test]
    fn a_source_waits_for_an_output_buffer_and_a_savepoint_says_it_is_aligned() {
        let w = explain(&pending(vec![0, 1, 2], Duration::from_secs(5), true), &graph(), &figures(), Some("enrich"), false).unwrap();
        assert_eq!(w.sentence, "savepoint 7 has waited 5 s at gen[0], whose output is backpressured: its barrier waits for a free buffer; savepoints are always aligned; fix enrich");
    }

    #[test]
    fn young_or_fully_acknowledged_checkpoints_are_not_reported() {
        assert_eq!(explain(&pending(vec![3], Duration::from_millis(500), false), &graph(), &figures(), None, false), None);
        assert_eq!(explain(&pending(vec![], Duration::from_secs(30), false), &graph(), &figures(), None, false), None);
    }

    #[test]
    fn no_rate_means_no_estimate() {
        let mut f = figures();
        f[3].rate = 0.0;
        let w = explain(&pending(vec![3], Duration::from_secs(4), false), &graph(), &f, None, true).unwrap();
        assert!(w.sentence.contains("6,400 records are queued ahead of its barrier, and none are moving; fix enrich"), "{}", w.sentence);
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }
}
