// Async operators (world `weir:plugin/async-operator`): one record per call,
// with HTTP, SQL and key-value lookups that look blocking to the operator
// while the host awaits them and runs other records in other slots. Shared
// by the component glue (async-component.js) and the test harness.

import * as frame from "./frame.js";
import { asBytes } from "./frame.js";
import { Output, Record, WeirError, describe, openOperator } from "./core.js";

const textDecoder = new TextDecoder();

/**
 * Throw it from `process` when retrying may help (a lookup failed, a service
 * answered 503): the host retries the record with backoff, then
 * dead-letters it.
 */
export class TransientError extends WeirError {
  constructor(message) {
    super(message);
    this.name = "TransientError";
  }
}

/**
 * Throw it when retrying will not help (malformed input): the record is
 * dead-lettered at once. Anything else thrown (a WeirError, a TypeError) is
 * permanent too, reported with its file and line.
 */
export class PermanentError extends WeirError {
  constructor(message) {
    super(message);
    this.name = "PermanentError";
  }
}

/**
 * A host call (`http`, `sql`, `kvGet`) failed: the service could not be
 * reached, the call was not granted, the statement failed. It is a
 * TransientError, so an operator that does not catch it gets the record
 * retried.
 */
export class IoError extends TransientError {
  constructor(message) {
    super(message);
    this.name = "IoError";
  }
}

/** An HTTP response: `status`, `headers` (`[[name, value], ...]`, names lower-cased), `body` (Uint8Array). */
export class HttpResponse {
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
  /** The body decoded as UTF-8. */
  get text() {
    return textDecoder.decode(this.body);
  }
  /** The body parsed as JSON. */
  json() {
    return JSON.parse(this.text);
  }
}

/** The rows of a statement: `columns` and `rows`, each value PostgreSQL's text form (null for NULL). */
export class SqlRows {
  constructor(columns, rows) {
    this.columns = columns;
    this.rows = rows;
  }
  /** The first column of the first row, or null when there is no row. */
  first() {
    return this.rows.length && this.rows[0].length ? this.rows[0][0] : null;
  }
  /** The rows as objects from column name to value. */
  objects() {
    return this.rows.map((r) => Object.fromEntries(this.columns.map((c, i) => [c, r[i]])));
  }
  get length() {
    return this.rows.length;
  }
}

function sqlParam(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "boolean" || typeof v === "bigint" || typeof v === "string") return v;
  if (typeof v === "number") return v;
  throw new TypeError(`a SQL parameter is null, a boolean, a number, a BigInt or a string, not ${typeof v}`);
}

/**
 * The host's I/O, handed to `process`. Every call blocks the operator (not
 * weir) and throws IoError when it fails. A pipeline grants HTTP hosts with
 * `async.allow-http` and connections with `async.connections`.
 */
export class Io {
  constructor(host) {
    this.host = host;
  }
  /** One HTTP/1.1 request to a plain `http://` URL; any status, 5xx included, is a response. */
  http(method, url, { headers = [], body = "" } = {}) {
    const h = headers instanceof Array ? headers : Object.entries(headers);
    const r = this.host.http(String(method), String(url), h.map(([k, v]) => [String(k), String(v)]), asBytes(body));
    return new HttpResponse(r.status, r.headers, r.body);
  }
  /** `GET url`. */
  get(url, headers = []) {
    return this.http("GET", url, { headers });
  }
  /** `POST url` with `body` (string or bytes). */
  post(url, body, headers = []) {
    return this.http("POST", url, { headers, body });
  }
  /** Runs `query` with parameters `$1`, `$2`... on the named connection. */
  sql(connection, query, params = []) {
    const r = this.host.sql(String(connection), String(query), params.map(sqlParam));
    return new SqlRows(r.columns, r.rows);
  }
  /** The value under `key` in the key-value store `store`, as a string, or null. */
  kvGet(store, key) {
    const k = key instanceof Uint8Array ? textDecoder.decode(key) : String(key);
    return this.host.kvGet(String(store), k);
  }
}

/**
 * Base class of an async operator: override `process(record, out, io)`;
 * `open(config, info)` is optional. An instance is created per slot (up to
 * `async.capacity` per subtask), so keep no state records must share.
 */
export class AsyncOperator {
  /** Tells `weir-js build` to build the `async-operator` world. */
  static weirWorld = "async-operator";
  open(config, info) {}
  process(record, out, io) {
    throw new PermanentError("an AsyncOperator must define process(record, out, io)");
  }
}

/**
 * An opened async operator: the loop a component runs for each call and the
 * one the test harness runs. `process` returns the output frame buffer or
 * throws TransientError / PermanentError.
 */
export class AsyncRuntime {
  constructor(OpClass, info, configJson, host) {
    this.io = new Io(host);
    this.op = openOperator(OpClass, info, configJson);
  }

  process(batch) {
    const records = [];
    try {
      frame.readFrames(batch, (ts, k, v, h, f) => records.push(new Record(k, v, ts, h, f)));
    } catch (e) {
      throw new PermanentError(`malformed input: ${e.message}`);
    }
    const out = new Output(batch.length + 256);
    for (const r of records) {
      try {
        this.op.process(r, out, this.io);
      } catch (e) {
        if (e instanceof TransientError || e instanceof PermanentError) throw e;
        throw new PermanentError(describe(e));
      }
    }
    return out.w.finish();
  }
}
