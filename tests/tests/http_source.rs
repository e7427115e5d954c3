//! Issue 21: the HTTP source (webhooks in) with the real `weir` binary and
//! real HTTP clients: every request answered 202 reaches the sink exactly
//! once through SIGKILLs of weir while clients keep posting and retrying;
//! idempotency keys turn retries into "duplicate"; a full buffer answers
//! 503 with `Retry-After`; bad requests and bad settings are named.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_tests::{Lcg, Scratch, kill_after};

const RUN: [&str; 5] = ["run", "--quiet", "--metrics-address", "off", "p.toml"];

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An answer: status, head (lower-cased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One POST over a fresh connection; `None` when no answer came (weir is down or was killed mid-request).
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> Option<Answer> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    c.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer { status, head: head.to_ascii_lowercase(), body: body.to_owned() })
}

/// The ids in the complete lines of the sink's output.
fn output_ids(s: &Scratch) -> Vec<u64> {
    let text = std::fs::read_to_string(s.path("out.jsonl")).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))["id"].as_u64().expect("an id"))
        .collect()
}

#[test]
fn sigkills_lose_no_acknowledged_record_and_retries_are_deduplicated() {
    let s = Scratch::new();
    let port = free_port();
    s.pipeline(
        "p.toml",
        &format!(
            r#"
name = "hooks"
[checkpoint]
interval = "300ms"
[sources.in]
type = "http"
listen = "127.0.0.1:{port}"
path = "/events"
bearer-token-env = "HOOK_TOKEN"
[sinks.out]
type = "file"
path = "out.jsonl"
"#
        ),
    );
    const PER: u64 = 50;
    let stop = Arc::new(AtomicBool::new(false));
    let duplicates = Arc::new(AtomicU64::new(0));
    // Two clients post NDJSON batches (request r of client c holds ids
    // (2r + c) * PER ..), with an idempotency key each, and retry until
    // answered 202 or 200 ("duplicate": stored by an earlier try whose
    // answer was lost to a kill). They post until told to stop, then say
    // how many requests were accepted.
    let clients: Vec<_> = (0..2u64)
        .map(|c| {
            let (stop, duplicates) = (stop.clone(), duplicates.clone());
            std::thread::spawn(move || {
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    let first = (2 * r + c) * PER;
                    let body: String = (first..first + PER).map(|id| format!("{{\"id\":{id},\"client\":{c}}}\n")).collect();
                    let key = format!("req-{c}-{r}");
                    let headers = [("Authorization", "Bearer t0ken"), ("Content-Type", "application/x-ndjson"), ("Idempotency-Key", key.as_str())];
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        assert!(tries < 3000, "request {key} never accepted");
                        match post(port, "/events", &headers, &body) {
                            Some(a) if a.status == 202 => break,
                            Some(a) if a.status == 200 && a.body.contains("\"duplicate\":true") => {
                                duplicates.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Some(a) if a.status == 503 => {}
                            Some(a) => panic!("request {key}: unexpected answer {a:?}"),
                            None => {}
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    r += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r
            })
        })
        .collect();
    let mut rng = Lcg(11);
    for _ in 0..4 {
        let mut child = s.command(&RUN).env("HOOK_TOKEN", "t0ken").spawn().expect("weir");
        kill_after(&mut child, Duration::from_millis(rng.next_ms(900, 1800)));
    }
    let mut child = s.command(&RUN).env("HOOK_TOKEN", "t0ken").spawn().expect("weir");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let accepted: Vec<u64> = clients.into_iter().map(|c| c.join().expect("a client failed")).collect();
    assert!(accepted.iter().all(|r| *r > 20), "the clients kept posting through the kills: {accepted:?}");
    // Client c's requests 0..accepted[c] hold these ids.
    let expected: BTreeSet<u64> = (0..2u64).flat_map(|c| (0..accepted[c as usize]).flat_map(move |r| ((2 * r + c) * PER)..((2 * r + c + 1) * PER))).collect();
    let n = expected.len() as u64;
    let start = Instant::now();
    while (output_ids(&s).len() as u64) < n && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a few more checkpoints complete: nothing more may appear.
    std::thread::sleep(Duration::from_millis(1000));
    child.kill().unwrap();
    child.wait().unwrap();
    let ids = output_ids(&s);
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct, expected, "every acknowledged record arrived ({} of {n}), and nothing else", distinct.len());
    assert_eq!(ids.len() as u64, n, "each once ({} lines)", ids.len());
    eprintln!("{} retries answered duplicate", duplicates.load(Ordering::Relaxed));
    // A restart after the last checkpoint replays nothing.
    let mut child = s.command(&RUN).env("HOOK_TOKEN", "t0ken").spawn().expect("weir");
    kill_after(&mut child, Duration::from_millis(1500));
    assert_eq!(output_ids(&s).len() as u64, n);
}

#[test]
fn bad_requests_are_refused_with_the_reason_and_a_full_buffer_answers_503() {
    let s = Scratch::new();
    let port = free_port();
    // Checkpoints an hour apart: nothing is committed, so the buffer fills.
    s.pipeline(
        "p.toml",
        &format!(
            "name = \"full\"\n[checkpoint]\ninterval = \"1h\"\n[sources.in]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\n\
             hmac-secret-env = \"HOOK_SECRET\"\nmax-body = \"4KiB\"\nmax-buffer = \"16KiB\"\nretry-after = \"3s\"\n\
             [sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n"
        ),
    );
    let mut child = s.command(&RUN).env("HOOK_SECRET", "shh").spawn().expect("weir");
    let sign = |body: &str| {
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", "shh", "-hex"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut p| {
                p.stdin.take().unwrap().write_all(body.as_bytes())?;
                p.wait_with_output()
            })
            .expect("openssl");
        let text = String::from_utf8(out.stdout).unwrap();
        format!("sha256={}", text.trim().rsplit(' ').next().unwrap())
    };
    let json = [("Content-Type", "application/json")];
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(port, "/", &json, "{}").is_none() {
        assert!(Instant::now() < deadline, "weir never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let send = |body: &str, extra: &[(&str, &str)]| {
        let sig = sign(body);
        let mut h = vec![("Content-Type", "application/json"), ("X-Signature-256", sig.as_str())];
        h.extend_from_slice(extra);
        post(port, "/", &h, body).expect("an answer")
    };
    let a = post(port, "/", &json, "{}").unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    let a = send(r#"[{"id":1},{"id":}]"#, &[]);
    assert!(a.status == 400 && a.body.contains("record 2") && a.body.contains("nothing was accepted"), "{a:?}");
    let a = send(&format!("[\"{}\"]", "x".repeat(5000)), &[]);
    assert_eq!(a.status, 413, "{a:?}");
    let a = post(port, "/", &[("Content-Type", "text/plain")], "hi").unwrap();
    assert!(a.status == 401 || a.status == 415, "{a:?}");
    let record = format!("{{\"id\":1,\"pad\":\"{}\"}}", "p".repeat(3000));
    let a = send(&record, &[("Idempotency-Key", "one")]);
    assert_eq!((a.status, a.body.as_str()), (202, "{\"accepted\":1}"), "{a:?}");
    let a = send(&record, &[("Idempotency-Key", "one")]);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("duplicate"), "{a:?}");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let a = send(&record, &[("Idempotency-Key", &format!("k{i}"))]);
        statuses.push(a.status);
        if a.status == 503 {
            assert!(a.head.contains("retry-after: 3"), "{a:?}");
            assert!(a.body.contains("buffer is full"), "{a:?}");
        }
    }
    assert!(statuses.starts_with(&[202, 202, 202, 202]) && statuses.ends_with(&[503, 503]), "{statuses:?}");
    // The health check says so too.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut health = String::new();
    c.read_to_string(&mut health).unwrap();
    assert!(health.starts_with("HTTP/1.1 503") && health.contains("\"ready\":false"), "{health}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_settings_a_busy_port_and_a_lost_spool_are_named() {
    let s = Scratch::new();
    let body = |extra: &str| format!("name = \"bad\"\n[checkpoint]\ninterval = \"200ms\"\n[sources.in]\ntype = \"http\"\n{extra}\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n");
    s.pipeline("p.toml", &body("listen = \"localhost\"\npath = \"events\"\nbusy-status = 500"));
    let run = s.weir(&["check", "p.toml"], Duration::from_secs(60));
    for field in ["sources.in.listen", "sources.in.path", "sources.in.busy-status"] {
        assert!(run.code != Some(0) && run.stderr.contains(field), "{field}: {}", run.stderr);
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    s.pipeline("p.toml", &body(&format!("listen = \"127.0.0.1:{port}\"")));
    let run = s.weir(&RUN, Duration::from_secs(60));
    assert!(run.code != Some(0) && run.stderr.contains("source `in`") && run.stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{}", run.stderr);
    drop(busy);
    s.pipeline("p.toml", &body(&format!("listen = \"127.0.0.1:{port}\"\nbearer-token-env = \"NOT_SET_ANYWHERE\"")));
    let run = s.weir(&RUN, Duration::from_secs(60));
    assert!(run.code != Some(0) && run.stderr.contains("NOT_SET_ANYWHERE"), "{}", run.stderr);
    // Records accepted, checkpointed; then the spool is removed behind weir's back.
    s.pipeline("p.toml", &body(&format!("listen = \"127.0.0.1:{port}\"")));
    let mut child = s.command(&RUN).spawn().expect("weir");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(a) = post(port, "/", &[("Content-Type", "application/json")], r#"[{"id":1},{"id":2}]"#) {
            assert_eq!(a.status, 202, "{a:?}");
            break;
        }
        assert!(Instant::now() < deadline, "weir never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    while output_ids(&s).len() < 2 {
        assert!(Instant::now() < deadline, "the records never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(s.path("data/http-source/bad/in")).unwrap();
    let run = s.weir(&RUN, Duration::from_secs(60));
    assert!(run.code != Some(0) && run.stderr.contains("the checkpoint resumes at spool offset") && run.stderr.contains("--fresh"), "{}", run.stderr);
    assert_eq!(output_ids(&s), [1, 2], "published output is kept");
}

/// One weir pipeline sends to another over https: the HTTP sink's
/// idempotency keys meet the HTTP source's deduplication, so a sender
/// killed mid-run and restarted (which sends its restored epoch again,
/// under the same keys) leaves every record exactly once at the receiver.
#[test]
fn weir_to_weir_over_https_is_exactly_once_through_a_sender_crash() {
    let s = Scratch::new();
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(s.path("."))
        .output()
        .expect("run openssl (it makes the test certificate)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    s.pipeline(
        "recv.toml",
        &format!(
            "name = \"recv\"\n[checkpoint]\ninterval = \"300ms\"\n[sources.in]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/in\"\n\
             tls-cert-file = \"cert.pem\"\ntls-key-file = \"key.pem\"\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n"
        ),
    );
    const N: u64 = 20_000;
    s.pipeline(
        "send.toml",
        &format!(
            "name = \"send\"\n[checkpoint]\ninterval = \"300ms\"\n[sources.g]\ntype = \"generator\"\ncount = {N}\nrate = 8000\n\
             [sinks.hook]\ntype = \"http\"\nurl = \"https://localhost:{port}/in\"\ntls-ca-file = \"cert.pem\"\nformat = \"ndjson\"\n\
             batch = {{ records = 300 }}\nretry = {{ initial-backoff = \"50ms\", max-backoff = \"200ms\" }}\n"
        ),
    );
    let mut receiver = s.command(&["run", "--quiet", "--metrics-address", "off", "recv.toml"]).spawn().expect("weir");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the receiver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Plain http to the https port gets no answer a client could take for "accepted".
    assert!(post(port, "/in", &[("Content-Type", "application/json")], "{}").is_none_or(|a| a.status != 202));
    let send = ["run", "--quiet", "--metrics-address", "off", "send.toml"];
    let mut sender = s.command(&send).spawn().expect("weir");
    kill_after(&mut sender, Duration::from_millis(1500));
    let run = s.weir(&send, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "the restarted sender finishes: {}", run.stderr);
    while (output_ids(&s).len() as u64) < N && Instant::now() < deadline + Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    let ids = output_ids(&s);
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len() as u64, N, "every record arrived ({} of {N})", distinct.len());
    assert_eq!(ids.len() as u64, N, "each once ({} lines)", ids.len());
}
