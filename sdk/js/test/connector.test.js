// Unit tests of the JavaScript SDK's Source and Sink under Node: what each
// call returns to weir (the poll-result variant, bytes), and which thrown
// values become a user error and which an external one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ExternalError, FINISHED, IoError, Sink, Source, TransientError, UserError, idle } from "../src/index.js";
import { SinkRuntime, SourceRuntime } from "../src/connector.js";
import { SinkHarness, SourceHarness, record } from "../src/testing.js";

const info = { pipeline: "p", name: "s", subtask: 0, parallelism: 1, checkpointing: true };

class Scripted extends Source {
  open(config) {
    this.script = config.script;
  }
  poll(out) {
    const step = this.script.shift();
    for (let i = 0; i < step.emit; i++) out.emit(null, `r${i}`, i);
    if (step.say === "idle") return idle(7);
    if (step.say === "finished") return FINISHED;
    if (step.say === "junk") return 42;
    if (step.say === "throw") null.boom();
  }
  snapshot() {
    return "at-1";
  }
  restore() {}
}

test("poll's return value becomes the poll-result variant", () => {
  const rt = new SourceRuntime(Scripted, info, JSON.stringify({ script: [{ emit: 2 }, { emit: 0, say: "idle" }, { emit: 1, say: "finished" }, { emit: 0, say: "finished" }, { emit: 0, say: "junk" }] }), null);
  const ready = rt.poll(1024);
  assert.equal(ready.tag, "ready");
  assert.equal(ready.val.length, 2 * 20 + 4, "two frames of 20-byte headers and 2-byte values");
  assert.deepEqual(rt.poll(1024), { tag: "idle", val: 7 });
  assert.equal(rt.poll(1024).tag, "ready", "records emitted with FINISHED go out first");
  assert.deepEqual(rt.poll(1024), { tag: "finished" });
  assert.throws(() => rt.poll(1024), (e) => e instanceof UserError && /poll returned 42/.test(e.message));
  assert.deepEqual(rt.snapshot(), new TextEncoder().encode("at-1"), "a string position is UTF-8 bytes");
});

test("a thrown TypeError is a user error naming its file and line; IoError and TransientError are external", () => {
  const h = new SourceHarness(Scripted, { script: [{ emit: 0, say: "throw" }] });
  assert.throws(() => h.poll(), (e) => e instanceof UserError && /^TypeError: .* \(thrown at connector.test.js:\d+ in poll\)$/.test(e.message));
  class Down extends Sink {
    write() {
      this.io.get("http://h/");
    }
    commit() {
      throw new TransientError("later");
    }
    preCommit() {
      throw new ExternalError("broker down");
    }
  }
  const s = new SinkHarness(Down, {}, { http: () => { throw new Error("refused"); } });
  assert.throws(() => s.write([record(null, "x")]), (e) => e instanceof ExternalError && e.message === "refused");
  assert.throws(() => s.commit(1, new Uint8Array(0)), (e) => e instanceof ExternalError && e.message === "later");
  assert.throws(() => s.preCommit(1), (e) => e instanceof ExternalError && e.message === "broker down");
  assert.ok(!(new IoError("x") instanceof UserError));
});

test("a sink gets Records, and start commits the recovered handles by default", () => {
  class Keep extends Sink {
    open() {
      this.got = [];
      this.published = [];
    }
    write(records) {
      for (const r of records) this.got.push([r.keyText, r.text, r.timestamp]);
    }
    preCommit() {
      return new Uint8Array([1, 2]);
    }
    commit(checkpoint, handle) {
      this.published.push([checkpoint, [...handle]]);
    }
  }
  const h = new SinkHarness(Keep);
  h.start([{ checkpoint: 3, handle: new Uint8Array([9]) }]);
  h.write([record("k", "v", 5), record(null, "w")]);
  h.commit(4, h.preCommit(4));
  assert.deepEqual(h.sink.got, [["k", "v", 5], [null, "w", 0]]);
  assert.deepEqual(h.sink.published, [[3, [9]], [4, [1, 2]]]);
  assert.throws(() => new SinkRuntime(Keep, info, "[1]", null), (e) => e instanceof UserError && e.message === 'the config of "s" is not a table');
  assert.throws(() => new SinkRuntime(Keep, info, "{", null), (e) => e instanceof UserError && /^invalid config for "s"/.test(e.message));
  assert.throws(() => new SinkRuntime(Scripted, info, "{}", null), (e) => e instanceof UserError && /does not extend weir-sdk's Sink/.test(e.message));
});
