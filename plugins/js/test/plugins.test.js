// The plugins' logic under Node (npm test), with weir-sdk's harness.
import { test } from "node:test";
import assert from "node:assert/strict";
import { codecs } from "weir-sdk";
import { Harness, OpenError, Rejected, record } from "weir-sdk/testing";
import JsonFilter from "../src/json-filter.js";
import RunningSum from "../src/running-sum.js";
import WindowCount from "../src/window-count.js";

const amount = (key, n) => record(key, `{"user":"${key}","amount":${n}}`);

test("running-sum sums per key across batches, in i64 state", () => {
  const h = new Harness(RunningSum);
  const out = h.process([amount("a", 1), amount("b", 10), amount("a", 2)]);
  assert.deepEqual(out.map((r) => r.text), ['{"key":"a","sum":1}', '{"key":"b","sum":10}', '{"key":"a","sum":3}']);
  assert.equal(out[1].keyText, "b");
  assert.equal(h.state("sum", "a", codecs.i64), 3n);
  assert.deepEqual(h.process([amount("a", -5), amount("b", 0)]).map((r) => r.text), ['{"key":"a","sum":-2}', '{"key":"b","sum":10}']);
  const t = new Harness(RunningSum, { field: "n", tag: "v2" }).process([record('a"b', '{"n":7}', 99)]);
  assert.deepEqual([t[0].text, t[0].timestamp], ['{"key":"a\\"b","sum":7,"version":"v2"}', 99]);
});

test("running-sum rejects what it cannot add up, changing no state", () => {
  const h = new Harness(RunningSum);
  assert.throws(() => h.process([amount("a", 1), record(null, '{"amount":1}')]), (e) => e instanceof Rejected && e.index === 1 && e.reason.includes("the record has no key"));
  assert.equal(h.state("sum", "a"), null);
  const reason = (value) => {
    try {
      h.process([record("k", value)]);
    } catch (e) {
      return e.reason;
    }
    assert.fail(`${value} was accepted`);
  };
  assert.match(reason('{"amt":1}'), /no field "amount" to add up/);
  assert.match(reason('{"amount":1.5}'), /is not an integer/);
  assert.match(reason('{"amount":"1"}'), /is not an integer/);
  assert.match(reason('{"amount":1,}'), /not a well-formed JSON object/);
  h.host.values.set("sum\0k", codecs.i64.encode(2n ** 63n - 1n));
  assert.match(reason('{"amount":1}'), /overflows/);
  assert.throws(() => new Harness(RunningSum, { feild: "x" }), OpenError);
});

test("window-count counts per key and window when the watermark passes", () => {
  const h = new Harness(WindowCount, { "size-ms": 10 });
  assert.deepEqual(h.process([record("a", "x", 1), record("a", "x", 9), record("b", "x", 5), record("a", "x", 12)]), []);
  assert.equal(h.timers.length, 3);
  const out = h.advanceWatermark(9);
  assert.deepEqual(out.map((r) => [r.text, r.timestamp]), [['{"key":"a","window_end":10,"count":2}', 9], ['{"key":"b","window_end":10,"count":1}', 9]]);
  assert.deepEqual(h.mapState("counts", "b"), []);
  assert.deepEqual(h.process([record("a", "x", 3)]), []);
  assert.deepEqual(h.advanceWatermark(9223372036854775807).map((r) => r.text), ['{"key":"a","window_end":20,"count":1}']);
  for (const config of [{}, { "size-ms": 0 }, { "size-ms": "10" }, { "size-ms": 10, x: 1 }]) assert.throws(() => new Harness(WindowCount, config), OpenError);
});

const run = (config, values) => new Harness(JsonFilter, config).process(values.map((v) => record("in", v)));

test("json-filter filters, projects and keys, copying JSON text verbatim", () => {
  const out = run({ filter: "amount >= 10", project: ["user", "amount"], key: "user" }, [
    '{"id":1,"user":"u1","amount":9}',
    '{"amount" : 10.0, "user":"u\\u0032", "x":[1,{"y":"]"}]}',
    '{"user":"u3","amount":17}',
  ]);
  assert.deepEqual(out.map((r) => [r.keyText, r.text]), [["u2", '{"user":"u\\u0032","amount":10.0}'], ["u3", '{"user":"u3","amount":17}']]);
  const raw = ' {"amount": 12} ';
  const fwd = new Harness(JsonFilter, { filter: "amount > 11" }).process([record("k", raw, 5, [["h", "1"]])]);
  assert.deepEqual([fwd[0].keyText, fwd[0].text, fwd[0].timestamp, fwd[0].headers.length], ["k", raw, 5, 1]);
  assert.deepEqual(run({ key: "k" }, ['{"k":1.50}', '{"k":true}']).map((r) => r.keyText), ["1.50", "true"]);
});

test("json-filter clause semantics", () => {
  const kept = (filter, value) => run({ filter }, [value]).length === 1;
  assert.ok(kept('user == "bob" and ok == true', '{"user":"bob","ok":true}'));
  assert.ok(!kept("x == 1", '{"y":1}'));
  assert.ok(!kept("x != 1", '{"x":null}'));
  assert.ok(kept("x == null", '{"x":null}'));
  assert.ok(kept("x < 9223372036854775807", '{"x":9223372036854775806}'));
  assert.ok(kept("x > 1.5", '{"x":2}'));
  assert.ok(kept('s < "b"', '{"s":"a\\u00e9"}'));
  assert.ok(kept('s > "\uffff"', '{"s":"\ud83d\ude00"}'), "code-point order, like UTF-8 bytes");
  assert.ok(kept('"odd name" >= -2.5e1', '{"odd name":-25}'));
});

test("json-filter rejections and config errors name the problem", () => {
  assert.throws(() => run({ filter: "amount >= 10" }, ['{"amount":10}', '{"amount":"17"}']), (e) => e.index === 1 && e.reason.includes('compares field "amount" with a number, but this record\'s "amount" is a string'));
  for (const v of ['{"a":1', "17", "", '{"a":1} x', '{"a":NaN}', '{"a":[1}']) {
    assert.throws(() => run({}, [v]), (e) => e.reason.startsWith("value is not a well-formed JSON object: "), v);
  }
  assert.throws(() => run({ key: "k" }, ['{"k":[1]}']), (e) => e.reason.includes("is an array, which cannot be a record key"));
  const cases = [
    [{ filter: "amount >> 10" }, 'invalid `filter` "amount >> 10"'],
    [{ filter: "" }, "`filter` is empty"],
    [{ filter: "amount = 10" }, "use == to compare for equality (at position 7)"],
    [{ filter: "user == bob" }, 'double-quoted string (user == "bob")'],
    [{ filter: "amount >= 10 or x == 1" }, "expected `and` or the end of the filter"],
    [{ filter: "amount >= 10 and" }, "expected a field name after `and`"],
    [{ filter: "a.b == 1" }, "nested paths"],
    [{ filter: "x < true" }, "true, false and null allow only == and !="],
    [{ filter: "x == [1]" }, "objects and arrays cannot be compared"],
    [{ filter: "x == 01" }, "leading zeros"],
    [{ project: ["a", "a"] }, 'lists the field "a" twice'],
    [{ projection: ["a"] }, "unknown field `projection`"],
  ];
  for (const [config, wanted] of cases) assert.throws(() => new Harness(JsonFilter, config), (e) => e instanceof OpenError && e.message.includes(wanted), JSON.stringify(config));
});

import OnlyErrors from "../src/only-errors.js";

test("only-errors, one function, keeps the records mentioning an error unchanged", () => {
  const out = new Harness(OnlyErrors).process([record("a", "all good"), record("b", "disk error", 5), record(null, "error")]);
  assert.deepEqual(out.map((r) => [r.keyText, r.text, r.timestamp]), [["b", "disk error", 5], [null, "error", 0]]);
});
