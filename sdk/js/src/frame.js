// The byte encodings of the weir plugin contract, written once.
//
// - Frames (wit/types.wit, `batch`): each record is a 20-byte little-endian
//   header `timestamp: i64, key_len: u32 (0xffffffff = no key), value_len:
//   u32, headers_len: u32`, then the key, value and header bytes; headers
//   are `name_len: u16, name, value_len: u32, value`.
// - Length-prefixed lists (`state.get-many`): `u32` little-endian length,
//   then the bytes; in a response 0xffffffff means no value and 0xfffffffe
//   followed by a `u32` index repeats an earlier key's entry.
// - State operations (`state.apply`): `op: u8`, then length-prefixed fields
//   (state name, key, map key for map operations, value for puts).
//
// Operator authors never see these; the SDK and its test harness do.

export const NO_KEY = 0xffffffff;
export const ABSENT = 0xffffffff;
export const REPEAT = 0xfffffffe;
export const PUT = 0, DELETE = 1, MAP_PUT = 2, MAP_REMOVE = 3, MAP_CLEAR = 4;

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

export class FrameError extends Error {}

/** A key, value or name given as a string (UTF-8) or bytes, as a Uint8Array. */
export function asBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (typeof v === "string") return encoder.encode(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new TypeError(`expected a string or bytes, got ${v === null ? "null" : typeof v}`);
}

/**
 * `bytes` itself, or a copy when it is a view into a larger buffer:
 * componentize-js lowers a Uint8Array crossing into the host from the start
 * of its ArrayBuffer, ignoring the view's offset, so a view (a record's key
 * in its batch) must be copied first.
 */
export function own(bytes) {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

function view(buf) {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Calls `f(timestamp, key | null, value, rawHeaders, frame)` for each record of a batch (views, no copies). */
export function readFrames(buf, f) {
  const dv = view(buf);
  const end = buf.length;
  let at = 0;
  while (at < end) {
    if (end - at < 20) throw new FrameError(`truncated record header at byte ${at}`);
    // An i64 timestamp as a Number without a BigInt when it is a safe integer
    // (any millisecond timestamp is): the common case costs two reads.
    const hi = dv.getInt32(at + 4, true);
    const ts = hi > 0x1fffff || hi < -0x200000 ? Number(dv.getBigInt64(at, true)) : hi * 4294967296 + dv.getUint32(at, true);
    const start = at;
    const klen = dv.getUint32(at + 8, true);
    const vlen = dv.getUint32(at + 12, true);
    const hlen = dv.getUint32(at + 16, true);
    at += 20;
    let key = null;
    if (klen !== NO_KEY) {
      key = buf.subarray(at, at + klen);
      at += klen;
    }
    const value = buf.subarray(at, at + vlen);
    at += vlen;
    const headers = buf.subarray(at, at + hlen);
    at += hlen;
    if (at > end) throw new FrameError(`record ends at byte ${at}, past the end of the batch (${end} bytes)`);
    f(ts, key, value, headers, buf.subarray(start, at));
  }
}

/** A growable byte buffer. */
export class Writer {
  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity);
    this.dv = view(this.buf);
    this.len = 0;
  }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.dv = view(next);
  }
  u8(v) {
    this.reserve(1);
    this.buf[this.len++] = v;
  }
  u16(v) {
    this.reserve(2);
    this.dv.setUint16(this.len, v, true);
    this.len += 2;
  }
  u32(v) {
    this.reserve(4);
    this.dv.setUint32(this.len, v, true);
    this.len += 4;
  }
  i64(v) {
    this.reserve(8);
    if (typeof v === "number" && Number.isSafeInteger(v)) {
      const hi = Math.floor(v / 4294967296);
      this.dv.setUint32(this.len, v - hi * 4294967296, true);
      this.dv.setInt32(this.len + 4, hi, true);
    } else {
      this.dv.setBigInt64(this.len, typeof v === "bigint" ? v : BigInt(Math.trunc(v)), true);
    }
    this.len += 8;
  }
  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  /** A length-prefixed field. */
  lp(b) {
    this.u32(b.length);
    this.bytes(b);
  }
  finish() {
    return this.buf.slice(0, this.len);
  }
}

/** Appends one record. */
export function writeFrame(w, key, value, timestamp, rawHeaders = EMPTY) {
  w.reserve(20 + (key ? key.length : 0) + value.length + rawHeaders.length);
  w.i64(timestamp);
  w.u32(key === null || key === undefined ? NO_KEY : key.length);
  w.u32(value.length);
  w.u32(rawHeaders.length);
  if (key) w.bytes(key);
  w.bytes(value);
  w.bytes(rawHeaders);
}

/** `[[name, value], ...]` (strings or bytes) as raw header bytes. */
export function encodeHeaders(headers) {
  const w = new Writer(64);
  for (const [n, v] of headers) {
    const name = asBytes(n), value = asBytes(v);
    if (name.length > 0xffff) throw new RangeError(`header name of ${name.length} bytes is longer than 65,535 bytes`);
    w.u16(name.length);
    w.bytes(name);
    w.u32(value.length);
    w.bytes(value);
  }
  return w.finish();
}

/** Raw header bytes as `[[name, value], ...]` of Uint8Arrays. */
export function decodeHeaders(raw) {
  const dv = view(raw);
  const out = [];
  let at = 0;
  while (at < raw.length) {
    if (at + 2 > raw.length) throw new FrameError("malformed record headers");
    const n = dv.getUint16(at, true);
    const name = raw.subarray(at + 2, at + 2 + n);
    at += 2 + n;
    if (at + 4 > raw.length) throw new FrameError("malformed record headers");
    const v = dv.getUint32(at, true);
    out.push([name, raw.subarray(at + 4, at + 4 + v)]);
    at += 4 + v;
  }
  if (at !== raw.length) throw new FrameError("malformed record headers");
  return out;
}

/** The fields of a length-prefixed list. */
export function readLpList(buf) {
  const dv = view(buf);
  const out = [];
  let at = 0;
  while (at < buf.length) {
    if (at + 4 > buf.length) throw new FrameError("truncated length-prefixed list");
    const n = dv.getUint32(at, true);
    if (at + 4 + n > buf.length) throw new FrameError("truncated length-prefixed list");
    out.push(buf.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

/** `entries`: per key, bytes, null (no value) or `{ repeat: index }`. */
export function encodeGetManyResponse(entries) {
  const w = new Writer();
  for (const e of entries) {
    if (e === null) w.u32(ABSENT);
    else if (e instanceof Uint8Array) w.lp(e);
    else {
      w.u32(REPEAT);
      w.u32(e.repeat);
    }
  }
  return w.finish();
}

/** The `count` values of a `get-many` response (Uint8Array or null), repeats resolved. */
export function readGetManyResponse(buf, count) {
  const dv = view(buf);
  const values = [];
  let at = 0;
  for (let j = 0; j < count; j++) {
    if (at + 4 > buf.length) throw new FrameError("malformed get-many response: fewer entries than keys");
    const n = dv.getUint32(at, true);
    at += 4;
    if (n === ABSENT) values.push(null);
    else if (n === REPEAT) {
      const k = dv.getUint32(at, true);
      at += 4;
      if (k >= j) throw new FrameError("malformed get-many response: a repeat points forward");
      values.push(values[k]);
    } else {
      values.push(buf.slice(at, at + n));
      at += n;
    }
  }
  return values;
}

/** Appends one `state.apply` operation. */
export function encodeOp(w, op, ...fields) {
  w.u8(op);
  for (const f of fields) w.lp(f);
}

const ARITY = { [PUT]: 3, [DELETE]: 2, [MAP_PUT]: 4, [MAP_REMOVE]: 3, [MAP_CLEAR]: 2 };
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The operations of an `apply` buffer: `[op, name, key, ...fields]`; all or nothing. */
export function decodeOps(buf) {
  const dv = view(buf);
  const ops = [];
  let at = 0;
  while (at < buf.length) {
    const op = buf[at++];
    if (!(op in ARITY)) throw new FrameError(`unknown state operation ${op}`);
    const fields = [op];
    for (let i = 0; i < ARITY[op]; i++) {
      if (at + 4 > buf.length) throw new FrameError("truncated state operation");
      const n = dv.getUint32(at, true);
      if (at + 4 + n > buf.length) throw new FrameError("truncated state operation");
      fields.push(buf.slice(at + 4, at + 4 + n));
      at += 4 + n;
    }
    fields[1] = decoder.decode(fields[1]);
    ops.push(fields);
  }
  return ops;
}
