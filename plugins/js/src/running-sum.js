// running-sum in JavaScript: a running total per key, in the host's keyed state.
//
// The same operator as the Rust plugin plugins/running-sum, with the same
// config, state layout (state "sum", a little-endian i64) and output bytes:
// for each record, adds the integer in the JSON field `field` (default
// "amount") of its value to its key's total and emits
// {"key":"<key>","sum":<total>} (plus "version":"<tag>" when `tag` is set)
// with the record's key, timestamp and headers.
//
// JSON.parse reads numbers as doubles, so amounts must be integers of at
// most 2^53 in magnitude (the Rust version takes any 64-bit integer); the
// total is a BigInt and may use the full 64 bits.
import { Operator, WeirError, codecs } from "weir-sdk";

const SUM = "sum";
const utf8 = new TextDecoder("utf-8", { fatal: true });
const I64_MIN = -(2n ** 63n), I64_MAX = 2n ** 63n - 1n;

export default class RunningSum extends Operator {
  static prefetch = [SUM];

  open(config) {
    const unknown = Object.keys(config).filter((k) => k !== "field" && k !== "tag");
    if (unknown.length) throw new WeirError(`unknown config key "${unknown[0]}": running-sum takes \`field\` and \`tag\``);
    this.field = config.field ?? "amount";
    this.suffix = config.tag === undefined ? "}" : `,"version":${JSON.stringify(config.tag)}}`;
  }

  process(record, out, ctx) {
    if (record.key === null) {
      throw new WeirError(
        'the record has no key, and running-sum keeps one total per key: set `key` on the upstream operator (for example json-filter\'s key = "user") and partition = "hash" on this one',
      );
    }
    let key;
    try {
      key = utf8.decode(record.key);
    } catch {
      throw new WeirError("the record key is not UTF-8, so it cannot be written into the JSON output");
    }
    let value;
    try {
      value = record.json();
    } catch (e) {
      throw new WeirError(`value is not a well-formed JSON object: ${e.message}; the value is ${JSON.stringify(record.text.slice(0, 100))}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new WeirError(`value is not a well-formed JSON object: expected a JSON object ('{'); the value is ${JSON.stringify(record.text.slice(0, 100))}`);
    }
    if (!Object.hasOwn(value, this.field)) {
      throw new WeirError(`the value has no field ${JSON.stringify(this.field)} to add up; set \`field\` to the name of its numeric field`);
    }
    const amount = value[this.field];
    if (typeof amount !== "number" || !Number.isInteger(amount)) {
      throw new WeirError(`field ${JSON.stringify(this.field)} is not an integer: ${JSON.stringify(amount)}; running-sum adds up 64-bit integers`);
    }
    if (!Number.isSafeInteger(amount)) {
      throw new WeirError(`field ${JSON.stringify(this.field)} is ${amount}, beyond the integers JavaScript reads exactly (2^53); use the Rust running-sum for larger amounts`);
    }
    const before = ctx.get(SUM, record.key, codecs.i64, 0n);
    const total = before + BigInt(amount);
    if (total < I64_MIN || total > I64_MAX) {
      throw new WeirError(`the sum for key ${JSON.stringify(key)} overflows a 64-bit integer (${before} + ${amount})`);
    }
    ctx.put(SUM, record.key, total, codecs.i64);
    out.emit(record.key, `{"key":${JSON.stringify(key)},"sum":${total}${this.suffix}`, record.timestamp, record);
  }
}
