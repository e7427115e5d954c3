// Sources and sinks written as plugins (worlds `weir:plugin/source` and
// `weir:plugin/sink`, wit/connector.wit): the classes an author extends and
// the loops that drive them, shared by the component glue
// (connector-component.js) and the test harness.
//
// The author never sees the frame format, the `connector-error` variant or
// the `poll-result` variant: records come and go as Record and Output,
// errors are exceptions (UserError, ExternalError), and `poll` returns
// nothing, `idle(ms)` or FINISHED.

import * as frame from "./frame.js";
import { asBytes } from "./frame.js";
import { Output, Record, WeirError, describe } from "./core.js";
import { Io, TransientError } from "./async.js";

/**
 * The configuration or the data is wrong: the pipeline stops with this
 * message, and restarting will not help. Anything thrown other than an
 * ExternalError (or a TransientError such as IoError) is reported as a user
 * error too, with its file and line.
 */
export class UserError extends WeirError {
  constructor(message) {
    super(message);
    this.name = "UserError";
  }
}

/**
 * A system outside weir failed (a server is down or refused a request): the
 * pipeline stops and may be restarted from its last checkpoint (`weir serve`
 * does so with backoff). An `io` call that fails and is not caught (IoError)
 * is reported as one.
 */
export class ExternalError extends WeirError {
  constructor(message) {
    super(message);
    this.name = "ExternalError";
  }
}

/** What `idle(ms)` returns. */
export class Idle {
  constructor(ms) {
    if (!Number.isInteger(ms) || ms < 0 || ms > 0xffffffff) throw new RangeError(`idle(ms) takes a whole number of milliseconds from 0 to 2^32-1, not ${ms}`);
    this.ms = ms;
  }
}

/** Return it from `poll` when nothing is available now: weir polls again after at most `ms` milliseconds. */
export function idle(ms) {
  return new Idle(ms);
}

/** Return it from `poll` when a bounded input is exhausted: no more records, ever. */
export const FINISHED = Object.freeze({ finished: true });

/**
 * Base class of a source plugin. weir creates one instance per subtask and
 * calls `open(config, info)`, `restore(positions)` when the run resumes from
 * a checkpoint, then `poll(out, maxBytes)` whenever it wants records,
 * `snapshot()` at each checkpoint and `checkpointComplete(checkpoint,
 * position)` once that checkpoint is complete. `this.io` (an Io, set before
 * `open`) reaches what the section grants (`allow-http`, `connections`).
 */
export class Source {
  /** Tells `weir-js build` to build the `source` world. */
  static weirWorld = "source";
  open(config, info) {}
  restore(positions) {
    throw new UserError("a Source must define restore(positions)");
  }
  poll(out, maxBytes) {
    throw new UserError("a Source must define poll(out, maxBytes)");
  }
  snapshot() {
    throw new UserError("a Source must define snapshot()");
  }
  checkpointComplete(checkpoint, position) {}
}

/**
 * Base class of a sink plugin. weir creates one instance per subtask and
 * calls `open(config, info)`, `start(recovered)`, then `write(records)` for
 * every batch, `preCommit(checkpoint)` at each checkpoint barrier and
 * `commit(checkpoint, handle)` once that checkpoint is complete, and
 * `flush()` at the end of input. `this.io` (an Io, set before `open`)
 * reaches what the section grants.
 */
export class Sink {
  /** Tells `weir-js build` to build the `sink` world. */
  static weirWorld = "sink";
  open(config, info) {}
  /** `recovered`: null on a fresh start, else `[{ checkpoint, handle }]` to publish again. The default commits each. */
  start(recovered) {
    for (const c of recovered ?? []) this.commit(c.checkpoint, c.handle);
  }
  write(records) {
    throw new UserError("a Sink must define write(records)");
  }
  preCommit(checkpoint) {
    throw new UserError("a Sink must define preCommit(checkpoint)");
  }
  commit(checkpoint, handle) {
    throw new UserError("a Sink must define commit(checkpoint, handle)");
  }
  flush() {}
}

/** Anything thrown, as the UserError or ExternalError weir is told. */
function failure(e) {
  if (e instanceof UserError || e instanceof ExternalError) return e;
  if (e instanceof TransientError) return new ExternalError(e.message);
  return new UserError(describe(e));
}

function call(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    throw failure(e);
  }
}

function openConnector(Cls, Base, info, configJson, host) {
  let config;
  try {
    config = configJson ? JSON.parse(configJson) : {};
  } catch (e) {
    throw new UserError(`invalid config for "${info.name}": ${e.message}`);
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) throw new UserError(`the config of "${info.name}" is not a table`);
  const c = call(() => new Cls());
  if (!(c instanceof Base)) throw new UserError(`${Cls.name} does not extend weir-sdk's ${Base.name}`);
  c.io = new Io(host);
  call(() => c.open(config, info));
  return c;
}

const BAD_POLL = "return nothing, idle(ms) or FINISHED from poll";

/**
 * An opened source: what the component's exports call and what the test
 * harness calls. Every method throws UserError or ExternalError.
 */
export class SourceRuntime {
  constructor(Cls, info, configJson, host) {
    this.source = openConnector(Cls, Source, info, configJson, host);
  }
  restore(positions) {
    call(() => this.source.restore(positions));
  }
  /**
   * `{ tag: "ready", val: frames }`, `{ tag: "idle", val: ms }` or
   * `{ tag: "finished" }` (the WIT `poll-result`). Records emitted with
   * idle or FINISHED go out first as ready; the next poll says it again.
   */
  poll(maxBytes) {
    const out = new Output(Math.min(maxBytes, 1 << 20) + 256);
    const said = call(() => this.source.poll(out, maxBytes));
    if (said !== undefined && said !== null && !(said instanceof Idle) && said !== FINISHED) throw new UserError(`poll returned ${String(said)}: ${BAD_POLL}`);
    if (out.length || said === undefined || said === null) return { tag: "ready", val: out.w.finish() };
    if (said instanceof Idle) return { tag: "idle", val: said.ms };
    return { tag: "finished" };
  }
  snapshot() {
    return asBytes(call(() => this.source.snapshot()));
  }
  checkpointComplete(checkpoint, position) {
    call(() => this.source.checkpointComplete(checkpoint, position));
  }
}

/**
 * An opened sink: what the component's exports call and what the test
 * harness calls. Every method throws UserError or ExternalError.
 */
export class SinkRuntime {
  constructor(Cls, info, configJson, host) {
    this.sink = openConnector(Cls, Sink, info, configJson, host);
  }
  /** `recovered`: null or `[{ checkpoint, handle }]`. */
  start(recovered) {
    call(() => this.sink.start(recovered));
  }
  write(batch) {
    const records = [];
    try {
      frame.readFrames(batch, (ts, k, v, h, f) => records.push(new Record(k, v, ts, h, f)));
    } catch (e) {
      throw new UserError(`malformed batch: ${e.message}`);
    }
    call(() => this.sink.write(records));
  }
  preCommit(checkpoint) {
    return asBytes(call(() => this.sink.preCommit(checkpoint)));
  }
  commit(checkpoint, handle) {
    call(() => this.sink.commit(checkpoint, handle));
  }
  flush() {
    call(() => this.sink.flush());
  }
}
