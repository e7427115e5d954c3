// Unit tests of the JavaScript SDK under Node: the encodings, the batching
// of state (one get-many per prefetched state and one apply per batch),
// timers, rejections and the simple entry points.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as frame from "../src/frame.js";
import { Operator, WeirError, StateError, codecs, filter, map, PROCESSING_TIME, MIN_WATERMARK } from "../src/index.js";
import { Harness, OpenError, Rejected, record } from "../src/testing.js";

const bytes = (s) => new TextEncoder().encode(s);
const text = (b) => new TextDecoder().decode(b);

class Count extends Operator {
  static prefetch = ["n"];
  process(r, out, ctx) {
    const n = ctx.get("n", r.key, codecs.i64, 0n) + 1n;
    ctx.put("n", r.key, n, codecs.i64);
    out.emit(r.key, String(n), r.timestamp);
  }
}

test("frames round-trip with headers and without a key", () => {
  const w = new frame.Writer(4);
  const raw = frame.encodeHeaders([["trace", new Uint8Array([0, 1])], [bytes("h"), "v"]]);
  frame.writeFrame(w, null, bytes("value"), -5, raw);
  frame.writeFrame(w, bytes("k"), bytes(""), 2 ** 52, new Uint8Array(0));
  const buf = w.finish();
  const got = [];
  frame.readFrames(buf, (ts, k, v, h) => got.push([ts, k && text(k), text(v), h.length]));
  assert.deepEqual(got, [[-5, null, "value", raw.length], [2 ** 52, "k", "", 0]]);
  assert.deepEqual(frame.decodeHeaders(raw).map(([n, v]) => [text(n), [...v]]), [["trace", [0, 1]], ["h", [118]]]);
  // The contract's layout: a 20-byte little-endian header, then the fields.
  const dv = new DataView(buf.buffer);
  assert.equal(dv.getBigInt64(0, true), -5n);
  assert.equal(dv.getUint32(8, true), 0xffffffff);
  assert.equal(dv.getUint32(12, true), 5);
  assert.throws(() => frame.readFrames(buf.subarray(0, buf.length - 1), () => {}), frame.FrameError);
});

test("get-many responses resolve repeats; apply buffers decode all or nothing", () => {
  const resp = frame.encodeGetManyResponse([bytes("a"), null, { repeat: 0 }, bytes("")]);
  assert.deepEqual(frame.readGetManyResponse(resp, 4).map((v) => v && text(v)), ["a", null, "a", ""]);
  assert.throws(() => frame.readGetManyResponse(frame.encodeGetManyResponse([{ repeat: 0 }]), 1), frame.FrameError);
  const w = new frame.Writer();
  frame.encodeOp(w, frame.PUT, bytes("s"), bytes("k"), bytes("v"));
  frame.encodeOp(w, frame.MAP_CLEAR, bytes("m"), bytes("k"));
  const ops = w.finish();
  assert.equal(ops[0], 0);
  assert.deepEqual(frame.decodeOps(ops).map(([op, name, ...f]) => [op, name, ...f.map(text)]), [[0, "s", "k", "v"], [4, "m", "k"]]);
  assert.throws(() => frame.decodeOps(ops.subarray(0, ops.length - 1)), frame.FrameError);
});

test("state is fetched and written once per batch", () => {
  const h = new Harness(Count);
  const out = h.process([record("a", "x"), record("b", "x"), record("a", "x")]);
  assert.deepEqual(out.map((r) => [r.keyText, r.text]), [["a", "1"], ["b", "1"], ["a", "2"]]);
  assert.deepEqual(h.host.calls, { "get-many": 1, apply: 1 });
  h.process(Array(100).fill(record("a", "x")));
  assert.deepEqual(h.host.calls, { "get-many": 2, apply: 2 });
  assert.equal(h.state("n", "a", codecs.i64), 102n);
  // Little-endian i64, as the Rust SDK keeps it.
  assert.deepEqual([...h.state("n", "a")], [102, 0, 0, 0, 0, 0, 0, 0]);
});

test("a rejection discards the batch's writes and outputs", () => {
  class Picky extends Count {
    process(r, out, ctx) {
      if (r.text === "bad") throw new WeirError("bad record");
      super.process(r, out, ctx);
    }
  }
  const h = new Harness(Picky);
  assert.throws(() => h.process([record("a", "x"), record("a", "bad")]), (e) => e instanceof Rejected && e.index === 1 && e.reason === "bad record");
  assert.equal(h.state("n", "a"), null);
  assert.equal(h.host.calls.apply, undefined);
  assert.equal(h.process([record("a", "x")])[0].text, "1");
});

test("other exceptions name the file, line and function", () => {
  class Broken extends Operator {
    process(r, out) {
      out.emit(null, r.json().missing.field);
    }
  }
  const h = new Harness(Broken);
  assert.throws(
    () => h.process([record(null, "{}")]),
    (e) => e.index === 0 && /^TypeError: .*\(thrown at sdk\.test\.js:\d+ in process\)$/.test(e.reason),
  );
});

test("values not prefetched are read once per key and batch", () => {
  class Other extends Operator {
    process(r, out, ctx) {
      out.emit(null, ctx.get("config", "global", codecs.string, "none"));
      ctx.put("seen", r.key, r.value);
    }
  }
  const h = new Harness(Other);
  h.host.values.set("config\0global", bytes("on"));
  const out = h.process([record("a", "1"), record("b", "2"), record("a", "3")]);
  assert.deepEqual(out.map((r) => r.text), ["on", "on", "on"]);
  assert.deepEqual(h.host.calls, { get: 1, apply: 1 });
  assert.equal(text(h.state("seen", "a")), "3");
});

test("map state reads see the batch's writes; one apply per batch", () => {
  class Maps extends Operator {
    process(r, out, ctx) {
      if (r.text === "clear") ctx.mapClear("m", r.key);
      else {
        const [mk, v] = r.text.split("=");
        if (v) ctx.mapPut("m", r.key, mk, v);
        else ctx.mapRemove("m", r.key, mk);
      }
      out.emit(r.key, ctx.mapEntries("m", r.key).map(([k, v]) => `${text(k)}=${text(v)}`).join(","));
      out.emit(r.key, ctx.mapGet("m", r.key, "b", codecs.bytes, bytes("-")));
    }
  }
  const h = new Harness(Maps);
  const out = h.process([record("k", "b=2"), record("k", "a=1"), record("k", "b"), record("j", "z=9")]);
  assert.deepEqual(out.map((r) => r.text), ["b=2", "2", "a=1,b=2", "2", "a=1", "-", "z=9", "-"]);
  assert.equal(h.host.calls.apply, 1);
  assert.deepEqual(h.mapState("m", "k").map(([k, v]) => [text(k), text(v)]), [["a", "1"]]);
  const again = h.process([record("k", "clear"), record("k", "c=3")]);
  assert.deepEqual(again.map((r) => r.text), ["", "-", "c=3", "-"]);
});

test("a state value of the wrong layout and refused writes are clear errors", () => {
  const h = new Harness(Count);
  h.host.values.set("n\0a", bytes("abc"));
  assert.throws(() => h.process([record("a", "x")]), (e) => e.reason.includes('state "n" holds 3 bytes that do not decode as i64'));
  const g = new Harness(Count);
  g.host.apply = () => {
    throw new StateError("too-large", 16);
  };
  assert.throws(() => g.process([record("a", "x"), record("b", "x")]), (e) => e.index === 2 && e.reason.includes("larger than the host's limit of 16 bytes"));
});

test("open gets the config and info; a refusal is an OpenError", () => {
  class Opened extends Operator {
    open(config, info) {
      if (config.bad) throw new WeirError("`bad` is not allowed");
      this.seen = [config, info.subtask, info.parallelism];
    }
  }
  assert.deepEqual(new Harness(Opened, { x: 1 }, { subtask: 1, parallelism: 3 }).operator.seen, [{ x: 1 }, 1, 3]);
  assert.throws(() => new Harness(Opened, { bad: 1 }), (e) => e instanceof OpenError && e.message === "`bad` is not allowed");
  assert.throws(() => new Harness(Opened, "{nope"), (e) => e instanceof OpenError && e.message.includes('invalid config for operator "op"'));
});

test("timers, watermark, log and close", () => {
  class Timed extends Operator {
    process(r, out, ctx) {
      ctx.registerTimer(r.key, r.timestamp + 10);
      ctx.registerTimer(r.key, 1000, PROCESSING_TIME);
      ctx.log(`watermark ${ctx.watermark()}`, "debug");
    }
    onTimer(t, out) {
      out.emit(t.key, `${t.domain} ${t.timestamp}`, t.timestamp);
    }
    close(out) {
      out.emit(null, "bye");
    }
  }
  const h = new Harness(Timed);
  h.process([record("a", "", 5), record("b", "", 1)]);
  assert.deepEqual(h.logs, [["debug", `watermark ${MIN_WATERMARK}`], ["debug", `watermark ${MIN_WATERMARK}`]]);
  assert.deepEqual(h.advanceWatermark(14).map((r) => r.text), ["event-time 11"]);
  assert.deepEqual(h.advanceWatermark(20).map((r) => r.text), ["event-time 15"]);
  assert.deepEqual(h.advanceProcessingTime(999), []);
  assert.deepEqual(h.advanceProcessingTime(1000).map((r) => [r.keyText, r.text]), [["a", "processing-time 1000"], ["b", "processing-time 1000"]]);
  assert.equal(h.close()[0].text, "bye");
});

test("headers travel with forward and emit", () => {
  class Tag extends Operator {
    process(r, out) {
      out.forward(r);
      out.emit(r.key, r.text.toUpperCase(), r.timestamp, r);
      out.emit(null, "x", 0, [["n", "v"]]);
    }
  }
  const out = new Harness(Tag).process([record("k", "v", 7, [["trace", "1"]])]);
  const hs = (r) => r.headers.map(([n, v]) => [text(n), text(v)]);
  assert.deepEqual(out.map((r) => [r.keyText, r.text, r.timestamp, hs(r)]), [
    ["k", "v", 7, [["trace", "1"]]],
    ["k", "V", 7, [["trace", "1"]]],
    [null, "x", 0, [["n", "v"]]],
  ]);
});

test("filter and map", () => {
  const f = new Harness(filter((r) => r.text.includes("error")));
  assert.deepEqual(f.process([record(null, "ok"), record(null, "an error")]).map((r) => r.text), ["an error"]);
  const m = new Harness(map((r) => (r.text === "drop" ? null : r.text.toUpperCase())));
  assert.deepEqual(m.process([record("k", "a", 3), record(null, "drop")]).map((r) => [r.keyText, r.text, r.timestamp]), [["k", "A", 3]]);
});

test("timestamps round-trip exactly, with and without BigInt", () => {
  const times = [0, -1, -5, 1700000000000, -1700000000001, 2 ** 53 - 1, -(2 ** 53) + 1, 4294967296, -4294967296];
  const w = new frame.Writer();
  for (const t of times) frame.writeFrame(w, null, new Uint8Array(0), t);
  w.i64(-(2n ** 63n));
  const buf = w.finish();
  const got = [];
  frame.readFrames(buf.subarray(0, buf.length - 8), (ts) => got.push(ts));
  assert.deepEqual(got, times);
  assert.equal(new DataView(buf.buffer).getBigInt64(buf.length - 8, true), -(2n ** 63n));
  // A timestamp beyond 2^53 is read through a BigInt (rounded to a double).
  const big = new frame.Writer();
  frame.writeFrame(big, null, new Uint8Array(0), 2n ** 62n);
  frame.readFrames(big.finish(), (ts) => assert.equal(ts, 2 ** 62));
});

test("state keys of any bytes and length stay distinct and round-trip", () => {
  class Keys extends Operator {
    process(r, out, ctx) {
      ctx.put("k", r.value, r.value.length, codecs.json);
    }
  }
  const long = new Uint8Array(3000).map((_, i) => i % 256);
  const values = [new Uint8Array([0]), new Uint8Array([0, 0]), new Uint8Array([255, 128]), long, long.subarray(1)];
  const h = new Harness(Keys);
  h.process(values.map((v) => record(null, v)));
  for (const v of values) assert.equal(h.state("k", v, codecs.json), v.length);
  assert.equal(h.host.values.size, values.length);
});

// Several inputs: which input a batch came from, and keyed state shared by all.

// Joins orders (input "orders") with payments (input "payments") by key:
// whichever side comes first waits in value state under the key, the other
// emits the pair. Every record's value is also tagged with its input's
// name, and a timer per key reports which input the timer sees (0).
class Join extends Operator {
  process(r, out, ctx) {
    const side = ctx.inputNames()[ctx.input()];
    out.emit(r.key, `${side}:${r.text}`, r.timestamp);
    const other = ctx.input() === 0 ? "payment" : "order";
    const waiting = ctx.get(other, r.key, codecs.string);
    if (waiting === null) {
      ctx.put(ctx.input() === 0 ? "order" : "payment", r.key, r.text, codecs.string);
      ctx.registerTimer(r.key, r.timestamp + 10);
    } else {
      ctx.delete(other, r.key);
      const [order, payment] = ctx.input() === 0 ? [r.text, waiting] : [waiting, r.text];
      out.emit(r.key, `joined ${order}+${payment}`, r.timestamp);
    }
  }
  onTimer(t, out, ctx) {
    out.emit(t.key, `timer input ${ctx.input()}`, t.timestamp);
  }
}

test("an operator with two inputs sees which one each batch came from", () => {
  const h = new Harness(Join, {}, { inputs: ["orders", "payments"] });
  const out = h.processInput(0, [record("a", "o1", 1), record("b", "o2", 2)]);
  assert.deepEqual(out.map((r) => r.text), ["orders:o1", "orders:o2"]);
  const paid = h.processInput(1, [record("a", "p1", 3), record("c", "p3", 4)]);
  assert.deepEqual(paid.map((r) => [r.keyText, r.text]), [["a", "payments:p1"], ["a", "joined o1+p1"], ["c", "payments:p3"]]);
  // Keyed state is shared by the inputs: the payment found the order under "a".
  assert.equal(h.state("order", "a"), null);
  assert.equal(h.state("order", "b", codecs.string), "o2");
  assert.equal(h.state("payment", "c", codecs.string), "p3");
  // `process` is input 0; outside `process` the input is 0 too.
  assert.deepEqual(h.process([record("c", "o3", 5)]).map((r) => r.text), ["orders:o3", "joined o3+p3"]);
  assert.deepEqual(h.advanceWatermark(100).map((r) => r.text), ["timer input 0", "timer input 0", "timer input 0"]);
});

test("the input is asked of the host once per batch, the names once per instance", () => {
  const h = new Harness(Join, {}, { inputs: ["orders", "payments"] });
  h.processInput(1, Array.from({ length: 50 }, (_, i) => record(`k${i}`, "p")));
  assert.equal(h.host.calls["inputs.current"], 1);
  h.processInput(0, [record("k1", "o"), record("k2", "o")]);
  assert.equal(h.host.calls["inputs.current"], 2);
  // The names were asked for when the operator opened, and kept.
  assert.equal(h.host.calls["inputs.names"], undefined);
  // A rejected batch does not leave its input cached for the next one.
  class Picky extends Join {
    process(r, out, ctx) {
      if (r.text === "bad") throw new WeirError(`bad record on input ${ctx.input()}`);
      super.process(r, out, ctx);
    }
  }
  const p = new Harness(Picky, {}, { inputs: ["orders", "payments"] });
  assert.throws(() => p.processInput(1, [record("a", "bad")]), (e) => e.reason === "bad record on input 1");
  assert.deepEqual(p.processInput(0, [record("a", "o")]).map((r) => r.text), ["orders:o"]);
});

test("one input by default; an unknown input is a test error", () => {
  class Names extends Operator {
    open(config, info) {
      this.inputs = info.inputs;
    }
    process(r, out, ctx) {
      out.emit(null, `${ctx.input()} ${ctx.inputNames().join(",")}`);
    }
  }
  const h = new Harness(Names);
  assert.deepEqual(h.operator.inputs, ["input"]);
  assert.deepEqual(h.process([record(null, "x")]).map((r) => r.text), ["0 input"]);
  assert.throws(() => h.processInput(1, [record(null, "x")]), RangeError);
  assert.throws(() => new Harness(Names, {}, { inputs: [] }), TypeError);
  const two = new Harness(Names, {}, { inputs: ["l", "r"] });
  assert.deepEqual(two.operator.inputs, ["l", "r"]);
  assert.deepEqual(two.processInput(1, [record(null, "x")]).map((r) => r.text), ["1 l,r"]);
});

// Async operators: one record per call, the io calls and their failures.
import { AsyncOperator, IoError, PermanentError, TransientError } from "../src/index.js";
import { AsyncHarness } from "../src/testing.js";

class Lookup extends AsyncOperator {
  open(config) {
    this.mode = config.mode;
  }
  process(r, out, io) {
    if (this.mode === "throw") null.x;
    if (this.mode === "error") throw new WeirError("bad input");
    const rows = io.sql("pg", "SELECT $1, $2, $3, $4, $5, $6", [null, true, 3, 1.5, 7n, r.keyText]);
    const resp = io.post("http://h/x", r.value, [["x-a", "1"]]);
    const kv = io.kvGet("s", r.key);
    out.emit(r.key, `${rows.first()}|${JSON.stringify(rows.objects())}|${resp.status}|${resp.json().got}|${kv}`, r.timestamp, r);
    out.forward(r);
  }
}

test("an async operator's calls reach the host and the answers the operator", () => {
  const h = new AsyncHarness(Lookup, {}, {
    http: (m, u, hs, b) => [201, [["content-type", "json"]], `{"got":${b.length}}`],
    sql: () => ({ columns: ["a", "b"], rows: [["1", null]] }),
    kv: { s: { k: "v" } },
  });
  const out = h.process(record("k", "body", 9, [["h", "1"]]));
  assert.equal(out.length, 2);
  assert.equal(out[0].text, '1|[{"a":"1","b":null}]|201|4|v');
  assert.deepEqual([out[0].keyText, out[0].timestamp, out[0].headers.length], ["k", 9, 1]);
  assert.equal(out[1].text, "body");
  assert.deepEqual(h.io.calls.map((c) => c[0]), ["sql", "http", "kv"]);
  assert.deepEqual(h.io.calls[0][3], [null, true, 3, 1.5, 7n, "k"]);
  assert.equal(text(h.io.calls[1][4]), "body");
});

test("failed io calls are transient, other throws permanent with file and line", () => {
  const down = new AsyncHarness(Lookup, {}, { sql: () => { throw new Error("no connection"); } });
  assert.throws(() => down.process(record("k", "x")), (e) => e instanceof IoError && e instanceof TransientError && e.message === "no connection");
  assert.throws(() => new AsyncHarness(Lookup).process(record("k", "x")), (e) => e instanceof TransientError && e.message.includes("sql is not faked"));
  assert.throws(() => new AsyncHarness(Lookup, { mode: "throw" }).process(record("k", "x")), (e) => e instanceof PermanentError && /TypeError: .*\(thrown at sdk\.test\.js:\d+ in process\)/.test(e.message));
  assert.throws(() => new AsyncHarness(Lookup, { mode: "error" }).process(record("k", "x")), (e) => e instanceof PermanentError && e.message === "bad input");
  assert.throws(() => new AsyncHarness(Lookup, "{nope"), OpenError);
});
