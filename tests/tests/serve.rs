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
    let plugins = format!("plugin-dir = {:?}\n", plugin_dir().display().to_string());
    serve_with(s, &plugins, "", &format!("[restart]\n{restart}\n"), "")
}

/// Starts `weir serve` with weir.toml made of `top` (top-level keys),
/// `api` (more `[api]` keys) and `rest` (more tables), under the shell
/// commands `limits` (e.g. `ulimit -n 256`), and waits until it answers.
fn serve_with(s: &Scratch, top: &str, api: &str, rest: &str, limits: &str) -> Serve {
    let port = free_port();
    s.write(
        "weir.toml",
        format!("pipelines = \"pipelines\"\n{top}scan-interval = \"500ms\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken-env = \"WEIR_TEST_TOKEN\"\n{api}\n{rest}"),
    );
    std::fs::create_dir_all(s.path("pipelines")).unwrap();
    let log = s.path(format!("serve-{port}.log").as_str());
    let child = Command::new("sh")
        .args(["-c", &format!("{limits}\nexec \"$0\" serve --config weir.toml"), weir_bin().to_str().unwrap()])
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
    let mut headers = vec![("Host", "127.0.0.1".to_owned())];
    if let Some(t) = token {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    http_with(port, method, path, &headers, body)
}

/// [`http`] with the headers given (`Host` included).
fn http_with(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: Option<&str>) -> (u16, String) {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    c.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    if c.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
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

/// [`SLOW_PIPELINE`]'s slow operator fed by two sources (a fan-in).
const FAN_IN_PIPELINE: &str = r#"
name = "orders"
[checkpoint]
interval = "1s"
[sources.gen]
type = "generator"
schema = "sequence"
[sources.more]
type = "generator"
schema = "sequence"
[[operators]]
name = "enrich"
plugin = "slow"
inputs = ["gen", "more"]
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
                let query = if real.ends_with("timeline") {
                    "?seconds=10"
                } else if real.ends_with("profile") {
                    "?seconds=1"
                } else {
                    ""
                };
                let (status, body) = http(port, &m, &format!("{real}{query}"), None, None);
                assert_eq!(status, 200, "{m} {real}: {body}");
            }
        }
    }
    assert!(posts >= 6);
    // An on-demand profile of the running pipeline: where its plugins spend
    // their time, as a flame graph or folded stacks.
    let (status, svg) = http(port, "GET", "/api/v1/pipelines/orders/profile?seconds=2", None, None);
    assert_eq!(status, 200, "{svg}");
    assert!(svg.starts_with("<?xml") && svg.contains("<title>enrich (slow) ("), "the spinning operator is in the flame graph: {svg}");
    let (status, folded) = http(port, "GET", "/api/v1/pipelines/orders/profile?seconds=1&format=folded", None, None);
    assert!(status == 200 && folded.lines().any(|l| l.starts_with("enrich (slow);")), "{status} {folded}");
    // The same samples with their times, for the Firefox Profiler: the
    // operator is the sample's thread, its frames follow, innermost first.
    let (status, perf) = http(port, "GET", "/api/v1/pipelines/orders/profile?seconds=1&format=perf", None, None);
    assert!(status == 200 && perf.starts_with("# ========\n# weir: pipeline orders"), "{status} {perf}");
    assert!(perf.lines().any(|l| l.starts_with("enrich (slow) ") && l.ends_with(": 10000 cpu-clock:")), "{perf}");
    assert!(perf.contains("\t0 enrich (slow) (weir)\n"), "{perf}");
    let (status, body) = http(port, "GET", "/api/v1/pipelines/orders/profile?seconds=0", None, None);
    assert!(status == 400 && body.contains("1 to 120 seconds"), "{status} {body}");
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
    // Saved again with the same contents (an editor's save, a touch): not
    // a change, so no restart (which would take a checkpoint of its own).
    s.write("pipelines/seq.toml", pipeline);
    std::thread::sleep(Duration::from_secs(2));
    // No periodic checkpoint yet (interval 1h): only the stop's publishes.
    assert!(std::fs::read_to_string(s.path("out.txt")).unwrap_or_default().is_empty());
    assert!(sv.sigterm().success(), "{}", sv.log());
    let log = sv.log();
    assert!(log.contains("SIGTERM received: stopping every pipeline gracefully"), "{log}");
    assert!(log.contains("stopped gracefully at checkpoint 1"), "{log}");
    assert!(!log.contains("pipeline file changed"), "{log}");
    let first: Vec<u64> = std::fs::read_to_string(s.path("out.txt")).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert!(first.len() > 1000, "the final checkpoint published the output: {} records", first.len());
    assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());

    // Started again, it resumes after what was published.
    let mut sv = serve(&s, "");
    wait_for("seq running again", &sv, || state(port_of(&sv), "seq")["state"] == "running");
    // Issue 15: what `weir run` tells its user is in the pipeline's events.
    let resumed = |sv: &Serve| {
        let events = state(port_of(sv), "seq")["events"].clone();
        events.as_array().into_iter().flatten().find(|e| e["what"].as_str().is_some_and(|w| w.starts_with("resuming from checkpoint 1 ("))).cloned()
    };
    wait_for("the resume in the pipeline's events", &sv, || resumed(&sv).is_some());
    assert_eq!(resumed(&sv).map(|e| e["level"].clone()), Some("info".into()));
    // Time for the second run to generate records of its own.
    std::thread::sleep(Duration::from_secs(2));
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
    s.write("pipelines/orders.toml", FAN_IN_PIPELINE);
    let port = sv.port;
    wait_for("orders running", &sv, || state(port, "orders")["state"] == "running");
    let shots = repo().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(ui.join("ui.mjs"))
        .args([&format!("http://127.0.0.1:{port}"), "orders", "enrich", "gen", shots.to_str().unwrap(), "more"])
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
    // Issue 19: the UI draws the DAG of a fan-in, not a line.
    assert_eq!(v["dag"]["edges"], serde_json::json!([1, 1]), "one edge from each input: {v}");
    assert_eq!(v["dag"]["left"], serde_json::json!([true, true]), "both inputs left of the fan-in: {v}");
    assert_eq!(v["dag"]["inputs"], serde_json::json!(["gen", "more"]), "the fan-in's inputs table: {v}");
    assert!(shots.join("graph.png").is_file() && shots.join("subtasks.png").is_file());
}

// Issue 16, "the service facing a browser, a crowd and a typo". These runs
// need no plugin: their pipelines are a generator and a discard sink.

/// A pipeline of no plugin that runs until stopped.
const IDLE_PIPELINE: &str = "[checkpoint]\ninterval = \"1h\"\ndir = \"../data\"\n[sources.gen]\ntype = \"generator\"\nrate = 100.0\n[sinks.out]\ntype = \"discard\"\n";

/// DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1
/// sends `Host: evil.example`; the API must not answer it, nor take a
/// mutating call from a page of another origin.
#[test]
fn issue16_dns_rebinding_foreign_host_and_origin_are_refused() {
    let s = Scratch::new();
    let sv = serve_with(&s, "", "allowed-hosts = [\"weir.test\"]\n", "", "");
    let port = sv.port;
    fn with(host: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut h = vec![("Host", host.to_owned())];
        h.extend(extra.iter().cloned());
        h
    }
    for path in ["/api/v1/pipelines", "/ui/", "/api/v1/health", "/api/openapi.json"] {
        for host in ["evil.example", "evil.example:80", &format!("evil.example:{port}"), "localhost.evil.example"] {
            let (status, body) = http_with(port, "GET", path, &with(host, &[]), None);
            assert_eq!(status, 421, "GET {path} with Host {host}: {body}");
            assert!(body.contains("api.allowed-hosts"), "the refusal says what to do: {body}");
        }
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "[::1]".to_owned(), "weir.test".to_owned(), format!("WEIR.TEST:{port}")] {
            let (status, body) = http_with(port, "GET", path, &with(&host, &[]), None);
            assert_eq!(status, 200, "GET {path} with Host {host}: {body}");
        }
    }
    // A mutating call from a browser page of another origin: 403, even
    // with the token and an allowed Host.
    let auth = ("Authorization", format!("Bearer {TOKEN}"));
    for origin in ["http://evil.example", "null", &format!("http://evil.example:{port}")] {
        let (status, body) = http_with(port, "POST", "/api/v1/pipelines/nosuch/stop", &with("localhost", &[auth.clone(), ("Origin", origin.to_owned())]), None);
        assert_eq!(status, 403, "Origin {origin}: {body}");
    }
    // The UI's own origin (and no origin, as curl sends) passes the guard
    // and reaches the route.
    for extra in [vec![auth.clone(), ("Origin", format!("http://127.0.0.1:{port}"))], vec![auth.clone()]] {
        let (status, body) = http_with(port, "POST", "/api/v1/pipelines/nosuch/stop", &with("localhost", &extra), None);
        assert_eq!(status, 404, "{extra:?}: {body}");
    }
}

/// `WEIR_API_TOKEN` obeys the 16-character rule of `api.token`.
#[test]
fn issue16_short_api_token_from_the_environment_is_refused() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("pipelines")).unwrap();
    s.write("weir.toml", format!("[api]\nlisten = \"127.0.0.1:{}\"\ntoken-env = \"WEIR_TEST_TOKEN\"\n", free_port()));
    let run = weir_tests::run_with_timeout(
        Command::new(weir_bin()).args(["serve", "--config", "weir.toml"]).current_dir(s.dir.path()).env("WEIR_TEST_TOKEN", "short"),
        Duration::from_secs(60),
    );
    run.expect_code(2).expect_stderr(&["$WEIR_TEST_TOKEN (api.token-env): use at least 16 characters"]);
}

/// A TOML syntax error on a secret's line reaches neither the
/// unauthenticated `last_error`, nor the events, nor the log, nor the
/// terminal; the error still says where it is.
#[test]
fn issue16_config_syntax_errors_never_echo_secrets() {
    const SECRET: &str = "hunter2-do-not-leak";
    let s = Scratch::new();
    let sv = serve_with(&s, "", "", "", "");
    let port = sv.port;
    let leaky = format!("[sources.k]\ntype = \"kafka\"\nbrokers = \"localhost:9\"\ntopic = \"t\"\n[sources.k.properties]\n\"sasl.password\" = \"{SECRET}\n[sinks.out]\ntype = \"discard\"\n");
    s.write("pipelines/leaky.toml", &leaky);
    wait_for("leaky invalid", &sv, || state(port, "leaky")["state"] == "invalid");
    let listing = http(port, "GET", "/api/v1/pipelines", None, None).1;
    let detail = http(port, "GET", "/api/v1/pipelines/leaky", None, None).1;
    let p = state(port, "leaky");
    let last_error = p["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(last_error.contains("not valid TOML at line 6, column"), "the error still says where: {last_error}");
    assert!(last_error.contains("sasl.password"), "and which key: {last_error}");
    for (what, text) in [("the listing", &listing), ("the detail", &detail), ("the log", &sv.log())] {
        assert!(!text.contains(SECRET), "{what} leaks the secret:\n{text}");
    }
    // The same file on the command line, and weir.toml itself.
    let run = s.weir(&["check", s.path("pipelines/leaky.toml").to_str().unwrap()], Duration::from_secs(60));
    run.expect_code(2).expect_stderr(&["line 6, column"]);
    assert!(!run.stderr.contains(SECRET), "{}", run.stderr);
    s.write("bad.toml", format!("[api]\ntoken = \"{SECRET}-0123456789\nlisten = \"127.0.0.1:1\"\n"));
    let run = s.weir(&["serve", "--config", "bad.toml"], Duration::from_secs(60));
    run.expect_code(2).expect_stderr(&["line 2, column"]);
    assert!(!run.stderr.contains(SECRET), "{}", run.stderr);
}

/// Connection exhaustion: a crowd of idle connections at a low
/// file-descriptor limit, against the API and the metrics exporter. Before
/// issue 16 the directory scan then failed and the supervisor stopped every
/// pipeline as "pipeline file removed", and the exporter logged millions of
/// accept errors. Now the pipeline keeps running, the log stays short, and
/// the server serves again once the crowd's connections time out.
#[test]
fn issue16_a_crowd_of_idle_connections_stops_no_pipeline_and_floods_no_log() {
    let s = Scratch::new();
    let metrics = free_port();
    // More connections allowed than descriptors: accepts fail with EMFILE.
    let sv = serve_with(&s, "", "max-connections = 2000\nheader-timeout = \"2s\"\n", &format!("[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"), "ulimit -n 200");
    let port = sv.port;
    s.write("pipelines/steady.toml", IDLE_PIPELINE);
    wait_for("steady running", &sv, || state(port, "steady")["state"] == "running");
    let crowd: Vec<TcpStream> = (0..300).flat_map(|i| TcpStream::connect(("127.0.0.1", if i % 2 == 0 { port } else { metrics }))).collect();
    assert!(crowd.len() > 250, "the crowd connected: {}", crowd.len());
    // Several scans happen while no descriptor is left.
    std::thread::sleep(Duration::from_secs(4));
    drop(crowd);
    wait_for("the API serves again", &sv, || http(port, "GET", "/api/v1/health", None, None).0 == 200);
    std::thread::sleep(Duration::from_secs(1));
    let p = state(port, "steady");
    assert_eq!(p["state"], "running", "{p:#}");
    let events = p["events"].to_string();
    assert!(!events.contains("removed") && !events.contains("stopping"), "the pipeline was stopped: {events}");
    let log = sv.log();
    let accept_lines = log.lines().filter(|l| l.contains("cannot accept connections")).count();
    assert!(accept_lines <= 4, "{accept_lines} lines of accept errors (at most one per listener per 10 s):\n{log}");
    assert!(log.len() < 64 * 1024, "the log grew to {} bytes", log.len());
    assert!(weir_tests::scrape(metrics).is_some(), "the exporter serves again");
}

/// Idle connections are closed after `header-timeout`; beyond
/// `max-connections` they are closed at once.
#[test]
fn issue16_idle_connections_time_out_and_are_capped() {
    let s = Scratch::new();
    let sv = serve_with(&s, "", "max-connections = 4\nheader-timeout = \"1s\"\n", "", "");
    let port = sv.port;
    // Nothing sent (a slowloris), and half a request.
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    idle[0].write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(("127.0.0.1", port)).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    assert!(matches!(over.read_to_end(&mut buf), Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(2), "a connection over the cap is closed at once");
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let _ = c.read_to_end(&mut buf);
        assert!(started.elapsed() < Duration::from_secs(5), "an idle connection was kept open");
    }
    assert!(sv.log().len() < 16 * 1024);
    assert_eq!(http(port, "GET", "/api/v1/health", None, None).0, 200);
}

/// A pipelines directory that cannot be read is a failed scan, not an empty
/// directory: every pipeline keeps running, and health says why.
#[test]
fn issue16_a_failed_directory_scan_stops_no_pipeline() {
    let s = Scratch::new();
    let sv = serve_with(&s, "", "", "", "");
    let port = sv.port;
    s.write("pipelines/steady.toml", IDLE_PIPELINE);
    wait_for("steady running", &sv, || state(port, "steady")["state"] == "running");
    std::fs::rename(s.path("pipelines"), s.path("moved")).unwrap();
    wait_for("a degraded health", &sv, || get_json(port, "/api/v1/health")["status"] == "degraded");
    let health = get_json(port, "/api/v1/health");
    assert!(health["problem"].as_str().unwrap().contains("cannot list the pipelines directory"), "{health}");
    std::thread::sleep(Duration::from_secs(2));
    let p = state(port, "steady");
    assert_eq!(p["state"], "running", "{p:#}");
    std::fs::rename(s.path("moved"), s.path("pipelines")).unwrap();
    wait_for("health ok", &sv, || get_json(port, "/api/v1/health")["status"] == "ok");
    assert_eq!(state(port, "steady")["state"], "running");
    assert_eq!(sv.log().matches("cannot list the pipelines directory").count(), 1, "logged once, not every scan:\n{}", sv.log());
}
