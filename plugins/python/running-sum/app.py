"""running-sum in Python: a running total per key, in the host's keyed state.

The same operator as the Rust plugin ``plugins/running-sum``, with the same
config, state layout (state ``sum``, a little-endian i64) and output bytes:
for each record, adds the integer in the JSON field ``field`` (default
``amount``) of its value to its key's total and emits
``{"key":"<key>","sum":<total>}`` (plus ``"version":"<tag>"`` when ``tag``
is set) with the record's key, timestamp and headers.

Build: ``python -m weir_sdk build app -o running_sum.wasm``.
"""

import json

import weir_sdk as weir

SUM = "sum"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


class RunningSum(weir.Operator):
    prefetch = (SUM,)

    def open(self, config, info):
        unknown = set(config) - {"field", "tag"}
        if unknown:
            raise weir.Error(f"unknown config key {sorted(unknown)[0]!r}: running-sum takes `field` and `tag`")
        self.field = config.get("field", "amount")
        tag = config.get("tag")
        self.suffix = "}" if tag is None else f',"version":{json.dumps(tag, ensure_ascii=False)}}}'

    def process(self, record, out, ctx):
        if record.key is None:
            raise weir.Error(
                "the record has no key, and running-sum keeps one total per key: set `key` on the upstream operator "
                '(for example json-filter\'s key = "user") and partition = "hash" on this one'
            )
        try:
            key = record.key.decode()
        except UnicodeDecodeError as e:
            raise weir.Error(f"the record key {record.key!r} is not UTF-8 (invalid byte at offset {e.start}), so it cannot be written into the JSON output") from None
        try:
            value = json.loads(record.value)
        except ValueError as e:
            raise weir.Error(f"value is not a well-formed JSON object: {e}; the value is {record.value[:100]!r}") from None
        if not isinstance(value, dict):
            raise weir.Error(f"value is not a well-formed JSON object: expected a JSON object ('{{'); the value is {record.value[:100]!r}")
        if self.field not in value:
            raise weir.Error(f"the value has no field {json.dumps(self.field)} to add up; set `field` to the name of its numeric field")
        amount = value[self.field]
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise weir.Error(f"field {json.dumps(self.field)} is not an integer: {json.dumps(amount)}; running-sum adds up 64-bit integers")
        if not I64_MIN <= amount <= I64_MAX:
            raise weir.Error(f"field {json.dumps(self.field)} is an integer too large for 64 bits: {amount}; running-sum adds up 64-bit integers")
        total = ctx.get(SUM, record.key, weir.I64, 0)
        if not I64_MIN <= total + amount <= I64_MAX:
            raise weir.Error(f"the sum for key {json.dumps(key)} overflows a 64-bit integer ({total} + {amount})")
        total += amount
        ctx.put(SUM, record.key, total, weir.I64)
        out.emit(record.key, f'{{"key":{json.dumps(key, ensure_ascii=False)},"sum":{total}{self.suffix}', record.timestamp, record)


Handler = weir.export(RunningSum)
