// webhook-sink in JavaScript, written with weir-sdk's Sink.
//
// POSTs records (JSON values) to one URL as JSON arrays of up to `batch`
// records. With checkpoints, each epoch's request bodies are built when it
// is sealed (preCommit), kept in weir's checkpoint as the handle, and sent
// when the checkpoint completes (commit), each with the header
// `Idempotency-Key: weir-PIPELINE-SINK-SUBTASK-CHECKPOINT-N`. A restarted
// pipeline sends the handles of its checkpoint again with the same keys and
// bodies, so a receiver that deduplicates by key sees every record exactly
// once. Without checkpoints it sends as batches fill up (at-least-once).
//
//   [sinks.hook]
//   type = "wasm"
//   plugin = "webhook-sink-js"
//   allow-http = ["127.0.0.1:8080"]
//   config = { url = "http://127.0.0.1:8080/in", batch = 500 }
//
// Unlike the Rust and Python versions it does not wait and retry itself
// (a component built with componentize-js has no blocking sleep): a request
// that gets no answer, a 5xx or a 429 is an ExternalError, which stops the
// pipeline; `weir serve` restarts it from its last checkpoint with backoff,
// and the restart sends the same bodies under the same keys. A 4xx answer
// is a UserError naming the request's key: the receiver refused the data.
import { ExternalError, IoError, Sink, UserError, codecs } from "weir-sdk";

const KNOWN = new Set(["url", "batch", "idempotency-header"]);
const COMMA = 0x2c, OPEN = 0x5b, CLOSE = 0x5d;

/** JSON arrays of the values given, at most `batch` to an array. */
export class Bodies {
  constructor(batch) {
    this.batch = batch;
    this.sealed = [];
    this.open = [];
  }
  push(value) {
    this.open.push(value);
    if (this.open.length === this.batch) this.sealOpen();
  }
  sealOpen() {
    if (!this.open.length) return;
    const size = this.open.reduce((n, v) => n + v.length + 1, 1);
    const body = new Uint8Array(size);
    let at = 0;
    body[at++] = OPEN;
    this.open.forEach((v, i) => {
      if (i) body[at++] = COMMA;
      body.set(v, at);
      at += v.length;
    });
    body[at] = CLOSE;
    this.sealed.push(body);
    this.open = [];
  }
  takeSealed() {
    const sealed = this.sealed;
    this.sealed = [];
    return sealed;
  }
  /** Every body, the open one sealed, as one handle (`codecs.list`: `[len u32 LE][body]...`). */
  takeAll() {
    this.sealOpen();
    return codecs.list.encode(this.takeSealed());
  }
}

export default class WebhookSink extends Sink {
  open(config, info) {
    const unknown = Object.keys(config).filter((k) => !KNOWN.has(k));
    if (unknown.length) throw new UserError(`config: unknown field(s) ${unknown.sort().join(", ")}`);
    if (typeof config.url !== "string" || !config.url.startsWith("http://")) throw new UserError(`config.url: ${JSON.stringify(config.url)} must be a plain http:// URL`);
    this.url = config.url;
    const batch = config.batch ?? 500;
    if (!Number.isSafeInteger(batch) || batch < 1) throw new UserError("config.batch must be at least 1");
    this.header = config["idempotency-header"] ?? "Idempotency-Key";
    this.keyPrefix = `weir-${info.pipeline}-${info.name}-${info.subtask}`;
    this.checkpointing = info.checkpointing;
    this.bodies = new Bodies(batch);
    this.sent = 0; // requests sent without checkpoints (part of their keys)
  }

  send(key, body) {
    let r;
    try {
      r = this.io.post(this.url, body, [["Content-Type", "application/json"], [this.header, key]]);
    } catch (e) {
      if (e instanceof IoError) throw new ExternalError(`POST ${this.url} with key ${key} failed: ${e.message}`);
      throw e;
    }
    if (r.status >= 200 && r.status < 300) return;
    if (r.status === 429 || r.status >= 500) throw new ExternalError(`POST ${this.url} with key ${key}: the receiver answered ${r.status}`);
    throw new UserError(`${this.url} refused the request with key ${key} (${body.length} bytes) with status ${r.status}: ${r.text.slice(0, 200)}`);
  }

  write(records) {
    for (const r of records) {
      try {
        JSON.parse(r.text);
      } catch (e) {
        throw new UserError(`a record is not JSON (${e.message}): ${JSON.stringify(r.text.slice(0, 80))}; this sink sends JSON arrays`);
      }
      this.bodies.push(r.value);
    }
    if (!this.checkpointing) for (const body of this.bodies.takeSealed()) this.send(`${this.keyPrefix}-run-${++this.sent}`, body);
  }

  preCommit(checkpoint) {
    return this.bodies.takeAll();
  }

  commit(checkpoint, handle) {
    codecs.list.decode(handle).forEach((body, i) => this.send(`${this.keyPrefix}-${checkpoint}-${i}`, body));
  }

  flush() {
    // With checkpoints the final one publishes the rest.
    this.bodies.sealOpen();
    if (!this.checkpointing) for (const body of this.bodies.takeSealed()) this.send(`${this.keyPrefix}-run-${++this.sent}`, body);
  }
}
