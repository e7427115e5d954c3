// Native test harness: run an operator under plain Node.js, no Wasm.
//
// The harness drives the same batch loop as a component (state prefetch
// through `get-many`, one `apply` per batch, rejections) against an
// in-memory host, so a test exercises the code path weir runs:
//
//   import { Harness, record } from "weir-sdk/testing";
//   const h = new Harness(RunningSum, { field: "amount" });
//   const out = h.process([record("a", '{"amount": 2}')]);
//   assert.equal(out[0].text, '{"key":"a","sum":2}');
//
// AsyncHarness does the same for an AsyncOperator, with the lookups
// answered by the test (FakeIo); SourceHarness and SinkHarness drive a
// Source or Sink through the calls weir makes, `this.io` answered the same
// way.

import * as frame from "./frame.js";
import { asBytes } from "./frame.js";
import { Runtime, Record, Timer, StateError, OpenError, byteKey, codecs, EVENT_TIME, PROCESSING_TIME, MIN_WATERMARK } from "./core.js";

import { AsyncRuntime, IoError } from "./async.js";
import { SinkRuntime, SourceRuntime } from "./connector.js";

export { OpenError };

/** A test record; `key` and `value` are strings or bytes (`key` may be null). */
export function record(key, value, timestamp = 0, headers = []) {
  return new Record(key === null || key === undefined ? null : asBytes(key), asBytes(value), timestamp, frame.encodeHeaders(headers));
}

/** The operator rejected input `index` (a record or a timer) with `message`. */
export class Rejected extends Error {
  constructor(index, message) {
    super(`input #${index} rejected: ${message}`);
    this.index = index;
    this.reason = message;
  }
}

/**
 * The host in memory: value and map state, timers, clocks, log lines, the
 * operator's inputs (`inputs`, names) and the input of the batch being
 * processed (`input`), and a count of host calls (`calls`).
 */
export class MemoryHost {
  constructor(inputs = ["input"]) {
    this.inputs = inputs;
    this.input = 0;
    this.values = new Map(); // name + "\0" + byteKey(key) -> Uint8Array
    this.maps = new Map(); // name + "\0" + byteKey(key) -> Map(byteKey(mapKey) -> [mapKey, value])
    this.timers = new Map(); // domain|key|ts -> Timer
    this.watermarkMs = MIN_WATERMARK;
    this.processingTimeMs = 0;
    this.logs = [];
    this.calls = {};
  }
  count(what) {
    this.calls[what] = (this.calls[what] || 0) + 1;
  }
  get(name, key) {
    this.count("get");
    return this.values.get(name + "\0" + byteKey(key)) ?? null;
  }
  getMany(name, keys) {
    this.count("get-many");
    const first = new Map();
    const entries = frame.readLpList(keys).map((k, i) => {
      const bk = byteKey(k);
      if (first.has(bk)) return { repeat: first.get(bk) };
      first.set(bk, i);
      return this.values.get(name + "\0" + bk) ?? null;
    });
    return frame.encodeGetManyResponse(entries);
  }
  mapGet(name, key, mapKey) {
    this.count("map-get");
    const m = this.maps.get(name + "\0" + byteKey(key));
    const e = m && m.get(byteKey(mapKey));
    return e ? e[1] : null;
  }
  mapEntries(name, key) {
    this.count("map-entries");
    const m = this.maps.get(name + "\0" + byteKey(key));
    return m ? [...m.keys()].sort().map((k) => m.get(k)) : [];
  }
  apply(ops) {
    this.count("apply");
    let decoded;
    try {
      decoded = frame.decodeOps(ops);
    } catch (e) {
      throw new StateError("invalid", e.message);
    }
    for (const [op, name, key, a, b] of decoded) {
      const at = name + "\0" + byteKey(key);
      if (op === frame.PUT) this.values.set(at, a);
      else if (op === frame.DELETE) this.values.delete(at);
      else if (op === frame.MAP_PUT) {
        if (!this.maps.has(at)) this.maps.set(at, new Map());
        this.maps.get(at).set(byteKey(a), [a, b]);
      } else if (op === frame.MAP_REMOVE) {
        const m = this.maps.get(at);
        if (m) {
          m.delete(byteKey(a));
          if (!m.size) this.maps.delete(at);
        }
      } else if (op === frame.MAP_CLEAR) this.maps.delete(at);
    }
  }
  registerTimer(domain, key, timestamp) {
    this.count("register");
    this.timers.set(`${domain}|${byteKey(key)}|${timestamp}`, new Timer(domain, key.slice(), timestamp));
  }
  deleteTimer(domain, key, timestamp) {
    this.count("delete");
    this.timers.delete(`${domain}|${byteKey(key)}|${timestamp}`);
  }
  watermark() {
    return this.watermarkMs;
  }
  processingTime() {
    return this.processingTimeMs;
  }
  log(level, message) {
    this.logs.push([level, message]);
  }
  currentInput() {
    this.count("inputs.current");
    return this.input;
  }
  inputNames() {
    this.count("inputs.names");
    return [...this.inputs];
  }
}

function decode(batch) {
  const out = [];
  frame.readFrames(batch, (ts, k, v, h) => out.push(new Record(k, v, ts, h)));
  return out;
}

function byTime(a, b) {
  return a.timestamp - b.timestamp || (byteKey(a.key) < byteKey(b.key) ? -1 : byteKey(a.key) > byteKey(b.key) ? 1 : 0);
}

/**
 * Runs one operator instance natively. `new Harness(MyOperator, config)`
 * opens it (config an object or JSON text) as subtask 0 of 1, with one
 * input named "input"; an `open` that fails throws OpenError with weir's
 * message. An operator with several inputs is opened with their names,
 * `new Harness(Join, config, { inputs: ["orders", "payments"] })`, and fed
 * with `processInput(i, records)`.
 */
export class Harness {
  constructor(OpClass, config = {}, { subtask = 0, parallelism = 1, inputs = ["input"] } = {}) {
    if (!Array.isArray(inputs) || !inputs.length || !inputs.every((n) => typeof n === "string")) {
      throw new TypeError("inputs is a non-empty array of input names");
    }
    this.host = new MemoryHost([...inputs]);
    this.rt = new Runtime(OpClass, { pipeline: "test", operator: "op", subtask, parallelism }, configJson(config), this.host);
    // `calls` counts the batches' host calls, not the input names the SDK
    // asks for once when it opens the operator.
    this.host.calls = {};
  }
  /** The operator instance. */
  get operator() {
    return this.rt.op;
  }
  /** Processes one batch of records (see `record`) from input 0; returns the outputs or throws Rejected. */
  process(records) {
    return this.processInput(0, records);
  }
  /** Processes one batch of records from input `input` (an index into the `inputs` option). */
  processInput(input, records) {
    const w = new frame.Writer();
    for (const r of records) frame.writeFrame(w, r.key, r.value, r.timestamp, r.rawHeaders);
    return this.processRaw(w.finish(), input);
  }
  /** Processes one batch given in frame format, from input `input`. */
  processRaw(batch, input = 0) {
    if (!Number.isInteger(input) || input < 0 || input >= this.host.inputs.length) {
      throw new RangeError(`input ${input} is not one of the operator's ${this.host.inputs.length} inputs (${this.host.inputs.join(", ")})`);
    }
    // As the host does: the batch's input while it is processed, 0 outside
    // `process` (timers, close).
    this.host.input = input;
    try {
      return this.result(this.rt.process(batch));
    } finally {
      this.host.input = 0;
    }
  }
  result(r) {
    if (r.error) throw new Rejected(r.error.index, r.error.message);
    return decode(r.records);
  }
  /** Sets the watermark to `time` and fires the event-time timers due, in order. */
  advanceWatermark(time) {
    this.host.watermarkMs = time;
    return this.fire(EVENT_TIME, time);
  }
  /** Sets the processing time to `time` and fires the processing-time timers due. */
  advanceProcessingTime(time) {
    this.host.processingTimeMs = time;
    return this.fire(PROCESSING_TIME, time);
  }
  fire(domain, time) {
    const due = [];
    for (const [id, t] of this.host.timers) {
      if (t.domain === domain && t.timestamp <= time) {
        due.push(t);
        this.host.timers.delete(id);
      }
    }
    return this.result(this.rt.onTimer(due.sort(byTime)));
  }
  /** Signals the end of input; returns what the operator emits. */
  close() {
    return this.result(this.rt.close());
  }
  /** Value state `name` of `key`, decoded with `codec`; null when absent. */
  state(name, key, codec = codecs.bytes) {
    const v = this.host.values.get(name + "\0" + byteKey(asBytes(key)));
    return v === undefined ? null : codec.decode(v);
  }
  /** Map state `name` of `key` as `[[mapKey, value], ...]` ordered by map key. */
  mapState(name, key) {
    const m = this.host.maps.get(name + "\0" + byteKey(asBytes(key)));
    return m ? [...m.keys()].sort().map((k) => m.get(k)) : [];
  }
  /** The registered timers, ordered by timestamp. */
  get timers() {
    return [...this.host.timers.values()].sort(byTime);
  }
  /** The `[level, message]` lines the operator logged. */
  get logs() {
    return this.host.logs;
  }
}

/**
 * The host's I/O for an async operator under test, answered by the test:
 * `http(method, url, headers, body)` returns `[status, body]` or
 * `[status, headers, body]`; `sql(connection, query, params)` returns rows
 * (arrays) or `{ columns, rows }`; `kv` is `{ store: { key: value } }` or a
 * function `(store, key)`. An answer that throws is a failed call: the
 * operator sees IoError with its message. `calls` lists every call made.
 */
export class FakeIo {
  constructor({ http = null, sql = null, kv = null } = {}) {
    this.answers = { http, sql, kv };
    this.calls = [];
  }
  answer(what, ...args) {
    this.calls.push([what, ...args]);
    let f = this.answers[what];
    if (f && typeof f === "object") {
      const tables = f;
      f = (store, key) => tables[store]?.[key] ?? null;
    }
    if (!f) throw new IoError(`${what} is not faked in this test: pass ${what} to AsyncHarness`);
    try {
      return f(...args);
    } catch (e) {
      throw e instanceof IoError ? e : new IoError(e instanceof Error ? e.message : String(e));
    }
  }
  http(method, url, headers, body) {
    const r = this.answer("http", method, url, headers, body);
    const [status, h, b] = r.length === 3 ? r : [r[0], [], r[1]];
    return { status, headers: h, body: asBytes(b) };
  }
  sql(connection, query, params) {
    const r = this.answer("sql", connection, query, params);
    return Array.isArray(r) ? { columns: (r[0] || []).map((_, i) => `column${i + 1}`), rows: r } : r;
  }
  kvGet(store, key) {
    return this.answer("kv", store, key) ?? null;
  }
}

/**
 * Runs one async operator instance (one slot) natively against a FakeIo:
 *
 *   const h = new AsyncHarness(Enrich, { store: "profiles" }, { kv: { profiles: { u1: '{"tier":1}' } } });
 *   const out = h.process(record("u1", '{"user":"u1"}'));
 *
 * `process` returns the output records or throws TransientError /
 * PermanentError as weir would see them; `h.io.calls` lists the lookups.
 */
export class AsyncHarness {
  constructor(OpClass, config = {}, answers = {}, { subtask = 0, parallelism = 1 } = {}) {
    this.io = new FakeIo(answers);
    this.rt = new AsyncRuntime(OpClass, { pipeline: "test", operator: "op", subtask, parallelism }, configJson(config), this.io);
  }
  /** The operator instance. */
  get operator() {
    return this.rt.op;
  }
  /** Processes one record (see `record`). */
  process(r) {
    const w = new frame.Writer();
    frame.writeFrame(w, r.key, r.value, r.timestamp, r.rawHeaders);
    return decode(this.rt.process(w.finish()));
  }
}

/** A config given as an object or as JSON text, as JSON text. */
function configJson(config) {
  return typeof config === "string" ? config : JSON.stringify(config);
}

function connectorInfo({ subtask = 0, parallelism = 1, checkpointing = true }) {
  return { pipeline: "test", name: "connector", subtask, parallelism, checkpointing };
}

/**
 * Runs one source instance natively through the calls weir makes:
 *
 *   const h = new SourceHarness(Counter, { count: 3 });
 *   assert.deepEqual(h.poll().map((r) => r.text), ['{"id":0}', '{"id":1}', '{"id":2}']);
 *   assert.equal(h.said, "ready");
 *
 * `poll` returns the records emitted and sets `said` to "ready", "idle"
 * (`idleMs`) or "finished"; failures throw UserError or ExternalError as
 * weir would see them. `answers` build the FakeIo (`h.io`); `options` are
 * `subtask`, `parallelism` and `checkpointing`.
 */
export class SourceHarness {
  constructor(Cls, config = {}, answers = {}, options = {}) {
    this.io = new FakeIo(answers);
    this.rt = new SourceRuntime(Cls, connectorInfo(options), configJson(config), this.io);
    this.said = null;
    this.idleMs = null;
  }
  /** The source instance. */
  get source() {
    return this.rt.source;
  }
  /** `restore` with the positions of every subtask (Uint8Arrays). */
  restore(positions) {
    this.rt.restore(positions);
  }
  /** One `poll`: the records emitted. */
  poll(maxBytes = 1 << 20) {
    const r = this.rt.poll(maxBytes);
    this.said = r.tag;
    this.idleMs = r.tag === "idle" ? r.val : null;
    return r.tag === "ready" ? decode(r.val) : [];
  }
  /** `snapshot`: the position, as a Uint8Array. */
  snapshot() {
    return this.rt.snapshot();
  }
  /** `checkpointComplete`. */
  checkpointComplete(checkpoint, position) {
    this.rt.checkpointComplete(checkpoint, position);
  }
}

/**
 * Runs one sink instance natively through the calls weir makes:
 *
 *   const h = new SinkHarness(Hook, { url: "http://x/in" }, { http: () => [200, ""] });
 *   h.start();
 *   h.write([record(null, '{"id":1}')]);
 *   h.commit(1, h.preCommit(1));
 *
 * Failures throw UserError or ExternalError as weir would see them.
 */
export class SinkHarness {
  constructor(Cls, config = {}, answers = {}, options = {}) {
    this.io = new FakeIo(answers);
    this.rt = new SinkRuntime(Cls, connectorInfo(options), configJson(config), this.io);
  }
  /** The sink instance. */
  get sink() {
    return this.rt.sink;
  }
  /** `start`; `recovered` is null or `[{ checkpoint, handle }]`. */
  start(recovered = null) {
    this.rt.start(recovered);
  }
  /** `write` of one batch of records (see `record`). */
  write(records) {
    const w = new frame.Writer();
    for (const r of records) frame.writeFrame(w, r.key, r.value, r.timestamp, r.rawHeaders);
    this.rt.write(w.finish());
  }
  /** `preCommit`: the handle, as a Uint8Array. */
  preCommit(checkpoint) {
    return this.rt.preCommit(checkpoint);
  }
  /** `commit`. */
  commit(checkpoint, handle) {
    this.rt.commit(checkpoint, handle);
  }
  /** `flush`. */
  flush() {
    this.rt.flush();
  }
}
