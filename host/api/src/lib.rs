//! `weir serve`: the host as a service.
//!
//! One process runs every pipeline file of a directory ([`Supervisor`]),
//! restarts failed ones from their last checkpoint with a restart strategy,
//! and serves a REST API and a web UI on one address (127.0.0.1:8080 by
//! default):
//!
//! * the API (`/api/v1/...`, documented in `openapi.json` in this crate,
//!   also served at `/api/openapi.json`): pipelines and their state, the
//!   job graph with per-task and per-subtask figures, backpressure, the
//!   bottleneck analysis, checkpoints (history, trigger, savepoint,
//!   restore), plugins, start / stop / restart. Mutating calls need the
//!   bearer token of `[api]`;
//! * the UI (`/ui/`): static files compiled into the binary (no CDN) that
//!   poll the API every second and draw the job graph coloured by busy
//!   (red), backpressured (black) and idle (blue) time.
//!
//! A pipeline's events hold what the supervisor did and what the pipeline
//! told its user (warnings, errors, notices: [`journal`]).
//!
//! The data plane never runs on the async runtime: each pipeline runs on
//! its own threads ([`weir_pipeline::run`]); the runtime only serves HTTP.
//! SIGTERM or SIGINT stops every pipeline gracefully (final checkpoint,
//! sinks commit), then the server, and the process exits 0.

pub mod config;
pub mod http;
pub mod journal;
pub mod supervisor;

pub use config::{ApiConfig, RestartConfig, ServeConfig, Strategy};
pub use journal::Journal;
pub use supervisor::{Info, State, Supervisor};

use weir_wasm::Engine;

/// Runs the service until SIGTERM or SIGINT. What pipelines log reaches
/// their events through `journal` (see [`journal`]); `connectors` are the
/// sources and sinks pipelines may use (`weir_connectors::builtin()`).
pub fn serve(config: ServeConfig, engine: Engine, journal: Journal, connectors: std::sync::Arc<weir_pipeline::Registry>) -> Result<(), String> {
    let token = config.token();
    if token.is_none() {
        tracing::warn!(
            "no API token configured (api.token or ${}): the API is read-only until one is set",
            config.api.token_env
        );
    }
    if let Some(address) = config.metrics.listen {
        weir_metrics::serve_prometheus(address)?;
        tracing::info!(%address, "serving Prometheus metrics at /metrics");
    }
    let listen = config.api.listen;
    let scan_every = config.scan_interval;
    let sup = Supervisor::new(config, engine, journal, connectors);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-api")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the API runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}; choose another address with [api] listen in weir.toml"))?;
        tracing::info!(address = %listen, pipelines = %sup.config().pipelines.display(), "weir serve is up: API at http://{listen}/api/v1/pipelines, UI at http://{listen}/ui/");
        let scanner = {
            let sup = sup.clone();
            tokio::spawn(async move {
                loop {
                    let s = sup.clone();
                    let _ = tokio::task::spawn_blocking(move || s.scan()).await;
                    tokio::time::sleep(scan_every).await;
                }
            })
        };
        let app = http::router(sup.clone(), token, &sup.config().api.allowed_hosts);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve(listener, app, http::Limits::of(&sup.config().api), done_rx));
        let signal = shutdown_signal().await;
        tracing::info!("{signal} received: stopping every pipeline gracefully (final checkpoint, sinks commit)");
        scanner.abort();
        let s = sup.clone();
        let _ = tokio::task::spawn_blocking(move || s.shutdown()).await;
        let _ = done_tx.send(true);
        server.await.map_err(|e| format!("the API server failed: {e}"))?;
        tracing::info!("every pipeline stopped; weir serve exits");
        Ok(())
    })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the service runs until killed.
        std::future::pending::<()>().await;
        return "";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
