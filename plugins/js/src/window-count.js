// window-count in JavaScript: records per key in tumbling event-time windows.
//
// The same operator as the Rust plugin plugins/window-count, with the same
// config (`size-ms`), state layout (map state "counts": key -> window end as
// 8 little-endian bytes -> count as 8 little-endian bytes) and output bytes:
// once the watermark passes a window's end, an event-time timer emits
// {"key":"<key>","window_end":<ms>,"count":<n>} stamped with the window's
// last millisecond.
import { Operator, WeirError, codecs } from "weir-sdk";

const COUNTS = "counts";

function windowKey(end) {
  return codecs.i64.encode(end);
}

export default class WindowCount extends Operator {
  open(config) {
    const unknown = Object.keys(config).filter((k) => k !== "size-ms");
    if (unknown.length) throw new WeirError(`unknown config key "${unknown[0]}": window-count takes \`size-ms\``);
    const size = config["size-ms"];
    if (!Number.isSafeInteger(size) || size <= 0) throw new WeirError("`size-ms` must be a positive number of milliseconds");
    this.size = size;
  }

  process(record, out, ctx) {
    if (record.key === null) throw new WeirError('window-count needs keyed records: set `key` upstream and partition = "hash"');
    const end = Math.floor(record.timestamp / this.size) * this.size + this.size;
    if (end - 1 <= ctx.watermark()) return; // late: its window was already emitted
    const count = ctx.mapGet(COUNTS, record.key, windowKey(end), codecs.u64, 0n);
    ctx.mapPut(COUNTS, record.key, windowKey(end), count + 1n, codecs.u64);
    if (count === 0n) ctx.registerTimer(record.key, end - 1);
  }

  onTimer(timer, out, ctx) {
    const end = timer.timestamp + 1;
    const count = ctx.mapGet(COUNTS, timer.key, windowKey(end), codecs.u64);
    if (count === null) return;
    ctx.mapRemove(COUNTS, timer.key, windowKey(end));
    const key = new TextDecoder().decode(timer.key);
    out.emit(timer.key, `{"key":${JSON.stringify(key)},"window_end":${end},"count":${count}}`, timer.timestamp);
  }
}
