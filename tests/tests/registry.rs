//! Issue 15: adding a connector is one crate plus one registration line.
//!
//! This file is the crate: a `countdown` source and a `collect` sink that
//! the pipeline crate has never heard of, registered from outside it on top
//! of the built-in connectors, and used by a pipeline file that runs end to
//! end through a real Wasm operator (the `identity` plugin), with a
//! checkpoint. Nothing in weir names them.

use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use weir_connector::registry::{ConfigContext, FieldErrors, Registry, SinkConfig, SourceConfig};
use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Frames, Poll, Sink, Source};
use weir_pipeline::{LoadOptions, Pipeline, Progress, RunOptions};
use weir_tests::{cache_dir, Scratch};

/// `type = "countdown"`: the values `from`, `from - 1`, ..., `1`, keyed by
/// their parity, split over the subtasks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CountdownConfig {
    from: u64,
}

impl SourceConfig for CountdownConfig {
    const TYPE: &'static str = "countdown";

    fn prepare(&mut self, _: &ConfigContext<'_>) -> FieldErrors {
        if self.from == 0 { vec![("from".into(), "must be at least 1".into())] } else { Vec::new() }
    }

    fn open(&self, ctx: &ConnectorContext) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(Countdown { next: self.from, subtask: u64::from(ctx.subtask), parallelism: u64::from(ctx.parallelism) }))
    }
}

struct Countdown {
    next: u64,
    subtask: u64,
    parallelism: u64,
}

impl Source for Countdown {
    fn poll(&mut self, out: &mut BatchWriter, _: usize) -> Result<Poll, ConnectorError> {
        for _ in 0..100 {
            if self.next == 0 {
                return Ok(Poll::Finished);
            }
            let n = self.next;
            self.next -= 1;
            if n % self.parallelism == self.subtask {
                let key = if n % 2 == 0 { b"even".as_slice() } else { b"odd".as_slice() };
                out.push(Some(key), n.to_string().as_bytes(), n as i64, &[]);
            }
        }
        Ok(Poll::Ready)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        Ok(self.next.to_le_bytes().to_vec())
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        if let Some(p) = positions.iter().find(|p| p.len() == 8) {
            self.next = u64::from_le_bytes((*p).try_into().expect("8 bytes"));
        }
        Ok(())
    }
}

/// Where `collect` sinks put what they receive, by the `bucket` they name.
static BUCKETS: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());

/// `type = "collect"`: keeps every value in a named in-memory bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CollectConfig {
    bucket: String,
    /// A path, to show it is resolved against the pipeline file.
    #[serde(default)]
    marker: Option<PathBuf>,
}

impl SinkConfig for CollectConfig {
    const TYPE: &'static str = "collect";

    fn prepare(&mut self, cx: &ConfigContext<'_>) -> FieldErrors {
        self.marker = self.marker.as_deref().map(|m| cx.resolve(m));
        Vec::new()
    }

    fn open(&self, _: &ConnectorContext) -> Result<Box<dyn Sink>, ConnectorError> {
        if let Some(m) = &self.marker {
            std::fs::write(m, b"opened").map_err(|e| ConnectorError::external(format!("cannot write {}", m.display()), e))?;
        }
        Ok(Box::new(Collect { bucket: self.bucket.clone() }))
    }
}

struct Collect {
    bucket: String,
}

impl Sink for Collect {
    fn write(&mut self, batch: &[u8], _records: usize) -> Result<(), ConnectorError> {
        let values: Vec<String> = Frames::new(batch).map(|r| String::from_utf8_lossy(r.expect("a valid frame").value).into_owned()).collect();
        let mut buckets = BUCKETS.lock().unwrap();
        match buckets.iter_mut().find(|(b, _)| *b == self.bucket) {
            Some((_, v)) => v.extend(values),
            None => buckets.push((self.bucket.clone(), values)),
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// The built-in connectors plus this file's two: the one line per
/// connector that adding one takes.
fn registry() -> Arc<Registry> {
    Arc::new(weir_connectors::builtin().as_ref().clone().with_source::<CountdownConfig>().with_sink::<CollectConfig>())
}

#[test]
fn a_connector_registered_outside_the_pipeline_crate_runs_a_pipeline_file() {
    let s = Scratch::new();
    let file = s.pipeline(
        "countdown.toml",
        r#"
        [sources.numbers]
        type = "countdown"
        from = 5000
        parallelism = 2
        [[operators]]
        name = "same"
        plugin = "identity"
        parallelism = 2
        [sinks.kept]
        type = "collect"
        bucket = "registry-test"
        marker = "sink-opened"
        [checkpoint]
        interval = "50ms"
        "#,
    );
    let p = Pipeline::load(&file, &LoadOptions::new(registry())).unwrap_or_else(|e| panic!("{e}"));
    let engine = weir_wasm::Engine::new(weir_wasm::EngineConfig { cache_dir: Some(cache_dir()), profiler: None }).unwrap();
    let summary = weir_pipeline::run(&p, &engine, &RunOptions { progress: Progress::Quiet, ..RunOptions::default() }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.source_records(), 5000);
    assert_eq!(summary.sink_records(), 5000);
    assert!(summary.checkpoints.is_some_and(|c| c.completed >= 1), "a final checkpoint at least");
    let mut got: Vec<u64> = BUCKETS.lock().unwrap().iter().find(|(b, _)| b == "registry-test").expect("the sink wrote").1.iter().map(|v| v.parse().unwrap()).collect();
    got.sort();
    assert_eq!(got, (1..=5000).collect::<Vec<u64>>(), "every value once");
    assert_eq!(std::fs::read(s.path("sink-opened")).unwrap(), b"opened", "marker resolved against the pipeline file's directory");
}

#[test]
fn a_registered_connector_is_checked_like_a_built_in_one() {
    let s = Scratch::new();
    let text = "[sources.n]\ntype = \"countdown\"\nfrom = 0\nparallelism = 1\n[sinks.k]\ntype = \"collect\"\nbuket = \"x\"\n";
    let file = s.pipeline("bad.toml", text);
    let errors = Pipeline::load(&file, &LoadOptions::new(registry())).unwrap_err().to_string();
    assert!(errors.contains("sources.n.from: must be at least 1"), "{errors}");
    assert!(errors.contains("sinks.k: unknown field `buket`, expected `bucket` or `marker`"), "{errors}");
    // Without the registration, the types do not exist, and the message
    // lists what does.
    let errors = Pipeline::load(&file, &LoadOptions::new(weir_connectors::builtin())).unwrap_err().to_string();
    assert!(errors.contains("sources.n.type: unknown source type \"countdown\"; available: \"generator\", \"file\", \"kafka\""), "{errors}");
    assert!(errors.contains("sinks.k.type: unknown sink type \"collect\""), "{errors}");
    let errors = Pipeline::load(&s.pipeline("ok.toml", &text.replace("from = 0", "from = 3").replace("buket", "bucket")), &LoadOptions::new(registry()));
    assert!(errors.is_ok(), "{errors:?}");
}
