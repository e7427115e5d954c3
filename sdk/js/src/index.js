// weir-sdk: stream operators for weir, in JavaScript, as WebAssembly components.
//
//   import { Operator } from "weir-sdk";
//   export default class Shout extends Operator {
//     process(record, out) { out.emit(record.key, record.text.toUpperCase(), record.timestamp); }
//   }
//
// `npx weir-js build src/operator.js -o shout.wasm` builds the module's
// default export into a component; `weir-sdk/testing` runs it under Node.
// An AsyncOperator (one record per call, with `io.http`, `io.sql`,
// `io.kvGet`) builds into the `async-operator` world the same way, and a
// Source or a Sink (a connector plugin, `type = "wasm"` in a [sources.*] or
// [sinks.*] section) into the `source` or `sink` world.
export {
  Operator, Record, Timer, Output, Context, WeirError, StateError, codecs, filter, map,
  EVENT_TIME, PROCESSING_TIME, MIN_WATERMARK,
} from "./core.js";
export { AsyncOperator, TransientError, PermanentError, IoError, HttpResponse, SqlRows, Io } from "./async.js";
export { Source, Sink, UserError, ExternalError, Idle, idle, FINISHED } from "./connector.js";
