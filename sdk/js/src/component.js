// The glue between componentize-js's bindings of the `operator` world and an
// Operator class. Only a component build imports this module (Node cannot
// resolve the `weir:plugin/...` imports); `weir-js build` writes the entry
// that does:
//
//   import Op from "./app/operator.js";
//   import { exportOperator } from "./weir-sdk/component.js";
//   export const handler = exportOperator(Op);

import * as state from "weir:plugin/state@0.1.0";
import * as timers from "weir:plugin/timers@0.1.0";
import * as inputs from "weir:plugin/inputs@0.1.0";
import { log } from "weir:plugin/log@0.1.0";
import { Runtime, OpenError, StateError, Timer, describe } from "./core.js";
import { own } from "./frame.js";

function stateCall(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    const v = e && e.payload;
    if (v && v.tag) throw new StateErrorFromHost(v);
    throw e;
  }
}

class StateErrorFromHost extends StateError {
  constructor(v) {
    super(v.tag, v.tag === "too-large" ? String(v.val) : v.val);
  }
}

// componentize-js 0.23 lifts an s64 result as if it were unsigned (the
// watermark before the first, i64::MIN, arrives as 2^63): reinterpret it.
function s64(v) {
  return Number(BigInt.asIntN(64, BigInt(v)));
}

const wasmHost = {
  get: (name, key) => stateCall(state.get, name, own(key)) ?? null,
  getMany: (name, keys) => stateCall(state.getMany, name, own(keys)),
  mapGet: (name, key, mapKey) => stateCall(state.mapGet, name, own(key), own(mapKey)) ?? null,
  mapEntries: (name, key) => stateCall(state.mapEntries, name, own(key)),
  apply: (ops) => stateCall(state.apply, own(ops)),
  registerTimer: (domain, key, ts) => timers.register(domain, own(key), BigInt(Math.trunc(ts))),
  deleteTimer: (domain, key, ts) => timers.delete(domain, own(key), BigInt(Math.trunc(ts))),
  watermark: () => s64(timers.currentWatermark()),
  processingTime: () => s64(timers.currentProcessingTime()),
  currentInput: () => inputs.current(),
  inputNames: () => inputs.names(),
  log: (level, message) => log(level, message),
};

function output(result) {
  return result.error ? { records: new Uint8Array(0), error: result.error } : { records: result.records, error: undefined };
}

/** The `handler` export (the WIT interface `weir:plugin/handler`) running `OpClass`. */
export function exportOperator(OpClass) {
  let rt = null;
  return {
    open(info) {
      try {
        rt = new Runtime(OpClass, { pipeline: info.pipeline, operator: info.operator, subtask: info.subtask, parallelism: info.parallelism }, info.config, wasmHost);
      } catch (e) {
        throw e instanceof OpenError ? e.message : describe(e);
      }
    },
    process(input) {
      return output(rt.process(input));
    },
    onTimer(fired) {
      return output(rt.onTimer(fired.map((t) => new Timer(t.domain, t.key, s64(t.timestamp)))));
    },
    close() {
      const r = rt.close();
      if (r.error) throw r.error.message;
      return r.records;
    },
  };
}
