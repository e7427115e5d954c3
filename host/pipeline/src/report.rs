//! What a user reads about a pipeline, drawn in one place: the task table
//! that `weir status`, `weir top` and the live progress of `weir run` show,
//! the checkpoint line, and numbers in short form.

use crate::checkpoints::CheckpointStats;

use crate::handle::{CheckpointSummary, LiveStatus};

/// 1234567 -> "1.23M".
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

/// One line about the checkpoints of a run.
pub fn checkpoint_summary_line(c: &CheckpointSummary) -> String {
    let mut line = format!("checkpoints: {} complete, {} failed", c.completed, c.failed);
    if let (Some(id), Some(ms)) = (c.last_id, c.last_duration_ms) {
        line.push_str(&format!("; last #{id} took {ms} ms"));
        if let Some(bytes) = c.last_bytes {
            line.push_str(&format!(", {}B", human(bytes)));
        }
        if let Some(ms) = c.last_alignment_ms {
            line.push_str(&format!(", alignment {ms} ms"));
        }
        if let Some(bytes) = c.last_inflight_bytes.filter(|b| *b > 0) {
            line.push_str(&format!(", in-flight {}B", human(bytes)));
        }
    }
    if let Some(r) = c.restored_from {
        line.push_str(&format!("; resumed from #{r}"));
    }
    line
}

/// [`checkpoint_summary_line`] of a run's statistics.
pub fn checkpoint_line(s: &CheckpointStats) -> String {
    checkpoint_summary_line(&CheckpointSummary::from(s))
}

fn pct(ms: f64) -> String {
    format!("{:.0}%", (ms / 10.0).clamp(0.0, 100.0))
}

/// A bar of `width` cells: busy `#`, backpressured `=`, idle `.`.
fn bar(busy: f64, bp: f64, width: usize) -> String {
    let b = ((busy / 1000.0) * width as f64).round() as usize;
    let p = (((bp / 1000.0) * width as f64).round() as usize).min(width.saturating_sub(b));
    format!("{}{}{}", "#".repeat(b.min(width)), "=".repeat(p), ".".repeat(width.saturating_sub(b.min(width) + p)))
}

/// One input of a fan-in task.
fn input_line(i: &weir_metrics::InputView) -> String {
    let watermark = match i.watermark_ms {
        Some(w) if w >= 0 => humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(w as u64)).to_string(),
        _ => "none yet".into(),
    };
    let state = if i.idle {
        "; idle: left out of the watermark"
    } else if i.holds_watermark {
        "; holds the watermark back"
    } else {
        ""
    };
    format!(
        "  <- {:<17} {:>9}/s  {} waits {}  idle {}  watermark {watermark}{state}",
        i.from,
        human(i.records_in_per_second as u64),
        i.task,
        pct(i.upstream_backpressured),
        pct(i.idle_time)
    )
}

/// The status as lines of text.
pub fn status_lines(s: &LiveStatus, subtasks: bool) -> Vec<String> {
    let snap = &s.snapshot;
    let mut lines = vec![snap.bottleneck.sentence.clone()];
    for e in &snap.bottleneck.evidence {
        lines.push(format!("  {e}"));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<20} {:>3} {:>6} {:>5} {:>6} {:>5} {:>6} {:>6} {:>9}  {}",
        "task", "par", "status", "busy", "backpr", "idle", "inbuf", "outbuf", "in/s", "busy#  backpressured=  idle."
    ));
    for t in &snap.tasks {
        let n = t.subtasks.len().max(1) as f64;
        let rin: f64 = t.subtasks.iter().map(|x| x.records_in_per_second).sum();
        let in_pool = t.subtasks.iter().map(|x| x.in_pool).sum::<f64>() / n;
        let out_pool = t.subtasks.iter().map(|x| x.out_pool).sum::<f64>() / n;
        let marker = if snap.bottleneck.task.as_deref() == Some(&t.name) { " <" } else { "" };
        lines.push(format!(
            "{:<20} {:>3} {:>6} {:>5} {:>6} {:>5} {:>6} {:>6} {:>9}  [{}]{marker}",
            t.name,
            t.parallelism,
            t.status,
            pct(t.busy),
            pct(t.backpressured),
            pct(t.idle),
            format!("{:.0}%", in_pool * 100.0),
            format!("{:.0}%", out_pool * 100.0),
            human(rin as u64),
            bar(t.busy, t.backpressured, 20)
        ));
        // A fan-in's inputs, one line each: which waits, which is idle,
        // which holds the watermark back.
        if t.inputs.len() > 1 {
            for i in &t.inputs {
                lines.push(input_line(i));
            }
        }
        if subtasks && t.subtasks.len() > 1 {
            for x in &t.subtasks {
                lines.push(format!(
                    "  [{:<2}]{:>22} {:>5} {:>6} {:>5} {:>6} {:>6} {:>9}  [{}]{}",
                    x.subtask,
                    "",
                    pct(x.busy),
                    pct(x.backpressured),
                    pct(x.idle),
                    format!("{:.0}%", x.in_pool * 100.0),
                    format!("{:.0}%", x.out_pool * 100.0),
                    human(x.records_in_per_second as u64),
                    bar(x.busy, x.backpressured, 20),
                    if x.bottleneck { " <" } else { "" }
                ));
            }
        }
    }
    if let Some(c) = &s.checkpoints {
        lines.push(String::new());
        lines.push(checkpoint_summary_line(c));
    }
    for p in &s.plugins {
        if let Some(v) = p.history.last() {
            lines.push(format!("plugin {:<16} {} version {} ({} version{})", p.operator, p.plugin, &v.hash[..v.hash.len().min(12)], p.history.len(), if p.history.len() == 1 { "" } else { "s" }));
        }
    }
    lines
}
