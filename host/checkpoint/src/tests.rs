use super::*;
use std::io;
use std::process::Command;

const STATE: &str = "op-1-0.state";

fn store(root: &Path, pipeline: &str) -> CheckpointStore {
    CheckpointStore::with_failpoints(root, pipeline, Arc::new(Failpoints::default())).unwrap()
}

fn manifest() -> Manifest {
    let subtask = |s: SubtaskState| vec![s];
    Manifest::new(
        128,
        vec![
            VertexState {
                name: "src".into(),
                kind: VertexKind::Source,
                parallelism: 1,
                subtasks: subtask(SubtaskState { position: Some(vec![0xab, 0x01]), ..Default::default() }),
            },
            VertexState {
                name: "op-1".into(),
                kind: VertexKind::Operator,
                parallelism: 1,
                subtasks: subtask(SubtaskState {
                    state_file: Some(STATE.into()),
                    key_groups: Some((0, 128)),
                    ..Default::default()
                }),
            },
            VertexState {
                name: "sink".into(),
                kind: VertexKind::Sink,
                parallelism: 1,
                subtasks: subtask(SubtaskState {
                    committables: vec![Committable { checkpoint: 7, handle: vec![0xde, 0xad] }],
                    ..Default::default()
                }),
            },
        ],
    )
}

/// Writes a complete checkpoint with one state file; returns its id.
fn write(store: &CheckpointStore, kind: Kind, state: &[u8]) -> u64 {
    let mut w = store.begin(store.next_id(), kind).unwrap();
    w.write_file(STATE, state).unwrap();
    w.complete(manifest()).unwrap().id
}

/// Leaves an incomplete checkpoint directory behind, as a crash would; returns its id.
fn write_incomplete(store: &CheckpointStore) -> u64 {
    let mut w = store.begin(store.next_id(), Kind::Checkpoint).unwrap();
    w.write_file(STATE, b"partial").unwrap();
    let id = w.id();
    std::mem::forget(w);
    id
}

fn ids(store: &CheckpointStore) -> Vec<String> {
    store.list().unwrap().iter().map(|i| i.kind.dir_name(i.id)).collect()
}

#[test]
fn complete_checkpoint_round_trips() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    assert_eq!(s.next_id(), 1);
    assert!(s.latest_valid().unwrap().0.is_none());
    let id = write(&s, Kind::Checkpoint, b"hello state");
    assert_eq!(id, 1);

    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].id, list[0].kind, list[0].dir.clone()), (1, Kind::Checkpoint, root.path().join("p/1")));
    assert!(list[0].bytes > 11, "state file and manifest: {}", list[0].bytes);

    let (latest, warnings) = s.latest_valid().unwrap();
    let latest = latest.unwrap();
    assert!(warnings.is_empty());
    assert_eq!(latest.read_file(STATE).unwrap(), b"hello state");
    let m = &latest.manifest;
    assert_eq!((m.pipeline.as_str(), m.id, m.kind, m.version), ("p", 1, Kind::Checkpoint, 1));
    assert_eq!(m.files, vec![FileEntry { name: STATE.into(), bytes: 11, crc32: crc32fast::hash(b"hello state") }]);
    assert_eq!(m.total_bytes(), 11);
    assert_eq!(m.vertex("op-1").unwrap().subtasks[0].key_groups, Some((0, 128)));

    let json = fs::read_to_string(root.path().join("p/1").join(MANIFEST)).unwrap();
    assert!(json.contains("\"position\": \"ab01\"") && json.contains("\"handle\": \"dead\""), "{json}");
    assert!(json.contains("\"kind\": \"operator\""), "{json}");
    assert_eq!(&serde_json::from_str::<Manifest>(&json).unwrap(), m);
}

#[test]
fn incomplete_directories_are_never_restored_but_take_ids() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    write(&s, Kind::Checkpoint, b"one");
    let incomplete = write_incomplete(&s);
    assert_eq!(incomplete, 2);
    assert_eq!(s.next_id(), 3);
    assert_eq!(ids(&s), ["1"]);
    let (latest, warnings) = s.latest_valid().unwrap();
    assert_eq!(latest.unwrap().manifest.id, 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let err = s.load("2").unwrap_err();
    assert!(matches!(err, StoreError::Incomplete { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("{} is incomplete (no _manifest.json)", root.path().join("p/2").display())),
        "{err}"
    );
}

/// Checkpoints 1 and 2, then `damage` applied to 2's directory.
fn fallback_case(damage: impl FnOnce(&Path)) -> (tempfile::TempDir, CheckpointStore) {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    write(&s, Kind::Checkpoint, b"first state");
    write(&s, Kind::Checkpoint, b"second state");
    damage(&root.path().join("p/2"));
    (root, s)
}

/// Checks that checkpoint 2 is skipped with a warning naming `file` and that loading it fails
/// naming the file's path; both say `expected`.
fn assert_falls_back(s: &CheckpointStore, file: &str, expected: &str) {
    let (latest, warnings) = s.latest_valid().unwrap();
    let latest = latest.unwrap();
    assert_eq!(latest.manifest.id, 1);
    assert_eq!(latest.read_file(STATE).unwrap(), b"first state");
    let dir = s.dir().join("2");
    assert_eq!(
        warnings,
        [format!(
            "checkpoint 2 ({}) is unusable: {file} is corrupt: {expected}; falling back to checkpoint 1",
            dir.display()
        )]
    );
    let err = s.load("2").unwrap_err().to_string();
    assert!(err.starts_with(&format!("checkpoint file {} is corrupt: {expected}", dir.join(file).display())), "{err}");
}

#[test]
fn flipped_byte_falls_back_to_the_previous_checkpoint() {
    let (_root, s) = fallback_case(|dir| {
        let mut bytes = fs::read(dir.join(STATE)).unwrap();
        bytes[3] ^= 0x40;
        fs::write(dir.join(STATE), bytes).unwrap();
    });
    let mut flipped = b"second state".to_vec();
    flipped[3] ^= 0x40;
    let expected = format!(
        "checksum mismatch (recorded {:#010x}, found {:#010x})",
        crc32fast::hash(b"second state"),
        crc32fast::hash(&flipped)
    );
    assert_falls_back(&s, STATE, &expected);
}

#[test]
fn truncated_file_falls_back_to_the_previous_checkpoint() {
    let (_root, s) = fallback_case(|dir| fs::write(dir.join(STATE), b"second").unwrap());
    assert_falls_back(&s, STATE, "truncated (recorded 12 bytes, found 6)");
}

#[test]
fn garbage_manifest_falls_back_to_the_previous_checkpoint() {
    let (_root, s) = fallback_case(|dir| fs::write(dir.join(MANIFEST), b"{\"version\": 1, \"pipel").unwrap());
    assert_falls_back(&s, MANIFEST, "not a valid manifest: EOF while parsing a string at line 1 column 21");
}

#[test]
fn missing_state_file_falls_back_and_nothing_valid_gives_none() {
    let (_root, s) = fallback_case(|dir| fs::remove_file(dir.join(STATE)).unwrap());
    assert_falls_back(&s, STATE, "a file listed in the manifest is missing");
    fs::write(s.dir().join("1").join(STATE), b"").unwrap();
    let (latest, warnings) = s.latest_valid().unwrap();
    assert!(latest.is_none());
    assert_eq!(warnings.len(), 2);
    assert!(
        warnings[1].starts_with("checkpoint 1 ") && warnings[1].ends_with("no older checkpoint to fall back to"),
        "{}",
        warnings[1]
    );
}

#[test]
fn read_file_checks_again_after_verification() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    write(&s, Kind::Checkpoint, b"state");
    let loaded = s.load("1").unwrap();
    fs::write(loaded.dir.join(STATE), b"stat!").unwrap();
    let err = loaded.read_file(STATE).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }) && err.to_string().contains("checksum mismatch"), "{err}");
    assert!(loaded.read_file("other.state").unwrap_err().to_string().contains("no such file"));
}

#[test]
fn retain_keeps_newest_savepoints_and_pinned_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    write(&s, Kind::Checkpoint, b"1"); // 1
    write(&s, Kind::Savepoint, b"2"); // savepoint-2
    write(&s, Kind::Checkpoint, b"3"); // 3
    write_incomplete(&s); // 4
    for _ in 5..=7 {
        write(&s, Kind::Checkpoint, b"n");
    }
    let newer_incomplete = write_incomplete(&s); // 8
    fs::write(s.dir().join("7/op-1-1.state.tmp"), b"stray").unwrap();
    let stale = s.dir().join("5/_in-use.4294967294.0");
    fs::write(&stale, b"").unwrap();
    let pin = s.load("1").unwrap().pin().unwrap();

    assert_eq!(s.retain(3).unwrap(), [3, 4]);
    assert_eq!(ids(&s), ["1", "savepoint-2", "5", "6", "7"]);
    assert!(s.dir().join(newer_incomplete.to_string()).is_dir(), "an incomplete newer directory may be in progress");
    assert!(!s.dir().join("7/op-1-1.state.tmp").exists(), "stray temp file removed");
    assert!(!stale.exists(), "stale in-use marker removed");
    assert_eq!(s.latest_valid().unwrap().0.unwrap().manifest.id, 7, "retention leaves no corrupt checkpoint");

    drop(pin);
    assert_eq!(s.retain(3).unwrap(), [1]);
    assert_eq!(s.retain(0).unwrap(), [5, 6, 7]);
    assert_eq!(ids(&s), ["savepoint-2"]);
    assert_eq!(s.next_id(), 9);
}

#[test]
fn unpin_removes_the_marker() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    write(&s, Kind::Checkpoint, b"1");
    write(&s, Kind::Checkpoint, b"2");
    let one = s.load("1").unwrap();
    let (a, b) = (one.pin().unwrap(), one.pin().unwrap());
    a.unpin().unwrap();
    assert!(s.retain(1).unwrap().is_empty(), "still pinned by the second pin");
    drop(b);
    assert_eq!(s.retain(1).unwrap(), [1]);
    let two = s.load("2").unwrap();
    fs::remove_dir_all(s.dir().join("2")).unwrap();
    assert!(two.pin().unwrap_err().to_string().contains("cannot create in-use marker"));
}

#[test]
fn load_by_id_savepoint_and_path() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    write(&s, Kind::Checkpoint, b"c1");
    write(&s, Kind::Savepoint, b"s2");
    write(&s, Kind::Checkpoint, b"c3");
    write_incomplete(&s);
    assert_eq!(s.load("1").unwrap().read_file(STATE).unwrap(), b"c1");
    let sp = s.load("savepoint-2").unwrap();
    assert_eq!((sp.manifest.kind, sp.read_file(STATE).unwrap()), (Kind::Savepoint, b"s2".to_vec()));

    let other = store(root.path(), "other");
    write(&other, Kind::Checkpoint, b"other");
    let by_path = s.load(other.dir().join("1").to_str().unwrap()).unwrap();
    assert_eq!((by_path.manifest.pipeline.as_str(), by_path.read_file(STATE).unwrap()), ("other", b"other".to_vec()));

    let err = s.load("17").unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("no checkpoint 17 in {} (available: 1, savepoint-2, 3); ", s.dir().display())),
        "{err}"
    );
    assert!(s.load("savepoint-1").unwrap_err().to_string().contains("no checkpoint savepoint-1 in"));
    let missing = root.path().join("elsewhere/9");
    let err = s.load(missing.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("no checkpoint 9 in {} (available: none)", root.path().join("elsewhere").display())),
        "{err}"
    );

    // A directory renamed to another id is caught.
    fs::rename(other.dir().join("1"), other.dir().join("5")).unwrap();
    let err = s.load(other.dir().join("5").to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("the manifest describes checkpoint 1 but the directory is checkpoint 5"), "{err}");
}

#[test]
fn disk_full_failpoint_fails_the_write_and_abort_cleans_up() {
    let root = tempfile::tempdir().unwrap();
    let s = CheckpointStore::with_failpoints(root.path(), "p", Arc::new(Failpoints::parse("disk-full@2").unwrap()))
        .unwrap();
    write(&s, Kind::Checkpoint, b"fine");
    let mut w = s.begin(2, Kind::Checkpoint).unwrap();
    let err = w.write_file(STATE, b"too big").unwrap_err();
    let StoreError::Io { source, path, .. } = &err else { panic!("{err}") };
    assert_eq!(source.kind(), io::ErrorKind::StorageFull);
    assert_eq!(path, &s.dir().join("2/op-1-0.state.tmp"));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("No space left on device (failpoint disk-full)"), "{err}");
    w.abort();
    assert!(!s.dir().join("2").exists());
    assert_eq!(s.next_id(), 2);
    write(&s, Kind::Checkpoint, b"fired once");
    assert_eq!(ids(&s), ["1", "2"]);
}

#[test]
fn writer_rejects_misuse() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path(), "p");
    assert!(CheckpointStore::open(root.path(), "../escape").is_err());
    let mut w = s.begin(1, Kind::Checkpoint).unwrap();
    for bad in ["../x", "_manifest.json", "a.tmp", ".hidden", ""] {
        assert!(matches!(w.write_file(bad, b"x"), Err(StoreError::Invalid { .. })), "{bad:?} accepted");
    }
    w.write_file("a", b"x").unwrap();
    assert!(w.write_file("a", b"y").unwrap_err().to_string().contains("written twice"));
    let err = s.begin(1, Kind::Checkpoint).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = w.complete(manifest()).unwrap_err().to_string();
    assert!(err.contains("refers to state file op-1-0.state"), "{err}");
    assert!(!s.dir().join("1").exists(), "a failed completion removes the directory");
}

/// Runs [`crash_child`] in a child process with `failpoints` armed; returns the root and stderr.
fn crash(failpoints: &str) -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["tests::crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(failpoint::ENV, failpoints)
        .env("WEIR_TEST_CRASH_ROOT", root.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the child survived: {stderr}");
    (root, stderr)
}

#[test]
#[ignore = "the child process of the crash tests"]
fn crash_child() {
    let Some(root) = std::env::var_os("WEIR_TEST_CRASH_ROOT") else { return };
    let s = CheckpointStore::open(Path::new(&root), "p").unwrap();
    write(&s, Kind::Checkpoint, b"survives");
    write(&s, Kind::Checkpoint, &[7; 1000]);
    panic!("no failpoint fired");
}

#[test]
fn crash_while_writing_a_state_file_leaves_an_incomplete_checkpoint() {
    let (root, stderr) = crash("state-file-half@2");
    assert!(
        stderr.contains("weir: failpoint state-file-half reached at checkpoint 2; aborting the process"),
        "{stderr}"
    );
    let s = store(root.path(), "p");
    assert_eq!(fs::read(s.dir().join("2/op-1-0.state.tmp")).unwrap(), [7; 500]);
    assert!(!s.dir().join("2").join(STATE).exists());
    assert_recovers(&s);
}

#[test]
fn crash_before_completion_leaves_an_incomplete_checkpoint() {
    let (root, stderr) = crash("before-completion@2");
    assert!(
        stderr.contains("weir: failpoint before-completion reached at checkpoint 2; aborting the process"),
        "{stderr}"
    );
    let s = store(root.path(), "p");
    assert_eq!(fs::read(s.dir().join("2").join(STATE)).unwrap(), [7; 1000]);
    assert!(s.dir().join("2/_manifest.json.tmp").exists() && !s.dir().join("2").join(MANIFEST).exists());
    assert_recovers(&s);
}

/// After a crash during checkpoint 2: restore from 1, then the next checkpoint lets retention
/// remove 2.
fn assert_recovers(s: &CheckpointStore) {
    let (latest, warnings) = s.latest_valid().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(latest.unwrap().read_file(STATE).unwrap(), b"survives");
    assert_eq!(s.next_id(), 3);
    assert!(s.retain(5).unwrap().is_empty(), "2 is newer than every complete checkpoint");
    write(s, Kind::Checkpoint, b"after restart");
    assert_eq!(s.retain(5).unwrap(), [2]);
    assert_eq!(ids(s), ["1", "3"]);
}
