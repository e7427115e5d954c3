//! Issue 21: the HTTP sink against a real HTTP receiver (a std-thread
//! server in this process) and the real `weir` binary: batched requests
//! with idempotency keys that survive SIGKILLs of weir and a restart of
//! the receiver, so deduplicating by key leaves every record exactly once;
//! retries on 503, dead letters for refused requests and records that are
//! not JSON, and clear errors for bad settings.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use weir_test_support::hook_server::HookServer;
use weir_tests::{Lcg, Scratch, kill_after, kill_rounds_with_a_receiver_outage};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

#[test]
fn sigkills_and_a_receiver_restart_leave_each_record_once_by_idempotency_key() {
    let hook = HookServer::start();
    let s = Scratch::new();
    const N: u64 = 60_000;
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "hooks"
[checkpoint]
interval = "300ms"
[sources.events]
type = "generator"
count = {N}
rate = 5000
[sinks.hook]
type = "http"
url = "{}"
batch = {{ records = 700 }}
retry = {{ initial-backoff = "50ms", max-backoff = "200ms" }}
"#,
            hook.url()
        ),
    );
    // First a crash between two requests of one checkpoint's publish.
    let out = s.command(&RUN).env("WEIR_FAILPOINTS", "http-mid-publish@4").output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failpoint http-mid-publish reached at checkpoint 4"), "{stderr}");
    // Then SIGKILLs, with the receiver going away under a running weir,
    // which retries.
    let out = kill_rounds_with_a_receiver_outage(&s, &RUN, &mut Lcg(7), (1000, 2000), Duration::from_millis(800), || hook.stop(), || hook.restart());
    assert!(out.status.success(), "the last run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let got = hook.records_once_by_key("weir-hooks-hook-0-", 700);
    let replayed = hook.accepted().iter().filter(|d| d.key == "weir-hooks-hook-0-4-0").count();
    assert!(replayed >= 2, "the request answered before the crash was sent again, with its key ({replayed} times)");
    assert_eq!(got.ids.len() as u64, N, "every record arrived: {} of {N} ({} requests, {} distinct keys)", got.ids.len(), got.requests, got.keys);
    assert_eq!(got.ids.last(), Some(&(N - 1)));
}

#[test]
fn retries_then_dead_letters_for_refused_requests_and_records_that_are_not_json() {
    let hook = HookServer::start();
    hook.refuse_containing("poison");
    hook.fail_next(2);
    let s = Scratch::new();
    s.write("in.jsonl", "{\"id\":1}\nnot json\n{\"id\":2,\"poison\":true}\n{\"id\":3}\n");
    s.pipeline(
        "p.toml",
        &format!(
            "name = \"dl\"\n[checkpoint]\ninterval = \"1s\"\n[sources.lines]\ntype = \"file\"\npath = \"in.jsonl\"\n\
             [sinks.hook]\ntype = \"http\"\nurl = \"{}\"\nformat = \"ndjson\"\nbatch = {{ records = 1 }}\n\
             headers = {{ X-Source = \"weir-test\" }}\nretry = {{ initial-backoff = \"20ms\" }}\n",
            hook.url()
        ),
    );
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let bodies: Vec<String> = hook.accepted().iter().map(|d| String::from_utf8_lossy(&d.body).into_owned()).collect();
    assert_eq!(bodies, ["{\"id\":1}\n", "{\"id\":3}\n"], "the refused request is not retried; the others arrive once");
    assert_eq!(hook.requests(), 2 + 3, "two 503s were retried");
    assert!(hook.accepted()[0].headers.contains(&("x-source".into(), "weir-test".into())));
    let dir = s.path("data/http-dead-letters/dl/hook");
    let files: Vec<String> = std::fs::read_dir(&dir).expect("dead letters").map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let file = |suffix: &str| dir.join(files.iter().find(|f| f.ends_with(suffix)).unwrap_or_else(|| panic!("no *{suffix} in {files:?}")));
    let refused: serde_json::Value = serde_json::from_slice(&std::fs::read(file(".json")).unwrap()).unwrap();
    assert_eq!((refused["status"].as_u64(), refused["records"].as_u64()), (Some(400), Some(1)), "{refused}");
    assert!(refused["body"].as_str().unwrap().contains("poison") && refused["answer"].as_str().unwrap().contains("poison refused"));
    let bad = std::fs::read_to_string(file("-bad-records.jsonl")).unwrap();
    assert!(bad.contains("not JSON") && bad.contains("\"value\":\"not json\""), "{bad}");
}

#[test]
fn bad_settings_and_an_unreachable_receiver_are_named() {
    let s = Scratch::new();
    let body = |extra: &str| format!("name = \"bad\"\n[sources.g]\ntype = \"generator\"\ncount = 10\n[sinks.hook]\ntype = \"http\"\n{extra}\n");
    s.pipeline("p.toml", &body("url = \"ftp://example.com/x\"\nheaders = { Host = \"evil\" }"));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    assert!(run.code != Some(0) && run.stderr.contains("sinks.hook.url") && run.stderr.contains("sinks.hook.headers.Host"), "{}", run.stderr);
    s.pipeline("p.toml", &body("url = \"http://127.0.0.1:1/hook\"\non-failure = \"fail\"\nretry = { initial-backoff = \"10ms\", give-up-after = \"300ms\" }"));
    let run = s.weir(&["run", "--quiet", "--metrics-address", "off", "p.toml"], Duration::from_secs(60));
    assert!(run.code != Some(0) && run.stderr.contains("sink `hook` (http)") && run.stderr.contains("retry.give-up-after"), "{}", run.stderr);
}

/// Sending runs behind staging: while the receiver is down, checkpoints go
/// on completing and their epochs wait on disk, each carried in every later
/// checkpoint's handle. A SIGKILL then restores from a checkpoint whose own
/// epoch is only the last of several unsent: all of them must be sent.
#[test]
fn epochs_still_unsent_when_later_checkpoints_complete_survive_a_sigkill() {
    let hook = HookServer::start();
    hook.stop();
    let s = Scratch::new();
    const N: u64 = 20_000;
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "hooks"
[checkpoint]
interval = "200ms"
[sources.events]
type = "generator"
count = {N}
rate = 10000
[sinks.hook]
type = "http"
url = "{}"
batch = {{ records = 500 }}
retry = {{ initial-backoff = "50ms", max-backoff = "100ms" }}
"#,
            hook.url()
        ),
    );
    let mut child = s.command(&RUN).spawn().expect("weir");
    kill_after(&mut child, Duration::from_millis(1500));
    assert_eq!(child.try_wait().expect("wait").and_then(|s| s.signal()), Some(9), "weir was killed mid-run");
    let staged = std::fs::read_dir(s.path("data/http/hooks/hook")).map_or(0, |d| d.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sealed"))).count());
    assert!(staged >= 2, "several sealed epochs were waiting to be sent at the kill ({staged})");
    assert!(hook.accepted().is_empty(), "nothing could be sent while the receiver was down");
    hook.restart();
    let out = s.command(&RUN).output().expect("weir");
    assert!(out.status.success(), "the restored run finishes: {}", String::from_utf8_lossy(&out.stderr));
    let got = hook.records_once_by_key("weir-", 500);
    assert_eq!(got.ids.len() as u64, N, "every record arrived ({staged} sealed epochs were waiting at the kill)");
}
