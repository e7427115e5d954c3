// The host's `async-io` imports, for every world that has them
// (`async-operator`, `source`, `sink`): what an `Io` calls inside a
// component. Only component builds of those worlds import this module.

import * as io from "weir:plugin/async-io@0.1.0";
import { IoError } from "./async.js";
import { own } from "./frame.js";

function call(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    throw new IoError(e && e.payload !== undefined ? String(e.payload) : String(e));
  }
}

function sqlValue(v) {
  if (v === null) return { tag: "null" };
  if (typeof v === "boolean") return { tag: "boolean", val: v };
  if (typeof v === "bigint") return { tag: "int", val: v };
  if (typeof v === "number") return Number.isInteger(v) ? { tag: "int", val: BigInt(v) } : { tag: "float", val: v };
  return { tag: "text", val: v };
}

/** The host of an `Io`, through the `async-io` imports. */
export const wasmHost = {
  http(method, url, headers, body) {
    const r = call(io.http, method, url, headers, own(body));
    return { status: r.status, headers: r.headers, body: r.body };
  },
  sql(connection, query, params) {
    const r = call(io.sql, connection, query, params.map(sqlValue));
    return { columns: r.columns, rows: r.rows.map((row) => row.map((v) => (v === undefined ? null : v))) };
  },
  kvGet(store, key) {
    return call(io.kvGet, store, key) ?? null;
  },
};

