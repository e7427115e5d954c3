//! One writer per pipeline in an object store: the claim, the object
//! `PIPELINE/_claim`.
//!
//! A local checkpoint directory is claimed by the run lock beside it
//! (`checkpoint.dir`), which the kernel releases when the process dies. A
//! bucket is shared by hosts that cannot see each other's locks or
//! processes, so a run that writes checkpoints there first claims the
//! pipeline's keys with an object written by a conditional `PUT` (S3's
//! `If-None-Match: *`), and renews it every third of its timeout with a
//! `PUT` conditional on the version it wrote last (`If-Match`):
//!
//! - a second run finds a live claim and does not start (a retryable
//!   setup error: the claim lapses `timeout` after its last renewal);
//! - a claim that lapsed (its holder stopped renewing: killed, frozen, cut
//!   off from the store), or whose holder is a process of this host that no
//!   longer runs, is taken over with a `PUT` conditional on the version
//!   read, so of two runs taking it over only one wins;
//! - every manifest is preceded by a renewal, so a run whose claim was
//!   taken over completes no further checkpoint: its renewal finds another
//!   version, and the run stops.
//!
//! Lapsing is judged by wall clock (the holder writes when it renewed):
//! hosts' clocks must agree to well within the timeout. A wrong judgement
//! cannot give two writers: the takeover is conditional, and the run that
//! lost finds out at its next renewal, before its next manifest.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_objects::Store;

/// The claim's object name, below the pipeline's keys.
pub(crate) const CLAIM: &str = "_claim";

/// What the claim object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    /// Tells apart runs of one process (`weir serve` restarting a pipeline).
    run: String,
    /// When this holder took the claim, ms since the Unix epoch.
    since_ms: u64,
    /// When it last renewed it.
    renewed_ms: u64,
    /// How long after `renewed_ms` the claim lapses.
    timeout_ms: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!("weir on host {} (pid {}, claimed {})", self.host, self.pid, ago(self.since_ms))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// "12 s ago", "in 3 s" (a clock ahead of this one).
fn ago(ms: u64) -> String {
    let now = now_ms();
    if ms <= now { format!("{} s ago", (now - ms) / 1000) } else { format!("{} s in this host's future", (ms - now) / 1000) }
}

/// Why a claim could not be taken or kept.
pub(crate) enum ClaimError {
    /// Another run holds it (taking it), or took it over (keeping it).
    Held(String),
    /// The store did not answer.
    Remote(String),
}

/// This process's claim on a pipeline's keys; renewed in the background
/// while it lives (see the module documentation).
pub(crate) struct Claim {
    shared: Arc<Shared>,
    renewal: tokio::task::JoinHandle<()>,
}

struct Shared {
    store: Store,
    /// The claim's key.
    key: String,
    /// `s3://BUCKET/PREFIX/PIPELINE`, for messages.
    location: String,
    holder: Mutex<Holder>,
    /// The version last written; held across each renewal, so the
    /// background renewal and the one before a manifest never race each
    /// other into a conflict of their own.
    tag: tokio::sync::Mutex<String>,
    /// Why the claim was lost, once it was.
    lost: Mutex<Option<String>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("key", &self.shared.key).finish_non_exhaustive()
    }
}

impl Claim {
    /// Takes the claim at `key` for `timeout` (on a runtime: it spawns the
    /// renewal). `host` names this host as in-use markers do.
    pub async fn take(store: Store, key: String, location: String, host: &str, timeout: Duration) -> Result<Claim, ClaimError> {
        let started = now_ms();
        let me = Holder {
            host: host.to_owned(),
            pid: std::process::id(),
            run: format!("{:016x}", started ^ u64::from(std::process::id()).rotate_left(32) ^ RUN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            since_ms: started,
            renewed_ms: started,
            timeout_ms: timeout.as_millis() as u64,
        };
        let body = || Bytes::from(serde_json::to_vec(&me).expect("a claim encodes"));
        // A few rounds: another run may take, release or renew the claim
        // between our read and our write.
        for _ in 0..5 {
            let Some((bytes, tag)) = store.get_tagged(&key).await.map_err(ClaimError::Remote)? else {
                match store.put_if(&key, body(), None).await.map_err(ClaimError::Remote)? {
                    Some(tag) => return Ok(Self::start(store, key, location, me, tag)),
                    None => continue,
                }
            };
            let other: Holder = serde_json::from_slice(&bytes).map_err(|e| {
                ClaimError::Held(format!(
                    "the claim on the checkpoints at {location} ({location}/{CLAIM}) cannot be read ({e}): weir does not know who writes there. \
                     If no weir runs this pipeline against this store, delete that object and start again"
                ))
            })?;
            let same_host = other.host == me.host;
            let gone = same_host && (other.pid == me.pid || !crate::backend::process_runs(other.pid));
            let lapsed = now_ms() > other.renewed_ms.saturating_add(other.timeout_ms);
            if !gone && !lapsed {
                return Err(ClaimError::Held(format!(
                    "the checkpoints at {location} are claimed by {}, which renewed the claim {}: two runs writing the same checkpoints \
                     would destroy each other's. Stop that run, or give this one its own `checkpoint.store` prefix or pipeline name. \
                     A claim whose holder stops renewing it (killed, frozen, cut off) lapses {} s after its last renewal \
                     (`checkpoint.s3.claim-timeout` of that run)",
                    other.describe(),
                    ago(other.renewed_ms),
                    other.timeout_ms / 1000,
                )));
            }
            if let Some(tag) = store.put_if(&key, body(), Some(&tag)).await.map_err(ClaimError::Remote)? {
                let why = if gone { "that process no longer runs".to_owned() } else { format!("it lapsed: last renewed {}", ago(other.renewed_ms)) };
                tracing::info!(checkpoints = %location, "Took over the claim on the checkpoints from {} ({why}).", other.describe());
                return Ok(Self::start(store, key, location, me, tag));
            }
        }
        Err(ClaimError::Remote(format!("the claim on {location} kept changing while weir tried to take it; another run is starting against the same checkpoints")))
    }

    fn start(store: Store, key: String, location: String, me: Holder, tag: String) -> Claim {
        let every = Duration::from_millis(me.timeout_ms / 3).max(Duration::from_millis(10));
        let shared = Arc::new(Shared { store, key, location, holder: Mutex::new(me), tag: tokio::sync::Mutex::new(tag), lost: Mutex::new(None) });
        let s = shared.clone();
        let renewal = tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                match s.renew().await {
                    Ok(()) => failing = false,
                    Err(ClaimError::Held(why)) => {
                        tracing::error!(checkpoints = %s.location, "{why}");
                        return;
                    }
                    Err(ClaimError::Remote(e)) if !failing => {
                        failing = true;
                        tracing::warn!(
                            checkpoints = %s.location,
                            "Cannot renew the claim on the checkpoints: {e}. Retrying; if this lasts longer than the claim's timeout, \
                             another run may take the checkpoints over, and this one then stops at its next checkpoint."
                        );
                    }
                    Err(ClaimError::Remote(_)) => {}
                }
            }
        });
        Claim { shared, renewal }
    }

    /// Renews the claim now (before a manifest is written): an error if
    /// it was lost or the store did not answer.
    pub async fn confirm(&self) -> Result<(), ClaimError> {
        self.shared.renew().await
    }

    /// Why the claim was lost, once it was.
    pub fn lost(&self) -> Option<String> {
        self.shared.lost.lock().expect("claim lock").clone()
    }

    /// Gives the claim up (the run ends): the next run need not wait for
    /// it to lapse.
    pub async fn release(&self) -> Result<(), String> {
        self.renewal.abort();
        let s = &self.shared;
        let tag = s.tag.lock().await;
        if s.lost.lock().expect("claim lock").is_some() {
            return Ok(());
        }
        // Only if it is still ours (the version we wrote last).
        match s.store.get_tagged(&s.key).await? {
            Some((_, now)) if now == *tag => s.store.delete(&s.key).await,
            _ => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

static RUN_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Shared {
    async fn renew(&self) -> Result<(), ClaimError> {
        let mut tag = self.tag.lock().await;
        if let Some(why) = self.lost.lock().expect("claim lock").clone() {
            return Err(ClaimError::Held(why));
        }
        let body = {
            let mut me = self.holder.lock().expect("claim lock");
            me.renewed_ms = now_ms();
            Bytes::from(serde_json::to_vec(&*me).expect("a claim encodes"))
        };
        match self.store.put_if(&self.key, body, Some(&tag)).await.map_err(ClaimError::Remote)? {
            Some(new) => {
                *tag = new;
                Ok(())
            }
            None => {
                let now = self.store.get_tagged(&self.key).await.map_err(ClaimError::Remote)?;
                let holder = now.as_ref().map(|(bytes, tag)| (serde_json::from_slice::<Holder>(bytes), tag));
                let by = match holder {
                    // An earlier renewal that timed out here reached the
                    // store after all: the claim is still ours.
                    Some((Ok(h), new)) if h.run == self.holder.lock().expect("claim lock").run => {
                        *tag = new.clone();
                        return Ok(());
                    }
                    Some((Ok(h), _)) => h.describe(),
                    Some((Err(_), _)) => "an unreadable claim".to_owned(),
                    None => "nobody (the claim object was deleted)".to_owned(),
                };
                let why = format!(
                    "this run lost its claim on the checkpoints at {}: it is now held by {by}. Its renewals had not reached the store \
                     for longer than the claim's timeout (the process was frozen, or cut off from the store), or the claim was taken \
                     by hand. This run stops without completing another checkpoint, so that only one run writes them; the holder \
                     resumes from the last complete one",
                    self.location
                );
                *self.lost.lock().expect("claim lock") = Some(why.clone());
                Err(ClaimError::Held(why))
            }
        }
    }
}
