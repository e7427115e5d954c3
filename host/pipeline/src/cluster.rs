//! `[cluster]`: this process as one member of a pipeline spread over a
//! group of hosts (see the architecture page, "Past one host").
//!
//! The source's partitions are the pipeline's *lanes*. A lane is the whole
//! pipeline at parallelism 1 over one partition, read from the pipeline
//! file as `NAME.lane-N` ([`crate::LoadOptions::lane`]): its checkpoints,
//! its claim on them, its control socket and its sinks' progress are its
//! own, so a lane moves between members whole. The source's group decides
//! which member runs which lane ([`weir_connector::cluster::Membership`]);
//! this member starts the lanes it is given, each from the newest complete
//! checkpoint of that lane whoever wrote it, and stops the lanes taken
//! from it with a final checkpoint before it answers the group.

use crate::checkpoints::StartFrom;
use crate::config::{LoadOptions, Pipeline};
use crate::run::{run, Progress, RunError, RunOptions, RunSummary};
use crate::RunHandle;
use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_connector::cluster::{Change, Lane, Membership};
use weir_connector::{ConnectorContext, ErrorKind};
use weir_wasm::Engine;

/// How long a lane that cannot start yet waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// What a member did, lane by lane: the summary of each lane run that
/// ended (stopped when it was taken away or at the end, or finished).
#[derive(Debug, Default)]
pub struct MemberSummary {
    /// `(lane, summary)` in the order the runs ended.
    pub lanes: Vec<(u32, RunSummary)>,
}

/// How a lane's thread ended.
enum LaneEnd {
    /// The lane ran and stopped (or its input ended).
    Ran(RunSummary),
    /// Stopped before it could start.
    NeverStarted,
}

struct LaneRun {
    handle: RunHandle,
    /// `None` once the lane's input ended: it is done, and stays this
    /// member's until the group takes it away.
    thread: Option<JoinHandle<Result<LaneEnd, RunError>>>,
}

/// Runs this process as a member of `p`'s group until `handle` is stopped
/// (it then stops its lanes with a final checkpoint and leaves the group,
/// so the others take them over at once) or a lane fails in a way starting
/// again cannot mend. `load` reads the pipeline file (its registry and
/// plugin directory), as it was read into `p`.
pub fn run_member(p: &Pipeline, load: &LoadOptions, engine: &Engine, options: &RunOptions) -> Result<MemberSummary, RunError> {
    let group = p.cluster.clone().ok_or_else(|| RunError::setup("the pipeline has no [cluster] section"))?;
    if options.start_from != StartFrom::Latest {
        return Err(RunError::setup(format!(
            "{}: a pipeline spread over a group ([cluster]) resumes each lane from its own newest checkpoint, whoever wrote it; \
             --fresh and --from-checkpoint would apply to whichever lanes this member happens to get. To start over, stop every \
             member and remove the lanes' checkpoints (`{}.lane-*` in the checkpoint store)",
            p.file.display(),
            p.name
        )));
    }
    let (source_name, source) = p.sources.iter().next().ok_or_else(|| RunError::setup("[cluster] needs one source"))?;
    let ctx = ConnectorContext::new(p.name.clone(), source_name.clone(), 0, 1);
    let mut membership = match source.spec.join_group(&group, &ctx) {
        None => {
            return Err(RunError::setup(format!(
                "{}: source `{source_name}` (type `{}`) cannot be spread over a group: [cluster] needs a source whose partitions \
                 a group can share (kafka)",
                p.file.display(),
                source.spec.type_name()
            )));
        }
        Some(m) => m.map_err(|e| RunError::setup_kind(e.kind, format!("{}: [cluster] group {:?}: {e}", p.file.display(), group.group)))?,
    };
    if let Some(address) = options.metrics_address {
        match weir_metrics::serve_prometheus(address) {
            Ok(()) => tracing::info!(%address, "serving Prometheus metrics at /metrics"),
            Err(e) => tracing::warn!("{e}; continuing without the metrics endpoint (use --metrics-address to choose another)"),
        }
    }
    let stop = options.handle.clone().unwrap_or_default();
    let count = membership.lanes();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into());
    let me = format!("{host}/{}", std::process::id());
    let mut member = Member { p, load, engine, group: &group.group, me, count, lanes: BTreeMap::new(), summary: MemberSummary::default() };
    let result = member.serve(&mut *membership, &stop);
    // Whatever ended it, the lanes stop with a final checkpoint, then the
    // member leaves: the group gives its lanes to the others at once.
    let all: Vec<u32> = member.lanes.keys().copied().collect();
    let stopped = member.stop(&all);
    membership.leave();
    result.and(stopped).map(|()| member.summary)
}

struct Member<'a> {
    p: &'a Pipeline,
    load: &'a LoadOptions,
    engine: &'a Engine,
    group: &'a str,
    /// This member as messages name it: `HOST/PID`.
    me: String,
    count: u32,
    lanes: BTreeMap<u32, LaneRun>,
    summary: MemberSummary,
}

impl Member<'_> {
    fn serve(&mut self, membership: &mut dyn Membership, stop: &RunHandle) -> Result<(), RunError> {
        while !stop.stop_requested() {
            let changes = membership
                .poll(Duration::from_millis(200))
                .map_err(|e| RunError::failed(e.kind, format!("[cluster] group {:?}: {e}", self.group)))?;
            for change in changes {
                match change {
                    Change::Revoked(lanes) => {
                        let started = Instant::now();
                        self.stop(&lanes)?;
                        let running: Vec<u32> = self.lanes.keys().copied().collect();
                        weir_events::emit(weir_events::LanesRevoked {
                            pipeline: &self.p.name,
                            group: self.group,
                            member: &self.me,
                            lanes: &lanes,
                            running: &running,
                            took_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                    Change::Assigned(lanes) => {
                        for &l in &lanes {
                            if !self.lanes.contains_key(&l) {
                                let run = self.start(Lane { index: l, count: self.count })?;
                                self.lanes.insert(l, run);
                            }
                        }
                        let running: Vec<u32> = self.lanes.keys().copied().collect();
                        weir_events::emit(weir_events::LanesAssigned {
                            pipeline: &self.p.name,
                            group: self.group,
                            member: &self.me,
                            lanes: &lanes,
                            running: &running,
                            count: self.count,
                        });
                    }
                }
            }
            // A lane that failed for good fails the member: the group then
            // gives every lane of this member to the others, which fail the
            // same way or not (a record only one partition holds), and the
            // message says which lane and why.
            let ended: Vec<u32> = self.lanes.iter().filter(|(_, r)| r.thread.as_ref().is_some_and(|t| t.is_finished())).map(|(l, _)| *l).collect();
            for l in ended {
                let run = self.lanes.get_mut(&l).expect("listed");
                match run.thread.take().expect("finished").join() {
                    Ok(Ok(LaneEnd::Ran(summary))) => self.summary.lanes.push((l, summary)),
                    Ok(Ok(LaneEnd::NeverStarted)) => {}
                    Ok(Err(e)) => return Err(RunError { message: format!("lane {l} (partition {l} of {}): {}", self.count, e.message), ..e }),
                    Err(_) => return Err(RunError::failed(ErrorKind::Internal, format!("lane {l}: its thread panicked"))),
                }
            }
        }
        Ok(())
    }

    /// Starts `lane` on a thread of its own: its pipeline read from the
    /// file, resumed from its newest checkpoint, tried again every second
    /// while it cannot start for a reason that may pass (its checkpoints
    /// still claimed by the member that had it, an unreachable store).
    fn start(&self, lane: Lane) -> Result<LaneRun, RunError> {
        let handle = RunHandle::new();
        let (file, load, engine, name) = (self.p.file.clone(), self.load.clone().lane(lane), self.engine.clone(), self.p.name.clone());
        let h = handle.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lane-{}", lane.index))
            .spawn(move || loop {
                let lp = Pipeline::load(&file, &load).map_err(|e| RunError::setup(e.to_string()))?;
                let options = RunOptions { progress: Progress::Quiet, handle: Some(h.clone()), ..Default::default() };
                match run(&lp, &engine, &options).map(LaneEnd::Ran) {
                    Err(e) if e.phase == crate::Phase::Setup && e.is_retryable() && !h.stop_requested() => {
                        weir_events::emit(weir_events::LaneWaiting { pipeline: &name, lane: lane.index, reason: &e.message });
                        let until = Instant::now() + RETRY;
                        while Instant::now() < until && !h.stop_requested() {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if h.stop_requested() {
                            return Ok(LaneEnd::NeverStarted);
                        }
                    }
                    r => return r,
                }
            })
            .map_err(|e| RunError::setup_kind(ErrorKind::External, format!("cannot start a thread for lane {}: {e}", lane.index)))?;
        Ok(LaneRun { handle, thread: Some(thread) })
    }

    /// Stops `lanes` (each takes a final checkpoint, its sinks commit it,
    /// and its claim is released), all at once, and waits for them.
    fn stop(&mut self, lanes: &[u32]) -> Result<(), RunError> {
        let runs: Vec<(u32, LaneRun)> = lanes.iter().filter_map(|l| self.lanes.remove(l).map(|r| (*l, r))).collect();
        for (_, r) in &runs {
            r.handle.stop();
        }
        let mut first = None;
        for (l, r) in runs {
            let Some(thread) = r.thread else { continue };
            match thread.join() {
                Ok(Ok(LaneEnd::Ran(summary))) => self.summary.lanes.push((l, summary)),
                Ok(Ok(LaneEnd::NeverStarted)) => {}
                Ok(Err(e)) => {
                    tracing::error!(pipeline = %self.p.name, lane = l, "lane {l} failed as it stopped: {}", e.message);
                    first.get_or_insert(RunError { message: format!("lane {l}: {}", e.message), ..e });
                }
                Err(_) => {
                    first.get_or_insert(RunError::failed(ErrorKind::Internal, format!("lane {l}: its thread panicked")));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
