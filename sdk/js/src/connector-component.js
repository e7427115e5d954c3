// The glue between componentize-js's bindings of the `source` and `sink`
// worlds and a Source or Sink class. Only a component build of one of those
// worlds imports this module; `weir-js build` writes the entry that does:
//
//   import Connector from "./app/counter.js";
//   import { exportSource } from "./weir-sdk/connector-component.js";
//   export const sourceHandler = exportSource(Connector);

import { own } from "./frame.js";
import { ExternalError, SinkRuntime, SourceRuntime } from "./connector.js";
import { wasmHost } from "./io-component.js";

/** Runs `f`; its UserError or ExternalError is thrown as the WIT `connector-error`. */
function wit(f) {
  try {
    return f();
  } catch (e) {
    throw { tag: e instanceof ExternalError ? "external" : "user", val: e.message };
  }
}

/** The `connector-info` record as `info`; the config stays JSON text. */
function infoOf(i) {
  return { pipeline: i.pipeline, name: i.name, subtask: i.subtask, parallelism: i.parallelism, checkpointing: i.checkpointing };
}

/** The `source-handler` export (WIT interface `weir:plugin/source-handler`) running `Cls`. */
export function exportSource(Cls) {
  let rt = null;
  return {
    open(info) {
      rt = wit(() => new SourceRuntime(Cls, infoOf(info), info.config, wasmHost));
    },
    restore(positions) {
      wit(() => rt.restore(positions));
    },
    poll(maxBytes) {
      const r = wit(() => rt.poll(maxBytes));
      return r.tag === "ready" ? { tag: "ready", val: own(r.val) } : r;
    },
    snapshot() {
      return own(wit(() => rt.snapshot()));
    },
    checkpointComplete(checkpoint, position) {
      wit(() => rt.checkpointComplete(Number(checkpoint), position));
    },
  };
}

/** The `sink-handler` export (WIT interface `weir:plugin/sink-handler`) running `Cls`. */
export function exportSink(Cls) {
  let rt = null;
  return {
    open(info) {
      rt = wit(() => new SinkRuntime(Cls, infoOf(info), info.config, wasmHost));
    },
    start(recovered) {
      const handles = recovered === undefined || recovered === null ? null : recovered.map((c) => ({ checkpoint: Number(c.checkpoint), handle: c.handle }));
      wit(() => rt.start(handles));
    },
    write(batch) {
      wit(() => rt.write(batch));
    },
    preCommit(checkpoint) {
      return own(wit(() => rt.preCommit(Number(checkpoint))));
    },
    commit(checkpoint, handle) {
      wit(() => rt.commit(Number(checkpoint), handle));
    },
    flush() {
      wit(() => rt.flush());
    },
  };
}
