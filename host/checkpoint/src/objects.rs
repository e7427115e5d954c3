//! Checkpoints in an object store (`checkpoint.store = "s3://BUCKET/PREFIX"`):
//! checkpoint `17` of pipeline `P` is the objects `PREFIX/P/17/NAME`.
//!
//! An object is written whole by one `PUT`, which the store makes visible
//! whole or not at all, so no temporary names are needed; the manifest is
//! put last and remains the completion marker. Deleting removes the
//! manifest first. In-use markers carry the host name
//! (`_in-use.HOST.PID.N`): a marker of this host whose process is gone is
//! removed, one of another host is honoured (weir cannot see that host's
//! processes). A run that writes checkpoints claims the pipeline's keys
//! first ([`crate::claim`]), so two runs never write the same checkpoints.

use crate::backend::{Backend, FileMeta, marker_name, process_runs};
use crate::claim::{CLAIM, Claim, ClaimError};
use crate::{Entry, IN_USE_PREFIX, MANIFEST, StoreError};
use crate::manifest::Kind;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_failpoint::{self as failpoint, Failpoints};
use weir_objects::Store;

/// A pipeline's checkpoints below `PIPELINE/` in an object store.
#[derive(Debug)]
pub(crate) struct Objects {
    store: Store,
    pipeline: String,
    /// `s3://BUCKET/PREFIX/PIPELINE`, for messages.
    root: PathBuf,
    runtime: tokio::runtime::Runtime,
    host: String,
    /// This run's claim on the pipeline's keys, once taken.
    claim: Mutex<Option<Arc<Claim>>>,
}

impl Objects {
    pub fn new(store: Store, pipeline: &str) -> Result<Self, StoreError> {
        let root = PathBuf::from(format!("{}/{pipeline}", store.describe().trim_end_matches('/')));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-checkpoint-io")
            .enable_all()
            .build()
            .map_err(StoreError::io("start the object store client for", &root))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().replace('.', "-")).unwrap_or_else(|_| "host".into());
        Ok(Self { store, pipeline: pipeline.to_owned(), root, runtime, host, claim: Mutex::new(None) })
    }

    /// Runs a request on the client's runtime from any thread, a runtime's
    /// own included (the result comes back over a channel).
    fn run<T: Send + 'static>(
        &self,
        request: impl Future<Output = Result<T, String>> + Send + 'static,
        what: &'static str,
        at: &str,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(request.await);
        });
        let location = self.root.join(at);
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(detail)) => Err(StoreError::Remote { action: what, location, detail }),
            Err(_) => Err(StoreError::Remote { action: what, location, detail: "the request was dropped".into() }),
        }
    }

    fn key(&self, name: &str, file: &str) -> String {
        format!("{}/{name}/{file}", self.pipeline)
    }

    fn put(&self, name: &str, file: &str, bytes: Bytes) -> Result<(), StoreError> {
        let (store, key) = (self.store.clone(), self.key(name, file));
        self.run(async move { store.put(&key, bytes).await }, "write", &format!("{name}/{file}"))
    }

    fn list(&self, under: &str) -> Result<Vec<weir_objects::ObjectMeta>, StoreError> {
        let prefix = if under.is_empty() { self.pipeline.clone() } else { format!("{}/{under}", self.pipeline) };
        let strip = format!("{}/", self.pipeline);
        let store = self.store.clone();
        let mut found = self.run(async move { store.list_meta(&prefix).await }, "list", under)?;
        found.retain_mut(|m| match m.name.strip_prefix(&strip) {
            Some(rest) => {
                m.name = rest.to_owned();
                true
            }
            None => false,
        });
        Ok(found)
    }

    fn held(&self) -> Option<Arc<Claim>> {
        self.claim.lock().expect("claim lock").clone()
    }

    /// The claim's error as the store's.
    fn claim_error(&self, e: ClaimError, action: &'static str) -> StoreError {
        match e {
            ClaimError::Held(detail) => StoreError::Claimed { location: self.root.join(CLAIM), detail },
            ClaimError::Remote(detail) => StoreError::Remote { action, location: self.root.join(CLAIM), detail },
        }
    }

    fn delete_object(&self, name: &str, file: &str) -> Result<(), StoreError> {
        let (store, key) = (self.store.clone(), self.key(name, file));
        self.run(async move { store.delete(&key).await }, "delete", &format!("{name}/{file}"))
    }
}

impl Backend for Objects {
    fn root(&self) -> &Path {
        &self.root
    }

    fn scan(&self) -> Result<Vec<Entry>, StoreError> {
        let mut dirs: BTreeMap<String, bool> = BTreeMap::new();
        for m in self.list("")? {
            let Some((name, file)) = m.name.split_once('/') else { continue };
            if Kind::parse_dir_name(name).is_some() {
                *dirs.entry(name.to_owned()).or_default() |= file == MANIFEST;
            }
        }
        let mut entries: Vec<Entry> = dirs
            .into_iter()
            .filter_map(|(name, complete)| {
                let (kind, id) = Kind::parse_dir_name(&name)?;
                Some(Entry { kind, id, name, complete })
            })
            .collect();
        entries.sort_by_key(|e| (e.id, e.kind == Kind::Savepoint));
        Ok(entries)
    }

    fn create(&self, name: &str) -> Result<(), StoreError> {
        if self.list(name)?.is_empty() {
            Ok(())
        } else {
            Err(StoreError::invalid(self.root.join(name), "checkpoint directory already exists; take ids from CheckpointStore::next_id()"))
        }
    }

    fn write(&self, name: &str, file: &str, bytes: &[u8], failpoints: &Failpoints, id: u64) -> Result<(), StoreError> {
        if let Some(e) = failpoints.error("disk-full", id) {
            return Err(StoreError::io("write", self.root.join(name).join(file))(e));
        }
        if failpoints.fires("state-file-half", id) {
            self.put(name, file, Bytes::copy_from_slice(&bytes[..bytes.len() / 2]))?;
            failpoint::die("state-file-half", id);
        }
        self.put(name, file, Bytes::copy_from_slice(bytes))
    }

    fn write_manifest(&self, name: &str, json: &[u8], failpoints: &Failpoints, id: u64) -> Result<(), StoreError> {
        failpoints.hit("before-completion", id);
        // Still ours? A run that lost its claim completes no checkpoint.
        if let Some(claim) = self.held() {
            self.run(async move { Ok(claim.confirm().await) }, "renew the claim on", CLAIM)?.map_err(|e| self.claim_error(e, "renew the claim on"))?;
        }
        self.put(name, MANIFEST, Bytes::copy_from_slice(json))
    }

    fn read(&self, name: &str, file: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (store, key) = (self.store.clone(), self.key(name, file));
        let got = self.run(async move { store.get(&key).await }, "read", &format!("{name}/{file}"))?;
        Ok(got.map(|b| b.to_vec()))
    }

    fn checksum(&self, name: &str, file: &str) -> Result<Option<(u64, u32)>, StoreError> {
        Ok(self.read(name, file)?.map(|b| (b.len() as u64, crc32fast::hash(&b))))
    }

    fn files(&self, name: &str) -> Result<Vec<FileMeta>, StoreError> {
        let strip = format!("{name}/");
        Ok(self
            .list(name)?
            .into_iter()
            .filter_map(|m| Some(FileMeta { name: m.name.strip_prefix(&strip)?.to_owned(), size: m.size, modified: m.modified }))
            .collect())
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.delete_object(name, MANIFEST)?;
        for f in self.files(name)? {
            self.delete_object(name, &f.name)?;
        }
        Ok(())
    }

    fn remove_temporaries(&self, _name: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn discard(&self, name: &str) {
        if let Err(e) = self.delete(name) {
            tracing::warn!(checkpoint = %self.root.join(name).display(), "Could not remove the objects of a failed checkpoint: {e}; retention removes them later.");
        }
    }

    fn claim(&self, timeout: Duration) -> Result<(), StoreError> {
        let (store, key, location, host) = (self.store.clone(), format!("{}/{CLAIM}", self.pipeline), self.root.display().to_string(), self.host.clone());
        let taken = self.run(async move { Ok(Claim::take(store, key, location, &host, timeout).await) }, "claim", CLAIM)?;
        let claim = taken.map_err(|e| self.claim_error(e, "claim"))?;
        *self.claim.lock().expect("claim lock") = Some(Arc::new(claim));
        Ok(())
    }

    fn claim_lost(&self) -> Option<String> {
        self.held()?.lost()
    }

    fn pin(&self, name: &str) -> Result<String, StoreError> {
        let marker = marker_name(Some(&self.host));
        self.put(name, &marker, Bytes::new()).map_err(|e| match e {
            StoreError::Remote { location, detail, .. } => StoreError::Remote { action: "create in-use marker", location, detail },
            other => other,
        })?;
        Ok(marker)
    }

    fn unpin(&self, name: &str, marker: &str) -> Result<(), StoreError> {
        self.delete_object(name, marker)
    }

    fn pinned(&self, name: &str) -> Result<bool, StoreError> {
        let mut live = false;
        for f in self.files(name)? {
            let Some(rest) = f.name.strip_prefix(IN_USE_PREFIX) else { continue };
            let mut parts = rest.rsplitn(3, '.');
            let (_seq, pid, host) = (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next());
            if host != Some(self.host.as_str()) || pid.is_some_and(process_runs) {
                live = true;
            } else {
                tracing::info!(marker = %self.root.join(name).join(&f.name).display(), "Removing the in-use marker of a process that no longer runs.");
                self.delete_object(name, &f.name)?;
            }
        }
        Ok(live)
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        let Some(claim) = self.claim.lock().expect("claim lock").take() else { return };
        if let Err(e) = self.run(async move { claim.release().await }, "release the claim on", CLAIM) {
            tracing::warn!("{e}; the next run takes the claim over once it lapses");
        }
    }
}
