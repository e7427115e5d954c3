//! A sampling profiler of plugin code (`weir run --profile FILE`, and
//! `weir serve`'s on-demand `GET /api/v1/pipelines/NAME/profile`).
//!
//! The engine's epoch ticker already interrupts every running instance each
//! [`EPOCH_TICK`](crate::EPOCH_TICK) to enforce its CPU deadline; with a
//! profiler, each of those interruptions also captures the guest's stack
//! (wasmtime's `WasmBacktrace`, function names from the component's name
//! section) and records it, with its time, under the operator it belongs
//! to. The result is written as a flame graph (SVG), as folded stacks
//! (`operator (plugin);outer;...;inner COUNT` per line, the input of every
//! flame graph tool), or as `perf script` text, which the Firefox Profiler
//! opens with a timeline per operator; and as a per-operator table of the
//! functions the samples were in.
//!
//! Like any epoch-based sampler it sees only Wasm code: a sample falls on
//! the next function entry or loop header after the tick, and time spent
//! in host calls (state, timers) is counted at the guest code that runs
//! next. It costs one stack walk per instance and tick (100 per second).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use wasmtime::WasmBacktrace;

/// The most samples a pipeline's timeline keeps (16 bytes each: 16 MB,
/// about 2.8 hours of one busy instance); later samples are still counted
/// in the folded stacks and the flame graph, which stay bounded by the
/// number of distinct stacks.
const MAX_TIMELINE: usize = 1 << 20;

/// One pipeline's samples.
#[derive(Debug, Default)]
struct Collected {
    /// Each distinct folded stack once.
    stacks: Vec<String>,
    index: HashMap<String, u32>,
    /// Samples per stack (indexed like `stacks`).
    counts: Vec<u64>,
    /// The samples as they were taken, the first [`MAX_TIMELINE`]:
    /// (microseconds since the profiler started, index into `stacks`).
    timeline: Vec<(u64, u32)>,
}

/// Collects samples from every instance of an engine: of every pipeline
/// all the time ([`Profiler::new`], `weir run --profile`), or of the
/// pipelines a window is open for ([`Profiler::on_demand`], `weir serve`'s
/// profile endpoint).
#[derive(Debug)]
pub struct Profiler {
    /// Samples by pipeline.
    collected: Mutex<HashMap<String, Collected>>,
    /// `None`: every pipeline is sampled; otherwise the pipelines with an
    /// open window.
    windows: Option<Mutex<HashSet<String>>>,
    /// Sample times count from here.
    started: Instant,
}

impl Default for Profiler {
    fn default() -> Self {
        Self::new()
    }
}

impl Profiler {
    /// A profiler that samples every instance from the start.
    pub fn new() -> Self {
        Self { collected: Mutex::default(), windows: None, started: Instant::now() }
    }

    /// A profiler that samples a pipeline's instances only between
    /// [`Profiler::open_window`] and [`Profiler::close_window`]; until then
    /// each epoch tick costs an instance one set lookup.
    pub fn on_demand() -> Self {
        Self { windows: Some(Mutex::default()), ..Self::new() }
    }

    /// Starts sampling `pipeline`'s instances; false when a window is
    /// already open for it (one profile of a pipeline at a time).
    pub fn open_window(&self, pipeline: &str) -> bool {
        let Some(windows) = &self.windows else { return false };
        let opened = windows.lock().unwrap_or_else(|p| p.into_inner()).insert(pipeline.to_owned());
        if opened {
            self.collected.lock().unwrap_or_else(|p| p.into_inner()).remove(pipeline);
        }
        opened
    }

    /// Stops sampling `pipeline` and returns what the window collected.
    pub fn close_window(&self, pipeline: &str) -> ProfileReport {
        if let Some(windows) = &self.windows {
            windows.lock().unwrap_or_else(|p| p.into_inner()).remove(pipeline);
        }
        let collected = self.collected.lock().unwrap_or_else(|p| p.into_inner()).remove(pipeline).unwrap_or_default();
        ProfileReport::from_collected(std::iter::once(&collected))
    }

    /// Whether instances of `pipeline` are being sampled now.
    pub(crate) fn wants(&self, pipeline: &str) -> bool {
        match &self.windows {
            None => true,
            Some(w) => w.lock().unwrap_or_else(|p| p.into_inner()).contains(pipeline),
        }
    }

    /// At an epoch tick of an instance of `pipeline` whose root frame is
    /// `root` (the operator or connector and its plugin): captures and
    /// counts its stack if the pipeline is being sampled.
    pub(crate) fn tick(&self, pipeline: &str, root: &str, ctx: impl wasmtime::AsContext) {
        if self.wants(pipeline) {
            self.sample(pipeline, root, &WasmBacktrace::capture(ctx));
        }
    }

    /// Counts one sample of `bt` under `root`.
    fn sample(&self, pipeline: &str, root: &str, bt: &WasmBacktrace) {
        let mut stack = String::with_capacity(256);
        stack.push_str(root);
        // Frames come innermost first; a folded stack starts at the root.
        for frame in bt.frames().iter().rev() {
            stack.push(';');
            match frame.func_name() {
                Some(name) => {
                    let start = stack.len();
                    let _ = write!(stack, "{:#}", rustc_demangle::demangle(name));
                    // `;` separates frames in the folded format.
                    if stack[start..].contains(';') {
                        let cleaned = stack[start..].replace(';', ",");
                        stack.truncate(start);
                        stack.push_str(&cleaned);
                    }
                }
                None => {
                    let _ = write!(stack, "wasm-function[{}]", frame.func_index());
                }
            }
        }
        let at = self.started.elapsed().as_micros() as u64;
        let mut collected = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        let c = collected.entry(pipeline.to_owned()).or_default();
        let id = match c.index.get(&stack) {
            Some(&id) => id,
            None => {
                let id = c.stacks.len() as u32;
                c.stacks.push(stack.clone());
                c.counts.push(0);
                c.index.insert(stack, id);
                id
            }
        };
        c.counts[id as usize] += 1;
        if c.timeline.len() < MAX_TIMELINE {
            c.timeline.push((at, id));
        }
    }

    /// What was collected so far, of every pipeline.
    pub fn report(&self) -> ProfileReport {
        let collected = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        ProfileReport::from_collected(collected.values())
    }
}

/// A profile: its samples in time order, and the folded stacks with their
/// sample counts.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    /// Distinct folded stacks.
    stacks: Vec<String>,
    /// (microseconds since profiling started, index into `stacks`), in
    /// time order: every sample, or the first [`MAX_TIMELINE`] of each
    /// pipeline.
    timeline: Vec<(u64, u32)>,
    /// Samples per stack, by stack: every sample.
    folded: Vec<(String, u64)>,
}

/// One operator's share of a profile.
#[derive(Debug, Clone)]
pub struct OperatorProfile {
    /// `operator (plugin)`.
    pub operator: String,
    /// Samples taken in its instances.
    pub samples: u64,
    /// Functions by the samples taken in their own code (not in their
    /// callees), most first.
    pub self_samples: Vec<(String, u64)>,
}

impl ProfileReport {
    fn from_collected<'a>(parts: impl Iterator<Item = &'a Collected>) -> Self {
        let (mut stacks, mut timeline) = (Vec::new(), Vec::new());
        let mut counts: HashMap<String, u64> = HashMap::new();
        for c in parts {
            let base = stacks.len() as u32;
            stacks.extend(c.stacks.iter().cloned());
            timeline.extend(c.timeline.iter().map(|&(at, id)| (at, base + id)));
            for (stack, n) in c.stacks.iter().zip(&c.counts) {
                *counts.entry(stack.clone()).or_default() += n;
            }
        }
        timeline.sort_by_key(|&(at, _)| at);
        let mut folded: Vec<(String, u64)> = counts.into_iter().collect();
        folded.sort();
        Self { stacks, timeline, folded }
    }

    /// Every sample.
    pub fn samples(&self) -> u64 {
        self.folded.iter().map(|(_, n)| n).sum()
    }

    /// Writes the folded stacks, one `stack count` line each (the format
    /// of inferno's and Brendan Gregg's flamegraph tools and speedscope).
    pub fn write_folded(&self, path: &Path) -> std::io::Result<()> {
        write_synced(path, &self.folded_text())
    }

    /// The folded stacks, one `stack count` line each.
    pub fn folded_text(&self) -> String {
        let mut text = String::new();
        for (stack, n) in &self.folded {
            let _ = writeln!(text, "{stack} {n}");
        }
        text
    }

    /// Writes the samples as `perf script` text ([`ProfileReport::perf_script`]).
    pub fn write_perf_script(&self, path: &Path, title: &str) -> std::io::Result<()> {
        write_synced(path, &self.perf_script(title))
    }

    /// The samples in the text format of `perf script`, which the Firefox
    /// Profiler (<https://profiler.firefox.com>, "Load a profile from
    /// file") opens: each operator is a thread with its samples on a
    /// timeline, and the call tree, flame graph and stack chart work as
    /// for any profile. A sample is a line `operator (plugin) TID
    /// SECONDS: 10000 cpu-clock:` followed by its frames, innermost first,
    /// each `\t0 FUNCTION (PLUGIN)`, and a blank line; the operator itself
    /// is the outermost frame.
    pub fn perf_script(&self, title: &str) -> String {
        let mut out = String::with_capacity(self.timeline.len() * 256 + 256);
        let total = self.samples();
        let kept = if self.timeline.len() as u64 == total {
            String::new()
        } else {
            format!(" (the first {} are here: a timeline keeps at most {MAX_TIMELINE} per pipeline; the folded stacks count them all)", self.timeline.len())
        };
        let _ = writeln!(
            out,
            "# ========\n# {}\n# {total} samples, one per 10 ms of Wasm execution per instance{kept}\n\
             # open in the Firefox Profiler: https://profiler.firefox.com, \"Load a profile from file\"\n# ========",
            title.replace('\n', " "),
        );
        let mut threads: HashMap<&str, usize> = HashMap::new();
        for &(at, id) in &self.timeline {
            let mut frames = self.stacks[id as usize].split(';');
            let root = frames.next().unwrap_or_default();
            let next = threads.len() + 1;
            let tid = *threads.entry(root).or_insert(next);
            // The plugin's name, as the "module" of its frames.
            let plugin = root.rsplit_once(" (").map_or(root, |(_, p)| p.trim_end_matches(')'));
            let _ = writeln!(out, "{root} {tid} {}.{:06}: 10000 cpu-clock:", at / 1_000_000, at % 1_000_000);
            for frame in frames.rev() {
                let _ = writeln!(out, "\t0 {frame} ({plugin})");
            }
            let _ = writeln!(out, "\t0 {root} (weir)\n");
        }
        out
    }

    /// Writes the profile as a flame graph, an SVG any browser shows: one
    /// box per frame, as wide as the samples taken in it and its callees,
    /// each caller below its callees, each operator's stacks side by side
    /// over a root box; hovering a box shows its function and share.
    pub fn write_svg(&self, path: &Path, title: &str) -> std::io::Result<()> {
        write_synced(path, &self.flame_graph(title))
    }

    /// The SVG of [`ProfileReport::write_svg`].
    pub fn flame_graph(&self, title: &str) -> String {
        let mut root = Frame::default();
        for (stack, n) in &self.folded {
            root.add(stack.split(';'), *n);
        }
        let depth = root.depth();
        let height = SVG_TOP + (depth as f64) * FRAME_HEIGHT + SVG_BOTTOM;
        let mut svg = String::with_capacity(64 * 1024);
        let _ = write!(
            svg,
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {SVG_WIDTH} {height}\" font-family=\"Verdana,sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#f8f8f2\"/>\n\
             <text x=\"{}\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"10\" y=\"38\" fill=\"#555\">{} samples, one per 10 ms of Wasm execution per instance; hover a box for its share</text>\n",
            SVG_WIDTH / 2.0,
            xml_escape(title),
            root.count
        );
        let scale = (SVG_WIDTH - 2.0 * SVG_MARGIN) / root.count.max(1) as f64;
        root.draw(&mut svg, "all", SVG_MARGIN, height - SVG_BOTTOM - FRAME_HEIGHT, scale, root.count.max(1));
        svg.push_str("</svg>\n");
        svg
    }

    /// Per operator, most samples first.
    pub fn operators(&self) -> Vec<OperatorProfile> {
        let mut ops: HashMap<&str, (u64, HashMap<&str, u64>)> = HashMap::new();
        for (stack, n) in &self.folded {
            let mut frames = stack.split(';');
            let root = frames.next().unwrap_or_default();
            let leaf = frames.next_back().unwrap_or("(between calls)");
            let op = ops.entry(root).or_default();
            op.0 += n;
            *op.1.entry(leaf).or_default() += n;
        }
        let mut out: Vec<OperatorProfile> = ops
            .into_iter()
            .map(|(root, (samples, leaves))| {
                let mut self_samples: Vec<(String, u64)> = leaves.into_iter().map(|(f, n)| (f.to_owned(), n)).collect();
                self_samples.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                OperatorProfile { operator: root.to_owned(), samples, self_samples }
            })
            .collect();
        out.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.operator.cmp(&b.operator)));
        out
    }
}

/// Writes `text` to `path` and syncs it to disk.
fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

const SVG_WIDTH: f64 = 1200.0;
const SVG_MARGIN: f64 = 10.0;
const SVG_TOP: f64 = 50.0;
const SVG_BOTTOM: f64 = 10.0;
const FRAME_HEIGHT: f64 = 17.0;
/// Boxes narrower than this many pixels are left out (their samples still
/// count in their callers' widths).
const MIN_WIDTH: f64 = 0.3;
/// Average width of a character at font size 11, for cutting names to fit.
const CHAR_WIDTH: f64 = 6.6;

/// A node of the call tree a flame graph draws.
#[derive(Debug, Default)]
struct Frame {
    count: u64,
    /// Callees by name, in name order (a flame graph sorts siblings
    /// alphabetically so the same stacks line up between profiles).
    children: std::collections::BTreeMap<String, Frame>,
}

impl Frame {
    fn add<'a>(&mut self, mut frames: impl Iterator<Item = &'a str>, n: u64) {
        self.count += n;
        if let Some(f) = frames.next() {
            self.children.entry(f.to_owned()).or_default().add(frames, n);
        }
    }

    /// Levels below this one, itself included.
    fn depth(&self) -> usize {
        1 + self.children.values().map(Frame::depth).max().unwrap_or(0)
    }

    fn draw(&self, svg: &mut String, name: &str, x: f64, y: f64, scale: f64, total: u64) {
        let width = self.count as f64 * scale;
        if width < MIN_WIDTH {
            return;
        }
        let share = self.count as f64 * 100.0 / total as f64;
        let _ = write!(
            svg,
            "<g><title>{} ({} samples, {share:.2}%)</title><rect x=\"{x:.2}\" y=\"{y:.1}\" width=\"{width:.2}\" height=\"{:.1}\" rx=\"2\" fill=\"{}\"/>",
            xml_escape(name),
            self.count,
            FRAME_HEIGHT - 1.0,
            color(name)
        );
        let fits = ((width - 6.0) / CHAR_WIDTH).floor();
        if fits >= 3.0 {
            let fits = fits as usize;
            let label: String = if name.chars().count() <= fits { name.to_owned() } else { name.chars().take(fits - 2).chain("..".chars()).collect() };
            let _ = write!(svg, "<text x=\"{:.2}\" y=\"{:.1}\">{}</text>", x + 3.0, y + FRAME_HEIGHT - 5.0, xml_escape(&label));
        }
        svg.push_str("</g>\n");
        let mut cx = x;
        for (child_name, child) in &self.children {
            child.draw(svg, child_name, cx, y - FRAME_HEIGHT, scale, total);
            cx += child.count as f64 * scale;
        }
    }
}

/// A warm colour chosen by the name, so a function keeps its colour.
fn color(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let (r, g, b) = (205 + (h % 50), 80 + ((h >> 8) % 140), 40 + ((h >> 16) % 50));
    format!("rgb({r},{g},{b})")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `lines` (stack, samples), the samples of each stack
    /// taken 10 ms apart after those of the stack before.
    fn report(lines: &[(&str, u64)]) -> ProfileReport {
        let mut c = Collected::default();
        let mut at = 0;
        for (i, (stack, n)) in lines.iter().enumerate() {
            c.stacks.push((*stack).to_owned());
            c.counts.push(*n);
            for _ in 0..*n {
                at += 10_000;
                c.timeline.push((at, i as u32));
            }
        }
        ProfileReport::from_collected(std::iter::once(&c))
    }

    /// The boxes of an SVG: (name, samples, x, width).
    fn boxes(svg: &str) -> Vec<(String, u64, f64, f64)> {
        svg.split("<g><title>")
            .skip(1)
            .map(|g| {
                let (title, rest) = g.split_once("</title>").unwrap();
                let (name, count) = title.rsplit_once(" (").unwrap();
                let count: u64 = count.split(' ').next().unwrap().parse().unwrap();
                let attr = |a: &str| -> f64 { rest.split(&format!("{a}=\"")).nth(1).unwrap().split('"').next().unwrap().parse().unwrap() };
                (name.to_owned(), count, attr("x"), attr("width"))
            })
            .collect()
    }

    #[test]
    fn a_frame_is_as_wide_as_its_samples_and_callees_sit_on_their_callers() {
        let r = report(&[("parse (json-filter);process;scan", 6), ("parse (json-filter);process", 2), ("sum (running-sum);process;a<b>&c", 2)]);
        let svg = r.flame_graph("events-agg <p1>");
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("events-agg &lt;p1&gt;") && svg.contains("10 samples"), "{svg}");
        let b = boxes(&svg);
        let find = |name: &str, count: u64| b.iter().find(|x| x.0 == name && x.1 == count).unwrap_or_else(|| panic!("no box {name} {count} in {b:?}")).clone();
        let all = find("all", 10);
        let parse = find("parse (json-filter)", 8);
        let scan = find("scan", 6);
        let sum = find("sum (running-sum)", 2);
        find("a&lt;b&gt;&amp;c", 2);
        assert!((parse.3 - all.3 * 0.8).abs() < 0.01, "width follows samples: {parse:?} of {all:?}");
        assert!((scan.2 - parse.2).abs() < 0.01 && scan.3 < parse.3, "a callee starts at its caller: {scan:?} on {parse:?}");
        assert!((sum.2 - (parse.2 + parse.3)).abs() < 0.01, "siblings side by side: {sum:?} after {parse:?}");
        assert!(svg.contains("60.00%"), "the share of scan: {svg}");
    }

    /// What the Firefox Profiler's `perf script` importer takes from each
    /// sample: (thread name, tid, time in ms, frames outermost first).
    /// Written after its rules: the time is the last `<digits>:` after
    /// whitespace, the tid the number before it, frames are
    /// `PC FUNCTION (MODULE)` lines up to a blank line.
    fn import_perf_script(text: &str) -> Vec<(String, u64, f64, Vec<String>)> {
        let mut samples = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let head = line.rsplit_once(": ").map_or(line, |(h, _)| h);
            let (before, time) = head.rsplit_once(' ').unwrap();
            let (name, tid) = before.rsplit_once(' ').unwrap();
            let mut frames = Vec::new();
            for frame in lines.by_ref() {
                if frame.trim().is_empty() {
                    break;
                }
                let (pc, rest) = frame.trim_start().split_once(' ').unwrap();
                assert!(pc.chars().all(|c| c.is_alphanumeric() || c == '_'), "{frame:?}");
                let (function, module) = rest.rsplit_once(" (").unwrap();
                assert!(module.ends_with(')') && !module.contains(' '), "a module is one word: {frame:?}");
                frames.push(format!("{function} (in {}", module));
            }
            frames.reverse();
            samples.push((name.to_owned(), tid.parse().unwrap(), time.trim_end_matches(':').parse::<f64>().unwrap() * 1000.0, frames));
        }
        samples
    }

    #[test]
    fn perf_script_has_a_thread_per_operator_and_samples_in_time_order() {
        let r = report(&[("parse (json-filter);process;scan", 2), ("sum (running-sum);process;a b<c>", 1), ("parse (json-filter);process", 1)]);
        let text = r.perf_script("weir: pipeline p");
        assert!(text.starts_with("# ========\n# weir: pipeline p\n# 4 samples"), "{text}");
        let samples = import_perf_script(&text);
        let times: Vec<f64> = samples.iter().map(|s| s.2).collect();
        assert_eq!(times, [10.0, 20.0, 30.0, 40.0]);
        let threads: Vec<(&str, u64)> = samples.iter().map(|s| (s.0.as_str(), s.1)).collect();
        assert_eq!(threads, [("parse (json-filter)", 1), ("parse (json-filter)", 1), ("sum (running-sum)", 2), ("parse (json-filter)", 1)]);
        assert_eq!(samples[0].3, ["parse (json-filter) (in weir)", "process (in json-filter)", "scan (in json-filter)"]);
        assert_eq!(samples[2].3, ["sum (running-sum) (in weir)", "process (in running-sum)", "a b<c> (in running-sum)"]);
        assert_eq!(samples[3].3, ["parse (json-filter) (in weir)", "process (in json-filter)"]);
        // The same samples fold into the same counts.
        assert_eq!(r.samples(), 4);
        assert_eq!(r.folded_text().lines().next(), Some("parse (json-filter);process 1"));
    }

    #[test]
    fn a_full_timeline_keeps_counting_in_the_folded_stacks_and_says_so() {
        // As a pipeline's collection looks once its timeline is full.
        let c = Collected {
            stacks: vec!["op (p);f".to_owned()],
            index: HashMap::new(),
            counts: vec![5],
            timeline: vec![(10_000, 0), (20_000, 0)],
        };
        let r = ProfileReport::from_collected(std::iter::once(&c));
        assert_eq!(r.samples(), 5);
        assert_eq!(r.folded_text(), "op (p);f 5\n");
        let text = r.perf_script("t");
        assert!(text.contains("# 5 samples, one per 10 ms of Wasm execution per instance (the first 2 are here"), "{text}");
        assert_eq!(import_perf_script(&text).len(), 2);
    }
}
