// counter-source: a deterministic source written with weir-sdk's Source.
//
// Emits {"id": n} (key n, timestamp n) for every n in 0..count with
// n % parallelism == subtask: subtask 0 of 2 counts 0, 2, 4... Its position
// is the next n, eight bytes little-endian, which weir keeps in its
// checkpoints: a restarted pipeline resumes where the checkpoint left off,
// and with an exactly-once sink writes every number once. A restore must
// keep the parallelism (each subtask resumes from its own position).
//
//   [sources.numbers]
//   type = "wasm"
//   plugin = "counter-source"
//   parallelism = 2
//   config = { count = 1000000, per-poll = 100, pause-ms = 5 }
//
// `per-poll` caps the records of one poll; with `pause-ms` the poll after
// one that emitted says "idle" for that long, which paces the source
// without reading a clock.
import { FINISHED, Source, UserError, codecs, idle } from "weir-sdk";

const KNOWN = new Set(["count", "per-poll", "pause-ms"]);

export default class Counter extends Source {
  open(config, info) {
    const unknown = Object.keys(config).filter((k) => !KNOWN.has(k));
    if (unknown.length) throw new UserError(`config: unknown field(s) ${unknown.sort().join(", ")}`);
    if (!Number.isSafeInteger(config.count) || config.count < 0) throw new UserError("config.count: a whole number of records (at least 0) is required");
    this.count = config.count;
    this.perPoll = config["per-poll"] ?? 100;
    this.pauseMs = config["pause-ms"] ?? 0;
    if (this.perPoll < 1) throw new UserError("config.per-poll must be at least 1");
    this.subtask = info.subtask;
    this.parallelism = info.parallelism;
    this.next = info.subtask;
    this.rest = false;
  }

  restore(positions) {
    if (positions.length !== this.parallelism) {
      throw new UserError(`the checkpoint was taken at parallelism ${positions.length}; counter-source restores only at the same parallelism`);
    }
    const own = positions[this.subtask];
    if (own.length) {
      if (own.length !== 8) throw new UserError(`a position of ${own.length} bytes is not counter-source's`);
      this.next = Number(codecs.u64.decode(own));
    }
  }

  poll(out, maxBytes) {
    if (this.rest) {
      this.rest = false;
      return idle(this.pauseMs);
    }
    while (this.next < this.count && out.length < this.perPoll && out.size < maxBytes) {
      out.emit(String(this.next), `{"id":${this.next}}`, this.next);
      this.next += this.parallelism;
    }
    if (!out.length) return FINISHED;
    this.rest = this.pauseMs > 0;
  }

  snapshot() {
    return codecs.u64.encode(this.next);
  }
}
