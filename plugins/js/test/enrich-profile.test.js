// enrich-profile's logic under Node (npm test), with weir-sdk's AsyncHarness.
import { test } from "node:test";
import assert from "node:assert/strict";
import { IoError, PermanentError, TransientError } from "weir-sdk";
import { AsyncHarness, OpenError, record } from "weir-sdk/testing";
import EnrichProfile, { sortedJson } from "../src/enrich-profile.js";

test("enrich-profile adds the profile from the key-value store", () => {
  const h = new AsyncHarness(EnrichProfile, { lookup: "kv", store: "p" }, { kv: { p: { u1: '{"tier":"gold"}' } } });
  const out = h.process(record("k", '{"user":"u1","id":1}', 7));
  assert.deepEqual(out.map((r) => [r.keyText, r.text, r.timestamp]), [["k", '{"id":1,"profile":{"tier":"gold"},"user":"u1"}', 7]]);
  assert.deepEqual(h.io.calls, [["kv", "p", "u1"]]);
  assert.equal(h.process(record(null, '{"user":"u2"}'))[0].text, '{"profile":null,"user":"u2"}');
  const byId = new AsyncHarness(EnrichProfile, { lookup: "kv", store: "p", field: "id" }, { kv: { p: { 42: "plain" } } });
  assert.equal(byId.process(record(null, '{"id":42}'))[0].text, '{"id":42,"profile":"plain"}');
});

test("enrich-profile's sql lookup takes the first column of the first row", () => {
  const h = new AsyncHarness(EnrichProfile, { lookup: "sql", connection: "pg", query: "SELECT p FROM t WHERE u = $1" }, { sql: () => [['{"a":1}', "x"]] });
  assert.equal(h.process(record(null, '{"user":"u"}'))[0].text, '{"profile":{"a":1},"user":"u"}');
  assert.deepEqual(h.io.calls, [["sql", "pg", "SELECT p FROM t WHERE u = $1", ["u"]]]);
  const none = new AsyncHarness(EnrichProfile, { lookup: "sql", connection: "pg", query: "q" }, { sql: () => [] });
  assert.equal(none.process(record(null, '{"user":"u"}'))[0].text, '{"profile":null,"user":"u"}');
});

test("enrich-profile classifies HTTP statuses and failures", () => {
  const answers = { a: [200, '{"name":"a"}'], b: [404, ""], c: [503, "busy"], d: [400, ""] };
  const http = (method, url) => {
    if (url.endsWith("/down")) throw new Error("connection refused");
    return answers[url.split("/").pop()];
  };
  const h = new AsyncHarness(EnrichProfile, { lookup: "http", url: "http://h/p/{key}" }, { http });
  assert.equal(h.process(record(null, '{"user":"a"}'))[0].text, '{"profile":{"name":"a"},"user":"a"}');
  assert.equal(h.process(record(null, '{"user":"b"}'))[0].text, '{"profile":null,"user":"b"}');
  assert.throws(() => h.process(record(null, '{"user":"c"}')), (e) => e instanceof TransientError && e.message.includes("HTTP 503: busy"));
  assert.throws(() => h.process(record(null, '{"user":"d"}')), PermanentError);
  assert.throws(() => h.process(record(null, '{"user":"down"}')), (e) => e instanceof IoError && e instanceof TransientError && e.message === "connection refused");
  assert.deepEqual(h.io.calls[0].slice(0, 3), ["http", "GET", "http://h/p/a"]);
});

test("enrich-profile: bad input is permanent, a bad config refused", () => {
  const h = new AsyncHarness(EnrichProfile, { lookup: "kv", store: "p" }, { kv: {} });
  for (const bad of ["nope", "[1]", '{"user":null}', '{"other":1}']) assert.throws(() => h.process(record(null, bad)), PermanentError, bad);
  assert.throws(() => new AsyncHarness(EnrichProfile, { lookup: "sql", connection: "c" }), (e) => e instanceof OpenError && e.message.includes("needs `query`"));
  assert.throws(() => new AsyncHarness(EnrichProfile, { lookup: "kv", stor: "p" }), (e) => e instanceof OpenError && e.message.includes("unknown field `stor`"));
});

test("sortedJson writes keys in code point order like serde_json", () => {
  assert.equal(sortedJson({ b: [1, { d: null, c: true }], a: "x\n", "\u{1F600}": 1, "\uFFFF": 2 }), '{"a":"x\\n","b":[1,{"c":true,"d":null}],"\uFFFF":2,"\u{1F600}":1}');
});

test("an operator's unexpected throw is permanent and names the file and line", async () => {
  const { AsyncOperator } = await import("weir-sdk");
  class Buggy extends AsyncOperator {
    process(r) {
      return r.nothing.here;
    }
  }
  assert.throws(() => new AsyncHarness(Buggy).process(record(null, "x")), (e) => e instanceof PermanentError && /TypeError: .* \(thrown at enrich-profile\.test\.js:\d+ in process\)/.test(e.message));
});
