//! Checkpoints in an object store (`checkpoint.store = "s3://…"`, the shared
//! checkpoint storage of issue 22), shown with the real `weir` binary
//! against a real S3-compatible server (`moto_server`, started per test):
//! SIGKILLs of weir and a hung store mid-run change nothing in the output;
//! a corrupt checkpoint in the bucket is caught and an older one used; a
//! store that cannot be reached at start is an error that says so, never a
//! fresh start; bad keys are named; one run at a time writes a pipeline's
//! checkpoints in the bucket (the claim), and a run whose claim was taken
//! over stops.

use std::time::Duration;
use weir_test_support::s3::Moto;
use weir_tests::{Lcg, Scratch, kill_after, kill_rounds_with_a_receiver_outage, succeed, sums_output as output};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];
const BUCKET: &str = "checkpoints";

/// The crash tests' job, checkpointed every 150 ms into `checkpoint` (TOML
/// lines of the `[checkpoint]` table).
fn pipeline(count: u64, rate: u64, checkpoint: &str) -> String {
    weir_tests::sums_pipeline(count, rate, 1, &format!("interval = \"150ms\"\n{checkpoint}"))
}

/// The `[checkpoint]` lines for the bucket of `moto`, credentials from a
/// file in `s` (so that every `weir` started in `s` finds them).
fn in_bucket(s: &Scratch, endpoint: &str) -> String {
    s.write("aws.ini", "aws_access_key_id = test\naws_secret_access_key = test\n");
    format!(
        "store = \"s3://{BUCKET}/weir\"\n[checkpoint.s3]\nendpoint = \"{endpoint}\"\npath-style = true\n\
         credentials-file = \"aws.ini\"\nrequest-timeout = \"1s\"\n"
    )
}

/// The output of an uninterrupted run with checkpoints in a local directory.
fn reference(count: u64) -> Vec<u8> {
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(count, 1_000_000, ""));
    succeed(&mut s.command(&RUN));
    output(&s)
}

/// The complete checkpoints in the bucket, by id.
fn checkpoints(moto: &Moto) -> Vec<u64> {
    let mut ids: Vec<u64> = moto
        .list(BUCKET, "weir/sums/")
        .iter()
        .filter_map(|k| k.strip_suffix("/_manifest.json")?.strip_prefix("weir/sums/")?.parse().ok())
        .collect();
    ids.sort();
    ids
}

#[test]
fn checkpoints_in_a_bucket_survive_sigkills_and_a_hung_store_exactly_once() {
    let count = 1_000_000;
    let expected = reference(count);
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let s = Scratch::new();
    let body = pipeline(count, 100_000, &in_bucket(&s, &moto.endpoint()));
    s.pipeline("p.toml", &body);
    // Three runs killed after 0.7-1.5 s each; during the second the store
    // hangs for 2 s (checkpoints time out and fail; records keep flowing).
    let out = kill_rounds_with_a_receiver_outage(&s, &RUN, &mut Lcg(20261207), (700, 1500), Duration::from_secs(2), || moto.pause(), || moto.resume());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let actual = output(&s);
    assert_eq!(actual.len(), expected.len(), "output size differs from the uninterrupted run's");
    assert!(actual == expected, "output differs from the uninterrupted run's");

    // The checkpoints are in the bucket, with their state files; the local
    // directory holds only the run's claim and control socket.
    let ids = checkpoints(&moto);
    assert!(!ids.is_empty(), "no checkpoint in the bucket: {:?}", moto.list(BUCKET, ""));
    let newest = ids.last().unwrap();
    assert!(moto.list(BUCKET, &format!("weir/sums/{newest}/")).iter().any(|k| k.ends_with("/sum-0.state")));
    let local: Vec<String> = std::fs::read_dir(s.path("data/checkpoints/sums"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<u64>().is_ok())
        .collect();
    assert!(local.is_empty(), "checkpoints written locally: {local:?}");
    // Retention (3) applies in the bucket too.
    assert!(ids.len() <= 4, "retention left {ids:?}");
}

#[test]
fn a_corrupt_checkpoint_in_the_bucket_falls_back_to_the_previous_one() {
    let count = 200_000;
    let expected = reference(count);
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let s = Scratch::new();
    s.pipeline("p.toml", &pipeline(count, 100_000, &in_bucket(&s, &moto.endpoint())));
    let mut child = s.command(&RUN).spawn().expect("weir");
    kill_after(&mut child, Duration::from_millis(1200));
    let ids = checkpoints(&moto);
    assert!(ids.len() >= 2, "two checkpoints before the kill: {ids:?}");
    let latest = ids[ids.len() - 1];
    let key = format!("weir/sums/{latest}/sum-0.state");
    let mut bytes = moto.get(BUCKET, &key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    moto.put(BUCKET, &key, &bytes);

    let stderr = succeed(&mut s.command(&RUN));
    assert!(stderr.contains(&format!("checkpoint {latest} (s3://{BUCKET}/weir/sums/{latest}) is unusable")), "{stderr}");
    assert!(stderr.contains("sum-0.state is corrupt: checksum mismatch"), "the warning names the file: {stderr}");
    assert!(stderr.contains(&format!("falling back to checkpoint {}", ids[ids.len() - 2])), "{stderr}");
    assert!(output(&s) == expected, "output differs from the uninterrupted run's");
}

/// A claim object as another host's run would write it, last renewed
/// `renewed_ago` before now.
fn foreign_claim(renewed_ago: Duration) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let renewed = now - renewed_ago.as_millis() as u64;
    format!(r#"{{"host":"elsewhere","pid":4242,"run":"0","since_ms":{renewed},"renewed_ms":{renewed},"timeout_ms":30000}}"#).into_bytes()
}

/// Two runs must never write the same checkpoints. The local run lock
/// cannot see other hosts, so a run claims the pipeline's keys in the
/// bucket: a second run (another `checkpoint.dir`, as on another host) is
/// refused while the first holds the claim; a run whose claim is taken
/// over (as by a host that judged it lapsed) completes no further
/// checkpoint and stops; a live claim of another host is refused, a lapsed
/// one taken over, and the output is still each record once.
#[test]
fn one_run_at_a_time_writes_the_checkpoints_in_a_bucket() {
    let count = 500_000;
    let expected = reference(count);
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let s = Scratch::new();
    let checkpoint = in_bucket(&s, &moto.endpoint());
    s.pipeline("p.toml", &pipeline(count, 100_000, &checkpoint));
    // The same pipeline with its own local directory, as on another host.
    s.pipeline("q.toml", &pipeline(count, 100_000, &format!("dir = \"elsewhere\"\n{checkpoint}")));
    let claim = "weir/sums/_claim";
    let mut first = s.command(&RUN).spawn().expect("weir");
    let claimed = weir_test_support::wait_until(Duration::from_secs(30), || checkpoints(&moto).len() >= 2);
    assert!(claimed && moto.list(BUCKET, "weir/sums/").iter().any(|k| k == claim), "the first run checkpoints: {:?}", moto.list(BUCKET, ""));

    let second = s.command(&["run", "--quiet", "--metrics-address", "off", "q.toml"]).output().expect("weir");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "the second run does not start: {stderr}");
    assert!(stderr.contains(&format!("the checkpoints at s3://{BUCKET}/weir/sums are claimed by weir on host")), "{stderr}");
    assert!(stderr.contains(&format!("(pid {},", first.id())), "the message names the holder: {stderr}");

    // Another host takes the claim over: the first run stops, at most the
    // checkpoint it had confirmed already completing.
    moto.put(BUCKET, claim, &foreign_claim(Duration::ZERO));
    let at_takeover = *checkpoints(&moto).last().unwrap();
    let stopped = weir_test_support::wait_until(Duration::from_secs(20), || first.try_wait().unwrap().is_some());
    if !stopped {
        let _ = first.kill();
    }
    let out = first.wait_with_output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stopped, "the run whose claim was taken over stops");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this run lost its claim on the checkpoints") && stderr.contains("weir on host elsewhere (pid 4242"), "{stderr}");
    let after = *checkpoints(&moto).last().unwrap();
    assert!(after <= at_takeover + 1, "checkpoints completed after the claim was lost: {at_takeover} then {after}");

    // The other host's claim is live: refused; once it lapsed, taken over,
    // and the run resumes and finishes.
    let refused = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("claimed by weir on host elsewhere (pid 4242"), "{stderr}");
    moto.put(BUCKET, claim, &foreign_claim(Duration::from_secs(40)));
    let stderr = succeed(s.command(&["run", "--metrics-address", "off", "p.toml"]).env("WEIR_LOG", "info"));
    assert!(stderr.contains("Took over the claim on the checkpoints from weir on host elsewhere (pid 4242") && stderr.contains("it lapsed"), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    assert!(output(&s) == expected, "output differs from the uninterrupted run's");
    assert!(!moto.list(BUCKET, "weir/sums/").iter().any(|k| k == claim), "the run released its claim at the end");
}

#[test]
fn a_store_that_cannot_be_reached_at_start_stops_the_run_and_says_so() {
    // Nothing listens on this port: listing the checkpoints fails, and weir
    // must neither start over nor write anything.
    let s = Scratch::new();
    let endpoint = format!("http://127.0.0.1:{}", weir_test_support::free_port());
    s.pipeline("p.toml", &pipeline(1000, 1_000_000, &in_bucket(&s, &endpoint)));
    let out = s.command(&RUN).output().expect("weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the pipeline cannot start: {stderr}");
    // The first request is the claim on the checkpoints.
    assert!(stderr.contains(&format!("cannot claim s3://{BUCKET}/weir/sums/_claim")), "{stderr}");
    assert!(stderr.contains("check that the object store is up"), "{stderr}");
    assert!(!s.path("out").exists(), "output was written");
}

#[test]
fn mistakes_in_the_checkpoint_store_keys_are_named() {
    let s = Scratch::new();
    let cases = [
        ("store = \"data/elsewhere\"", "checkpoint.store", "is not an object store"),
        ("store = \"s3://Bad_Bucket/x\"", "checkpoint.store", "is not an S3 bucket name"),
        ("[checkpoint.s3]\nendpoint = \"http://127.0.0.1:1\"", "checkpoint.s3", "`checkpoint.store`, which is not set"),
        ("store = \"s3://b/x\"\n[checkpoint.s3]\nendpoint = \"127.0.0.1:9000\"", "checkpoint.s3.endpoint", "is not an http:// or https:// URL"),
        ("store = \"s3://b/x\"\n[checkpoint.s3]\nbucket = \"b\"", "checkpoint.s3", "bucket"),
    ];
    for (lines, key, message) in cases {
        s.pipeline("p.toml", &pipeline(10, 1000, lines));
        let out = s.command(&["check", "p.toml"]).output().expect("weir");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{lines}: {stderr}");
        assert!(stderr.contains(key) && stderr.contains(message), "{lines}: wanted {key:?} and {message:?} in:\n{stderr}");
    }
}
