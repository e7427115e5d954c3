// The glue between componentize-js's bindings of the `async-operator` world
// and an AsyncOperator class. Only a component build of that world imports
// this module; `weir-js build` writes the entry that does:
//
//   import Op from "./app/operator.js";
//   import { exportAsyncOperator } from "./weir-sdk/async-component.js";
//   export const asyncHandler = exportAsyncOperator(Op);

import { OpenError, describe } from "./core.js";
import { AsyncRuntime, TransientError } from "./async.js";
import { wasmHost } from "./io-component.js";

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
