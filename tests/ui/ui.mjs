// Drives weir's web UI in real headless Chromium (Debian's package) and
// checks what a user sees. Run by tests/tests/serve.rs:
//   node ui.mjs URL PIPELINE SLOW_TASK UPSTREAM_TASK SCREENSHOT_DIR [OTHER_UPSTREAM]
// With OTHER_UPSTREAM, SLOW_TASK is a fan-in of both upstreams: the graph
// must draw both edges, both upstreams left of it, and its inputs table.
// Prints one JSON line with what it found; exits non-zero on failure.
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, pipeline, slow, upstream, shots, other] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "weir-ui-"));
// A fresh profile directory (Playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 1100 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const fail = async (msg) => { console.error(msg); await browser.close(); process.exit(1); };
try {
  const page = await browser.newPage();
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(url)) external.push(r.url()); });
  await page.goto(`${url}/ui/?pipeline=${pipeline}`);
  // The graph renders, with the slow task red and its upstream black.
  const sel = (t) => `#graph g.task[data-task="${t}"]`;
  await page.waitForSelector(sel(slow), { timeout: 30000 });
  const deadline = Date.now() + 20000;
  let seen;
  for (;;) {
    seen = await page.evaluate(([a, b]) => {
      const get = (t) => {
        const g = document.querySelector(`#graph g.task[data-task="${t}"]`);
        const m = getComputedStyle(g.querySelector("rect")).fill.match(/\d+/g).map(Number);
        return { rgb: m, busy: +g.dataset.busy, backpressured: +g.dataset.backpressured };
      };
      return { slow: get(a), upstream: get(b), sentence: document.querySelector("#bottleneck").textContent };
    }, [slow, upstream]);
    const [r, g, b] = seen.slow.rgb, [ur, ug, ub] = seen.upstream.rgb;
    const red = r > 150 && g < 90 && b < 90;
    const black = ur < 60 && ug < 60 && ub < 80;
    if (red && black && seen.sentence.includes(`${slow}[0] is the bottleneck`)) break;
    if (Date.now() > deadline) await fail(`graph colours not as expected: ${JSON.stringify(seen)}`);
    await page.waitForTimeout(500);
  }
  await page.screenshot({ path: join(shots, "graph.png"), fullPage: true });
  // Clicking a task shows its subtasks.
  await page.click(sel(slow));
  await page.waitForSelector("#detail:not([hidden]) #subtasks tbody tr", { timeout: 10000 });
  const rows = await page.$$eval("#subtasks tbody tr", (trs) => trs.map((tr) => tr.textContent));
  const title = await page.textContent("#detail-name");
  await page.screenshot({ path: join(shots, "subtasks.png"), fullPage: true });
  const timeline = await page.$$eval("#timeline polyline", (p) => p.length);
  // The DAG: an edge from each upstream, each drawn left of the fan-in;
  // the detail panel lists the inputs.
  let dag = null;
  if (other) {
    dag = await page.evaluate(([to, ups]) => {
      const x = (t) => +document.querySelector(`#graph g.task[data-task="${t}"] rect`).getAttribute("x");
      return {
        edges: ups.map((u) => document.querySelectorAll(`#graph g.edge[data-from="${u}"][data-to="${to}"]`).length),
        left: ups.map((u) => x(u) < x(to)),
        inputs: [...document.querySelectorAll("#inputs:not([hidden]) tbody tr")].map((tr) => tr.dataset.input),
      };
    }, [slow, [upstream, other]]);
  }
  console.log(JSON.stringify({ seen, rows, title, timeline, external, dag }));
  await browser.close();
} catch (e) {
  await fail(String(e && e.stack || e));
}
