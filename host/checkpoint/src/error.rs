//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// A checkpoint storage failure. Every message names the file or directory at fault.
///
/// The variant is the domain: [`StoreError::Io`], [`StoreError::Remote`] and [`StoreError::Claimed`] are external (retrying after fixing the
/// cause may succeed), [`StoreError::Corrupt`] and [`StoreError::Incomplete`] are bad data
/// (restore from another checkpoint), [`StoreError::NotFound`] is a wrong choice by the
/// user, [`StoreError::Invalid`] is a bug in the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused an operation: disk full, permissions, a missing mount.
    #[error("cannot {action} {}: {source}; check free disk space and permissions on that path", path.display())]
    Io {
        /// What was being done ("write", "create directory", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An object store refused or failed a request: the server is down, the bucket is
    /// missing, the credentials may not read or write there.
    #[error("cannot {action} {}: {detail}; check that the object store is up, the bucket exists and the credentials may read and write there", location.display())]
    Remote {
        /// What was being done ("write", "list", ...).
        action: &'static str,
        /// The object or prefix (`s3://BUCKET/PREFIX/PIPELINE/ID/NAME`).
        location: PathBuf,
        /// The client's error.
        detail: String,
    },
    /// Another run holds the claim on an object store's checkpoints of the pipeline, or took
    /// this run's claim over: two runs must never write the same checkpoints.
    #[error("{detail}")]
    Claimed {
        /// The claim object (`s3://BUCKET/PREFIX/PIPELINE/_claim`).
        location: PathBuf,
        /// Who holds it, since when, and what to do.
        detail: String,
    },
    /// Stored data does not match its manifest, or the manifest cannot be read.
    #[error("checkpoint file {} is corrupt: {detail}; restore from another checkpoint or delete this one", path.display())]
    Corrupt {
        /// The file at fault (a state file or the manifest).
        path: PathBuf,
        /// What is wrong, with the recorded and found values.
        detail: String,
    },
    /// A checkpoint directory without a manifest: it was never finished.
    #[error("checkpoint directory {} is incomplete (no {}): the checkpoint never finished; restore from another checkpoint", dir.display(), crate::MANIFEST)]
    Incomplete {
        /// The directory.
        dir: PathBuf,
    },
    /// No checkpoint answers to what the user asked for.
    #[error("no checkpoint {spec} in {} (available: {available}); pass a checkpoint id such as 17, savepoint-17, or the path of a checkpoint directory", dir.display())]
    NotFound {
        /// What was asked for (an id, `savepoint-ID` or a directory name).
        spec: String,
        /// The directory searched.
        dir: PathBuf,
        /// The complete checkpoints there, as directory names ("15, 16, savepoint-9"), or "none".
        available: String,
    },
    /// The caller misused the store (a bug in weir): a bad name, a file written twice, an id
    /// already taken, a manifest that refers to an unwritten file.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl StoreError {
    /// True when retrying later may succeed (an I/O error; a claim, which lapses when its
    /// holder stops).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::Remote { .. } | StoreError::Claimed { .. })
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { action, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: path.into(), detail: detail.into() }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, detail: impl Into<String>) -> StoreError {
        StoreError::Invalid { path: path.into(), detail: detail.into() }
    }
}
