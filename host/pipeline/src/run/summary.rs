//! What a finished run did: records per vertex, each task's time split,
//! end-to-end latency at the sinks, checkpoints.

use super::{Latency, RunSummary, VertexSummary};
use crate::checkpoints::Coordinator;
use crate::config::Pipeline;
use crate::plan::{Plan, VertexKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use weir_metrics::Monitor;
use weir_task::StageMetrics;

pub(super) fn summarize(p: &Pipeline, plan: &Plan, metrics: &[Vec<Arc<StageMetrics>>], monitor: &Monitor, coordinator: Option<&Coordinator>, elapsed: Duration) -> RunSummary {
    let vertices = plan
        .vertices
        .iter()
        .zip(metrics)
        .map(|(v, ms)| {
            let sum = |f: fn(&StageMetrics) -> u64| ms.iter().map(|m| f(m)).sum::<u64>();
            VertexSummary {
                name: v.name.clone(),
                kind: v.kind_name(),
                parallelism: v.parallelism,
                records_in: sum(|m| m.records_in.load(Ordering::Relaxed)),
                records_out: sum(|m| m.records_out.load(Ordering::Relaxed)),
                bytes_in: sum(|m| m.bytes_in.load(Ordering::Relaxed)),
                skipped: sum(|m| m.records_skipped.load(Ordering::Relaxed)),
            }
        })
        .collect();
    let tasks = monitor
        .registry()
        .tasks
        .iter()
        .map(|t| {
            let (idle, bp, total) = t.metrics.times();
            let total = total.max(1) as f64;
            let busy = (total - idle as f64 - bp as f64).max(0.0);
            (format!("{}[{}]", t.chain_name, t.subtask), busy / total, idle as f64 / total, bp as f64 / total)
        })
        .collect();
    let merged = weir_task::LatencyHistogram::default();
    for (v, ms) in plan.vertices.iter().zip(metrics) {
        if matches!(v.kind, VertexKind::Sink(_)) {
            for m in ms {
                merged.merge(&m.latency);
            }
        }
    }
    let latency = merged.quantile(0.5).zip(merged.quantile(0.99)).map(|(p50_us, p99_us)| Latency { count: merged.count(), p50_us, p99_us });
    let checkpoints = coordinator.map(|c| c.stats().lock().expect("stats lock").clone());
    RunSummary { pipeline: p.name.clone(), elapsed, vertices, tasks, latency, checkpoints }
}
