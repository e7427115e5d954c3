// weir web UI: polls the REST API every second and draws the job graph,
// the selected task's subtasks, the timeline, checkpoints and plugins.
// No framework, no external files: everything is served by weir itself.
"use strict";

const $ = (s) => document.querySelector(s);
const SVG = "http://www.w3.org/2000/svg";
let current = null;
let selected = null;

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function pct(ms) { return Math.round(Math.min(100, Math.max(0, ms / 10))) + "%"; }

function human(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return Math.round(n).toString();
}

// Flink's colouring: busy red, backpressured black, idle blue, blended by share.
function colour(busy, bp, idle) {
  const t = Math.max(1, busy + bp + idle);
  const b = busy / t, p = bp / t, i = idle / t;
  const mix = (x, y, z) => Math.round(b * x + p * y + i * z);
  return `rgb(${mix(220, 20, 60)}, ${mix(40, 20, 110)}, ${mix(40, 20, 220)})`;
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function drawGraph(snap, bottleneck) {
  const svg = $("#graph");
  svg.replaceChildren();
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#888" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  const depth = {};
  const byName = Object.fromEntries(snap.tasks.map((t) => [t.name, t]));
  // A task's column is one past its deepest upstream: a fan-in sits to
  // the right of all its inputs, and the edges draw the DAG.
  const d = (t) => (depth[t.name] !== undefined ? depth[t.name]
    : (depth[t.name] = t.upstreams.length ? Math.max(...t.upstreams.map((u) => d(byName[u]))) + 1 : 0));
  snap.tasks.forEach(d);
  const rows = {};
  const pos = {};
  const W = 170, H = 64;
  for (const t of snap.tasks) {
    const col = depth[t.name];
    const row = (rows[col] = (rows[col] || 0) + 1) - 1;
    pos[t.name] = { x: 20 + col * (W + 130), y: 20 + row * (H + 40) };
  }
  for (const e of snap.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const g = el("g", { class: "edge", "data-from": e.from, "data-to": e.to });
    g.appendChild(el("line", { x1: a.x + W, y1: a.y + H / 2, x2: b.x, y2: b.y + H / 2 }));
    g.appendChild(el("text", { x: (a.x + W + b.x) / 2 - 50, y: (a.y + b.y) / 2 + H / 2 - 6 }, `${human(e.records_per_second)}/s ${e.partition}`));
    svg.appendChild(g);
  }
  for (const t of snap.tasks) {
    const p = pos[t.name];
    const fill = colour(t.busy, t.backpressured, t.idle);
    const cls = ["task"];
    if (t.name === selected) cls.push("selected");
    if (bottleneck.task === t.name) cls.push("bottleneck");
    const g = el("g", { class: cls.join(" "), "data-task": t.name, "data-busy": t.busy.toFixed(0), "data-backpressured": t.backpressured.toFixed(0), "data-idle": t.idle.toFixed(0), "data-fill": fill });
    g.appendChild(el("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6, fill }));
    g.appendChild(el("text", { x: p.x + 8, y: p.y + 18 }, `${t.name} ×${t.parallelism}`));
    g.appendChild(el("text", { x: p.x + 8, y: p.y + 36 }, `busy ${pct(t.max_busy)} · backpr. ${pct(t.max_backpressured)}`));
    g.appendChild(el("text", { x: p.x + 8, y: p.y + 54 }, `${t.status} · ${t.vertices.join(" → ")}`));
    g.addEventListener("click", () => { selected = t.name; refresh(); });
    svg.appendChild(g);
  }
  const maxX = Math.max(...Object.values(pos).map((p) => p.x)) + W + 20;
  const maxY = Math.max(...Object.values(pos).map((p) => p.y)) + H + 20;
  svg.setAttribute("viewBox", `0 0 ${Math.max(maxX, 1000)} ${Math.max(maxY, 240)}`);
}

function watermark(ms) {
  return ms == null ? "none yet" : new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

// A task's inputs: which one is fast, which waits, which is idle and
// which holds the watermark back.
function drawInputs(t) {
  $("#inputs").hidden = t.inputs.length === 0;
  const body = $("#inputs tbody");
  body.replaceChildren();
  for (const i of t.inputs) {
    const tr = document.createElement("tr");
    tr.dataset.input = i.from;
    const note = i.idle ? "idle: left out of the watermark" : i.holds_watermark ? "holds the watermark back" : "";
    if (note) tr.className = i.idle ? "input-idle" : "input-holds";
    tr.innerHTML = `<td>${i.from}</td><td>${i.task}</td><td>${i.partition}</td><td>${human(i.records_in_per_second)}</td><td>${pct(i.upstream_backpressured)}</td><td>${pct(i.idle_time)}</td><td>${watermark(i.watermark_ms)}</td><td>${note}</td>`;
    body.appendChild(tr);
  }
}

function drawSubtasks(snap, bottleneck) {
  const t = snap.tasks.find((x) => x.name === selected);
  $("#detail").hidden = !t;
  if (!t) return;
  drawInputs(t);
  $("#detail-name").textContent = `${snap.pipeline}.${t.name}`;
  const mean = t.subtasks.reduce((a, x) => a + x.busy, 0) / Math.max(1, t.subtasks.length);
  const body = $("#subtasks tbody");
  body.replaceChildren();
  for (const x of t.subtasks) {
    const tr = document.createElement("tr");
    tr.dataset.subtask = x.subtask;
    const skewed = (bottleneck.kind === "skew" && x.bottleneck) || (t.subtasks.length > 1 && x.busy > 2 * mean && x.busy > 500);
    if (skewed) tr.className = "skew";
    const bar = `<div class="bar"><span class="busy" style="width:${x.busy / 10}%"></span><span class="bp" style="width:${x.backpressured / 10}%"></span><span class="idle" style="width:${x.idle / 10}%"></span></div>`;
    tr.innerHTML = `<td>[${x.subtask}]${skewed ? " skew" : ""}</td><td>${bar}</td><td>${pct(x.busy)}</td><td>${pct(x.backpressured)}</td><td>${pct(x.idle)}</td><td>${Math.round(x.in_pool * 100)}%</td><td>${Math.round(x.out_pool * 100)}%</td><td>${human(x.records_in_per_second)}</td>`;
    body.appendChild(tr);
  }
}

function drawTimeline(tl) {
  const svg = $("#timeline");
  svg.replaceChildren();
  const W = 900, H = 140;
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 10}`);
  const n = Math.max(2, tl.seconds);
  const palette = ["#c62828", "#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"];
  tl.tasks.forEach((t, i) => {
    const line = (vals, dash) => {
      const pts = vals.map((v, j) => `${(j / (n - 1)) * W},${H - (v / 1000) * H}`).join(" ");
      svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: palette[i % palette.length], "stroke-width": 1.5, "stroke-dasharray": dash }));
    };
    line(t.busy, "");
    line(t.backpressured, "4 3");
    svg.appendChild(el("text", { x: 4, y: 12 + i * 13, fill: palette[i % palette.length], "font-size": 11 }, `${t.name} (solid busy, dashed backpressured)`));
  });
}

function drawTables(detail, checkpoints) {
  const status = detail.status;
  const cp = $("#checkpoints tbody");
  cp.replaceChildren();
  for (const c of (checkpoints.history || []).slice().reverse()) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${c.id}</td><td>${c.kind}</td><td>${new Date(c.completed_at_ms).toLocaleTimeString()}</td><td>${human(c.bytes)}B</td><td>${c.alignment_ms == null ? "" : c.alignment_ms + " ms"}</td><td>${c.inflight_bytes ? human(c.inflight_bytes) + "B" : ""}</td>`;
    cp.appendChild(tr);
  }
  const s = checkpoints.stats;
  $("#checkpoint-stats").textContent = s ? `${s.completed} complete, ${s.failed} failed in this run` + (s.last_id ? `; last #${s.last_id} took ${s.last_duration_ms} ms` : "") + (s.waiting ? `; ${s.waiting.sentence}` : "") : "";
  const pl = $("#plugins tbody");
  pl.replaceChildren();
  for (const p of (status && status.plugins) || []) {
    const v = p.history[p.history.length - 1];
    const hist = p.history.map((h) => `${h.hash.slice(0, 12)} (${h.how}, ${new Date(h.loaded_at * 1000).toLocaleTimeString()})`).join(" → ");
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${p.operator}</td><td>${p.plugin}</td><td><code>${v.hash.slice(0, 12)}</code></td><td>${hist}</td>`;
    pl.appendChild(tr);
  }
  const ev = $("#events");
  ev.replaceChildren();
  for (const e of detail.pipeline.events.slice(-20).reverse()) {
    const li = document.createElement("li");
    li.textContent = `${new Date(e.at_ms).toLocaleTimeString()} ${e.level === "info" ? "" : e.level + ": "}${e.what}`;
    ev.appendChild(li);
  }
}

async function refresh() {
  try {
    const list = await getJson("/api/v1/pipelines");
    const sel = $("#pipeline");
    const ids = list.map((p) => p.id);
    if (sel.options.length !== ids.length || [...sel.options].some((o, i) => o.value !== ids[i])) {
      sel.replaceChildren(...ids.map((id) => new Option(id, id)));
    }
    const wanted = new URLSearchParams(location.search).get("pipeline");
    if (!current || !ids.includes(current)) current = ids.includes(wanted) ? wanted : ids[0];
    sel.value = current;
    if (!current) { $("#bottleneck").textContent = "No pipelines in the pipelines directory."; return; }
    const name = encodeURIComponent(current);
    $("#profile").href = `/api/v1/pipelines/${name}/profile?seconds=10`;
    $("#profile-perf").href = `/api/v1/pipelines/${name}/profile?seconds=10&format=perf`;
    const [detail, checkpoints] = await Promise.all([getJson(`/api/v1/pipelines/${name}`), getJson(`/api/v1/pipelines/${name}/checkpoints`)]);
    const state = detail.pipeline.state;
    $("#state").textContent = state;
    $("#state").className = "state " + state;
    if (detail.status) {
      const snap = detail.status.snapshot;
      $("#bottleneck").textContent = snap.bottleneck.sentence;
      $("#evidence").replaceChildren(...snap.bottleneck.evidence.map((e) => Object.assign(document.createElement("li"), { textContent: e })));
      drawGraph(snap, snap.bottleneck);
      drawSubtasks(snap, snap.bottleneck);
      const tl = await getJson(`/api/v1/pipelines/${name}/timeline?seconds=300`);
      drawTimeline(tl);
    } else {
      $("#bottleneck").textContent = `${current} is ${state}` + (detail.pipeline.last_error ? `: ${detail.pipeline.last_error}` : "");
      $("#evidence").replaceChildren();
    }
    drawTables(detail, checkpoints);
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("#updated").textContent = "cannot reach weir: " + e.message;
  }
}

$("#pipeline").addEventListener("change", (e) => { current = e.target.value; selected = null; refresh(); });
refresh();
setInterval(refresh, 1000);
