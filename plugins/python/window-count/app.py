"""window-count in Python: records per key in tumbling event-time windows.

The same operator as the Rust plugin ``plugins/window-count``, with the
same config (``size-ms``), state layout (map state ``counts``: key ->
window end as 8 little-endian bytes -> count as 8 little-endian bytes) and
output bytes: once the watermark passes a window's end, an event-time
timer emits ``{"key":"<key>","window_end":<ms>,"count":<n>}`` stamped with
the window's last millisecond.

Build: ``python -m weir_sdk build app -o window_count.wasm``.
"""

import json
import struct

import weir_sdk as weir

COUNTS = "counts"
_I64 = struct.Struct("<q")


class WindowCount(weir.Operator):
    def open(self, config, info):
        unknown = set(config) - {"size-ms"}
        if unknown:
            raise weir.Error(f"unknown config key {sorted(unknown)[0]!r}: window-count takes `size-ms`")
        size = config.get("size-ms")
        if isinstance(size, bool) or not isinstance(size, int):
            raise weir.Error("`size-ms` must be a positive number of milliseconds")
        if size <= 0:
            raise weir.Error("`size-ms` must be a positive number of milliseconds")
        self.size = size

    def process(self, record, out, ctx):
        if record.key is None:
            raise weir.Error('window-count needs keyed records: set `key` upstream and partition = "hash"')
        end = record.timestamp // self.size * self.size + self.size
        if end - 1 <= ctx.watermark():
            return  # late: its window was already emitted
        window = _I64.pack(end)
        count = ctx.map_get(COUNTS, record.key, window, weir.U64, 0)
        ctx.map_put(COUNTS, record.key, window, count + 1, weir.U64)
        if count == 0:
            ctx.register_timer(record.key, end - 1)

    def on_timer(self, timer, out, ctx):
        end = timer.timestamp + 1
        window = _I64.pack(end)
        count = ctx.map_get(COUNTS, timer.key, window, weir.U64)
        if count is None:
            return
        ctx.map_remove(COUNTS, timer.key, window)
        key = timer.key.decode(errors="replace")
        out.emit(timer.key, f'{{"key":{json.dumps(key, ensure_ascii=False)},"window_end":{end},"count":{count}}}', timer.timestamp)


Handler = weir.export(WindowCount)
