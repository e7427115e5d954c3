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

/// Builds the router: API, UI, OpenAPI document.
pub fn router(sup: Arc<Supervisor>, token: Option<String>) -> Router {
    let app = App { sup, token: token.map(Arc::from) };
    Router::new()
        .route("/api/v1/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/api/v1/pipelines", get(list))
        .route("/api/v1/pipelines/{name}", get(detail))
        .route("/api/v1/pipelines/{name}/graph", get(graph))
        .route("/api/v1/pipelines/{name}/backpressure", get(backpressure))
        .route("/api/v1/pipelines/{name}/bottleneck", get(bottleneck))
        .route("/api/v1/pipelines/{name}/timeline", get(timeline))
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
        .with_state(app)
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

async fn checkpoints(State(app): State<App>, Path(name): Path<String>) -> ApiResult {
    let slot = lookup(&app, &name)?;
    let info = slot.info();
    let stats = slot.handle().status().and_then(|s| s.checkpoints);
    let mut history = Vec::new();
    if let (Some(root), Some(pname)) = (&info.checkpoint_root, &info.name)
        && root.join(pname).is_dir()
    {
        let store = weir_checkpoint::CheckpointStore::open(root, pname).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        for c in store.list().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))? {
            history.push(json!({
                "id": c.id,
                "kind": if c.kind == weir_checkpoint::Kind::Savepoint { "savepoint" } else { "checkpoint" },
                "completed_at_ms": c.completed_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "bytes": c.bytes,
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

#[cfg(test)]
mod tests {
    use super::*;

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
