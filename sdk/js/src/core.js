// The operator API and the batch loop shared by the component and the test harness.

import * as frame from "./frame.js";
import { asBytes, Writer } from "./frame.js";

const textDecoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** The clocks a timer can follow. */
export const EVENT_TIME = "event-time";
export const PROCESSING_TIME = "processing-time";
export const LEVELS = ["trace", "debug", "info", "warn", "error"];
export const MIN_WATERMARK = -9223372036854775808;

/**
 * Throw it from `process` or `onTimer` to reject the record (or timer), or
 * from `open` to refuse a config. The message is shown to the person running
 * the pipeline with the plugin, operator and record: say what is wrong with
 * the input.
 */
export class WeirError extends Error {
  constructor(message) {
    super(message);
    this.name = "WeirError";
  }
}

/** A state access the host refused: `kind` is "key-not-owned", "too-large" (`detail`: the limit in bytes) or "invalid". */
export class StateError extends WeirError {
  constructor(kind, detail) {
    super(
      kind === "key-not-owned"
        ? 'state key is owned by another subtask: partition this operator\'s input by key (partition = "hash")'
        : kind === "too-large"
          ? `state key or value larger than the host's limit of ${detail} bytes`
          : `invalid state request: ${detail}`,
    );
    this.name = "StateError";
    this.kind = kind;
    this.detail = detail;
  }
}

function fixed(name, size, write, read) {
  return {
    name,
    encode(v) {
      const b = new Uint8Array(size);
      write(new DataView(b.buffer), v);
      return b;
    },
    decode(b) {
      if (b.length !== size) throw new RangeError(`${b.length} bytes do not decode as ${name}`);
      return read(new DataView(b.buffer, b.byteOffset, b.byteLength));
    },
  };
}

/**
 * How a state value is kept as bytes: the layouts of the Rust SDK, so state
 * written by an operator in one language reads in another.
 */
export const codecs = {
  /** A signed 64-bit integer as a BigInt, 8 bytes little-endian (Rust `i64`). */
  i64: fixed("i64", 8, (dv, v) => dv.setBigInt64(0, BigInt(v), true), (dv) => dv.getBigInt64(0, true)),
  /** An unsigned 64-bit integer as a BigInt (Rust `u64`). */
  u64: fixed("u64", 8, (dv, v) => dv.setBigUint64(0, BigInt(v), true), (dv) => dv.getBigUint64(0, true)),
  /** A float, 8 bytes little-endian (Rust `f64`). */
  f64: fixed("f64", 8, (dv, v) => dv.setFloat64(0, v, true), (dv) => dv.getFloat64(0, true)),
  /** Text, UTF-8 (Rust `String`). */
  string: { name: "string", encode: (s) => asBytes(String(s)), decode: (b) => textDecoder.decode(b) },
  /** Any JSON-serializable value, as JSON text. */
  json: { name: "json", encode: (v) => asBytes(JSON.stringify(v)), decode: (b) => JSON.parse(textDecoder.decode(b)) },
  /** Raw bytes (the default). */
  bytes: { name: "bytes", encode: asBytes, decode: (b) => b },
  /**
   * A list of byte strings (strings as UTF-8), each a `u32` little-endian
   * length then the bytes; decodes to Uint8Arrays. A sink's handle that
   * holds several request bodies, say.
   */
  list: {
    name: "list",
    encode(items) {
      const w = new Writer(256);
      for (const item of items) w.lp(asBytes(item));
      return w.finish();
    },
    decode: (b) => frame.readLpList(b),
  },
};

/** A Uint8Array as a string usable as a Map key (one char per byte). */
export function byteKey(b) {
  if (b.length <= 1024) return String.fromCharCode.apply(null, b);
  let s = "";
  for (let i = 0; i < b.length; i += 1024) s += String.fromCharCode.apply(null, b.subarray(i, i + 1024));
  return s;
}

function fromByteKey(s) {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}

/** One input record, a view of the batch. */
export class Record {
  /**
   * @param {Uint8Array | null} key
   * @param {Uint8Array} value
   * @param {number} timestamp event time in ms
   * @param {Uint8Array} rawHeaders the encoded headers
   */
  constructor(key, value, timestamp = 0, rawHeaders = EMPTY, frame = null) {
    this.key = key;
    this.value = value;
    this.timestamp = timestamp;
    this.rawHeaders = rawHeaders;
    /** The record's bytes in the batch, copied whole by `out.forward`. */
    this.frame = frame;
  }
  /** The headers as `[[name, value], ...]` of Uint8Arrays. */
  get headers() {
    return this.rawHeaders.length ? frame.decodeHeaders(this.rawHeaders) : [];
  }
  /** The value decoded as UTF-8. */
  get text() {
    return textDecoder.decode(this.value);
  }
  /** The key decoded as UTF-8 (null without a key). */
  get keyText() {
    return this.key === null ? null : textDecoder.decode(this.key);
  }
  /** The value parsed as JSON. */
  json() {
    return JSON.parse(this.text);
  }
}

/** A fired timer: `domain` (EVENT_TIME or PROCESSING_TIME), `key` (Uint8Array), `timestamp` (ms). */
export class Timer {
  constructor(domain, key, timestamp) {
    this.domain = domain;
    this.key = key;
    this.timestamp = timestamp;
  }
  /** The key decoded as UTF-8. */
  get keyText() {
    return textDecoder.decode(this.key);
  }
}

/** Collects a call's output records into one frame buffer. */
export class Output {
  constructor(capacity = 1024) {
    this.w = new Writer(capacity);
    this.count = 0;
  }
  /**
   * Emits a record. `key`: string, bytes or null; `value`: string or bytes;
   * `headers`: `[[name, value], ...]`, or a Record to carry its headers on.
   */
  emit(key, value, timestamp = 0, headers = null) {
    const raw = headers instanceof Record ? headers.rawHeaders : headers && headers.length ? frame.encodeHeaders(headers) : EMPTY;
    frame.writeFrame(this.w, key === null || key === undefined ? null : asBytes(key), asBytes(value), timestamp, raw);
    this.count++;
  }
  /** Emits an input record unchanged (key, value, timestamp, headers). */
  forward(record) {
    if (record.frame) this.w.bytes(record.frame);
    else frame.writeFrame(this.w, record.key, record.value, record.timestamp, record.rawHeaders);
    this.count++;
  }
  get length() {
    return this.count;
  }
  /** The bytes emitted so far, in frame format (what a source's `maxBytes` counts). */
  get size() {
    return this.w.len;
  }
}

/**
 * The operator's view of the host: keyed state, timers, the watermark,
 * logging, and which input a batch came from.
 *
 * Value states named in the operator's `static prefetch` are fetched for
 * every key of a batch in one host call per name before the batch; other
 * reads are one host call per key and batch, then cached. Every write is
 * buffered and sent to the host in one `apply` call when the batch ends, so
 * a rejected record leaves no trace.
 */
export class Context {
  constructor(host) {
    this.host = host;
    // The input names are fixed for the instance's life (the pipeline
    // file's `inputs`): asked of the host once, on first use.
    this.cachedInputNames = null;
    this.reset();
  }

  reset() {
    // The input of the batch: asked of the host on first use in a batch,
    // then cached. `reset` ends every call (batch, timers, close), so the
    // next batch asks again.
    this.inputIndex = null;
    /** name -> Map(byteKey -> { value: Uint8Array | null, dirty }) */
    this.values = new Map();
    /** name + "\0" + byteKey -> { cleared, entries: Map(byteKey(mapKey) -> value | null) } */
    this.mapWrites = new Map();
    this.mapReads = new Map();
    this.ops = new Writer(256);
  }

  slot(name, key) {
    let perName = this.values.get(name);
    if (!perName) this.values.set(name, (perName = new Map()));
    const k = byteKey(key);
    let slot = perName.get(k);
    if (!slot) perName.set(k, (slot = { value: this.host.get(name, key), dirty: false }));
    return slot;
  }

  /** Value state `name` of `key` (string or bytes), decoded with `codec` (see `codecs`); `fallback` when absent. */
  get(name, key, codec = codecs.bytes, fallback = null) {
    const value = this.slot(name, asBytes(key)).value;
    if (value === null || value === undefined) return fallback;
    try {
      return codec.decode(value);
    } catch (e) {
      throw new StateError("invalid", `state "${name}" holds ${value.length} bytes that do not decode as ${codec.name}: ${e.message}`);
    }
  }

  /** Sets value state `name` of `key`. Applied when the batch ends. */
  put(name, key, value, codec = codecs.bytes) {
    this.setSlot(name, asBytes(key), codec.encode(value));
  }

  /** Deletes value state `name` of `key`. Applied when the batch ends. */
  delete(name, key) {
    this.setSlot(name, asBytes(key), null);
  }

  setSlot(name, key, value) {
    let perName = this.values.get(name);
    if (!perName) this.values.set(name, (perName = new Map()));
    perName.set(byteKey(key), { value, dirty: true });
  }

  pending(name, key) {
    const at = name + "\0" + byteKey(key);
    let p = this.mapWrites.get(at);
    if (!p) this.mapWrites.set(at, (p = { cleared: false, entries: new Map() }));
    return p;
  }

  /** Map state `name` of `key` at `mapKey`; `fallback` when absent. */
  mapGet(name, key, mapKey, codec = codecs.bytes, fallback = null) {
    key = asBytes(key);
    mapKey = asBytes(mapKey);
    const p = this.mapWrites.get(name + "\0" + byteKey(key));
    const mk = byteKey(mapKey);
    let value;
    if (p && p.entries.has(mk)) value = p.entries.get(mk);
    else if (p && p.cleared) value = null;
    else {
      const at = name + "\0" + byteKey(key) + "\0" + mk;
      if (!this.mapReads.has(at)) this.mapReads.set(at, this.host.mapGet(name, key, mapKey) ?? null);
      value = this.mapReads.get(at);
    }
    return value === null ? fallback : codec.decode(value);
  }

  /** Every entry of map state `name` of `key`: `[[mapKey, value], ...]` ordered by map key (bytes). */
  mapEntries(name, key, codec = codecs.bytes) {
    key = asBytes(key);
    const p = this.mapWrites.get(name + "\0" + byteKey(key));
    const entries = new Map();
    if (!(p && p.cleared)) for (const [mk, v] of this.host.mapEntries(name, key)) entries.set(byteKey(mk), v);
    if (p) for (const [mk, v] of p.entries) v === null ? entries.delete(mk) : entries.set(mk, v);
    return [...entries.keys()].sort().map((mk) => [fromByteKey(mk), codec.decode(entries.get(mk))]);
  }

  /** Sets map state `name` of `key` at `mapKey`. */
  mapPut(name, key, mapKey, value, codec = codecs.bytes) {
    key = asBytes(key);
    mapKey = asBytes(mapKey);
    value = codec.encode(value);
    this.pending(name, key).entries.set(byteKey(mapKey), value);
    frame.encodeOp(this.ops, frame.MAP_PUT, asBytes(name), key, mapKey, value);
  }

  /** Removes map state `name` of `key` at `mapKey`. */
  mapRemove(name, key, mapKey) {
    key = asBytes(key);
    mapKey = asBytes(mapKey);
    this.pending(name, key).entries.set(byteKey(mapKey), null);
    frame.encodeOp(this.ops, frame.MAP_REMOVE, asBytes(name), key, mapKey);
  }

  /** Removes every entry of map state `name` of `key`. */
  mapClear(name, key) {
    key = asBytes(key);
    this.mapWrites.set(name + "\0" + byteKey(key), { cleared: true, entries: new Map() });
    frame.encodeOp(this.ops, frame.MAP_CLEAR, asBytes(name), key);
  }

  /** Asks for `onTimer` once `domain`'s clock reaches `timestamp` (ms). */
  registerTimer(key, timestamp, domain = EVENT_TIME) {
    this.host.registerTimer(domain, asBytes(key), timestamp);
  }

  /** Forgets a timer registered earlier (unknown timers are ignored). */
  deleteTimer(key, timestamp, domain = EVENT_TIME) {
    this.host.deleteTimer(domain, asBytes(key), timestamp);
  }

  /** The event-time watermark (ms); MIN_WATERMARK before the first. */
  watermark() {
    return this.host.watermark();
  }

  /** The host's wall clock (ms since the Unix epoch). */
  processingTime() {
    return this.host.processingTime();
  }

  /**
   * The index into `inputNames()` of the input the current batch came from,
   * for an operator with several inputs (`inputs = ["orders", "payments"]`
   * in the pipeline file). 0 for an operator with one input, and in
   * `onTimer` and `close`. One host call per batch, however many records
   * ask.
   */
  input() {
    if (this.inputIndex === null) this.inputIndex = this.host.currentInput();
    return this.inputIndex;
  }

  /**
   * The operator's inputs, in the order of its `inputs` (or `input`)
   * setting: the names of the upstream sources or operators. Keyed state
   * and timers are shared by all of them: a join keeps both sides of a key
   * under that key.
   */
  inputNames() {
    if (this.cachedInputNames === null) this.cachedInputNames = Object.freeze([...this.host.inputNames()]);
    return this.cachedInputNames;
  }

  /** Writes a line to weir's log, tagged with this operator. `level`: trace, debug, info, warn or error. */
  log(message, level = "info") {
    if (!LEVELS.includes(level)) throw new RangeError(`log level "${level}" is not one of ${LEVELS.join(", ")}`);
    this.host.log(level, String(message));
  }

  /** One `get-many` per name for the keys of the batch. */
  prefetch(names, keys) {
    if (!keys.length) return;
    const req = new Writer(keys.length * 16);
    for (const k of keys) req.lp(k);
    const request = req.finish();
    for (const name of names) {
      const values = frame.readGetManyResponse(this.host.getMany(name, request), keys.length);
      let perName = this.values.get(name);
      if (!perName) this.values.set(name, (perName = new Map()));
      for (let i = 0; i < keys.length; i++) {
        const k = byteKey(keys[i]);
        if (!perName.has(k)) perName.set(k, { value: values[i], dirty: false });
      }
    }
  }

  /** Sends the batch's writes to the host in one `apply` call. */
  flush() {
    const ops = this.ops;
    for (const [name, perName] of this.values) {
      const n = asBytes(name);
      for (const [k, slot] of perName) {
        if (!slot.dirty) continue;
        if (slot.value === null) frame.encodeOp(ops, frame.DELETE, n, fromByteKey(k));
        else frame.encodeOp(ops, frame.PUT, n, fromByteKey(k), slot.value);
      }
    }
    try {
      if (ops.len) this.host.apply(ops.finish());
    } finally {
      this.reset();
    }
  }
}

/**
 * A stream operator. Extend it and override `process`; the other methods
 * default to doing nothing. The host creates one instance per parallel
 * subtask, calls `open(config, info)` with the operator's `config` table
 * (an object) and `info` (`pipeline`, `operator`, `subtask`,
 * `parallelism`, `inputs`: the input names), then `process` for every
 * input record (of every input: `ctx.input()` says which), `onTimer` for
 * fired timers and `close` at the end of the input.
 */
export class Operator {
  /** Value-state names read for (nearly) every record's key: fetched for a whole batch in one host call per name. */
  static prefetch = [];
  open(config, info) {}
  process(record, out, ctx) {
    throw new WeirError("an Operator must define process(record, out, ctx)");
  }
  onTimer(timer, out, ctx) {}
  close(out, ctx) {}
}

/** An operator that keeps the records for which `predicate(record)` is true, unchanged. */
export function filter(predicate) {
  return class Filter extends Operator {
    process(record, out) {
      if (predicate(record)) out.forward(record);
    }
  };
}

/**
 * An operator that replaces each record's value with `fn(record)` (string or
 * bytes), keeping key, timestamp and headers; `null` or `undefined` drops
 * the record.
 */
export function map(fn) {
  return class Map extends Operator {
    process(record, out) {
      const value = fn(record);
      if (value !== null && value !== undefined) out.emit(record.key, value, record.timestamp, record);
    }
  };
}

/**
 * The message for a thrown value: a WeirError's own text, or for anything
 * else its name, message and where it was thrown in the operator's code
 * (file, line, function), from the stack trace.
 */
export function describe(e) {
  if (e instanceof WeirError) return e.message;
  if (!(e instanceof Error)) return `uncaught exception: ${String(e)}`;
  const text = e.message ? `${e.name}: ${e.message}` : e.name;
  const where = throwSite(e.stack || "");
  return where ? `${text} (thrown at ${where})` : text;
}

/** The innermost frame of a stack outside the SDK: "file:line in function". */
function throwSite(stack) {
  for (const line of stack.split("\n")) {
    // SpiderMonkey: "fn@file:line:col"; V8: "    at fn (file:line:col)" or "    at file:line:col".
    let m = line.match(/^\s*at (?:(.*?) \()?(.+?):(\d+):\d+\)?$/);
    let fn, file, lineNo;
    if (m) [, fn, file, lineNo] = m;
    else if ((m = line.match(/^(.*)@(.+?):(\d+):\d+$/))) [, fn, file, lineNo] = m;
    else continue;
    if (/weir-sdk\/|sdk\/js\/src\/|^node:|\(native\)/.test(file) || file === "native") continue;
    const name = file.replace(/^file:\/\//, "").split("/").pop();
    fn = (fn || "").replace(/^.*[.#]/, "");
    return fn ? `${name}:${lineNo} in ${fn}` : `${name}:${lineNo}`;
  }
  return null;
}

export class OpenError extends Error {}

/** A new `OpClass` opened with the config (JSON text); a failure is an OpenError with weir's message. */
export function openOperator(OpClass, info, configJson) {
  let config;
  try {
    config = configJson ? JSON.parse(configJson) : {};
  } catch (e) {
    throw new OpenError(`invalid config for operator "${info.operator}": ${e.message}`);
  }
  try {
    const op = new OpClass();
    op.open(config, info);
    return op;
  } catch (e) {
    throw new OpenError(describe(e));
  }
}

/** An opened operator with its context: the loop a component runs for each export call, and the one the test harness runs. */
export class Runtime {
  constructor(OpClass, info, configJson, host) {
    this.ctx = new Context(host);
    // `open` gets the input names too (a join can check it has two); the
    // context keeps them, so this is the instance's one host call for them.
    this.op = openOperator(OpClass, { ...info, inputs: this.ctx.inputNames() }, configJson);
    this.prefetchNames = [...(OpClass.prefetch || [])];
  }

  /** Returns `{ records }` or `{ error: { index, message } }`. */
  process(batch) {
    const records = [];
    try {
      frame.readFrames(batch, (ts, k, v, h, f) => records.push(new Record(k, v, ts, h, f)));
    } catch (e) {
      return { error: { index: 0, message: `malformed batch: ${e.message}` } };
    }
    const out = new Output(batch.length + (batch.length >> 2) + 64);
    const ctx = this.ctx;
    if (this.prefetchNames.length) {
      try {
        ctx.prefetch(this.prefetchNames, records.filter((r) => r.key !== null).map((r) => r.key));
      } catch (e) {
        ctx.reset();
        return { error: { index: records.length, message: `prefetching state: ${describe(e)}` } };
      }
    }
    const op = this.op;
    for (let i = 0; i < records.length; i++) {
      try {
        op.process(records[i], out, ctx);
      } catch (e) {
        ctx.reset();
        return { error: { index: i, message: describe(e) } };
      }
    }
    return this.finish(out, records.length);
  }

  onTimer(timers) {
    const out = new Output();
    for (let i = 0; i < timers.length; i++) {
      try {
        this.op.onTimer(timers[i], out, this.ctx);
      } catch (e) {
        this.ctx.reset();
        return { error: { index: i, message: describe(e) } };
      }
    }
    return this.finish(out, timers.length);
  }

  close() {
    const out = new Output();
    try {
      this.op.close(out, this.ctx);
    } catch (e) {
      this.ctx.reset();
      return { error: { index: 0, message: describe(e) } };
    }
    return this.finish(out, 0);
  }

  finish(out, inputs) {
    try {
      this.ctx.flush();
    } catch (e) {
      return { error: { index: inputs, message: `the host refused the batch's state writes: ${describe(e)}` } };
    }
    return { records: out.w.finish() };
  }
}
