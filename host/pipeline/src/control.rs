//! The control socket of a running pipeline: `weir savepoint`, `weir
//! reload` and `weir plugins` talk to `weir run` through it.
//!
//! A running pipeline listens on the Unix socket `_control.sock` in its
//! checkpoint directory (`data/checkpoints/PIPELINE/`). The protocol is one
//! line each way; the pipeline answers `ok ...` or `error MESSAGE`:
//!
//! | request         | answer |
//! |-----------------|--------|
//! | `savepoint`     | `ok DIR` once the savepoint is complete |
//! | `reload [OP]`   | `ok [EVENTS]`: the reload attempts made (JSON array of [`ReloadEvent`]) |
//! | `plugins`       | `ok STATUS`: versions and reload history (JSON [`ReloadStatus`]) |
//! | `status`        | `ok STATUS`: job graph, figures and bottleneck (JSON [`LiveStatus`]; what `weir status` shows) |
//!
//! With checkpoints on, the socket also keeps two processes from running
//! one pipeline over the same checkpoints: a second `weir run` finds it
//! answering and refuses to start.
//!
//! The socket is a front end of the run's [`RunHandle`], like `weir
//! serve`'s API: every request goes through the handle, the one way into a
//! running pipeline.

use crate::handle::{LiveStatus, RunHandle};
use crate::reload::{ReloadEvent, ReloadStatus};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The socket's file name in the pipeline's checkpoint directory.
pub const SOCKET: &str = "_control.sock";

/// Longest a client waits for a savepoint.
const SAVEPOINT_WAIT: Duration = Duration::from_secs(600);

/// Stops answering on the control socket when dropped (the end of a run),
/// and removes the socket file.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    listening: bool,
}

impl Drop for Control {
    fn drop(&mut self) {
        if self.listening {
            self.stop.store(true, Ordering::Relaxed);
            // Wake the accept loop so it sees the flag.
            let _ = UnixStream::connect(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Starts answering on the control socket of the pipeline whose checkpoint
/// directory is `dir`, through the run's `handle`. Fails when another
/// process already serves it.
pub fn serve(dir: &Path, pipeline: &str, handle: RunHandle) -> Result<Control, String> {
    let path = dir.join(SOCKET);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "pipeline `{pipeline}` is already running: another weir process answers on {}. \
                 Two runs would overwrite each other's checkpoints; stop the other one first",
                path.display()
            ));
        }
        // Left behind by a process that was killed.
        let _ = std::fs::remove_file(&path);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut listening = false;
    match UnixListener::bind(&path) {
        Ok(listener) => {
            listening = true;
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weir-control".into())
                .spawn(move || {
                    for conn in listener.incoming().flatten() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let handle = handle.clone();
                        let _ = std::thread::Builder::new().name("weir-control-conn".into()).spawn(move || answer(conn, &handle));
                    }
                })
                .map_err(|e| format!("cannot start the control thread: {e}"))?;
        }
        // Savepoints on demand are a convenience; the run goes on without.
        Err(e) => tracing::warn!("cannot listen on {} ({e}); `weir savepoint` will not reach this run", path.display()),
    }
    Ok(Control { path, stop, listening })
}

fn answer(conn: UnixStream, handle: &RunHandle) {
    let reload = handle.reload();
    let mut line = String::new();
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let response = match line.trim() {
        "savepoint" => match handle.savepoint().recv_timeout(SAVEPOINT_WAIT) {
            Ok(Ok(dir)) => format!("ok {}", dir.display()),
            Ok(Err(e)) => format!("error {e}"),
            Err(_) => "error the pipeline stopped before the savepoint completed".to_owned(),
        },
        "plugins" => format!("ok {}", serde_json::to_string(&reload.status()).expect("plain data")),
        "status" => match handle.status() {
            Some(status) => format!("ok {}", serde_json::to_string(&status).expect("status serializes")),
            None => "error the pipeline is starting or stopping; ask again".to_owned(),
        },
        r if r == "reload" || r.starts_with("reload ") => {
            let operator = r.strip_prefix("reload").map(str::trim).filter(|o| !o.is_empty());
            match reload.request_reload(operator) {
                Ok(events) => format!("ok {}", serde_json::to_string(&events).expect("plain data")),
                Err(e) => format!("error {e}"),
            }
        }
        other => format!("error unknown request {other:?}; requests are `savepoint`, `status`, `reload [OPERATOR]` and `plugins`"),
    };
    let mut conn = conn;
    let _ = writeln!(conn, "{}", response.replace('\n', " "));
}

/// Sends one request line to the pipeline running with checkpoint
/// directory `dir`; returns what follows `ok ` or the error.
fn request(dir: &Path, pipeline: &str, line: &str) -> Result<String, String> {
    let path = dir.join(SOCKET);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        format!(
            "pipeline `{pipeline}` is not running: nothing answers on {} ({e}). \
             Start it with `weir run`, then ask again",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(SAVEPOINT_WAIT + Duration::from_secs(5))).map_err(|e| e.to_string())?;
    writeln!(conn, "{line}").map_err(|e| format!("writing to {}: {e}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer).map_err(|e| format!("reading from {}: {e}", path.display()))?;
    let answer = answer.trim();
    if let Some(ok) = answer.strip_prefix("ok ") {
        Ok(ok.to_owned())
    } else if let Some(e) = answer.strip_prefix("error ") {
        Err(e.to_owned())
    } else {
        Err(format!("unexpected answer from {}: {answer:?}", path.display()))
    }
}

/// Asks the pipeline running with checkpoint directory `dir` for a
/// savepoint and waits for it; returns its directory.
pub fn request_savepoint(dir: &Path, pipeline: &str) -> Result<PathBuf, String> {
    match request(dir, pipeline, "savepoint") {
        Ok(dir) => Ok(PathBuf::from(dir)),
        Err(e) if e.contains("nothing answers") => Err(e.replace("is not running:", "is not running, or runs with checkpoints off:")),
        Err(e) => Err(format!("the savepoint failed: {e}")),
    }
}

/// Asks a running pipeline to reload the plugin of `operator` (every
/// operator with `None`) from its file now; returns the attempts made.
pub fn request_reload(dir: &Path, pipeline: &str, operator: Option<&str>) -> Result<Vec<ReloadEvent>, String> {
    let line = match operator {
        Some(op) => format!("reload {op}"),
        None => "reload".to_owned(),
    };
    let json = request(dir, pipeline, &line)?;
    serde_json::from_str(&json).map_err(|e| format!("unexpected answer to `reload`: {e}"))
}

/// A running pipeline's plugin versions and reload history.
pub fn request_plugins(dir: &Path, pipeline: &str) -> Result<ReloadStatus, String> {
    let json = request(dir, pipeline, "plugins")?;
    serde_json::from_str(&json).map_err(|e| format!("unexpected answer to `plugins`: {e}"))
}

/// Asks the pipeline running with checkpoint directory `dir` for its live
/// status (what `weir status` shows).
pub fn request_status(dir: &Path, pipeline: &str) -> Result<LiveStatus, String> {
    let json = request(dir, pipeline, "status").map_err(|e| format!("pipeline `{pipeline}`: {e}"))?;
    serde_json::from_str(&json).map_err(|e| format!("unexpected answer to `status`: {e}"))
}
