//! Issue 4: checkpoints and exactly-once recovery, shown the way a user
//! would see them: a real `weir run` killed with SIGKILL (or aborted at an
//! exact checkpoint step by a failpoint), started again, and its output
//! compared byte for byte with an uninterrupted run.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;
use weir_tests::{json_lines, kill_after, succeed, sums_output as output, Lcg, Scratch};

/// The crash tests' job with checkpoints every `interval`.
fn pipeline(count: u64, rate: u64, parallelism: u32, interval: &str) -> String {
    weir_tests::sums_pipeline(count, rate, parallelism, &format!("interval = \"{interval}\""))
}

fn weir(s: &Scratch, args: &[&str], failpoints: Option<&str>) -> Command {
    let mut cmd = s.command(args);
    if let Some(f) = failpoints {
        cmd.env("WEIR_FAILPOINTS", f);
    }
    cmd
}

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

/// Runs to the end; panics unless it succeeds. Returns stderr.
fn run_to_end(s: &Scratch, extra: &[&str]) -> String {
    let mut args = RUN.to_vec();
    args.extend_from_slice(extra);
    succeed(&mut weir(s, &args, None))
}

/// Starts a run and kills it with SIGKILL after `after` (unless it
/// finished first).
fn run_and_kill(s: &Scratch, after: Duration) {
    let mut child = weir(s, &RUN, None).stderr(Stdio::null()).spawn().expect("start weir");
    kill_after(&mut child, after);
}

/// The output of an uninterrupted run of `body`.
fn reference(body: &str) -> Vec<u8> {
    let s = Scratch::new();
    s.pipeline("p.toml", body);
    run_to_end(&s, &[]);
    output(&s)
}

#[test]
fn twenty_sigkills_change_nothing_in_the_output() {
    // 1 M records at 100 k/s: about 10 s of work, killed 20 times.
    let body = pipeline(1_000_000, 100_000, 1, "200ms");
    let expected = reference(&body);
    assert_eq!(expected.iter().filter(|&&b| b == b'\n').count(), 1_000_000, "one running sum per record");

    let s = Scratch::new();
    s.pipeline("p.toml", &body);
    let mut rng = Lcg(20261121);
    for _ in 0..20 {
        run_and_kill(&s, Duration::from_millis(rng.next_ms(300, 1500)));
    }
    let stderr = run_to_end(&s, &[]);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let actual = output(&s);
    assert_eq!(actual.len(), expected.len(), "output size differs from the uninterrupted run's");
    assert!(actual == expected, "output differs from the uninterrupted run's");
    // Nothing half-written is left next to the output.
    let leftovers: Vec<_> = std::fs::read_dir(s.path("out")).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_crash_at_each_checkpoint_step_recovers_exactly() {
    // Parallelism 2: barriers are aligned at the tasks' input gates. Which
    // subtask of `parse` a record passes through varies from run to run, so
    // the order of a key's records at `sum` does too: compare what does not
    // depend on it, one output per record and each key's final sum.
    let count = 200_000;
    let body = pipeline(count, 100_000, 2, "150ms");
    let expected = final_sums(&reference(&body));
    for point in ["after-barrier-injection", "after-state-write", "after-sink-pre-commit", "before-completion", "state-file-half"] {
        let s = Scratch::new();
        s.pipeline("p.toml", &body);
        let out = weir(&s, &RUN, Some(&format!("{point}@3"))).output().expect("run weir");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: the run should have died");
        assert!(stderr.contains(&format!("failpoint {point} reached at checkpoint 3")), "{point}: {stderr}");
        let stderr = run_to_end(&s, &[]);
        assert!(stderr.contains("resuming from checkpoint 2"), "{point}: {stderr}");
        let out = output(&s);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), count as usize, "{point}: one output per record, none twice");
        assert_eq!(final_sums(&out), expected, "{point}");
    }
}

/// The last sum of each key in the output (the running sums only grow).
fn final_sums(bytes: &[u8]) -> BTreeMap<String, i64> {
    let mut sums = BTreeMap::new();
    for v in json_lines(&String::from_utf8_lossy(bytes)) {
        let key = v["key"].as_str().expect("key").to_owned();
        let sum = v["sum"].as_i64().expect("sum");
        let e = sums.entry(key).or_insert(sum);
        *e = (*e).max(sum);
    }
    sums
}

#[test]
fn restore_at_parallelism_1_then_3_then_2_gives_the_same_sums() {
    let count = 300_000;
    let expected = final_sums(&reference(&pipeline(count, 1_000_000, 1, "100ms")));
    let s = Scratch::new();
    for (parallelism, kill_after) in [(1, 700), (3, 900)] {
        s.pipeline("p.toml", &pipeline(count, 100_000, parallelism, "100ms"));
        run_and_kill(&s, Duration::from_millis(kill_after));
    }
    s.pipeline("p.toml", &pipeline(count, 1_000_000, 2, "100ms"));
    let stderr = run_to_end(&s, &[]);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let out = output(&s);
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), count as usize, "one output per record, none twice");
    assert_eq!(final_sums(&out), expected);
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let body = pipeline(200_000, 100_000, 1, "150ms");
    let expected = reference(&body);
    let s = Scratch::new();
    s.pipeline("p.toml", &body);
    run_and_kill(&s, Duration::from_millis(1000));
    let dir = s.path("data/checkpoints/sums");
    let mut ids: Vec<u64> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok()).collect();
    ids.sort();
    let latest = *ids.last().expect("a checkpoint was taken");
    let state = dir.join(latest.to_string()).join("sum-0.state");
    let mut bytes = std::fs::read(&state).expect("state file of the latest checkpoint");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();

    let stderr = run_to_end(&s, &[]);
    assert!(stderr.contains(&format!("checkpoint {latest}")) && stderr.contains("unusable"), "{stderr}");
    assert!(stderr.contains("sum-0.state"), "the warning names the file: {stderr}");
    assert!(stderr.contains(&format!("falling back to checkpoint {}", ids[ids.len() - 2])), "{stderr}");
    assert!(output(&s) == expected, "output differs from the uninterrupted run's");
}

#[test]
fn a_full_disk_fails_one_checkpoint_and_the_run_goes_on() {
    let body = pipeline(100_000, 100_000, 1, "100ms");
    let expected = reference(&body);
    let s = Scratch::new();
    s.pipeline("p.toml", &body);
    let mut args = RUN.to_vec();
    args.retain(|a| *a != "--quiet");
    let out = weir(&s, &args, Some("disk-full@2")).output().expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("checkpoint failed") && stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("1 failed"), "the summary counts the failure: {stderr}");
    assert!(output(&s) == expected);
}

#[test]
fn a_savepoint_is_kept_and_restorable() {
    let body = pipeline(200_000, 50_000, 1, "100ms").replace("interval = \"100ms\"", "interval = \"100ms\"\nretain = 1");
    let s = Scratch::new();
    s.pipeline("p.toml", &body);
    let mut child = weir(&s, &RUN, None).spawn().expect("start weir");
    std::thread::sleep(Duration::from_millis(1000));
    let sp = weir(&s, &["savepoint", "p.toml"], None).stdout(Stdio::piped()).output().expect("weir savepoint");
    assert!(sp.status.success(), "{}", String::from_utf8_lossy(&sp.stderr));
    let dir = String::from_utf8_lossy(&sp.stdout).trim().to_owned();
    assert!(dir.contains("savepoint-"), "{dir}");
    assert!(child.wait().unwrap().success());
    // Retention (retain = 1) deleted older checkpoints but not the savepoint.
    assert!(std::path::Path::new(&dir).join("_manifest.json").is_file(), "savepoint {dir} was deleted");
    // Restoring from it replays from that point: the output ends the same.
    let id = dir.rsplit('/').next().unwrap().to_owned();
    let stderr = run_to_end(&s, &["--from-checkpoint", &id]);
    assert!(stderr.contains("resuming from savepoint"), "{stderr}");
    let sums = final_sums(&output(&s));
    assert_eq!(sums, final_sums(&reference(&body)));
    // Nobody answers for a pipeline that is not running.
    let no = weir(&s, &["savepoint", "p.toml"], None).output().unwrap();
    assert!(!no.status.success());
    assert!(String::from_utf8_lossy(&no.stderr).contains("is not running"));
}

#[test]
fn disk_state_survives_a_crash_and_restores_into_heap_state() {
    let count = 200_000;
    let heap = pipeline(count, 100_000, 2, "150ms");
    let disk = heap.replace("[checkpoint]", "[state]\nbackend = \"disk\"\n[checkpoint]");
    let expected = final_sums(&reference(&heap));
    let s = Scratch::new();
    s.pipeline("p.toml", &disk);
    run_and_kill(&s, Duration::from_millis(900));
    // Restored into the disk backend, killed again, then finished on the heap:
    // both backends read and write the same checkpoint format.
    run_and_kill(&s, Duration::from_millis(700));
    s.pipeline("p.toml", &heap);
    let stderr = run_to_end(&s, &[]);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let out = output(&s);
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), count as usize, "one output per record, none twice");
    assert_eq!(final_sums(&out), expected);
}
