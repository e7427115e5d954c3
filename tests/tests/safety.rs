//! Issue 16, "data is sacred": output that a run published is never
//! replaced without `--fresh`, and a pipeline file that `weir check`
//! accepts never fails later for a name, a parallelism or a duration.
//! Each test fails on the code before the issue.

use std::time::Duration;
use weir_tests::{plugin_dir, Scratch};

const T: Duration = Duration::from_secs(300);

/// generator -> running sums per user -> file sink, checkpointed.
fn pipeline(name: &str) -> String {
    format!(
        r#"
name = "{name}"
[checkpoint]
interval = "100ms"
[sources.events]
type = "generator"
count = 50000
seed = 3
[[operators]]
name = "parse"
plugin = "json-filter"
config = {{ project = ["user", "amount"], key = "user" }}
[[operators]]
name = "sum"
plugin = "running-sum"
partition = "hash"
[sinks.out]
type = "file"
path = "out/sums.jsonl"
"#
    )
}

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

fn finished_run(s: &Scratch) -> Vec<u8> {
    plugin_dir();
    s.pipeline("p.toml", &pipeline("sums"));
    s.weir(&RUN, T).expect_code(0);
    let out = std::fs::read(s.path("out/sums.jsonl")).expect("output");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 50_000);
    out
}

/// The complete checkpoints of pipeline `sums`.
fn checkpoints(s: &Scratch) -> Vec<std::path::PathBuf> {
    let dir = s.path("data/checkpoints/sums");
    let mut dirs: Vec<_> = std::fs::read_dir(&dir)
        .expect("checkpoint directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("_manifest.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn damaged_checkpoints_never_start_over_silently() {
    let s = Scratch::new();
    let published = finished_run(&s);
    // A flipped byte in every state file of every complete checkpoint.
    let all = checkpoints(&s);
    assert!(!all.is_empty());
    for c in &all {
        let state = c.join("sum-0.state");
        let mut bytes = std::fs::read(&state).expect("state file");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&state, bytes).unwrap();
    }
    // The input changed too: a fresh start would write different output.
    s.pipeline("p.toml", &pipeline("sums").replace("seed = 3", "seed = 4"));
    let run = s.weir(&RUN, T);
    run.expect_code(2).expect_stderr(&["none is usable", "sum-0.state", "--fresh"]);
    assert!(std::fs::read(s.path("out/sums.jsonl")).unwrap() == published, "the published output was changed");

    // A manifest cut in half is as damaged as a state file.
    let manifest = all.last().unwrap().join("_manifest.json");
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    s.weir(&RUN, T).expect_code(2).expect_stderr(&["_manifest.json", "--fresh"]);
    assert!(std::fs::read(s.path("out/sums.jsonl")).unwrap() == published);

    // Only --fresh starts over.
    s.weir(&["run", "--quiet", "--metrics-address", "off", "--fresh", "p.toml"], T).expect_code(0);
    assert!(std::fs::read(s.path("out/sums.jsonl")).unwrap() != published, "--fresh processes the changed input again");
}

#[test]
fn lost_checkpoints_never_replace_published_output() {
    let s = Scratch::new();
    let published = finished_run(&s);
    // The checkpoints are gone (deleted, or the pipeline renamed): the
    // output file is all that says what was published.
    std::fs::remove_dir_all(s.path("data/checkpoints/sums")).unwrap();
    s.weir(&RUN, T).expect_code(2).expect_stderr(&["sinks.out", "sums.jsonl", "already holds", "--fresh"]);
    s.pipeline("p.toml", &pipeline("renamed"));
    s.weir(&RUN, T).expect_code(2).expect_stderr(&["sinks.out", "pipeline `renamed`", "--fresh"]);
    assert!(std::fs::read(s.path("out/sums.jsonl")).unwrap() == published, "the published output was changed");
}

#[test]
fn a_run_killed_before_its_first_checkpoint_starts_again() {
    // A directory without a manifest and an empty output are what a run
    // that died during its first checkpoint leaves: nothing was published,
    // so the next run starts without --fresh.
    let s = Scratch::new();
    plugin_dir();
    s.pipeline("p.toml", &pipeline("sums"));
    std::fs::create_dir_all(s.path("data/checkpoints/sums/1")).unwrap();
    std::fs::write(s.path("data/checkpoints/sums/1/sum-0.state.tmp"), b"half").unwrap();
    std::fs::create_dir_all(s.path("out")).unwrap();
    std::fs::write(s.path("out/sums.jsonl"), b"").unwrap();
    s.weir(&RUN, T).expect_code(0);
}

fn check(s: &Scratch, body: &str) -> weir_tests::Run {
    plugin_dir();
    s.pipeline("p.toml", body);
    s.weir(&["check", "p.toml"], T)
}

#[test]
fn names_that_cannot_be_file_names_fail_check() {
    let s = Scratch::new();
    for bad in ["a/b", ".x", "..", "_hidden", ""] {
        let body = pipeline("sums").replace(r#"name = "sum""#, &format!("name = {bad:?}"));
        check(&s, &body).expect_code(2).expect_stderr(&["operators[1].name", "not a valid name"]);
    }
    let body = pipeline("sums").replace("[sinks.out]", "[sinks.\"o/ut\"]");
    check(&s, &body).expect_code(2).expect_stderr(&["sinks.o/ut", "not a valid name"]);
    let body = pipeline("..");
    check(&s, &body).expect_code(2).expect_stderr(&["name", "not a valid name"]);
}

#[test]
fn plugins_load_only_from_the_plugin_directory() {
    let s = Scratch::new();
    for outside in ["../plugins/running_sum", "/tmp/running_sum"] {
        let body = pipeline("sums").replace(r#"plugin = "running-sum""#, &format!("plugin = {outside:?}"));
        check(&s, &body).expect_code(2).expect_stderr(&["operators[1].plugin", "plugin-dir"]);
    }
}

#[test]
fn parallelism_and_durations_are_bounded_at_check() {
    let s = Scratch::new();
    let body = pipeline("sums").replace("[checkpoint]", "parallelism = 1000000000\n[checkpoint]");
    check(&s, &body).expect_code(2).expect_stderr(&["parallelism", "1024"]);
    let body = pipeline("sums").replace(r#"partition = "hash""#, "partition = \"hash\"\nparallelism = 5000");
    check(&s, &body).expect_code(2).expect_stderr(&["operators[1].parallelism"]);
    let body = pipeline("sums").replace(r#"interval = "100ms""#, r#"interval = "300000000000y""#);
    check(&s, &body).expect_code(2).expect_stderr(&["checkpoint.interval", "366 days"]);
}

#[test]
fn a_finished_pipeline_run_again_does_nothing() {
    let s = Scratch::new();
    let published = finished_run(&s);
    let listing = |s: &Scratch| {
        let mut l: Vec<_> = std::fs::read_dir(s.path("data/checkpoints/sums")).unwrap().map(|e| e.unwrap().file_name()).collect();
        l.sort();
        l
    };
    let before = listing(&s);
    for _ in 0..3 {
        s.weir(&RUN, T).expect_code(0).expect_stderr(&["already finished"]);
    }
    assert_eq!(listing(&s), before, "no new checkpoint pushes the old ones out");
    assert!(std::fs::read(s.path("out/sums.jsonl")).unwrap() == published);
}

#[test]
fn a_checkpoint_naming_files_the_sink_does_not_own_is_refused() {
    let s = Scratch::new();
    let published = finished_run(&s);
    // A file beside the output, as long as the published output: restoring
    // a handle that names it would "publish" into it.
    let victim = s.path("out/other.jsonl");
    std::fs::write(&victim, &published).unwrap();
    let manifest = checkpoints(&s)
        .pop()
        .expect("a checkpoint")
        .join("_manifest.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let mut edited = 0;
    for vertex in json["vertices"].as_array_mut().unwrap() {
        for subtask in vertex["subtasks"].as_array_mut().into_iter().flatten() {
            for c in subtask["committables"].as_array_mut().into_iter().flatten() {
                let handle =
                    String::from_utf8(hex::decode(c["handle"].as_str().unwrap()).unwrap()).unwrap();
                let forged = handle.replace("sums.jsonl", "other.jsonl");
                assert_ne!(forged, handle, "the handle names the output: {handle}");
                c["handle"] = hex::encode(forged).into();
                edited += 1;
            }
        }
    }
    assert!(edited > 0, "the sink stored a handle: {json}");
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
    s.weir(&RUN, T).expect_code(2).expect_stderr(&[
        "names a path this file sink does not own",
        "other.jsonl",
        "--fresh",
    ]);
    assert!(
        std::fs::read(&victim).unwrap() == published,
        "the other file is untouched"
    );
    assert!(
        std::fs::read(s.path("out/sums.jsonl")).unwrap() == published,
        "the output is untouched"
    );
}

#[test]
fn a_compile_cache_other_users_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    plugin_dir();
    s.pipeline("p.toml", &pipeline("sums"));
    // A cached artifact is loaded as machine code: a directory others can
    // write to would let them run theirs in weir.
    let cache = s.path("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(weir_tests::weir_bin())
        .args(RUN)
        .current_dir(s.path(""))
        .env("WEIR_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not using the compile cache")
            && stderr.contains("other users can write to it"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing was written to it"
    );
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn an_idle_pipeline_without_operators_does_not_spin() {
    // One record a second: the run is idle nearly all the time. The reload
    // thread used to select on closed channels and burn a core.
    let s = Scratch::new();
    s.pipeline(
        "p.toml",
        "name = \"idle\"\n[sources.events]\ntype = \"generator\"\nrate = 1\ncount = 30\n[sinks.out]\ntype = \"discard\"\n",
    );
    let mut child = s.command(&["run", "--quiet", "--metrics-address", "off", "p.toml"]).spawn().expect("start weir");
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_seconds(child.id()) - before;
    let _ = child.kill();
    let _ = child.wait();
    // A spinning thread uses ~4 CPU seconds in these 4 seconds; an idle run
    // a few hundredths.
    assert!(used < 1.0, "an idle run used {used:.2} CPU seconds in 4 seconds");
}
