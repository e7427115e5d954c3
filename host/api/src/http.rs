//! The REST API and the web UI's static files.
//!
//! Every route is listed in [`ROUTES`] and documented in `openapi.json`
//! (served at `/api/openapi.json`); a test keeps the two equal. Reads are
//! open (the server binds 127.0.0.1 by default); every mutating call needs
//! `Authorization: Bearer TOKEN`. A pipeline is addressed by its id (file
//! name without `.toml`), looked up among the pipelines the service knows:
//! no path parameter is ever joined to a file system path, and ids with
//! anything but letters, digits, `-`, `_` and inner dots (so `..`, `/`,
//! `%`, absolute paths and encoded variants) are refused with 400.
//!
//! A browser is a hostile client too: a page of any site can send requests
//! to 127.0.0.1, and with DNS rebinding read the answers under its own name.
//! Every request's `Host` (and the `Origin` of every mutating call) must
//! therefore name this server: `localhost`, an IP address, or a name of
//! `api.allowed-hosts`; anything else is answered 421 (`Host`) or 403
//! (`Origin`) before any route runs.
//!
//! The server itself ([`serve`]) bounds what a crowd of clients can hold:
//! at most `api.max-connections` connections (more are closed as soon as
//! accepted), headers within `api.header-timeout`, no connection idle for
//! longer than `api.idle-timeout` outside a call, every call answered
//! within [`REQUEST_TIMEOUT`]; failed accepts (no file descriptor left)
//! are logged at most once per ten seconds.

use crate::supervisor::{Slot, Supervisor};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Every route: method and path, as in `openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/pipelines"),
    ("GET", "/api/v1/pipelines/{name}"),
    ("GET", "/api/v1/pipelines/{name}/graph"),
    ("GET", "/api/v1/pipelines/{name}/backpressure"),
    ("GET", "/api/v1/pipelines/{name}/bottleneck"),
    ("GET", "/api/v1/pipelines/{name}/timeline"),
    ("GET", "/api/v1/pipelines/{name}/profile"),
    ("GET", "/api/v1/pipelines/{name}/checkpoints"),
    ("POST", "/api/v1/pipelines/{name}/checkpoints"),
    ("POST", "/api/v1/pipelines/{name}/savepoints"),
    ("POST", "/api/v1/pipelines/{name}/restore"),
    ("GET", "/api/v1/pipelines/{name}/plugins"),
    ("POST", "/api/v1/pipelines/{name}/start"),
    ("POST", "/api/v1/pipelines/{name}/stop"),
    ("POST", "/api/v1/pipelines/{name}/restart"),
    ("GET", "/api/openapi.json"),
];

/// The OpenAPI document, checked in next to this crate.
pub const OPENAPI: &str = include_str!("../openapi.json");

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

#[derive(Clone)]
struct App {
    sup: Arc<Supervisor>,
    token: Option<Arc<str>>,
    hosts: Arc<[String]>,
}

/// Why `entry` cannot be a name of `api.allowed-hosts`, if it cannot.
pub fn host_problem(entry: &str) -> Option<&'static str> {
    if entry.is_empty() {
        Some("is empty")
    } else if entry.contains([':', '/', '@', '[', ']']) || entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("is not a host name: give the name alone, without scheme, port or path (e.g. \"weir.example.com\")")
    } else {
        None
    }
}

/// The host of a `Host` header or of an origin's authority (`name:port`,
/// `[v6]:port`): lower case, without port and trailing dot.
fn host_of(authority: &str) -> Option<String> {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().ok().map(|ip| ip.to_string());
    }
    let name = match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return None,
        None => a,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// True when a request naming `host` may be answered: `localhost` (and
/// `*.localhost`, which browsers resolve to loopback themselves), any IP
/// address (an address is not a name an attacker's DNS can rebind), or a
/// name of `allowed` (`api.allowed-hosts`).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    host_of(host).is_some_and(|h| {
        h == "localhost" || h.ends_with(".localhost") || h.parse::<std::net::IpAddr>().is_ok() || allowed.iter().any(|a| a.trim_end_matches('.').eq_ignore_ascii_case(&h))
    })
}

/// True when the `Origin` of a mutating call may be answered: absent (not a
/// browser), or `http(s)://` and a host [`host_allowed`] accepts.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let Some(authority) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else { return false };
    !authority.contains(['/', '@']) && host_allowed(authority, allowed)
}

/// Refuses requests whose `Host` (every request) or `Origin` (mutating
/// calls) names another server: the guard against DNS rebinding.
async fn check_host(State(app): State<App>, req: Request, next: Next) -> Response {
    match refusal(&app.hosts, &req) {
        Some(refused) => refused.into_response(),
        None => next.run(req).await,
    }
}

fn refusal(hosts: &[String], req: &Request) -> Option<ApiError> {
    let text = |name| req.headers().get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    let host = text(header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return Some(ApiError(StatusCode::BAD_REQUEST, "the request has no Host header".into()));
    };
    if !host_allowed(host, hosts) {
        return Some(ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to the host {host:?} (a guard against DNS rebinding): use localhost or an IP address, \
                 or add the name to api.allowed-hosts in weir.toml"
            ),
        ));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let origin = text(header::ORIGIN);
        if !origin_allowed(origin, hosts) {
            return Some(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "a page from {:?} may not change this server (a guard against cross-site requests): \
                     only pages of localhost, an IP address or a name of api.allowed-hosts may",
                    origin.unwrap_or_default()
                ),
            ));
        }
    }
    None
}

/// An error answer: status and a JSON `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// True for a pipeline id the API accepts: 1 to 128 of `A-Z a-z 0-9 - _ .`,
/// not starting with a dot and without `..`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && !id.contains("..")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// True for a checkpoint the API may restore: `ID` or `savepoint-ID`.
pub fn valid_checkpoint(spec: &str) -> bool {
    let digits = spec.strip_prefix("savepoint-").unwrap_or(spec);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn lookup(app: &App, name: &str) -> Result<Arc<Slot>, ApiError> {
    if !valid_id(name) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a pipeline id: ids are file names without .toml (letters, digits, '-', '_', inner '.')"),
        ));
    }
    app.sup.slot(name).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no pipeline `{name}` in the pipelines directory")))
}

fn not_running(name: &str) -> ApiError {
    ApiError(StatusCode::CONFLICT, format!("pipeline `{name}` is not running"))
}

/// Builds the router: API, UI, OpenAPI document. Requests must name this
/// server (`localhost`, an IP address or one of `allowed_hosts`).
pub fn router(sup: Arc<Supervisor>, token: Option<String>, allowed_hosts: &[String]) -> Router {
    let app = App { sup, token: token.map(Arc::from), hosts: allowed_hosts.into() };
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/pipelines", get(list))
        .route("/api/v1/pipelines/{name}", get(detail))
        .route("/api/v1/pipelines/{name}/graph", get(graph))
        .route("/api/v1/pipelines/{name}/backpressure", get(backpressure))
        .route("/api/v1/pipelines/{name}/bottleneck", get(bottleneck))
        .route("/api/v1/pipelines/{name}/timeline", get(timeline))
        .route("/api/v1/pipelines/{name}/profile", get(profile))
        .route("/api/v1/pipelines/{name}/checkpoints", get(checkpoints).post(trigger_checkpoint))
        .route("/api/v1/pipelines/{name}/savepoints", post(savepoint))
        .route("/api/v1/pipelines/{name}/restore", post(restore))
        .route("/api/v1/pipelines/{name}/plugins", get(plugins))
        .route("/api/v1/pipelines/{name}/start", post(start))
        .route("/api/v1/pipelines/{name}/stop", post(stop))
        .route("/api/v1/pipelines/{name}/restart", post(restart))
        .route("/api/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route("/ui/{file}", get(|Path(file): Path<String>| async move { asset(&file) }))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route; see /api/openapi.json".into()) })
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth))
        .layer(axum::middleware::from_fn_with_state(app.clone(), check_host))
        .with_state(app)
}

/// `ok`, or `degraded` with the problem while the pipelines directory
/// cannot be read (the pipelines keep running meanwhile).
async fn health(State(app): State<App>) -> Json<Value> {
    match app.sup.scan_error() {
        None => Json(json!({ "status": "ok" })),
        Some(problem) => Json(json!({ "status": "degraded", "problem": problem })),
    }
}

fn asset(file: &str) -> Response {
    let (body, kind) = match file {
        "index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return ApiError(StatusCode::NOT_FOUND, "no such file in the UI".into()).into_response(),
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(kind)), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))], body).into_response()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time for equal lengths.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let Some(token) = &app.token else {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "mutating calls are disabled: no API token is configured; set api.token or the WEIR_API_TOKEN environment variable".into(),
        )
        .into_response();
    };
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        given => {
            let why = if given.is_some() { "wrong bearer token" } else { "this call needs `Authorization: Bearer TOKEN`" };
            let mut r = ApiError(StatusCode::UNAUTHORIZED, why.into()).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn summary(slot: &Slot) -> Value {
    let info = slot.info();
    let status = slot.handle().status();
    json!({
        "id": info.id,
        "name": info.name,
        "state": info.state,
        "failures": info.failures,
        "restarts": info.restarts,
        "last_error": info.last_error,
        "started_at_ms": info.started_at_ms,
        "bottleneck": status.as_ref().map(|s| s.snapshot.bottleneck.sentence.clone()),
    })
}

async fn list(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(app.sup.slots().iter().map(|s| summary(s)).collect()))
}

async fn detail(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    Ok(Json(json!({ "pipeline": slot.info(), "status": slot.handle().status() })).into_response())
}

async fn graph(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let s = slot.handle().status().ok_or_else(|| not_running(&name))?;
    Ok(Json(s.snapshot).into_response())
}

async fn backpressure(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let s = slot.handle().status().ok_or_else(|| not_running(&name))?;
    let tasks: Vec<Value> = s
        .snapshot
        .tasks
        .iter()
        .map(|t| {
            json!({
                "task": t.name,
                "status": t.status,
                "subtasks": t.subtasks.iter().map(|x| json!({
                    "subtask": x.subtask,
                    "backpressured_ms_per_second": x.backpressured,
                    "status": weir_metrics::Status::of(x.backpressured / 1000.0).as_str(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

async fn bottleneck(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let s = slot.handle().status().ok_or_else(|| not_running(&name))?;
    Ok(Json(s.snapshot.bottleneck).into_response())
}

#[derive(Deserialize)]
struct TimelineQuery {
    seconds: Option<usize>,
}

async fn timeline(State(app): State<App>, Path(name): Path<String>, Query(q): Query<TimelineQuery>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let t = slot.handle().timeline(q.seconds.unwrap_or(300).min(weir_metrics::HISTORY)).ok_or_else(|| not_running(&name))?;
    Ok(Json(t).into_response())
}

#[derive(Deserialize)]
struct ProfileQuery {
    seconds: Option<u64>,
    format: Option<String>,
}

/// The longest profile the API takes, in seconds.
const MAX_PROFILE_SECONDS: u64 = 120;

/// Closes a profile's window however the request ends (a client that goes
/// away drops the handler's future mid-sleep).
struct ProfileWindow<'a> {
    profiler: &'a weir_wasm::Profiler,
    pipeline: &'a str,
    open: bool,
}

impl ProfileWindow<'_> {
    fn close(mut self) -> weir_wasm::ProfileReport {
        self.open = false;
        self.profiler.close_window(self.pipeline)
    }
}

impl Drop for ProfileWindow<'_> {
    fn drop(&mut self) {
        if self.open {
            self.profiler.close_window(self.pipeline);
        }
    }
}

async fn profile(State(app): State<App>, Path(name): Path<String>, Query(q): Query<ProfileQuery>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    slot.handle().status().ok_or_else(|| not_running(&name))?;
    let pipeline = slot.info().name.ok_or_else(|| not_running(&name))?;
    let seconds = q.seconds.unwrap_or(10);
    if !(1..=MAX_PROFILE_SECONDS).contains(&seconds) {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("seconds = {seconds}: a profile takes 1 to {MAX_PROFILE_SECONDS} seconds")));
    }
    let format = match q.format.as_deref() {
        None | Some("svg") => ProfileFormat::Svg,
        Some("folded") => ProfileFormat::Folded,
        Some("perf") => ProfileFormat::Perf,
        Some(f) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("format = {f:?}: \"svg\" (a flame graph), \"folded\" (folded stacks) or \"perf\" (perf script text for the Firefox Profiler)"),
            ));
        }
    };
    let profiler = app.sup.profiler().ok_or_else(|| ApiError(StatusCode::CONFLICT, "this server's engine has no profiler".into()))?;
    if !profiler.open_window(&pipeline) {
        return Err(ApiError(StatusCode::CONFLICT, format!("a profile of pipeline `{name}` is being taken; ask again when it is done")));
    }
    let window = ProfileWindow { profiler, pipeline: &pipeline, open: true };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let report = window.close();
    let title = format!("weir: pipeline {pipeline}, plugin code, {seconds} s");
    Ok(match format {
        ProfileFormat::Folded => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], report.folded_text()).into_response(),
        ProfileFormat::Perf => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], report.perf_script(&title)).into_response(),
        ProfileFormat::Svg => ([(header::CONTENT_TYPE, "image/svg+xml")], report.flame_graph(&title)).into_response(),
    })
}

/// What `GET .../profile` answers with (`format`).
enum ProfileFormat {
    Svg,
    Folded,
    Perf,
}

async fn checkpoints(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let info = slot.info();
    let stats = slot.handle().status().and_then(|s| s.checkpoints);
    let mut history = Vec::new();
    if let (Some(c), Some(pname)) = (info.checkpoint.clone(), info.name.clone())
        && (c.store.is_some() || c.dir.join(&pname).is_dir())
    {
        // Listing may wait on an object store: off the async workers.
        let listed = tokio::task::spawn_blocking(move || {
            weir_pipeline::checkpoints::open_store(&c, &pname).and_then(|store| store.list().map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        for c in listed {
            history.push(json!({
                "id": c.id,
                "kind": if c.kind == weir_checkpoint::Kind::Savepoint { "savepoint" } else { "checkpoint" },
                "completed_at_ms": c.completed_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "bytes": c.bytes,
                "inflight_bytes": c.inflight_bytes,
                "alignment_ms": stats.as_ref().and_then(|s| s.recent.iter().find(|r| r.id == c.id)).map(|r| r.alignment_ms),
            }));
        }
    }
    Ok(Json(json!({ "stats": stats, "history": history })).into_response())
}

async fn wait_reply(name: &str, rx: crossbeam_channel::Receiver<Result<std::path::PathBuf, String>>, what: &str) -> ApiResult {
    let r = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(120)))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match r {
        Ok(Ok(dir)) => {
            let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            Ok((StatusCode::CREATED, Json(json!({ "pipeline": name, "kind": what, "id": id }))).into_response())
        }
        Ok(Err(e)) => Err(ApiError(StatusCode::CONFLICT, format!("the {what} failed: {e}"))),
        Err(_) => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, format!("the {what} did not complete within 120 s"))),
    }
}

async fn trigger_checkpoint(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let h = slot.handle();
    if !h.is_running() {
        return Err(not_running(&name));
    }
    wait_reply(&name, h.checkpoint(), "checkpoint").await
}

async fn savepoint(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let h = slot.handle();
    if !h.is_running() {
        return Err(not_running(&name));
    }
    wait_reply(&name, h.savepoint(), "savepoint").await
}

#[derive(Deserialize)]
struct RestoreBody {
    checkpoint: String,
}

async fn restore(State(app): State<App>, Path(name): Path<String>, body: Option<Json<RestoreBody>>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let Some(Json(body)) = body else {
        return Err(ApiError(StatusCode::BAD_REQUEST, "send {\"checkpoint\": \"ID\"} or {\"checkpoint\": \"savepoint-ID\"}".into()));
    };
    if !valid_checkpoint(&body.checkpoint) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a checkpoint of this pipeline: give an id (`17`) or `savepoint-17`, never a path", body.checkpoint),
        ));
    }
    slot.restore(body.checkpoint.clone());
    Ok((StatusCode::ACCEPTED, Json(json!({ "pipeline": name, "restoring": body.checkpoint }))).into_response())
}

async fn plugins(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    Ok(Json(slot.handle().plugins()).into_response())
}

async fn start(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    slot.start();
    Ok((StatusCode::ACCEPTED, Json(summary(&slot))).into_response())
}

async fn stop(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    slot.stop();
    Ok((StatusCode::ACCEPTED, Json(summary(&slot))).into_response())
}

async fn restart(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    slot.restart();
    Ok((StatusCode::ACCEPTED, Json(summary(&slot))).into_response())
}

/// Longest a call may take before its connection is answered 503: above
/// the 120 s a checkpoint or savepoint call waits, and the bound on a
/// client that stops sending a request body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);

/// The bounds of the API's connections (`[api]` in weir.toml).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `api.max-connections`.
    pub max_connections: usize,
    /// `api.header-timeout`.
    pub header_timeout: Duration,
    /// `api.idle-timeout`.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The limits of `[api]`.
    pub fn of(api: &crate::ApiConfig) -> Self {
        Self { max_connections: api.max_connections, header_timeout: api.header_timeout, idle_timeout: api.idle_timeout }
    }
}

/// When a connection last moved a byte, and how many of its calls are
/// being answered (time in a call is not idle time).
struct Activity {
    born: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.born.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.calls.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.born.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// Counts a call as running while alive.
struct InCall(Arc<Activity>);

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.touch();
        self.0.calls.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection that records when it last moved a byte.
struct Watched {
    stream: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut me.stream).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.activity.touch();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, data: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = std::pin::Pin::new(&mut me.stream).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            me.activity.touch();
        }
        r
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` changes;
/// then stops accepting, lets the open connections finish their calls
/// (each closes once idle) and returns when they are gone, or after
/// [`REQUEST_TIMEOUT`].
pub async fn serve(listener: tokio::net::TcpListener, app: Router, limits: Limits, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut errors = weir_metrics::exporter::AcceptErrors::new("the API");
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tokio::time::sleep(errors.failed(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: a crowd gets no file descriptor to hold.
            errors.refused(peer, limits.max_connections);
            continue;
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            connection(stream, peer, app, limits, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, slots.acquire_many(all)).await;
}

async fn connection(stream: tokio::net::TcpStream, peer: std::net::SocketAddr, app: Router, limits: Limits, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let activity = Arc::new(Activity { born: std::time::Instant::now(), last_ms: 0.into(), calls: 0.into() });
    let io = hyper_util::rt::TokioIo::new(Watched { stream, activity: activity.clone() });
    let routes = hyper_util::service::TowerToHyperService::new(app);
    let calls = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        calls.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let guard = InCall(calls.clone());
        let call = hyper::service::Service::call(&routes, req);
        async move {
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, call).await;
            drop(guard);
            match answer {
                Ok(r) => r,
                Err(_) => Ok(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the call took longer than {REQUEST_TIMEOUT:?}; try again")).into_response()),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((limits.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "API connection ended: {e}");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.idle_for() > limits.idle_timeout {
                    tracing::debug!(%peer, "closing an API connection idle for longer than api.idle-timeout ({:?})", limits.idle_timeout);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: DNS rebinding. A name the server was not told about is
    /// refused; loopback names, IP addresses and allowed names are not.
    #[test]
    fn hosts_and_origins_must_name_this_server() {
        let allowed = vec!["weir.example.com".to_owned()];
        for ok in ["127.0.0.1:8080", "localhost", "LOCALHOST:1", "app.localhost:8080", "[::1]:8080", "[::1]", "10.1.2.3", "weir.example.com:443", "Weir.Example.Com."] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "", "localhost.evil.example", "weir.example.com.evil", "[::1]x", "127.0.0.1:80:80", "a b", "[evil]:80"] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("http://localhost:8080"), &allowed));
        assert!(origin_allowed(Some("https://weir.example.com"), &allowed));
        for bad in ["null", "http://evil.example", "file://", "http://127.0.0.1@evil.example", "http://evil.example/x"] {
            assert!(!origin_allowed(Some(bad), &allowed), "{bad}");
        }
        assert_eq!(host_problem("weir.example.com"), None);
        for bad in ["", "http://x", "x:80", "a b", "[::1]"] {
            assert!(host_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn ids_and_checkpoints_reject_paths() {
        for ok in ["orders", "orders-v2", "a_b.c"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "..", "../x", "a/b", "/etc/passwd", ".hidden", "a..b", "%2e%2e", "..%2f", "a\\b", "a b"] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(valid_checkpoint("17") && valid_checkpoint("savepoint-3"));
        for bad in ["", "../17", "/tmp/x", "savepoint-", "17/..", "savepoint-1/../../x"] {
            assert!(!valid_checkpoint(bad), "{bad}");
        }
    }

    /// The checked-in OpenAPI document lists exactly the routes the router has.
    #[test]
    fn openapi_matches_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        for (_, ops) in doc["paths"].as_object().unwrap() {
            for (m, op) in ops.as_object().unwrap() {
                let secured = op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
                assert_eq!(secured, m == "post", "every mutating call, and only those, needs the token: {op}");
            }
        }
    }
}
