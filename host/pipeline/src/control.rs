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
//! With checkpoints on, a run first *claims* the pipeline: it holds an
//! advisory lock (`flock`) on `_run.lock` in the checkpoint directory for
//! its whole life, with its pid written in the file. A second `weir run`
//! (or `weir serve`) of the pipeline finds the lock held and refuses to
//! start, naming the pid and the file. The lock does not depend on the
//! socket: a socket path too long to bind (over 107 bytes) only costs the
//! control channel, never the guard, and the kernel releases the lock of a
//! killed process.
//!
//! The socket is this user's only: it is bound in a fresh 0700 directory,
//! made 0600 and renamed into place (so the umask does not matter), and a
//! peer whose uid is not ours (`SO_PEERCRED`) is refused. A request is one
//! line of at most [`MAX_LINE`] bytes sent within [`READ_TIMEOUT`]; at most
//! [`MAX_CONNECTIONS`] requests are answered at once.
//!
//! The socket is a front end of the run's [`RunHandle`], like `weir
//! serve`'s API: every request goes through the handle, the one way into a
//! running pipeline.

use crate::handle::{LiveStatus, RunHandle};
use crate::reload::{ReloadEvent, ReloadStatus};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The socket's file name in the pipeline's checkpoint directory.
pub const SOCKET: &str = "_control.sock";

/// The lock file that claims a pipeline for one run, in its checkpoint directory.
pub const LOCK: &str = "_run.lock";

/// Longest request line, in bytes.
pub const MAX_LINE: usize = 4096;

/// Longest a client may take to send its request line (and to take an answer).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests answered at once; more are told to ask again.
pub const MAX_CONNECTIONS: usize = 16;

/// Longest a client waits for a savepoint.
const SAVEPOINT_WAIT: Duration = Duration::from_secs(600);

/// Stops answering on the control socket when dropped (the end of a run),
/// removes the socket file and releases the claim on the pipeline.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    listening: bool,
    /// The locked `_run.lock`, held for the run's life (closing it unlocks).
    _claim: Option<std::fs::File>,
}

/// Claims the pipeline whose checkpoint directory is `dir`: locks
/// `_run.lock` there (without waiting) and writes our pid into it.
fn claim(dir: &Path, pipeline: &str) -> Result<std::fs::File, String> {
    let path = dir.join(LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open the run lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let pid = std::process::id();
            file.set_len(0)
                .and_then(|()| std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)))
                .and_then(|_| writeln!(file, "{pid}"))
                .map_err(|e| format!("cannot write the run lock {}: {e}", path.display()))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let who = holder.trim().parse::<u32>().map_or_else(|_| "another process".to_owned(), |pid| format!("process {pid}"));
            Err(format!(
                "pipeline `{pipeline}` is already running: {who} holds the run lock {}. \
                 Two runs would overwrite each other's checkpoints; stop the other one first",
                path.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock the run lock {}: {e}", path.display())),
    }
}

/// Binds the socket at `path` so that only this user can connect, whatever
/// the umask: bound inside a fresh directory only we may enter, made 0600,
/// then renamed into place.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // No longer than SOCKET, so it binds wherever the socket itself would.
    let private = dir.join(format!(".s{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let tmp = private.join("c");
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Why the peer of `conn` may not use the socket, if it may not: another
/// user (root included) than the one running the pipeline.
fn peer_problem(conn: &UnixStream) -> Option<String> {
    let ours = rustix::process::getuid().as_raw();
    match rustix::net::sockopt::socket_peercred(conn) {
        Ok(peer) if peer.uid.as_raw() == ours => None,
        Ok(peer) => Some(format!(
            "the control socket answers only its own user (uid {ours}); uid {} (pid {}) was refused",
            peer.uid.as_raw(),
            peer.pid.as_raw_nonzero()
        )),
        Err(e) => Some(format!("cannot tell who connected to the control socket ({e}); refused")),
    }
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
/// directory is `dir`, through the run's `handle`. With `claim`, first
/// claims the pipeline for this run (see the module) and fails when
/// another process holds it; the socket is then a convenience whose bind
/// failure is only logged. Without `claim`, fails when another process
/// already answers on the socket.
pub fn serve(dir: &Path, pipeline: &str, handle: RunHandle, claim_it: bool) -> Result<Control, String> {
    let claimed = if claim_it { Some(claim(dir, pipeline)?) } else { None };
    let path = dir.join(SOCKET);
    if std::fs::symlink_metadata(&path).is_ok() {
        if claimed.is_none() && UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "pipeline `{pipeline}` is already running: another weir process answers on {}. \
                 Two runs would overwrite each other's checkpoints; stop the other one first",
                path.display()
            ));
        }
        // Left behind by a process that was killed (with the claim held,
        // nothing else can be serving it).
        let _ = std::fs::remove_file(&path);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut listening = false;
    match bind_private(&path) {
        Ok(listener) => {
            listening = true;
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weir-control".into())
                .spawn(move || accept_loop(&listener, &stop, &handle))
                .map_err(|e| format!("cannot start the control thread: {e}"))?;
        }
        // The control channel is a convenience; the claim (if any) holds
        // without it, and the run goes on.
        Err(e) => tracing::warn!(
            "cannot listen on {} ({e}); `weir savepoint`, `weir status` and `weir reload` will not reach this run{}",
            path.display(),
            if path.as_os_str().len() > 107 { " (the path is longer than the 107 bytes a socket path may have: use a shorter checkpoint.dir)" } else { "" }
        ),
    }
    Ok(Control { path, stop, listening, _claim: claimed })
}

fn accept_loop(listener: &UnixListener, stop: &AtomicBool, handle: &RunHandle) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors: pause rather than spin.
                tracing::debug!("the control socket cannot accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = conn.set_write_timeout(Some(READ_TIMEOUT));
        if let Some(why) = peer_problem(&conn) {
            tracing::warn!("{why}");
            let _ = writeln!(conn, "error {why}");
            // Take (briefly) what the client sends, so that it reads the
            // answer instead of failing to write into a closed socket.
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = std::io::copy(&mut (&conn).take(MAX_LINE as u64), &mut std::io::sink());
            continue;
        }
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = writeln!(conn, "error {MAX_CONNECTIONS} requests are being answered; ask again");
            continue;
        }
        let (handle, done) = (handle.clone(), open.clone());
        let spawned = std::thread::Builder::new().name("weir-control-conn".into()).spawn(move || {
            answer(conn, &handle);
            done.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `savepoint`: take a savepoint and answer its directory.
    Savepoint,
    /// `plugins`: the plugin versions and reload history.
    Plugins,
    /// `status`: the live status.
    Status,
    /// `reload [OPERATOR]`: reload one operator's plugin, or every one.
    Reload(Option<String>),
}

impl Request {
    /// Parses a request line (surrounding white space ignored).
    pub fn parse(line: &str) -> Result<Request, String> {
        Ok(match line.trim() {
            "savepoint" => Request::Savepoint,
            "plugins" => Request::Plugins,
            "status" => Request::Status,
            r if r == "reload" || r.starts_with("reload ") => {
                Request::Reload(r.strip_prefix("reload").map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned))
            }
            other => {
                return Err(format!("unknown request {other:?}; requests are `savepoint`, `status`, `reload [OPERATOR]` and `plugins`"));
            }
        })
    }

    /// The request's line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Request::Savepoint => "savepoint".to_owned(),
            Request::Plugins => "plugins".to_owned(),
            Request::Status => "status".to_owned(),
            Request::Reload(None) => "reload".to_owned(),
            Request::Reload(Some(op)) => format!("reload {op}"),
        }
    }
}

/// Reads and parses one request line from `conn`: at most [`MAX_LINE`]
/// bytes of UTF-8 text, whatever the client sends. (The socket's read
/// timeout bounds the time; see [`READ_TIMEOUT`].)
pub fn read_request(conn: impl Read) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(conn).take(MAX_LINE as u64 + 1);
    reader.read_until(b'\n', &mut line).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!("no request line within {READ_TIMEOUT:?}"),
        _ => format!("cannot read the request: {e}"),
    })?;
    if line.len() > MAX_LINE {
        return Err(format!("the request is longer than {MAX_LINE} bytes"));
    }
    Request::parse(&String::from_utf8(line).map_err(|_| "the request is not UTF-8 text".to_owned())?)
}

fn answer(conn: UnixStream, handle: &RunHandle) {
    let reload = handle.reload();
    let request = match conn.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string()).and_then(|()| read_request(&conn)) {
        Ok(request) => request,
        Err(e) => {
            let mut conn = conn;
            let _ = writeln!(conn, "error {e}");
            return;
        }
    };
    let response = match request {
        Request::Savepoint => match handle.savepoint().recv_timeout(SAVEPOINT_WAIT) {
            Ok(Ok(dir)) => format!("ok {}", dir.display()),
            Ok(Err(e)) => format!("error {e}"),
            Err(_) => "error the pipeline stopped before the savepoint completed".to_owned(),
        },
        Request::Plugins => match serde_json::to_string(&reload.status()) {
            Ok(json) => format!("ok {json}"),
            Err(e) => format!("error cannot encode the plugin status: {e}"),
        },
        Request::Status => match handle.status().map(|s| serde_json::to_string(&s)) {
            Some(Ok(json)) => format!("ok {json}"),
            Some(Err(e)) => format!("error cannot encode the status: {e}"),
            None => "error the pipeline is starting or stopping; ask again".to_owned(),
        },
        Request::Reload(operator) => {
            match reload.request_reload(operator.as_deref()).and_then(|events| serde_json::to_string(&events).map_err(|e| e.to_string())) {
                Ok(json) => format!("ok {json}"),
                Err(e) => format!("error {e}"),
            }
        }
    };
    let mut conn = conn;
    let _ = writeln!(conn, "{}", response.replace('\n', " "));
}

/// Parses an answer line: what follows `ok `, or the message after `error `.
pub fn parse_answer(line: &str) -> Result<&str, String> {
    let answer = line.trim();
    if let Some(ok) = answer.strip_prefix("ok ") {
        Ok(ok)
    } else if let Some(e) = answer.strip_prefix("error ") {
        Err(e.to_owned())
    } else {
        Err(format!("unexpected answer {answer:?}"))
    }
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
    parse_answer(&answer).map(str::to_owned).map_err(|e| match e.strip_prefix("unexpected answer ") {
        Some(answer) => format!("unexpected answer from {}: {answer}", path.display()),
        None => e,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_write_back() {
        for (line, request) in [
            ("savepoint\n", Request::Savepoint),
            (" status \r\n", Request::Status),
            ("plugins", Request::Plugins),
            ("reload\n", Request::Reload(None)),
            ("reload   \n", Request::Reload(None)),
            ("reload sum \n", Request::Reload(Some("sum".into()))),
        ] {
            assert_eq!(read_request(line.as_bytes()), Ok(request.clone()), "{line:?}");
            assert_eq!(Request::parse(&request.line()), Ok(request));
        }
        assert!(Request::parse("reloadx").unwrap_err().starts_with("unknown request \"reloadx\""));
    }

    #[test]
    fn a_request_is_bounded_text() {
        let long = format!("reload {}\n", "x".repeat(MAX_LINE));
        assert_eq!(read_request(long.as_bytes()), Err(format!("the request is longer than {MAX_LINE} bytes")));
        assert_eq!(read_request(&b"reload \xff\n"[..]), Err("the request is not UTF-8 text".to_owned()));
        // Only the first line counts.
        assert_eq!(read_request(&b"status\nsavepoint\n"[..]), Ok(Request::Status));
    }

    #[test]
    fn answers() {
        assert_eq!(parse_answer("ok /a/b\n"), Ok("/a/b"));
        assert_eq!(parse_answer("error no such operator\n"), Err("no such operator".to_owned()));
        assert_eq!(parse_answer("what"), Err("unexpected answer \"what\"".to_owned()));
    }
}
