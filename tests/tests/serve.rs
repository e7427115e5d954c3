//! Issue 9, "must be shown" 2 to 4: `weir serve` with its REST API and web
//! UI, against the real binary and real Wasm plugins.
//!
//! * the API refuses unauthenticated and wrong-token mutating calls (401),
//!   refuses path traversal in every form without touching a file, and
//!   answers every operation of the checked-in OpenAPI document;
//! * the UI in headless Chromium draws the graph with the slow task red and
//!   its upstream black, and shows subtasks on click (screenshots under
//!   `target/ui-screenshots/`);
//! * a pipeline whose plugin traps is restarted following the restart
//!   strategy and reported failed after max attempts;
//! * SIGTERM stops gracefully: final checkpoint, sinks committed, and the
//!   next start resumes with exactly-once output.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use weir_test_support::free_port;
use weir_tests::{cache_dir, plugin_dir, repo, weir_bin, Scratch};

const TOKEN: &str = "test-token-0123456789abcdef";

struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill").success();
        assert!(ok);
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < until, "weir serve did not exit after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes weir.toml (with `restart`) and starts `weir serve`.
fn serve(s: &Scratch, restart: &str) -> Serve {
    let port = free_port();
    s.write(
        "weir.toml",
        format!(
            "pipelines = \"pipelines\"\nplugin-dir = {:?}\nscan-interval = \"500ms\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken-env = \"WEIR_TEST_TOKEN\"\n[restart]\n{restart}\n",
            plugin_dir().display().to_string()
        ),
    );
    std::fs::create_dir_all(s.path("pipelines")).unwrap();
    let log = s.path(format!("serve-{port}.log").as_str());
    let child = Command::new(weir_bin())
        .args(["serve", "--config", "weir.toml"])
        .current_dir(s.dir.path())
        .env("WEIR_CACHE_DIR", cache_dir())
        .env("WEIR_TEST_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start weir serve");
    let me = Serve { child, port, log };
    let until = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/api/v1/health", None, None).0 != 200 {
        assert!(Instant::now() < until, "weir serve did not come up:\n{}", me.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    me
}

/// One raw HTTP/1.1 request (the path is sent exactly as given, so encoded
/// and `..` forms reach the server unnormalised). Returns status and body.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    c.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    c.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    // Chunked bodies: keep the JSON between the first '{'/'[' and the last '}'/']'.
    let body = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_owned(),
        _ => body,
    };
    (status, body)
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http(port, "GET", path, None, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The pipeline's record in the API (`null` until the service found it).
fn state(port: u16, id: &str) -> Value {
    let (status, body) = http(port, "GET", &format!("/api/v1/pipelines/{id}"), None, None);
    if status != 200 {
        return Value::Null;
    }
    serde_json::from_str::<Value>(&body).map(|v| v["pipeline"].clone()).unwrap_or(Value::Null)
}

fn wait_for(what: &str, serve: &Serve, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(90);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}:\n{}", serve.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file under `dir` with its size and modification time.
fn tree(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u64, SystemTime)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.starts_with(skip) {
            continue;
        }
        let m = e.metadata().unwrap();
        if m.is_dir() {
            tree(&p, skip, out);
        } else {
            out.insert(p, (m.len(), m.modified().unwrap()));
        }
    }
}

const SLOW_PIPELINE: &str = r#"
name = "orders"
[checkpoint]
interval = "1s"
[sources.gen]
type = "generator"
schema = "sequence"
[[operators]]
name = "parse"
plugin = "identity"
[[operators]]
name = "enrich"
plugin = "slow"
disable-chaining = true
config = { cost-us = 20 }
[sinks.out]
type = "discard"
"#;

#[test]
fn api_auth_traversal_and_openapi() {
    let s = Scratch::new();
    s.write("outside/secret.txt", "do not touch");
    let mut sv = serve(&s, "");
    s.write("pipelines/orders.toml", SLOW_PIPELINE);
    let port = sv.port;
    // `running` is reported from the start of the run; its figures (the
    // routes below) exist once its tasks are built, a few ms later.
    wait_for("orders running", &sv, || state(port, "orders")["state"] == "running" && http(port, "GET", "/api/v1/pipelines/orders/graph", None, None).0 == 200);

    // 401 for every mutating call without the token or with a wrong one.
    let doc: Value = serde_json::from_str(&http(port, "GET", "/api/openapi.json", None, None).1).expect("openapi.json");
    let checked_in: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("host/api/openapi.json")).unwrap()).unwrap();
    assert_eq!(doc, checked_in, "the server serves the checked-in document");
    let mut posts = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            let real = path.replace("{name}", "orders");
            if m == "POST" {
                posts += 1;
                for token in [None, Some("wrong-token-0123456789abcdef")] {
                    let (status, body) = http(port, "POST", &real, token, Some(r#"{"checkpoint":"1"}"#));
                    assert_eq!(status, 401, "POST {real} with {token:?}: {body}");
                }
                // The route exists: with the token and an unknown pipeline
                // its handler answers (404 "no pipeline"), not the fallback.
                let (status, body) = http(port, "POST", &path.replace("{name}", "nosuch"), Some(TOKEN), Some(r#"{"checkpoint":"1"}"#));
                assert_eq!(status, 404, "POST {path}: {body}");
                assert!(body.contains("no pipeline `nosuch`"), "POST {path}: {body}");
            } else {
                let (status, body) = http(port, &m, &format!("{real}{}", if real.ends_with("timeline") { "?seconds=10" } else { "" }), None, None);
                assert_eq!(status, 200, "{m} {real}: {body}");
            }
        }
    }
    assert!(posts >= 6);
    let (status, body) = http(port, "GET", "/api/v1/no-such-route", None, None);
    assert_eq!(status, 404);
    assert!(body.contains("no such route"), "{body}");
    assert_eq!(state(port, "orders")["state"], "running", "no refused call changed the pipeline");

    // Path traversal, in every spelling, with a valid token: refused, and
    // no file outside the pipelines' data changes.
    let mut before = BTreeMap::new();
    tree(s.dir.path(), &s.path("pipelines/data"), &mut before);
    before.retain(|p, _| !p.to_string_lossy().ends_with(".log"));
    let attempts = [
        "/api/v1/pipelines/../outside/stop",
        "/api/v1/pipelines/..%2f..%2foutside%2fsecret.txt/stop",
        "/api/v1/pipelines/%2e%2e%2f%2e%2e%2foutside/restart",
        "/api/v1/pipelines/%2E%2E/restart",
        "/api/v1/pipelines/..%252f..%252foutside/stop",
        "/api/v1/pipelines/%2Ftmp%2Fx/stop",
        "/api/v1/pipelines/%2fetc%2fpasswd/savepoints",
        "/api/v1/pipelines/../../../etc/passwd",
        "/api/v1/pipelines/..%5c..%5coutside/stop",
        "/ui/..%2f..%2fCargo.toml",
        "/ui/%2e%2e%2fopenapi.json",
        "/ui/../../outside/secret.txt",
    ];
    for a in attempts {
        for m in ["GET", "POST"] {
            let (status, body) = http(port, m, a, Some(TOKEN), Some("{}"));
            assert!(status == 400 || status == 404 || status == 405, "{m} {a}: {status} {body}");
            assert!(!body.contains("do not touch") && !body.contains("[workspace]"), "{m} {a} leaked a file: {body}");
        }
    }
    for spec in ["../../outside/secret.txt", "..%2f..%2foutside", "/tmp/x", "savepoint-1/../../x", "1; rm -rf /"] {
        let (status, body) = http(port, "POST", "/api/v1/pipelines/orders/restore", Some(TOKEN), Some(&serde_json::json!({ "checkpoint": spec }).to_string()));
        assert_eq!(status, 400, "restore {spec:?}: {body}");
    }
    let mut after = BTreeMap::new();
    tree(s.dir.path(), &s.path("pipelines/data"), &mut after);
    after.retain(|p, _| !p.to_string_lossy().ends_with(".log"));
    assert_eq!(before, after, "a refused call touched a file");
    assert_eq!(std::fs::read_to_string(s.path("outside/secret.txt")).unwrap(), "do not touch");
    assert_eq!(state(port, "orders")["state"], "running");

    // With the token, mutating calls work: a savepoint, then a graceful stop.
    let (status, body) = http(port, "POST", "/api/v1/pipelines/orders/savepoints", Some(TOKEN), None);
    assert_eq!(status, 201, "{body}");
    let cps = get_json(port, "/api/v1/pipelines/orders/checkpoints");
    assert!(cps["history"].as_array().unwrap().iter().any(|c| c["kind"] == "savepoint"), "{cps}");
    let (status, body) = http(port, "POST", "/api/v1/pipelines/orders/stop", Some(TOKEN), None);
    assert_eq!(status, 202, "{body}");
    wait_for("orders stopped", &sv, || state(port, "orders")["state"] == "stopped");
    assert!(sv.sigterm().success(), "{}", sv.log());
}

#[test]
fn trapping_plugin_is_restarted_then_reported_failed() {
    let s = Scratch::new();
    let sv = serve(&s, "strategy = \"exponential-backoff\"\ndelay = \"200ms\"\nmultiplier = 2.0\nmax-delay = \"10s\"\nmax-attempts = 3");
    s.write(
        "pipelines/boom.toml",
        "[sources.gen]\ntype = \"generator\"\n[[operators]]\nname = \"boom\"\nplugin = \"fixture-trap\"\n[sinks.out]\ntype = \"discard\"\n",
    );
    let port = sv.port;
    wait_for("boom failed", &sv, || get_json(port, "/api/v1/pipelines").as_array().unwrap().iter().any(|p| p["id"] == "boom" && p["state"] == "failed"));
    let p = state(port, "boom");
    assert_eq!(p["failures"], 4, "the first run and 3 restarts failed: {p:#}");
    assert_eq!(p["restarts"], 3, "{p:#}");
    assert!(p["last_error"].as_str().unwrap().contains("trapped"), "{p:#}");
    let events: Vec<(u64, String)> = p["events"].as_array().unwrap().iter().map(|e| (e["at_ms"].as_u64().unwrap(), e["what"].as_str().unwrap().to_owned())).collect();
    // Each restart waited its backoff: 200 ms, 400 ms, 800 ms.
    for (n, delay) in [(1, 200u64), (2, 400), (3, 800)] {
        let i = events
            .iter()
            .position(|(_, w)| w.contains(&format!("restarting from the last checkpoint in {delay}ms (restart {n} of 3)")))
            .unwrap_or_else(|| panic!("no restart {n} after {delay} ms in {events:#?}"));
        let (at, _) = events[i];
        let next = events[i + 1..].iter().find(|(_, w)| w.starts_with("starting")).expect("started again");
        assert!(next.0 >= at + delay, "restart {n} came after {} ms, before its {delay} ms delay", next.0 - at);
    }
    assert!(events.last().unwrap().1.contains("not restarting (restart.max-attempts = 3)"), "{events:#?}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(port, "boom")["failures"], 4, "a failed pipeline stays failed");
}

#[test]
fn sigterm_stops_gracefully_and_the_next_start_resumes_exactly_once() {
    let s = Scratch::new();
    let pipeline = "name = \"seq\"\n[checkpoint]\ninterval = \"1h\"\n[sources.gen]\ntype = \"generator\"\nschema = \"sequence\"\nrate = 5000\n\
                    [[operators]]\nname = \"id\"\nplugin = \"identity\"\n[sinks.out]\ntype = \"file\"\npath = \"../out.txt\"\n";
    let mut sv = serve(&s, "");
    s.write("pipelines/seq.toml", pipeline);
    let port = sv.port;
    wait_for("seq running", &sv, || state(port, "seq")["state"] == "running");
    std::thread::sleep(Duration::from_secs(2));
    // No periodic checkpoint yet (interval 1h): only the stop's publishes.
    assert!(std::fs::read_to_string(s.path("out.txt")).unwrap_or_default().is_empty());
    assert!(sv.sigterm().success(), "{}", sv.log());
    let log = sv.log();
    assert!(log.contains("SIGTERM received: stopping every pipeline gracefully"), "{log}");
    assert!(log.contains("stopped gracefully at checkpoint 1"), "{log}");
    let first: Vec<u64> = std::fs::read_to_string(s.path("out.txt")).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert!(first.len() > 1000, "the final checkpoint published the output: {} records", first.len());
    assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());

    // Started again, it resumes after what was published.
    let mut sv = serve(&s, "");
    wait_for("seq running again", &sv, || state(port_of(&sv), "seq")["state"] == "running");
    std::thread::sleep(Duration::from_secs(2));
    // Issue 15: what `weir run` tells its user is in the pipeline's events.
    let events = state(port_of(&sv), "seq")["events"].clone();
    let resumed = events.as_array().unwrap().iter().find(|e| e["what"].as_str().unwrap().starts_with("resuming from checkpoint 1 ("));
    assert_eq!(resumed.map(|e| e["level"].clone()), Some("info".into()), "{events:#}");
    assert!(sv.sigterm().success(), "{}", sv.log());
    assert!(sv.log().contains("resuming from checkpoint 1"), "{}", sv.log());
    let all: Vec<u64> = std::fs::read_to_string(s.path("out.txt")).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert!(all.len() > first.len(), "the second run added output");
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>(), "no record lost or repeated across the graceful stop");
}

fn port_of(s: &Serve) -> u16 {
    s.port
}

#[test]
fn ui_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ui = repo().join("tests/ui");
    assert!(
        Path::new(&chromium).is_file() && ui.join("node_modules/playwright-core").is_dir(),
        "the UI test needs Debian's chromium ({chromium}) and playwright-core in tests/ui/node_modules: run tests/run, which installs both"
    );
    let s = Scratch::new();
    let sv = serve(&s, "");
    s.write("pipelines/orders.toml", SLOW_PIPELINE);
    let port = sv.port;
    wait_for("orders running", &sv, || state(port, "orders")["state"] == "running");
    let shots = repo().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(ui.join("ui.mjs"))
        .args([&format!("http://127.0.0.1:{port}"), "orders", "enrich", "gen", shots.to_str().unwrap()])
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "UI check failed:\n{}\n{}\n{}", stdout, String::from_utf8_lossy(&out.stderr), sv.log());
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["title"], "orders.enrich");
    assert_eq!(v["rows"].as_array().unwrap().len(), 1, "enrich has one subtask: {v}");
    assert!(v["timeline"].as_u64().unwrap() >= 4, "timeline lines: {v}");
    assert_eq!(v["external"], serde_json::json!([]), "the UI loads nothing from elsewhere");
    assert!(shots.join("graph.png").is_file() && shots.join("subtasks.png").is_file());
}
