//! `weir plugins` and `weir reload`: plugin versions and hot reload.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use weir_pipeline::{control, ReloadEvent, ReloadStatus};
use weir_wasm::reload::{short, Candidate};

fn ago(ms: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// One line per attempt, for both commands.
fn event_line(e: &ReloadEvent) -> String {
    let mut line = format!(
        "  #{:<3} {:>8}  {:<14} {} -> {}  {:<11}",
        e.id,
        ago(e.at_ms),
        e.operator,
        short(&e.from),
        short(&e.to),
        e.outcome.as_str()
    );
    match e.outcome {
        weir_pipeline::reload::Outcome::Accepted => {
            line.push_str(&format!(
                " {}/{} subtasks swapped, compile {} ms{}, open {} ms",
                e.swapped,
                e.parallelism,
                e.load_ms,
                if e.cached { " (cached)" } else { "" },
                e.open_ms
            ));
            if let Some(l) = e.swap_latency_ms {
                line.push_str(&format!(", live {l} ms after the last write"));
            }
            if e.migrated {
                line.push_str(", migrate hook called");
            }
        }
        weir_pipeline::reload::Outcome::Rejected | weir_pipeline::reload::Outcome::RolledBack => {
            line.push(' ');
            line.push_str(&e.reason.replace('\n', " "));
        }
    }
    line
}

/// `weir plugins PIPELINE`.
pub fn list(pipeline: &Path, plugin_dir: Option<PathBuf>, json: bool) -> ExitCode {
    let p = match weir_pipeline::Pipeline::load(pipeline, &weir_pipeline::LoadOptions::new(weir_connectors::builtin()).plugin_dir(plugin_dir)) {
        Ok(p) => p,
        Err(e) => return crate::fail(2, &e.to_string()),
    };
    let live = control::request_plugins(&p.checkpoint.dir.join(&p.name), &p.name);
    if json {
        return match live {
            Ok(status) => {
                println!("{}", serde_json::to_string_pretty(&status).expect("plain data"));
                ExitCode::SUCCESS
            }
            Err(e) => crate::fail(1, &e),
        };
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&p.plugin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|f| weir_wasm::reload::is_plugin_file(f))
        .collect();
    files.sort();
    println!("plugin files in {}:", p.plugin_dir.display());
    println!("  {:<20} {:>10}  {:<12}  {:<10}  used by", "plugin", "bytes", "version", "modified");
    for f in &files {
        let Ok(c) = Candidate::read(f) else { continue };
        let modified = std::fs::metadata(f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(|| "?".to_owned(), |d| ago(d.as_millis() as u64));
        let users: Vec<&str> = p.operators.iter().filter(|o| o.plugin.replace('_', "-") == c.name).map(|o| o.name.as_str()).collect();
        println!("  {:<20} {:>10}  {:<12}  {:<10}  {}", c.name, c.bytes.len(), short(&c.hash), modified, if users.is_empty() { "-".to_owned() } else { users.join(", ") });
    }
    match live {
        Ok(status) => print_status(&status),
        Err(e) => println!("\npipeline `{}` is not running ({e}); no live versions or reload history", p.name),
    }
    ExitCode::SUCCESS
}

fn print_status(s: &ReloadStatus) {
    let watching = s.watching.as_ref().map_or_else(|| "not watching the plugin directory".to_owned(), |d| format!("watching {}", d.display()));
    println!("\npipeline `{}` is running (reload = \"{}\", {watching}):", s.pipeline, s.policy);
    println!("  {:<14} {:<20} {:<12}  {:<10}  subtasks", "operator", "plugin", "version", "since");
    for o in &s.operators {
        let on = o.subtasks.iter().filter(|v| **v == o.version).count();
        let mut others: Vec<&str> = o.subtasks.iter().filter(|v| **v != o.version).map(|v| short(v)).collect();
        others.dedup();
        let subtasks = if others.is_empty() {
            format!("{on}/{} on it", o.subtasks.len())
        } else {
            format!("{on}/{} on it, others on {}", o.subtasks.len(), others.join(", "))
        };
        println!("  {:<14} {:<20} {:<12}  {:<10}  {subtasks}", o.operator, o.plugin, short(&o.version), ago(o.since_ms));
    }
    if s.history.is_empty() {
        println!("\nno reloads yet");
    } else {
        println!("\nreload history (oldest first):");
        for e in &s.history {
            println!("{}", event_line(e));
        }
    }
}

/// `weir reload PIPELINE [--operator NAME]`.
pub fn reload(pipeline: &Path, operator: Option<&str>) -> ExitCode {
    let p = match weir_pipeline::Pipeline::load(pipeline, &weir_pipeline::LoadOptions::new(weir_connectors::builtin())) {
        Ok(p) => p,
        Err(e) => return crate::fail(2, &e.to_string()),
    };
    match control::request_reload(&p.checkpoint.dir.join(&p.name), &p.name, operator) {
        Ok(events) if events.is_empty() => {
            println!("nothing to reload: every plugin file holds the version already running");
            ExitCode::SUCCESS
        }
        Ok(events) => {
            for e in &events {
                println!("{}", event_line(e));
            }
            if events.iter().any(|e| e.outcome == weir_pipeline::reload::Outcome::Rejected) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => crate::fail(1, &e),
    }
}
