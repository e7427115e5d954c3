// counter-source's logic under Node (npm test), with weir-sdk's SourceHarness.
import { test } from "node:test";
import assert from "node:assert/strict";
import { UserError, codecs } from "weir-sdk";
import { SourceHarness } from "weir-sdk/testing";
import Counter from "../src/counter-source.js";

const position = (n) => codecs.u64.encode(n);

test("counter-source counts its split, then finishes", () => {
  const h = new SourceHarness(Counter, { count: 7, "per-poll": 2 }, {}, { subtask: 1, parallelism: 2 });
  const out = h.poll();
  assert.equal(h.said, "ready");
  assert.deepEqual(out.map((r) => [r.keyText, r.text, r.timestamp]), [["1", '{"id":1}', 1], ["3", '{"id":3}', 3]]);
  assert.deepEqual(h.poll().map((r) => r.text), ['{"id":5}']);
  assert.deepEqual(h.snapshot(), position(7));
  assert.deepEqual(h.poll(), []);
  assert.equal(h.said, "finished");
});

test("counter-source resumes from its own position", () => {
  const h = new SourceHarness(Counter, { count: 10 }, {}, { subtask: 1, parallelism: 2 });
  h.restore([position(4), position(7)]);
  assert.deepEqual(h.poll().map((r) => r.text), ['{"id":7}', '{"id":9}']);
  const fresh = new SourceHarness(Counter, { count: 10 }, {}, { subtask: 0, parallelism: 2 });
  fresh.restore([new Uint8Array(0), new Uint8Array(0)]); // a checkpoint taken before the first snapshot
  assert.equal(fresh.poll().length, 5);
  assert.throws(() => new SourceHarness(Counter, { count: 10 }, {}, { parallelism: 2 }).restore([position(3)]), (e) => e instanceof UserError && /taken at parallelism 1/.test(e.message));
});

test("counter-source pauses between polls and stops at max-bytes", () => {
  const h = new SourceHarness(Counter, { count: 100, "per-poll": 10, "pause-ms": 5 });
  assert.equal(h.poll().length, 10);
  assert.deepEqual([h.poll(), h.said, h.idleMs], [[], "idle", 5]);
  assert.equal(h.poll()[0].text, '{"id":10}');
  assert.equal(new SourceHarness(Counter, { count: 100 }).poll(1).length, 1);
});

test("counter-source refuses a bad config as a user error", () => {
  assert.throws(() => new SourceHarness(Counter, {}), (e) => e instanceof UserError && /config.count/.test(e.message));
  assert.throws(() => new SourceHarness(Counter, { count: 1, rate: 2 }), /unknown field\(s\) rate/);
});
