// webhook-sink's logic under Node (npm test), with weir-sdk's SinkHarness.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ExternalError, UserError, codecs } from "weir-sdk";
import { SinkHarness, record } from "weir-sdk/testing";
import WebhookSink from "../src/webhook-sink.js";

const ok = () => [200, ""];
const text = (b) => new TextDecoder().decode(b);
const sent = (h) => h.io.calls.map(([, method, url, headers, body]) => [method, url, Object.fromEntries(headers)["Idempotency-Key"], text(body)]);

test("webhook-sink sends an epoch at commit, in batches with one key each", () => {
  const h = new SinkHarness(WebhookSink, { url: "http://h/in", batch: 2 }, { http: ok });
  h.start();
  h.write([record(null, "1"), record(null, '{"a":2}'), record(null, "3")]);
  assert.deepEqual(h.io.calls, [], "nothing is sent before the checkpoint completes");
  const handle = h.preCommit(7);
  assert.deepEqual(codecs.list.decode(handle).map(text), ['[1,{"a":2}]', "[3]"]);
  h.commit(7, handle);
  assert.deepEqual(sent(h), [
    ["POST", "http://h/in", "weir-test-connector-0-7-0", '[1,{"a":2}]'],
    ["POST", "http://h/in", "weir-test-connector-0-7-1", "[3]"],
  ]);
});

test("webhook-sink sends recovered handles again with the same keys", () => {
  const first = new SinkHarness(WebhookSink, { url: "http://h/in" }, { http: ok });
  first.write([record(null, '{"id":1}')]);
  const handle = first.preCommit(3);
  const h = new SinkHarness(WebhookSink, { url: "http://h/in" }, { http: ok });
  h.start([{ checkpoint: 3, handle }]);
  assert.deepEqual(sent(h), [["POST", "http://h/in", "weir-test-connector-0-3-0", '[{"id":1}]']]);
});

test("webhook-sink's failures are external or user errors", () => {
  const handle = (() => {
    const h = new SinkHarness(WebhookSink, { url: "http://h/in" }, { http: ok });
    h.write([record(null, "1")]);
    return h.preCommit(1);
  })();
  const down = new SinkHarness(WebhookSink, { url: "http://h/in" }, { http: () => { throw new Error("connection refused"); } });
  assert.throws(() => down.commit(1, handle), (e) => e instanceof ExternalError && e.message === "POST http://h/in with key weir-test-connector-0-1-0 failed: connection refused");
  const busy = new SinkHarness(WebhookSink, { url: "http://h/in" }, { http: () => [503, "busy"] });
  assert.throws(() => busy.commit(1, handle), (e) => e instanceof ExternalError && /answered 503/.test(e.message));
  const refused = new SinkHarness(WebhookSink, { url: "http://h/in" }, { http: () => [400, "no"] });
  assert.throws(() => refused.commit(1, handle), (e) => e instanceof UserError && /key weir-test-connector-0-1-0 .* status 400: no/.test(e.message));
  assert.throws(() => refused.write([record(null, "not json")]), (e) => e instanceof UserError && /a record is not JSON/.test(e.message));
  assert.throws(() => new SinkHarness(WebhookSink, { url: "https://x" }), (e) => e instanceof UserError && e.message === 'config.url: "https://x" must be a plain http:// URL');
});

test("webhook-sink without checkpoints sends full batches as written", () => {
  const h = new SinkHarness(WebhookSink, { url: "http://h/in", batch: 2 }, { http: ok }, { checkpointing: false });
  h.write([record(null, "1"), record(null, "2"), record(null, "3")]);
  assert.deepEqual(sent(h).map((c) => c[3]), ["[1,2]"]);
  h.flush();
  assert.deepEqual(sent(h)[1].slice(2), ["weir-test-connector-0-run-2", "[3]"]);
});
