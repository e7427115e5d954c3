//! Finding the bottleneck, for the user, in words.
//!
//! The input is the job graph at task level (which task feeds which, and
//! whether the edge is hash-partitioned) and each task subtask's
//! per-second history of busy / idle / backpressured time and buffer pool
//! usage. The rules, tried in this order, follow how one reads Flink's
//! backpressure view by hand:
//!
//! 1. **Network exchange.** A task is backpressured with its output
//!    buffers full, yet the task it feeds is mostly idle with its input
//!    buffers empty: the buffers are stuck between the two, so the
//!    exchange itself is the limit, not either task.
//! 2. **Steady bottleneck.** The subtask that is busy and *not*
//!    backpressured while its upstream is backpressured: it cannot keep
//!    up, and everything before it waits. A source that is busy and not
//!    backpressured is the limit when nothing downstream is.
//!    *Skew* is part of the same verdict: when the bottleneck subtask is
//!    much busier than its siblings (at least [`SKEW_RATIO`] times), the
//!    sentence says so, and calls it key skew when its input is
//!    hash-partitioned.
//! 3. **Alternating bottleneck.** Averages over a few seconds hide a
//!    window that fires every ten seconds and blocks the pipeline for two:
//!    the per-second history (last [`ALTERNATING_HORIZON`] seconds) is
//!    searched for a subtask that was, in at least two bursts separated by
//!    a quiet second (busy under 50%), busy and not backpressured while its
//!    upstream was backpressured.
//!
//! The verdict is an [`Analysis`]: its kind, the task and subtask named,
//! the upstream that waits for it, and a sentence such as
//! `orders.enrich[3] is the bottleneck: busy 97%, upstream orders.parse
//! backpressured 88%; it is 4x busier than its siblings (key skew)`.

use crate::TaskSample;
use serde::{Deserialize, Serialize};

/// Busy share above which a subtask can be the bottleneck.
pub const BUSY: f64 = 0.70;
/// Backpressured share below which a subtask counts as not backpressured.
pub const NOT_BACKPRESSURED: f64 = 0.20;
/// Backpressured share above which an upstream task counts as waiting.
pub const UPSTREAM_BACKPRESSURED: f64 = 0.30;
/// How many times busier than its siblings' mean a subtask must be to be
/// called skewed.
pub const SKEW_RATIO: f64 = 2.0;
/// Busy share of one second that counts as part of a burst.
pub const BURST_BUSY: f64 = 0.60;
/// Seconds of history searched for an alternating bottleneck.
pub const ALTERNATING_HORIZON: usize = 60;

/// A task (chain) of the job graph, as the analysis sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphTask {
    /// The chain's name (its head vertex).
    pub name: String,
    /// The tasks feeding it, by index, one per input (several for fan-in;
    /// none for sources).
    pub upstreams: Vec<usize>,
    /// An input is hash-partitioned (so uneven load means key skew).
    pub hash_input: bool,
}

/// What kind of verdict the analysis reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Not enough history yet (the first seconds of a run).
    WarmingUp,
    /// Nothing holds the pipeline back.
    None,
    /// A task that is busy while its upstream waits.
    Task,
    /// One subtask of the bottleneck does most of the work.
    Skew,
    /// A source is the limit: busy, with nothing downstream holding it back.
    Source,
    /// Buffers are stuck between two tasks.
    Exchange,
    /// A task that blocks the pipeline in bursts.
    Alternating,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// What was found.
    pub kind: Kind,
    /// The task named (chain name), if any.
    pub task: Option<String>,
    /// Its subtask, if one subtask is named.
    pub subtask: Option<u32>,
    /// The upstream task that waits for it (for an exchange: the sender);
    /// of several inputs' upstreams, the one that waits most.
    pub upstream: Option<String>,
    /// How many times busier than its siblings the subtask is.
    pub skew: Option<f64>,
    /// The verdict in one sentence.
    pub sentence: String,
    /// Figures that support it, one per line.
    pub evidence: Vec<String>,
}

fn pct(share: f64) -> String {
    format!("{:.0}%", (share * 100.0).clamp(0.0, 100.0))
}

/// Windowed shares (0..=1) of one subtask over the last `window` seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Shares {
    busy: f64,
    idle: f64,
    bp: f64,
    in_pool: f64,
    out_pool: f64,
    records: f64,
}

fn shares(h: &[TaskSample], window: usize) -> Shares {
    let n = h.len().min(window);
    if n == 0 {
        return Shares::default();
    }
    let tail = &h[h.len() - n..];
    let avg = |f: fn(&TaskSample) -> f64| tail.iter().map(f).sum::<f64>() / n as f64;
    Shares {
        busy: avg(|s| s.busy) / 1000.0,
        idle: avg(|s| s.idle) / 1000.0,
        bp: avg(|s| s.backpressured) / 1000.0,
        in_pool: avg(|s| s.in_pool),
        out_pool: avg(|s| s.out_pool),
        records: avg(|s| s.records_in),
    }
}

/// Analyses `history` (`[task][subtask][second]`, oldest second first, in
/// milliseconds per second like [`TaskSample`]) of the tasks of `graph`,
/// averaging the last `window` seconds for the steady rules. Task names in
/// the sentence are prefixed with `pipeline.`.
pub fn analyze(pipeline: &str, graph: &[GraphTask], history: &[Vec<Vec<TaskSample>>], window: usize) -> Analysis {
    let name = |t: usize| format!("{pipeline}.{}", graph[t].name);
    let seconds = history.iter().flatten().map(Vec::len).max().unwrap_or(0);
    if seconds < 2 {
        return Analysis {
            kind: Kind::WarmingUp,
            task: None,
            subtask: None,
            upstream: None,
            skew: None,
            sentence: format!("{pipeline}: measuring; the first verdict comes after two seconds of samples"),
            evidence: Vec::new(),
        };
    }
    let now: Vec<Vec<Shares>> = history.iter().map(|subs| subs.iter().map(|h| shares(h, window)).collect()).collect();
    let max = |t: usize, f: fn(&Shares) -> f64| now[t].iter().map(f).fold(0.0, f64::max);

    // 1. Network exchange: sender backpressured with full output buffers,
    // receiver idle with empty input buffers.
    for (t, u) in graph.iter().enumerate().flat_map(|(t, task)| task.upstreams.iter().map(move |&u| (t, u))) {
        let (up_bp, up_out) = (max(u, |s| s.bp), max(u, |s| s.out_pool));
        let (busy, in_pool) = (max(t, |s| s.busy), max(t, |s| s.in_pool));
        if up_bp > 0.5 && up_out >= 0.8 && busy < 0.5 && in_pool <= 0.25 {
            let idle = now[t].iter().map(|s| s.idle).sum::<f64>() / now[t].len().max(1) as f64;
            return Analysis {
                kind: Kind::Exchange,
                task: Some(graph[t].name.clone()),
                subtask: None,
                upstream: Some(graph[u].name.clone()),
                skew: None,
                sentence: format!(
                    "the exchange from {} to {} is the bottleneck: {} is backpressured {} with its output buffers {} in use, \
                     yet {}'s input buffers are {} full and it is idle {}; the buffers are stuck in between",
                    name(u),
                    name(t),
                    name(u),
                    pct(up_bp),
                    pct(up_out),
                    name(t),
                    pct(in_pool),
                    pct(idle)
                ),
                evidence: vec![
                    format!("{}: backpressured {}, output pool {}", name(u), pct(up_bp), pct(up_out)),
                    format!("{}: busy {}, idle {}, input pool {}", name(t), pct(busy), pct(idle), pct(in_pool)),
                ],
            };
        }
    }

    // 2. Steady bottleneck: busy, not backpressured, an upstream waiting
    // (with several inputs, the one that waits most).
    let waits_most = |t: usize| graph[t].upstreams.iter().map(|&u| (max(u, |s| s.bp), u)).fold(None, |acc: Option<(f64, usize)>, x| {
        if acc.is_none_or(|a| x.0 > a.0) { Some(x) } else { acc }
    });
    let mut best: Option<(f64, usize, usize)> = None;
    for (t, shares) in now.iter().enumerate().take(graph.len()) {
        let up = waits_most(t);
        for (s, sh) in shares.iter().enumerate() {
            if sh.busy < BUSY || sh.bp > NOT_BACKPRESSURED {
                continue;
            }
            let score = match up {
                Some((up_bp, _)) if up_bp >= UPSTREAM_BACKPRESSURED => 2.0 + up_bp + sh.busy,
                // A busy source with nothing holding it back.
                None => 1.0 + sh.busy,
                Some(_) => continue,
            };
            if best.is_none_or(|(b, _, _)| score > b) {
                best = Some((score, t, s));
            }
        }
    }
    if let Some((_, t, s)) = best {
        let task = &graph[t];
        let sh = now[t][s];
        let who = format!("{}[{s}]", name(t));
        let mut evidence = vec![format!("{who}: busy {}, backpressured {}, input pool {}", pct(sh.busy), pct(sh.bp), pct(sh.in_pool))];
        let siblings: Vec<Shares> = now[t].iter().enumerate().filter(|(i, _)| *i != s).map(|(_, x)| *x).collect();
        let (skew, skew_words) = if siblings.is_empty() {
            (None, None)
        } else {
            let n = siblings.len() as f64;
            let busy = siblings.iter().map(|x| x.busy).sum::<f64>() / n;
            let records = siblings.iter().map(|x| x.records).sum::<f64>() / n;
            evidence.push(format!("its {} siblings: busy {} on average", siblings.len(), pct(busy)));
            let busier = sh.busy / busy.max(0.01);
            // Records per second say it more plainly where the rate is known.
            let more = (sh.records > 0.0).then(|| sh.records / records.max(sh.records / 1000.0));
            if more.is_some() {
                evidence.push(format!("it takes {:.0} records/s, its siblings {:.0} on average", sh.records, records));
            }
            let ratio = busier.max(more.unwrap_or(0.0));
            let cause = if task.hash_input { "key skew" } else { "uneven load" };
            let words = match more {
                Some(m) if m >= SKEW_RATIO => format!("; it is {busier:.0}x busier than its siblings and takes {m:.0}x their records ({cause})"),
                _ => format!("; it is {busier:.0}x busier than its siblings ({cause})"),
            };
            if ratio >= SKEW_RATIO { (Some(ratio), Some(words)) } else { (None, None) }
        };
        let (kind, sentence, upstream) = match waits_most(t) {
            Some((up_bp, u)) => {
                // Every input's upstream, so a fan-in says which one waits.
                let others: Vec<String> = task.upstreams.iter().filter(|&&o| o != u).map(|&o| format!("{} {}", name(o), pct(max(o, |x| x.bp)))).collect();
                for &o in &task.upstreams {
                    evidence.push(format!("upstream {}: backpressured {}", name(o), pct(max(o, |x| x.bp))));
                }
                let others = if others.is_empty() { String::new() } else { format!(" (its other inputs: {})", others.join(", ")) };
                (
                    if skew.is_some() { Kind::Skew } else { Kind::Task },
                    format!(
                        "{who} is the bottleneck: busy {}, upstream {} backpressured {}{others}{}",
                        pct(sh.busy),
                        name(u),
                        pct(up_bp),
                        skew_words.unwrap_or_default()
                    ),
                    Some(graph[u].name.clone()),
                )
            }
            None => (
                Kind::Source,
                format!(
                    "{who} is the limit: the source is busy {} and nothing downstream holds it back{}; \
                     the pipeline runs as fast as this task can read",
                    pct(sh.busy),
                    skew_words.unwrap_or_default()
                ),
                None,
            ),
        };
        return Analysis { kind, task: Some(task.name.clone()), subtask: Some(s as u32), upstream, skew, sentence, evidence };
    }

    // 3. Alternating bottleneck, from the per-second history.
    if let Some(a) = alternating(pipeline, graph, history) {
        return a;
    }

    let busiest = (0..graph.len()).flat_map(|t| now[t].iter().enumerate().map(move |(s, x)| (x.busy, t, s))).fold(None, |acc: Option<(f64, usize, usize)>, x| {
        if acc.is_none_or(|a| x.0 > a.0) { Some(x) } else { acc }
    });
    let mut evidence = Vec::new();
    if let Some((b, t, s)) = busiest {
        evidence.push(format!("busiest: {}[{s}] busy {}", name(t), pct(b)));
    }
    Analysis {
        kind: Kind::None,
        task: None,
        subtask: None,
        upstream: None,
        skew: None,
        sentence: format!("{pipeline} has no bottleneck: no task is busy while its input waits; it keeps up with its sources"),
        evidence,
    }
}

fn alternating(pipeline: &str, graph: &[GraphTask], history: &[Vec<Vec<TaskSample>>]) -> Option<Analysis> {
    // (task, subtask, upstream, bursts as (start, length), peak upstream backpressure, seconds searched)
    type Found = (usize, usize, usize, Vec<(usize, usize)>, f64, usize);
    let mut best: Option<Found> = None;
    for (t, u) in graph.iter().enumerate().flat_map(|(t, task)| task.upstreams.iter().map(move |&u| (t, u))) {
        for (s, h) in history[t].iter().enumerate() {
            let len = h.len().min(ALTERNATING_HORIZON);
            let off = h.len() - len;
            // The upstream's worst subtask, aligned to the same seconds (all
            // histories are sampled together, newest last).
            let up_bp = |i: usize| -> f64 {
                history[u]
                    .iter()
                    .filter_map(|uh| {
                        let back = h.len() - i;
                        uh.len().checked_sub(back).map(|j| uh[j].backpressured / 1000.0)
                    })
                    .fold(0.0, f64::max)
            };
            // Runs of hot seconds; two runs are separate bursts only when a
            // quiet second lies between them.
            let mut episodes: Vec<(usize, usize)> = Vec::new(); // (start, length)
            let mut hot_secs = 0;
            let mut cool_since_last = false;
            let mut prev_hot = false;
            for (i, &x) in h.iter().enumerate().skip(off) {
                let hot = x.busy / 1000.0 >= BURST_BUSY && x.backpressured / 1000.0 <= NOT_BACKPRESSURED && up_bp(i) >= UPSTREAM_BACKPRESSURED;
                if hot {
                    hot_secs += 1;
                    match episodes.last_mut() {
                        Some(e) if prev_hot || !cool_since_last => e.1 = i + 1 - e.0,
                        _ => episodes.push((i, 1)),
                    }
                    cool_since_last = false;
                } else if x.busy / 1000.0 < 0.5 {
                    cool_since_last = true;
                }
                prev_hot = hot;
            }
            let share = hot_secs as f64 / len.max(1) as f64;
            if episodes.len() >= 2 && share < 0.8 && best.as_ref().is_none_or(|b| episodes.len() > b.3.len()) {
                let peak_up = episodes.iter().flat_map(|&(st, n)| st..st + n).map(up_bp).fold(0.0, f64::max);
                best = Some((t, s, u, episodes, peak_up, len));
            }
        }
    }
    let (t, s, u, episodes, peak_up, len) = best?;
    let who = format!("{pipeline}.{}[{s}]", graph[t].name);
    let up = format!("{pipeline}.{}", graph[u].name);
    let starts: Vec<usize> = episodes.iter().map(|e| e.0).collect();
    let period = (starts.last()? - starts.first()?) as f64 / (starts.len() - 1) as f64;
    let burst = episodes.iter().map(|e| e.1).sum::<usize>() as f64 / episodes.len() as f64;
    let avg_busy = history[t][s].iter().rev().take(len).map(|x| x.busy).sum::<f64>() / len.max(1) as f64 / 1000.0;
    Some(Analysis {
        kind: Kind::Alternating,
        task: Some(graph[t].name.clone()),
        subtask: Some(s as u32),
        upstream: Some(graph[u].name.clone()),
        skew: None,
        sentence: format!(
            "{who} is an alternating bottleneck: every ~{period:.0} s it is busy for ~{burst:.0} s while upstream {up} is backpressured \
             (up to {}), and mostly idle in between (busy {} on average over the last {len} s), like a window firing",
            pct(peak_up),
            pct(avg_busy)
        ),
        evidence: vec![format!(
            "{} bursts in the last {len} s, starting {}",
            episodes.len(),
            starts.iter().map(|&st| format!("{}s ago", history[t][s].len() - st)).collect::<Vec<_>>().join(", ")
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(busy: f64, bp: f64, in_pool: f64, out_pool: f64) -> TaskSample {
        TaskSample { busy, idle: (1000.0 - busy - bp).max(0.0), backpressured: bp, in_pool, out_pool, records_in: 0.0 }
    }

    fn steady(x: TaskSample, secs: usize) -> Vec<TaskSample> {
        vec![x; secs]
    }

    fn graph(names: &[(&str, Option<usize>, bool)]) -> Vec<GraphTask> {
        names.iter().map(|(n, u, h)| GraphTask { name: (*n).into(), upstreams: u.iter().copied().collect(), hash_input: *h }).collect()
    }

    #[test]
    fn warming_up_without_samples() {
        let g = graph(&[("src", None, false)]);
        assert_eq!(analyze("p", &g, &[vec![vec![]]], 5).kind, Kind::WarmingUp);
    }

    #[test]
    fn slow_operator_is_named_with_its_waiting_upstream() {
        let g = graph(&[("parse", None, false), ("enrich", Some(0), false)]);
        let h = vec![vec![steady(s(100.0, 880.0, 0.0, 1.0), 6)], vec![steady(s(970.0, 0.0, 1.0, 0.0), 6)]];
        let a = analyze("orders", &g, &h, 5);
        assert_eq!(a.kind, Kind::Task);
        assert_eq!(a.task.as_deref(), Some("enrich"));
        assert_eq!(a.sentence, "orders.enrich[0] is the bottleneck: busy 97%, upstream orders.parse backpressured 88%");
    }

    /// Fan-in: of a join's two inputs, the one whose upstream waits is
    /// named, and the other input's figure is given beside it.
    #[test]
    fn a_fan_in_names_the_input_that_waits() {
        let mut g = graph(&[("orders", None, false), ("payments", None, false), ("join", None, true)]);
        g[2].upstreams = vec![0, 1];
        let h = vec![
            vec![steady(s(400.0, 100.0, 0.0, 0.3), 6)],
            vec![steady(s(90.0, 880.0, 0.0, 1.0), 6)],
            vec![steady(s(970.0, 0.0, 1.0, 0.0), 6)],
        ];
        let a = analyze("shop", &g, &h, 5);
        assert_eq!((a.kind, a.task.as_deref(), a.upstream.as_deref()), (Kind::Task, Some("join"), Some("payments")));
        assert_eq!(a.sentence, "shop.join[0] is the bottleneck: busy 97%, upstream shop.payments backpressured 88% (its other inputs: shop.orders 10%)");
        assert!(a.evidence.iter().any(|e| e == "upstream shop.orders: backpressured 10%"), "{:?}", a.evidence);
    }

    #[test]
    fn skewed_subtask_is_named_with_the_ratio() {
        let g = graph(&[("parse", None, false), ("enrich", Some(0), true)]);
        let mut subs = vec![steady(s(240.0, 0.0, 0.1, 0.0), 6); 4];
        subs[3] = steady(s(970.0, 0.0, 1.0, 0.0), 6);
        let h = vec![vec![steady(s(100.0, 880.0, 0.0, 1.0), 6)], subs];
        let a = analyze("orders", &g, &h, 5);
        assert_eq!(a.kind, Kind::Skew);
        assert_eq!(a.subtask, Some(3));
        assert_eq!(
            a.sentence,
            "orders.enrich[3] is the bottleneck: busy 97%, upstream orders.parse backpressured 88%; it is 4x busier than its siblings (key skew)"
        );
    }

    #[test]
    fn stuck_exchange_blames_neither_task() {
        let g = graph(&[("a", None, false), ("b", Some(0), false)]);
        let h = vec![vec![steady(s(50.0, 900.0, 0.0, 1.0), 6)], vec![steady(s(50.0, 0.0, 0.0, 0.0), 6)]];
        let a = analyze("p", &g, &h, 5);
        assert_eq!(a.kind, Kind::Exchange);
        assert_eq!((a.upstream.as_deref(), a.task.as_deref()), (Some("a"), Some("b")));
        assert!(a.sentence.starts_with("the exchange from p.a to p.b is the bottleneck"), "{}", a.sentence);
    }

    #[test]
    fn bursts_in_the_history_are_an_alternating_bottleneck() {
        let g = graph(&[("src", None, false), ("window", Some(0), false)]);
        let mut up = Vec::new();
        let mut win = Vec::new();
        for i in 0..20 {
            let hot = i % 5 == 3 || i % 5 == 4;
            up.push(if hot { s(50.0, 900.0, 0.0, 1.0) } else { s(100.0, 0.0, 0.0, 0.1) });
            win.push(if hot { s(990.0, 0.0, 1.0, 0.0) } else { s(80.0, 0.0, 0.0, 0.0) });
        }
        // The last seconds are quiet: the 5 s average shows nothing.
        for _ in 0..3 {
            up.push(s(100.0, 0.0, 0.0, 0.1));
            win.push(s(80.0, 0.0, 0.0, 0.0));
        }
        let a = analyze("p", &g, &[vec![up], vec![win]], 5);
        assert_eq!(a.kind, Kind::Alternating, "{a:?}");
        assert_eq!(a.task.as_deref(), Some("window"));
        assert!(a.sentence.contains("every ~5 s it is busy for ~2 s"), "{}", a.sentence);
    }

    #[test]
    fn busy_source_alone_is_the_limit_and_idle_pipeline_has_none() {
        let g = graph(&[("src", None, false), ("sink", Some(0), false)]);
        let h = vec![vec![steady(s(990.0, 0.0, 0.0, 0.2), 6)], vec![steady(s(300.0, 0.0, 0.1, 0.0), 6)]];
        assert_eq!(analyze("p", &g, &h, 5).kind, Kind::Source);
        let h = vec![vec![steady(s(100.0, 0.0, 0.0, 0.0), 6)], vec![steady(s(100.0, 0.0, 0.0, 0.0), 6)]];
        assert_eq!(analyze("p", &g, &h, 5).kind, Kind::None);
    }
}
