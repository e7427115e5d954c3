use super::journal::{self, Step};
use super::*;

/// A handle of the kind a sink stores: its area and the epochs to publish.
#[derive(Debug, Serialize, Deserialize)]
struct TestHandle {
    area: Area,
    epochs: Vec<Sealed>,
}

impl StagedHandle for TestHandle {
    fn area(&self) -> &Area {
        &self.area
    }

    fn sealed(&self) -> Vec<&Sealed> {
        self.epochs.iter().collect()
    }
}

/// Any area of a subtask in `dir`.
fn ours(dir: &Path) -> impl Fn(&TestHandle) -> Result<(), String> + '_ {
    move |h: &TestHandle| h.area.check_subtask_in(dir)
}

fn committable(checkpoint: u64, area: &Area, epochs: &[&Sealed]) -> Committable {
    let handle = TestHandle { area: area.clone(), epochs: epochs.iter().map(|&e| e.clone()).collect() };
    Committable { checkpoint, handle: encode_handle(&handle).unwrap() }
}

/// The names of the files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn all_batches(sealed: &Sealed) -> Vec<Vec<u8>> {
    let mut batches = sealed.batches().unwrap();
    let mut out = Vec::new();
    while let Some(b) = batches.next_batch().unwrap() {
        out.push(b.to_vec());
    }
    out
}

fn new_stage(dir: &Path, subtask: u32) -> Stage {
    let area = Area::subtask(dir, subtask);
    area.create().unwrap();
    Stage::new(area, 1024)
}

#[test]
fn a_tagged_batch_reads_back_as_one_block_led_by_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write_tagged_batch(3, b"frames", 2).unwrap();
    stage.write_batch(b"plain", 1).unwrap();
    let sealed = stage.seal(1).unwrap();
    assert_eq!((sealed.bytes, sealed.records), (4 + 7 + 4 + 5, 3));
    assert_eq!(all_batches(&sealed), [b"\x03frames".to_vec(), b"plain".to_vec()]);
}

#[test]
fn seal_fsyncs_the_file_then_renames_it_then_fsyncs_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write_batch(b"one", 1).unwrap();
    stage.write_batch(b"two and three", 2).unwrap();
    let in_progress = dir.path().join(&files(dir.path())[0]);
    assert_eq!(stage.area().classify(&files(dir.path())[0]), Some(FileKind::InProgress));
    journal::take();
    let sealed = stage.seal(7).unwrap();
    let file = sealed.file.clone().expect("a sealed file");
    assert_eq!(
        journal::take(),
        [Step::SyncFile(in_progress.clone()), Step::Rename(in_progress, file.clone()), Step::SyncDir(dir.path().to_path_buf())],
        "the data is durable before the rename, the rename before the checkpoint can name it"
    );
    assert_eq!((sealed.checkpoint, sealed.bytes, sealed.records), (7, 4 + 3 + 4 + 13, 3));
    assert_eq!(files(dir.path()), [file.file_name().unwrap().to_str().unwrap()]);
    assert_eq!(stage.area().classify(file.file_name().unwrap().to_str().unwrap()), Some(FileKind::Sealed(7)));
    assert_eq!(all_batches(&sealed), [b"one".to_vec(), b"two and three".to_vec()]);

    // Publishing removes the file and fsyncs the directory; repeating it is harmless.
    journal::take();
    sealed.remove().unwrap();
    assert_eq!(journal::take(), [Step::Remove(file.clone()), Step::SyncDir(dir.path().to_path_buf())]);
    sealed.remove().unwrap();
    assert!(files(dir.path()).is_empty());
    assert!(sealed.open().unwrap().is_none(), "a published epoch's file is gone");
}

#[test]
fn an_epoch_without_data_seals_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write_batch(b"", 0).unwrap();
    journal::take();
    let sealed = stage.seal(1).unwrap();
    assert_eq!(sealed, Sealed { checkpoint: 1, file: None, bytes: 0, records: 0 });
    assert!(journal::take().is_empty(), "nothing to sync");
    assert!(files(dir.path()).is_empty());
    assert!(all_batches(&sealed).is_empty());
    assert!(sealed.open().unwrap().is_none());
    sealed.remove().unwrap();
}

#[test]
fn raw_bytes_are_staged_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write(b"a\nb\n", 2).unwrap();
    stage.write(b"c\n", 1).unwrap();
    assert_eq!(stage.bytes(), 6);
    let sealed = stage.seal(1).unwrap();
    assert_eq!((sealed.bytes, sealed.records), (6, 3));
    let mut text = String::new();
    sealed.open().unwrap().unwrap().read_to_string(&mut text).unwrap();
    assert_eq!(text, "a\nb\nc\n");
    // The next epoch starts from nothing.
    assert_eq!(stage.bytes(), 0);
    stage.write(b"d\n", 1).unwrap();
    let next = stage.seal(2).unwrap();
    assert_eq!((next.bytes, next.records), (2, 1));
    assert_ne!(next.file, sealed.file);
}

#[test]
fn flush_makes_the_in_progress_file_durable_without_sealing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 3);
    stage.write(b"held back", 1).unwrap();
    journal::take();
    stage.flush().unwrap();
    let name = &files(dir.path())[0];
    assert_eq!(journal::take(), [Step::SyncFile(dir.path().join(name))]);
    assert_eq!(fs::read(dir.path().join(name)).unwrap(), b"held back");
    assert_eq!(stage.area().classify(name), Some(FileKind::InProgress));
}

#[test]
fn a_crash_between_seal_and_publish_is_published_by_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write_batch(b"epoch 1", 1).unwrap();
    let e1 = stage.seal(1).unwrap();
    let c1 = committable(1, stage.area(), &[&e1]);
    // Checkpoint 1 completes, then the process dies before the commit;
    // meanwhile epoch 2 was sealed (its checkpoint never completed) and
    // epoch 3 was being written.
    stage.write_batch(b"epoch 2", 1).unwrap();
    stage.seal(2).unwrap();
    stage.write_batch(b"epoch 3", 1).unwrap();
    stage.flush().unwrap();
    drop(stage);
    assert_eq!(files(dir.path()).len(), 3, "{:?}", files(dir.path()));

    let mut published = Vec::new();
    let recovery =
        Recovery::<TestHandle>::new("test", Some(std::slice::from_ref(&c1)), ours(dir.path()))
            .unwrap();
    for (checkpoint, handle) in recovery.handles() {
        assert_eq!(*checkpoint, 1);
        for epoch in &handle.epochs {
            published.extend(all_batches(epoch));
            epoch.remove().unwrap();
        }
    }
    recovery.finish(Some(&Area::subtask(dir.path(), 0))).unwrap();
    assert_eq!(published, [b"epoch 1".to_vec()]);
    assert!(files(dir.path()).is_empty(), "epochs after the checkpoint are discarded: {:?}", files(dir.path()));

    // A second crash, after the publish: the replay finds no file (published
    // before), which the sink checks against its destination.
    let recovery = Recovery::<TestHandle>::new("test", Some(&[c1]), ours(dir.path())).unwrap();
    let epoch = &recovery.handles()[0].1.epochs[0];
    assert!(epoch.open().unwrap().is_none());
    let err = epoch.batches().unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::User);
    assert!(err.message.contains("the records of checkpoint 1 are in") && err.message.contains("does not exist"), "{}", err.message);
}

#[test]
fn a_half_written_epoch_file_is_discarded_and_a_damaged_sealed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write_batch(&[7u8; 100], 1).unwrap();
    let sealed = stage.seal(1).unwrap();
    // A crash half-way through a write: a length and part of a batch.
    stage.write_batch(&[8u8; 100], 1).unwrap();
    stage.flush().unwrap();
    let in_progress = files(dir.path()).into_iter().find(|n| n.ends_with(".inprogress")).unwrap();
    let in_progress = dir.path().join(in_progress);
    let len = fs::metadata(&in_progress).unwrap().len();
    File::options().write(true).open(&in_progress).unwrap().set_len(len - 40).unwrap();
    drop(stage);

    // The restart discards the half-written epoch.
    let c = committable(1, &Area::subtask(dir.path(), 0), &[]);
    Recovery::<TestHandle>::new("test", Some(&[c]), ours(dir.path()))
        .unwrap()
        .finish(Some(&Area::subtask(dir.path(), 0)))
        .unwrap();
    assert!(!in_progress.exists());
    assert!(files(dir.path()).is_empty(), "and the sealed epoch no restored handle names");

    // A sealed file cut short (the disk lost data) is not published.
    let mut stage = new_stage(dir.path(), 0);
    stage.write_batch(&[9u8; 100], 1).unwrap();
    let sealed_again = stage.seal(2).unwrap();
    let path = sealed_again.file.clone().unwrap();
    File::options().write(true).open(&path).unwrap().set_len(60).unwrap();
    let err = sealed_again.batches().unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::User);
    assert!(err.message.contains("holds 60 bytes but checkpoint 2 sealed 104"), "{}", err.message);
    // Read without the length check (a file changed while it was read).
    let mut batches = Batches { file: Some(File::open(&path).unwrap()), path: path.clone(), block: Vec::new() };
    let err = batches.next_batch().unwrap_err();
    assert!(err.message.contains("ends inside a batch"), "{}", err.message);
    assert_eq!(sealed.checkpoint, 1);
}

#[test]
fn the_directory_fsync_is_real_and_its_failure_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    sync_dir(dir.path()).unwrap();
    let gone = dir.path().join("gone");
    let err = sync_dir(&gone).unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::External);
    assert!(err.message.contains(&format!("cannot fsync the directory {}", gone.display())), "{}", err.message);

    // A seal that fails half-way (here the directory moved away, so the
    // rename fails) leaves the stage failed.
    let mut stage = new_stage(&gone, 0);
    stage.write(b"x", 1).unwrap();
    stage.flush().unwrap();
    let moved = dir.path().join("elsewhere");
    fs::rename(&gone, &moved).unwrap();
    assert_eq!(stage.seal(1).unwrap_err().kind, crate::ErrorKind::External);
    let err = stage.seal(2).unwrap_err();
    assert!(err.message.contains("must restart from its last checkpoint"), "{}", err.message);
    assert_eq!(files(&moved).len(), 1, "the in-progress file is not sealed");
}

#[test]
fn a_failed_write_poisons_the_epoch_until_it_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("stage");
    let mut stage = new_stage(&sub, 0);
    fs::remove_dir(&sub).unwrap();
    let err = stage.write(b"lost", 1).unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::External);
    assert!(err.message.contains("cannot create the staging file"), "{}", err.message);
    fs::create_dir(&sub).unwrap();
    stage.write(b"later", 1).unwrap();
    let err = stage.seal(1).unwrap_err();
    assert!(err.message.contains("the records since the last checkpoint are incomplete"), "{}", err.message);
    stage.discard().unwrap();
    assert!(files(&sub).is_empty());
    stage.write(b"fresh", 1).unwrap();
    assert_eq!(stage.seal(2).unwrap().bytes, 5);
}

#[test]
fn discard_drops_the_open_epoch_and_keeps_sealed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write(b"sealed", 1).unwrap();
    let sealed = stage.seal(1).unwrap();
    stage.write(b"never sealed", 1).unwrap();
    stage.discard().unwrap();
    assert_eq!(files(dir.path()), [sealed.file.unwrap().file_name().unwrap().to_str().unwrap()]);
    assert_eq!(stage.bytes(), 0);
    stage.discard().unwrap();
}

#[test]
fn cleanup_covers_the_own_area_and_every_area_a_handle_names_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    // Parallelism 4: subtasks 1 and 3 each sealed an epoch and have one in progress.
    let mut handles = Vec::new();
    for subtask in [1, 3] {
        let mut stage = new_stage(dir.path(), subtask);
        stage.write(b"sealed", 1).unwrap();
        let sealed = stage.seal(5).unwrap();
        handles.push(committable(5, stage.area(), &[&sealed]));
        stage.write(b"in progress", 1).unwrap();
        stage.flush().unwrap();
    }
    // Subtask 2 and 13 have files too, and so does a file that is not staging's.
    for subtask in [2, 13] {
        let mut stage = new_stage(dir.path(), subtask);
        stage.write(b"other", 1).unwrap();
        stage.flush().unwrap();
    }
    fs::write(dir.path().join("1.notes"), "kept").unwrap();
    // Restored at parallelism 2, subtask 1 stands in for old subtasks 1 and 3
    // (the handles name area 3; area 1 is its own).
    let recovery = Recovery::<TestHandle>::new("test", Some(&handles), ours(dir.path())).unwrap();
    assert_eq!(recovery.handles().len(), 2);
    recovery.finish(Some(&Area::subtask(dir.path(), 1))).unwrap();
    let left = files(dir.path());
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&"1.notes".to_owned()));
    assert!(left.iter().any(|n| n.starts_with("2.")) && left.iter().any(|n| n.starts_with("13.")), "{left:?}");
}

#[test]
fn a_fresh_start_clears_the_own_area() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = new_stage(dir.path(), 0);
    stage.write(b"x", 1).unwrap();
    stage.seal(1).unwrap();
    stage.write(b"y", 1).unwrap();
    stage.flush().unwrap();
    let recovery = Recovery::<TestHandle>::new("test", None, ours(dir.path())).unwrap();
    assert!(recovery.handles().is_empty());
    journal::take();
    recovery.finish(Some(stage.area())).unwrap();
    assert!(files(dir.path()).is_empty());
    let steps = journal::take();
    assert_eq!(steps.last(), Some(&Step::SyncDir(dir.path().to_path_buf())), "{steps:?}");
    // A missing directory holds nothing to clean.
    Area::subtask(dir.path().join("missing"), 0).clear().unwrap();
}

#[test]
fn file_names_belong_to_exactly_one_area() {
    let out = Area::beside(Path::new("/data/out.txt")).unwrap();
    assert_eq!(out, Area { dir: PathBuf::from("/data"), stem: ".out.txt".into() });
    assert_eq!(Area::beside(Path::new("out.txt")).unwrap().dir, Path::new("."));
    assert!(Area::beside(Path::new("/")).is_none());
    assert_eq!(out.classify(".out.txt.00ab3f9c.inprogress"), Some(FileKind::InProgress));
    assert_eq!(out.classify(".out.txt.12.00ab3f9c.sealed"), Some(FileKind::Sealed(12)));
    assert_eq!(out.classify(".out.txt.1.txt.0abc.inprogress"), None, "the output out.txt.1.txt's file");
    assert_eq!(out.classify(".out.txt.1.txt.5.0abc.sealed"), None, "the output out.txt.1.txt's file");
    assert_eq!(out.classify(".out.txt.5.7.0abc.sealed"), None, "the output out.txt.5's file");
    assert_eq!(out.classify(".out.txt.12.sealed"), None);
    assert_eq!(out.classify(".out.txt.x.00ab.sealed"), None);
    assert_eq!(out.classify(".out.txt.inprogress"), None);
    assert_eq!(out.classify("out.txt"), None);
    assert_eq!(out.classify(".out.txt"), None);
    let one = Area::subtask("/spill", 1);
    assert_eq!(one.classify("1.3f.inprogress"), Some(FileKind::InProgress));
    assert_eq!(one.classify("10.3f.inprogress"), None, "subtask 10's");
    assert_eq!(one.classify("10.4.3f.sealed"), None, "subtask 10's");
    assert_eq!(one.classify("1.4.3f.sealed"), Some(FileKind::Sealed(4)));
}

#[test]
fn unreadable_handles_are_user_errors_and_empty_ones_are_skipped() {
    let bad = [Committable {
        checkpoint: 4,
        handle: b"not json".to_vec(),
    }];
    let err =
        Recovery::<TestHandle>::new("file", Some(&bad), ours(Path::new("/spill"))).unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::User);
    assert!(
        err.message
            .starts_with("checkpoint 4 holds a handle this file sink cannot read"),
        "{}",
        err.message
    );
    let empty = [Committable {
        checkpoint: 4,
        handle: Vec::new(),
    }];
    assert!(
        Recovery::<TestHandle>::new("file", Some(&empty), ours(Path::new("/spill")))
            .unwrap()
            .handles()
            .is_empty()
    );
    assert!(
        decode_handle::<TestHandle>("file", 4, b"")
            .unwrap()
            .is_none()
    );
}

#[test]
fn run_ids_differ_between_stages() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (new_stage(dir.path(), 0), new_stage(dir.path(), 0));
    a.write(b"a", 1).unwrap();
    b.write(b"b", 1).unwrap();
    assert_ne!(a.seal(1).unwrap().file, b.seal(1).unwrap().file, "two runs reusing checkpoint 1 do not collide");
}

#[test]
fn a_handle_naming_paths_outside_the_sinks_areas_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    let mut stage = new_stage(&spill, 0);
    stage.write(b"records", 1).unwrap();
    let sealed = stage.seal(3).unwrap();
    let victim = dir.path().join("victim.txt");
    fs::write(&victim, "precious").unwrap();
    let refused = |handle: TestHandle| {
        let c = Committable {
            checkpoint: 3,
            handle: encode_handle(&handle).unwrap(),
        };
        let err = Recovery::<TestHandle>::new("test", Some(&[c]), ours(&spill)).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::User);
        assert!(
            err.message
                .starts_with("checkpoint 3 names a path this test sink does not own: "),
            "{}",
            err.message
        );
        err.message
    };
    // Another directory as the area (the victim's): clearing it would touch it.
    let elsewhere = Area::subtask(dir.path(), 0);
    let message = refused(TestHandle {
        area: elsewhere,
        epochs: vec![],
    });
    assert!(
        message.contains(&format!(
            "its staging directory is {}, not this sink's {}",
            dir.path().display(),
            spill.display()
        )),
        "{message}"
    );
    // A stem that climbs out of the directory.
    let climbing = Area {
        dir: spill.clone(),
        stem: "../victim".into(),
    };
    assert!(
        refused(TestHandle {
            area: climbing,
            epochs: vec![]
        })
        .contains("is not a plain name")
    );
    // A stem that is not a subtask's.
    let odd = Area {
        dir: spill.clone(),
        stem: "victim".into(),
    };
    assert!(
        refused(TestHandle {
            area: odd,
            epochs: vec![]
        })
        .contains("is not a subtask's")
    );
    // A sealed file outside the area, or another checkpoint's.
    let outside = Sealed {
        file: Some(victim.clone()),
        ..sealed.clone()
    };
    assert!(
        refused(TestHandle {
            area: Area::subtask(&spill, 0),
            epochs: vec![outside]
        })
        .contains("is not a file sealed by checkpoint 3")
    );
    let other = Sealed {
        checkpoint: 4,
        ..sealed.clone()
    };
    assert!(
        refused(TestHandle {
            area: Area::subtask(&spill, 0),
            epochs: vec![other]
        })
        .contains("is not a file sealed by checkpoint 4")
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    // The genuine handle is accepted.
    let c = committable(3, &Area::subtask(&spill, 0), &[&sealed]);
    assert_eq!(
        Recovery::<TestHandle>::new("test", Some(&[c]), ours(&spill))
            .unwrap()
            .handles()
            .len(),
        1
    );
}
