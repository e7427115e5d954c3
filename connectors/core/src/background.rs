//! Background work whose death the task hears about.
//!
//! A connector that reads or writes on its own thread (the Kafka source's
//! poller, the PostgreSQL sink's writer) hands records to the task thread
//! through shared state. If that thread ends early, with an error or a
//! panic, and nobody tells the task, the task waits forever for records
//! that never come while checkpoints keep completing: a silent stall.
//!
//! [`spawn`] is the one way connectors start such a thread. It runs a
//! [`Background`] job and, whatever way the job ends early (an `Err`, or a
//! panic caught with `catch_unwind`), calls [`Background::died`] on that
//! thread with an error that names the thread and the reason. The job puts
//! the error where the task looks on its next `poll` or `write` (and wakes
//! it), so the pipeline fails with the connector's own words: which
//! partition, which offset, why.
//!
//! [`CatchUnwind`] does the same for a future (an async operator's slot):
//! a panic becomes an `Err` the caller turns into a failed record.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use weir_connector::ConnectorError;
//! use weir_connector::background::{spawn, Background};
//!
//! struct Reader { error: Arc<Mutex<Option<ConnectorError>>> }
//!
//! impl Background for Reader {
//!     fn run(&mut self) -> Result<(), ConnectorError> {
//!         Err(ConnectorError::user("record 7 is too large"))
//!     }
//!     fn died(&mut self, error: ConnectorError) {
//!         *self.error.lock().unwrap() = Some(error);
//!     }
//! }
//!
//! let error = Arc::new(Mutex::new(None));
//! spawn("reader".into(), Reader { error: error.clone() }).unwrap().join().unwrap();
//! assert_eq!(error.lock().unwrap().as_ref().unwrap().message, "record 7 is too large");
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crate::ConnectorError;

/// Work for a connector's background thread.
pub trait Background: Send + 'static {
    /// The work; returns `Ok` when asked to stop, `Err` when it cannot go on.
    fn run(&mut self) -> Result<(), ConnectorError>;

    /// The work ended early with `error` (returned by [`Background::run`],
    /// or made from a panic). Store it where the task's next call on the
    /// connector finds it, and wake the task if it waits. Runs on the
    /// background thread, after a panic too: it must not rely on locks
    /// being unpoisoned (use `lock().unwrap_or_else(|e| e.into_inner())`).
    fn died(&mut self, error: ConnectorError);
}

/// Starts `job` on a thread named `name` and reports its early end to
/// [`Background::died`]. Fails only when the thread cannot be started.
pub fn spawn(name: String, mut job: impl Background) -> Result<JoinHandle<()>, ConnectorError> {
    let thread = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let error = match catch_unwind(AssertUnwindSafe(|| job.run())) {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(panic) => panicked(&thread, panic.as_ref()),
            };
            tracing::debug!(thread = %thread, "background thread stopped: {error}");
            // A panic in the report itself must not go unnoticed either;
            // there is nothing left to tell, so it is logged.
            if catch_unwind(AssertUnwindSafe(|| job.died(error))).is_err() {
                tracing::error!(thread = %thread, "a background thread died and could not report why (a bug in weir)");
            }
        })
        .map_err(|e| ConnectorError::external(format!("cannot start the background thread {name:?}"), e))
}

/// Runs `f`, a callback a client library calls on its own thread (a
/// Kafka producer's delivery reports), and returns a panic in it as the
/// error [`panicked`] makes, for the connector to store like
/// [`Background::died`] does: a panic there would otherwise end the
/// library's thread and nobody would hear of it.
pub fn guard(thread: &str, f: impl FnOnce()) -> Result<(), ConnectorError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| panicked(thread, panic.as_ref()))
}

/// The error for a panic caught on `thread`.
pub fn panicked(thread: &str, payload: &(dyn Any + Send)) -> ConnectorError {
    ConnectorError::internal(format!("its background thread {thread:?} panicked (a bug in weir): {}", panic_message(payload)))
}

/// The text of a panic payload (`panic!` with a string or a format).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A future whose panic is returned as `Err(message)` instead of ending
/// the task that polls it (for tokio tasks whose death nobody would see).
#[derive(Debug)]
pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()).to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Job {
        panic: bool,
        reported: Arc<Mutex<Vec<String>>>,
        /// Held while panicking, to show `died` copes with a poisoned lock.
        lock: Arc<Mutex<()>>,
    }

    impl Background for Job {
        fn run(&mut self) -> Result<(), ConnectorError> {
            let _held = self.lock.lock().unwrap();
            if self.panic {
                panic!("header name longer than 65535 bytes");
            }
            Err(ConnectorError::user("topic t partition 0 offset 5: too large"))
        }

        fn died(&mut self, error: ConnectorError) {
            let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.reported.lock().unwrap().push(error.to_string());
        }
    }

    fn run(panic: bool) -> Vec<String> {
        let reported = Arc::new(Mutex::new(Vec::new()));
        let job = Job { panic, reported: reported.clone(), lock: Arc::default() };
        spawn("kafka-in-0".into(), job).unwrap().join().expect("the thread itself ends cleanly");
        Arc::try_unwrap(reported).unwrap().into_inner().unwrap()
    }

    #[test]
    fn a_background_thread_that_panics_reports_its_death() {
        assert_eq!(
            run(true),
            ["its background thread \"kafka-in-0\" panicked (a bug in weir): header name longer than 65535 bytes"]
        );
    }

    #[test]
    fn a_background_thread_that_fails_reports_its_error() {
        assert_eq!(run(false), ["topic t partition 0 offset 5: too large"]);
    }

    #[test]
    fn a_guarded_callback_returns_its_panic() {
        assert!(guard("cb", || {}).is_ok());
        let e = guard("kafka-producer", || panic!("boom {}", 1)).unwrap_err();
        assert_eq!(e.message, "its background thread \"kafka-producer\" panicked (a bug in weir): boom 1");
    }

    #[test]
    fn a_panicking_future_is_an_error() {
        let fut = CatchUnwind(Box::pin(async { panic!("chunk size overflow") }));
        let waker = std::task::Waker::noop();
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(Err(m)) => assert_eq!(m, "chunk size overflow"),
            other => panic!("expected the panic as an error, got {:?}", other.map(|r: Result<(), String>| r.is_ok())),
        }
    }
}
