//! The control socket of a running pipeline: `weir savepoint` talks to
//! `weir run` through it.
//!
//! A running pipeline listens on the Unix socket `_control.sock` in its
//! checkpoint directory (`data/checkpoints/PIPELINE/`). The protocol is one
//! line each way: the client writes `savepoint`, the pipeline answers
//! `ok DIR` once the savepoint is complete or `error MESSAGE`; the client
//! writes `status` (what `weir status` does), the pipeline answers
//! `ok JSON` with its [`LiveStatus`]: job graph, figures, bottleneck. The socket
//! also keeps two processes from running one pipeline over the same
//! checkpoints: a second `weir run` finds it answering and refuses to start.

use crate::checkpoints::SavepointReply;
use crate::handle::{LiveStatus, RunHandle};
use crossbeam_channel::Receiver;
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

/// The control socket of a run: savepoint requests come out of it; dropped
/// when the run ends, it stops answering and removes the socket file (so a
/// later run in the same process, as under `weir serve`, can take over).
#[derive(Debug)]
pub struct Control {
    requests: Receiver<SavepointReply>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    listening: bool,
}

impl Control {
    /// The next savepoint request, if any.
    pub fn try_recv(&self) -> Result<SavepointReply, crossbeam_channel::TryRecvError> {
        self.requests.try_recv()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if self.listening {
            self.stop.store(true, Ordering::Release);
            // Wake the accepting thread so it sees the flag.
            let _ = UnixStream::connect(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Starts answering on the control socket of the pipeline whose checkpoint
/// directory is `dir`; savepoint requests come out of the returned
/// [`Control`]. Fails when another process already serves it.
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
    let (tx, rx) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let mut listening = false;
    match UnixListener::bind(&path) {
        Ok(listener) => {
            listening = true;
            let stopped = stop.clone();
            std::thread::Builder::new()
                .name("weir-control".into())
                .spawn(move || {
                    for conn in listener.incoming().flatten() {
                        if stopped.load(Ordering::Acquire) {
                            break;
                        }
                        let tx = tx.clone();
                        let handle = handle.clone();
                        let _ = std::thread::Builder::new().name("weir-control-conn".into()).spawn(move || answer(conn, &tx, &handle));
                    }
                })
                .map_err(|e| format!("cannot start the control thread: {e}"))?;
        }
        // Savepoints on demand are a convenience; the run goes on without.
        Err(e) => tracing::warn!("cannot listen on {} ({e}); `weir savepoint` will not reach this run", path.display()),
    }
    Ok(Control { requests: rx, path, stop, listening })
}

fn answer(conn: UnixStream, requests: &crossbeam_channel::Sender<SavepointReply>, handle: &RunHandle) {
    let mut line = String::new();
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let response = match line.trim() {
        "savepoint" => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if requests.send(tx).is_err() {
                "error the pipeline is shutting down".to_owned()
            } else {
                match rx.recv_timeout(SAVEPOINT_WAIT) {
                    Ok(Ok(dir)) => format!("ok {}", dir.display()),
                    Ok(Err(e)) => format!("error {e}"),
                    Err(_) => "error the pipeline stopped before the savepoint completed".to_owned(),
                }
            }
        }
        "status" => match handle.status() {
            Some(status) => format!("ok {}", serde_json::to_string(&status).expect("status serializes")),
            None => "error the pipeline is starting or stopping; ask again".to_owned(),
        },
        other => format!("error unknown request {other:?}; the requests are `savepoint` and `status`"),
    };
    let mut conn = conn;
    let _ = writeln!(conn, "{}", response.replace('\n', " "));
}

/// Asks the pipeline running with checkpoint directory `dir` for a
/// savepoint and waits for it; returns its directory.
pub fn request_savepoint(dir: &Path, pipeline: &str) -> Result<PathBuf, String> {
    let path = dir.join(SOCKET);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        format!(
            "pipeline `{pipeline}` is not running, or runs with checkpoints off: nothing answers on {} ({e}). \
             Start it with `weir run`, then ask again",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(SAVEPOINT_WAIT + Duration::from_secs(5))).map_err(|e| e.to_string())?;
    writeln!(conn, "savepoint").map_err(|e| format!("writing to {}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).map_err(|e| format!("reading from {}: {e}", path.display()))?;
    let line = line.trim();
    if let Some(dir) = line.strip_prefix("ok ") {
        Ok(PathBuf::from(dir))
    } else if let Some(e) = line.strip_prefix("error ") {
        Err(format!("the savepoint failed: {e}"))
    } else {
        Err(format!("unexpected answer from {}: {line:?}", path.display()))
    }
}

/// Asks the pipeline running with checkpoint directory `dir` for its live
/// status (what `weir status` shows).
pub fn request_status(dir: &Path, pipeline: &str) -> Result<LiveStatus, String> {
    let path = dir.join(SOCKET);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        format!(
            "pipeline `{pipeline}` is not running, or runs with checkpoints off: nothing answers on {} ({e}). \
             Start it with `weir run`, or ask `weir serve` with --server",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    writeln!(conn, "status").map_err(|e| format!("writing to {}: {e}", path.display()))?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).map_err(|e| format!("reading from {}: {e}", path.display()))?;
    let line = line.trim();
    if let Some(json) = line.strip_prefix("ok ") {
        serde_json::from_str(json).map_err(|e| format!("unexpected status from {}: {e}", path.display()))
    } else if let Some(e) = line.strip_prefix("error ") {
        Err(format!("pipeline `{pipeline}`: {e}"))
    } else {
        Err(format!("unexpected answer from {}: {line:?}", path.display()))
    }
}
