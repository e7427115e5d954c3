//! The two destinations behind one small interface: put a whole object
//! (atomically visible), get one, list objects under a prefix, delete one.
//!
//! * **Local directory**: an object is written to a hidden temporary file
//!   next to its final name (`.NAME.weir-tmp`), fsynced, renamed, and the
//!   directory fsynced, so a reader sees the whole object or nothing.
//! * **S3-compatible**: the [`object_store`] crate's S3 client; an object
//!   is one `PUT`, which S3 makes visible whole or not at all, so a crash
//!   mid-upload leaves nothing behind (no multipart upload to abort).
//!
//! Retrying belongs to the caller (the object storage sink retries with
//! backoff for as long as `retry.give-up-after`; a checkpoint that fails is
//! counted and the next one tried); the S3 client's own retries are off so
//! that one policy applies.

use crate::{Destination, S3Settings};
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use object_store::path::Path as ObjectPath;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A destination: a local directory or an S3 bucket and prefix.
#[derive(Debug, Clone)]
pub enum Store {
    /// Objects are files below this directory.
    Local(PathBuf),
    /// Objects are keys `PREFIX/…` in a bucket.
    S3 {
        /// The client.
        client: Arc<object_store::aws::AmazonS3>,
        /// `bucket/prefix`, for messages.
        describe: String,
        /// The key prefix, without trailing `/` (may be empty).
        prefix: String,
    },
}

impl Store {
    /// Opens `destination`, reaching S3 with `config` (no request is made
    /// yet).
    pub fn open(config: &S3Settings, destination: &Destination) -> Result<Self, String> {
        match destination {
            Destination::Local(dir) => Ok(Self::Local(dir.clone())),
            Destination::S3 { bucket, prefix } => {
                let (id, secret, token) = config.credentials()?;
                let retry = object_store::RetryConfig {
                    max_retries: 0,
                    retry_timeout: Duration::from_secs(60),
                    backoff: object_store::BackoffConfig::default(),
                };
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_access_key_id(id)
                    .with_secret_access_key(secret)
                    .with_virtual_hosted_style_request(!config.path_style)
                    .with_retry(retry)
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
                            .with_timeout(config.request_timeout),
                    );
                if let Some(token) = token {
                    b = b.with_token(token);
                }
                if let Some(endpoint) = &config.endpoint {
                    b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                let client = b.build().map_err(|e| format!("cannot set up the S3 client: {e}"))?;
                Ok(Self::S3 { client: Arc::new(client), describe: format!("s3://{bucket}/{prefix}"), prefix: prefix.clone() })
            }
        }
    }

    /// `s3://bucket/prefix` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(dir) => dir.display().to_string(),
            Self::S3 { describe, .. } => describe.clone(),
        }
    }

    fn key(prefix: &str, name: &str) -> String {
        if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") }
    }

    /// Writes the object `name` (relative to the root) whole, replacing one
    /// of the same name.
    pub async fn put(&self, name: &str, data: Bytes) -> Result<(), String> {
        match self {
            Self::Local(dir) => {
                let (dir, name) = (dir.clone(), name.to_owned());
                tokio::task::spawn_blocking(move || put_file(&dir, &name, &data))
                    .await
                    .map_err(|e| format!("the writing thread failed: {e}"))?
                    .map_err(|e| e.to_string())
            }
            Self::S3 { client, prefix, .. } => {
                let key = ObjectPath::from(Self::key(prefix, name));
                client.put(&key, data.into()).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    /// Reads the object `name` whole; `Ok(None)` if there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, String> {
        match self {
            Self::Local(dir) => {
                let path = dir.join(name);
                tokio::task::spawn_blocking(move || match fs::read(&path) {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("reading {}: {e}", path.display())),
                })
                .await
                .map_err(|e| format!("the reading thread failed: {e}"))?
            }
            Self::S3 { client, prefix, .. } => {
                let key = ObjectPath::from(Self::key(prefix, name));
                match client.get(&key).await {
                    Ok(r) => r.bytes().await.map(Some).map_err(|e| e.to_string()),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Reads the object `name` whole with its entity tag (the version a
    /// [`Store::put_if`] can be made conditional on); `Ok(None)` if there is
    /// none. S3 only: a local directory has no versions.
    pub async fn get_tagged(&self, name: &str) -> Result<Option<(Bytes, String)>, String> {
        let Self::S3 { client, prefix, .. } = self else { return Err(NOT_CONDITIONAL.into()) };
        let key = ObjectPath::from(Self::key(prefix, name));
        match client.get(&key).await {
            Ok(r) => {
                let tag = r.meta.e_tag.clone().ok_or_else(|| format!("the store gave no entity tag for {key}"))?;
                Ok(Some((r.bytes().await.map_err(|e| e.to_string())?, tag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes the object `name` only if it is as `expected`: absent
    /// (`None`), or the version with that entity tag. `Ok(Some(tag))` is
    /// the new version's tag; `Ok(None)` means the object was not as
    /// expected and nothing was written. The store checks and writes
    /// atomically (S3's `If-None-Match` and `If-Match`), so of two writers
    /// expecting the same version only one succeeds. S3 only.
    pub async fn put_if(&self, name: &str, data: Bytes, expected: Option<&str>) -> Result<Option<String>, String> {
        let Self::S3 { client, prefix, .. } = self else { return Err(NOT_CONDITIONAL.into()) };
        let key = ObjectPath::from(Self::key(prefix, name));
        let mode = match expected {
            None => object_store::PutMode::Create,
            Some(tag) => object_store::PutMode::Update(object_store::UpdateVersion { e_tag: Some(tag.to_owned()), version: None }),
        };
        match client.put_opts(&key, data.into(), mode.into()).await {
            Ok(r) => r.e_tag.map(Some).ok_or_else(|| format!("the store gave no entity tag for {key}")),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(None),
            // S3 answers 404 to `If-Match` on an object that is gone.
            Err(object_store::Error::NotFound { .. }) if expected.is_some() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Like [`Store::list`], with each object's size and modification time.
    pub async fn list_meta(&self, under: &str) -> Result<Vec<ObjectMeta>, String> {
        match self {
            Self::Local(dir) => {
                let names = self.list(under).await?;
                names
                    .into_iter()
                    .map(|name| {
                        let path = dir.join(&name);
                        let meta = fs::metadata(&path).map_err(|e| format!("reading metadata of {}: {e}", path.display()))?;
                        let modified = meta.modified().map_err(|e| format!("reading metadata of {}: {e}", path.display()))?;
                        Ok(ObjectMeta { name, size: meta.len(), modified })
                    })
                    .collect()
            }
            Self::S3 { client, prefix, .. } => {
                let key = Self::key(prefix, under);
                let from = (!key.is_empty()).then(|| ObjectPath::from(key));
                let metas: Vec<_> = client.list(from.as_ref()).try_collect().await.map_err(|e| e.to_string())?;
                let strip = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
                Ok(metas
                    .into_iter()
                    .filter_map(|m| {
                        let name = m.location.as_ref().strip_prefix(&strip)?.to_owned();
                        Some(ObjectMeta { name, size: m.size, modified: m.last_modified.into() })
                    })
                    .collect())
            }
        }
    }

    /// Every object below `under` (relative to the root), as names relative
    /// to the root; hidden temporary files of local directories included.
    pub async fn list(&self, under: &str) -> Result<Vec<String>, String> {
        match self {
            Self::Local(dir) => {
                let mut out = Vec::new();
                let start = if under.is_empty() { dir.clone() } else { dir.join(under) };
                walk(dir, &start, &mut out).map_err(|e| format!("listing {}: {e}", start.display()))?;
                Ok(out)
            }
            Self::S3 { client, prefix, .. } => {
                let key = Self::key(prefix, under);
                let from = (!key.is_empty()).then(|| ObjectPath::from(key));
                let metas: Vec<_> = client.list(from.as_ref()).try_collect().await.map_err(|e| e.to_string())?;
                let strip = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
                Ok(metas.into_iter().filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(str::to_owned)).collect())
            }
        }
    }

    /// Deletes the object `name`; a missing one is fine.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        match self {
            Self::Local(dir) => {
                let path = dir.join(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("removing {}: {e}", path.display())),
                    _ => Ok(()),
                }
            }
            Self::S3 { client, prefix, .. } => {
                match client.delete(&ObjectPath::from(Self::key(prefix, name))).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

const NOT_CONDITIONAL: &str = "a local directory has no conditional writes (an S3-compatible store has)";

/// An object found by [`Store::list_meta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its name, relative to the root.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Temporary name of a local object while it is written.
pub fn temp_name(file_name: &str) -> String {
    format!(".{file_name}.weir-tmp")
}

fn put_file(root: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let path = root.join(name);
    let dir = path.parent().unwrap_or(root).to_path_buf();
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object").to_owned();
    let context = |what: &str, p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()));
    fs::create_dir_all(&dir).map_err(|e| context("creating", &dir, e))?;
    let temp = dir.join(temp_name(&file_name));
    let mut file = fs::File::create(&temp).map_err(|e| context("creating", &temp, e))?;
    file.write_all(data).and_then(|()| file.sync_data()).map_err(|e| context("writing", &temp, e))?;
    drop(file);
    fs::rename(&temp, &path).map_err(|e| context("renaming to", &path, e))?;
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| context("syncing", &dir, e))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if let Some(rel) = path.strip_prefix(root).ok().and_then(|p| p.to_str()) {
            out.push(rel.to_owned());
        }
    }
    Ok(())
}
