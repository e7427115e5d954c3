//! Progress while a pipeline runs in the foreground: on a terminal, the
//! same table `weir status` draws ([`crate::report::status_lines`]),
//! redrawn in place every second; otherwise a plain line every two
//! seconds, for logs.

use super::Progress;
use crate::report::{checkpoint_summary_line, human, status_lines};
use crate::RunHandle;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub(super) struct ProgressPrinter {
    mode: Progress,
    tty: bool,
    name: String,
    last: Instant,
    lines: usize,
}

impl ProgressPrinter {
    pub fn new(mode: Progress, name: &str) -> Self {
        Self { mode, tty: std::io::stderr().is_terminal(), name: name.to_owned(), last: Instant::now(), lines: 0 }
    }

    pub fn tick(&mut self, elapsed: Duration, handle: &RunHandle) {
        if self.mode == Progress::Quiet {
            return;
        }
        let every = if self.tty { Duration::from_secs(1) } else { Duration::from_secs(2) };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let Some(status) = handle.status() else { return };
        let snap = &status.snapshot;
        let read: f64 = snap.vertices.iter().filter(|v| v.kind == "source").map(|v| v.records_out as f64).sum();
        let rate: f64 = snap.vertices.iter().filter(|v| v.kind == "source").map(|v| v.records_out_per_second).sum();
        let mut err = std::io::stderr().lock();
        if !self.tty {
            let mut line = format!("{}  {:>6.1}s  {} read ({}/s)", self.name, elapsed.as_secs_f64(), human(read as u64), human(rate as u64));
            for v in snap.vertices.iter().filter(|v| v.kind != "source") {
                line.push_str(&format!("  {} {}", v.name, human(v.records_in)));
            }
            if let Some(c) = &status.checkpoints {
                line.push_str(&format!("  {}", checkpoint_summary_line(c)));
            }
            let _ = writeln!(err, "{line}");
            return;
        }
        // A live table, redrawn in place.
        let mut out = String::new();
        if self.lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.lines));
        }
        let mut lines = vec![format!("{}  {:.0}s  {} records read ({}/s)", self.name, elapsed.as_secs_f64(), human(read as u64), human(rate as u64))];
        lines.extend(status_lines(&status, false));
        for l in &lines {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        self.lines = lines.len();
        let _ = write!(err, "{out}");
        let _ = err.flush();
    }
}
