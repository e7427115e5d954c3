// The glue between componentize-js's bindings of the `async-operator` world
// and an AsyncOperator class. Only a component build of that world imports
// this module; `weir-js build` writes the entry that does:
//
//   import Op from "./app/operator.js";
//   import { exportAsyncOperator } from "./weir-sdk/async-component.js";
//   export const asyncHandler = exportAsyncOperator(Op);

import * as io from "weir:plugin/async-io@0.1.0";
import { OpenError, describe } from "./core.js";
import { AsyncRuntime, IoError, TransientError } from "./async.js";

// componentize-js lowers a Uint8Array argument from the start of its
// ArrayBuffer, ignoring the view's offset: copy views (see component.js).
function own(bytes) {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

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

const wasmHost = {
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

/** The `async-handler` export (WIT interface `weir:plugin/async-handler`) running `OpClass`. */
export function exportAsyncOperator(OpClass) {
  let rt = null;
  return {
    open(info) {
      try {
        rt = new AsyncRuntime(OpClass, { pipeline: info.pipeline, operator: info.operator, subtask: info.subtask, parallelism: info.parallelism }, info.config, wasmHost);
      } catch (e) {
        throw e instanceof OpenError ? e.message : describe(e);
      }
    },
    process(input) {
      try {
        return rt.process(input);
      } catch (e) {
        throw e instanceof TransientError ? { tag: "transient", val: e.message } : { tag: "permanent", val: e.message };
      }
    },
  };
}
