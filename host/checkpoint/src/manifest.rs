//! The manifest: what a checkpoint contains, written last as `_manifest.json`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The manifest format version this crate writes and reads.
pub const VERSION: u32 = 1;

/// Whether a snapshot is a periodic checkpoint (deleted by retention) or a savepoint (kept
/// until the user deletes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Taken periodically; directory `ID`.
    Checkpoint,
    /// Taken on request; directory `savepoint-ID`.
    Savepoint,
}

impl Kind {
    /// The directory name of snapshot `id` of this kind: `17` or `savepoint-17`.
    pub fn dir_name(self, id: u64) -> String {
        match self {
            Kind::Checkpoint => id.to_string(),
            Kind::Savepoint => format!("savepoint-{id}"),
        }
    }

    /// Parses a directory name made by [`Kind::dir_name`] (no padding, no sign).
    pub fn parse_dir_name(name: &str) -> Option<(Kind, u64)> {
        let (kind, digits) = match name.strip_prefix("savepoint-") {
            Some(digits) => (Kind::Savepoint, digits),
            None => (Kind::Checkpoint, name),
        };
        let id = digits.parse::<u64>().ok()?;
        (id.to_string() == digits).then_some((kind, id))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Checkpoint => "checkpoint",
            Kind::Savepoint => "savepoint",
        })
    }
}

/// The description of one complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`VERSION`].
    pub version: u32,
    /// The pipeline's name (set by [`CheckpointWriter::complete`](crate::CheckpointWriter::complete)).
    pub pipeline: String,
    /// The checkpoint id (set by `complete`).
    pub id: u64,
    /// Checkpoint or savepoint (set by `complete`).
    pub kind: Kind,
    /// When the checkpoint was triggered, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// True when taken at the end of the input: a restore has nothing left to read.
    pub finished: bool,
    /// The number of key groups, which bounds the parallelism of a restore.
    pub max_parallelism: u32,
    /// The state of every vertex of the job graph.
    pub vertices: Vec<VertexState>,
    /// Every file of the checkpoint with its size and checksum (set by `complete` from what
    /// [`CheckpointWriter::write_file`](crate::CheckpointWriter::write_file) recorded).
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// A manifest created now, not finished, with the given vertices; `complete` fills the rest.
    pub fn new(max_parallelism: u32, vertices: Vec<VertexState>) -> Manifest {
        let created_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Manifest {
            version: VERSION,
            pipeline: String::new(),
            id: 0,
            kind: Kind::Checkpoint,
            created_ms,
            finished: false,
            max_parallelism,
            vertices,
            files: Vec::new(),
        }
    }

    /// Reads a manifest from the bytes of `_manifest.json` and checks all
    /// that can be checked without the files: the format version, that
    /// every listed file has a plain name inside the checkpoint directory,
    /// and that every state file a subtask names is listed. Whatever the
    /// bytes, the answer is a manifest or a message saying what is wrong.
    pub fn decode(json: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(json).map_err(|e| format!("not a valid manifest: {e}"))?;
        if manifest.version != VERSION {
            return Err(format!("manifest version {} is not supported (this weir reads version {VERSION})", manifest.version));
        }
        if let Some(entry) = manifest.files.iter().find(|f| !crate::valid_name(&f.name)) {
            return Err(format!("invalid file name {:?} in the manifest", entry.name));
        }
        if let Some(detail) = manifest.unlisted_state_file() {
            return Err(detail);
        }
        Ok(manifest)
    }

    /// The bytes of `_manifest.json` for this manifest.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest is always representable as JSON")
    }

    /// The total size of the checkpoint's files, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The entry of file `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The state of vertex `name`.
    pub fn vertex(&self, name: &str) -> Option<&VertexState> {
        self.vertices.iter().find(|v| v.name == name)
    }

    /// A description of the first state file referred to by a subtask but not in `files`.
    pub(crate) fn unlisted_state_file(&self) -> Option<String> {
        self.vertices.iter().find_map(|v| {
            v.subtasks.iter().find_map(|s| {
                [s.state_file.as_deref(), s.inflight_file.as_deref()].into_iter().flatten().find(|f| self.file(f).is_none()).map(|f| {
                    format!(
                        "vertex {} subtask {} refers to state file {f}, which is not in the manifest's file list",
                        v.name, s.subtask
                    )
                })
            })
        })
    }
}

/// What a vertex of the job graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VertexKind {
    /// Reads input; its subtasks record positions.
    Source,
    /// A Wasm operator; its subtasks record keyed state files.
    Operator,
    /// Writes output; its subtasks record pre-committed handles.
    Sink,
}

/// The state of one vertex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexState {
    /// The vertex's name in the pipeline.
    pub name: String,
    /// Source, operator or sink.
    pub kind: VertexKind,
    /// The parallelism it ran at when the checkpoint was taken.
    pub parallelism: u32,
    /// One entry per subtask.
    pub subtasks: Vec<SubtaskState>,
}

/// The state of one subtask.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SubtaskState {
    /// The subtask's index.
    pub subtask: u32,
    /// A source's position (opaque to the store; hex in JSON).
    #[serde(with = "hex_opt", default)]
    pub position: Option<Vec<u8>>,
    /// An operator's keyed state file, in the checkpoint directory.
    #[serde(default)]
    pub state_file: Option<String>,
    /// The key groups `(start, end)` held in `state_file`, end exclusive.
    #[serde(default)]
    pub key_groups: Option<(u32, u32)>,
    /// A sink's pre-committed transactions, to commit or abort on restore.
    #[serde(default)]
    pub committables: Vec<Committable>,
    /// The records an unaligned checkpoint's barrier overtook on their way
    /// to this subtask (its input channels), replayed before new input on
    /// restore: a file of `(key group, record)` pairs like an async
    /// operator's in-flight records, checksummed like every file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflight_file: Option<String>,
}

/// A sink transaction pre-committed for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committable {
    /// The checkpoint that pre-committed it.
    pub checkpoint: u64,
    /// The sink's handle (opaque to the store; hex in JSON).
    #[serde(with = "hex_bytes")]
    pub handle: Vec<u8>,
}

/// A file of a checkpoint as written: its name, size and CRC-32.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file name inside the checkpoint directory.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its CRC-32 (IEEE).
    pub crc32: u32,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(hex::decode).transpose().map_err(serde::de::Error::custom)
    }
}
