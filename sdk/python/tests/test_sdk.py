"""Unit tests of the Python SDK, natively: the encodings, the batching of
state (one get-many per prefetched state and one apply per batch), timers,
rejections and the simple entry points."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import weir_sdk as weir
from weir_sdk import _frame
from weir_sdk.testing import Harness, OpenError, Rejected, record


class Count(weir.Operator):
    prefetch = ("n",)

    def process(self, r, out, ctx):
        n = ctx.get("n", r.key, weir.I64, 0) + 1
        ctx.put("n", r.key, n, weir.I64)
        out.emit(r.key, str(n), r.timestamp)


class Frames(unittest.TestCase):
    def test_round_trip_with_headers_and_no_key(self):
        buf = bytearray()
        raw = _frame.encode_headers([("trace", b"\x00\x01"), (b"h", "v")])
        _frame.write_frame(buf, None, b"value", -5, raw)
        _frame.write_frame(buf, b"k", b"", 2**62, b"")
        got = list(_frame.read_frames(bytes(buf)))
        self.assertEqual(got, [(-5, None, b"value", raw), (2**62, b"k", b"", b"")])
        self.assertEqual(_frame.decode_headers(raw), [(b"trace", b"\x00\x01"), (b"h", b"v")])
        # The layout of the contract: 20-byte little-endian header, then the fields.
        self.assertEqual(bytes(buf[:20]), (-5).to_bytes(8, "little", signed=True) + b"\xff\xff\xff\xff" + (5).to_bytes(4, "little") + len(raw).to_bytes(4, "little"))

    def test_truncated_batches_are_errors(self):
        buf = bytearray()
        _frame.write_frame(buf, b"k", b"value", 0)
        with self.assertRaises(_frame.FrameError):
            list(_frame.read_frames(bytes(buf[:-1])))
        with self.assertRaises(_frame.FrameError):
            list(_frame.read_frames(bytes(buf[:10])))

    def test_get_many_response_with_repeats(self):
        resp = _frame.encode_get_many_response([b"a", None, ("repeat", 0), b""])
        self.assertEqual(_frame.read_get_many_response(resp, 4), [b"a", None, b"a", b""])
        with self.assertRaises(_frame.FrameError):
            _frame.read_get_many_response(_frame.encode_get_many_response([("repeat", 0)]), 1)

    def test_apply_ops_round_trip(self):
        ops = bytearray()
        _frame.encode_op(ops, _frame.PUT, b"s", b"k", b"v")
        _frame.encode_op(ops, _frame.MAP_CLEAR, b"m", b"k")
        self.assertEqual(ops[:1], b"\x00")
        self.assertEqual(_frame.decode_ops(bytes(ops)), [(0, "s", b"k", b"v"), (4, "m", b"k")])
        with self.assertRaises(_frame.FrameError):
            _frame.decode_ops(bytes(ops[:-1]))


class Batching(unittest.TestCase):
    def test_state_is_fetched_and_written_once_per_batch(self):
        h = Harness(Count)
        out = h.process([record("a", "x"), record("b", "x"), record("a", "x")])
        self.assertEqual([(r.key, r.value) for r in out], [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")])
        self.assertEqual(h.host.calls, {"get-many": 1, "apply": 1})
        self.assertEqual(h.state("n", "a", weir.I64), 2)
        h.process([record("a", "x")] * 100)
        self.assertEqual(h.host.calls, {"get-many": 2, "apply": 2})
        self.assertEqual(h.state("n", "a", weir.I64), 102)
        # Little-endian i64, as the Rust SDK keeps it.
        self.assertEqual(h.host.values[("n", b"a")], (102).to_bytes(8, "little"))

    def test_a_rejection_discards_the_batch_writes_and_outputs(self):
        class Picky(Count):
            def process(self, r, out, ctx):
                if r.value == b"bad":
                    raise weir.Error("bad record")
                super().process(r, out, ctx)

        h = Harness(Picky)
        with self.assertRaises(Rejected) as e:
            h.process([record("a", "x"), record("a", "bad")])
        self.assertEqual((e.exception.index, e.exception.message), (1, "bad record"))
        self.assertIsNone(h.state("n", "a", weir.I64))
        self.assertEqual(h.host.calls.get("apply"), None)
        self.assertEqual(h.process([record("a", "x")])[0].value, b"1")

    def test_other_exceptions_name_the_file_and_line(self):
        class Divide(weir.Operator):
            def process(self, r, out, ctx):
                out.emit(None, str(1 // int(r.value)))

        h = Harness(Divide)
        with self.assertRaises(Rejected) as e:
            h.process([record(None, "1"), record(None, "0")])
        self.assertEqual(e.exception.index, 1)
        self.assertRegex(e.exception.message, r"^ZeroDivisionError: integer division or modulo by zero \(raised at test_sdk\.py:\d+ in process\)$")

    def test_values_not_prefetched_are_read_once_per_key_and_batch(self):
        class Other(weir.Operator):
            def process(self, r, out, ctx):
                out.emit(None, ctx.get("config", "global", weir.STR, "none"))
                ctx.put("seen", r.key, r.value)

        h = Harness(Other)
        h.host.values[("config", b"global")] = b"on"
        out = h.process([record("a", "1"), record("b", "2"), record("a", "3")])
        self.assertEqual([r.value for r in out], [b"on"] * 3)
        self.assertEqual(h.host.calls, {"get": 1, "apply": 1})
        self.assertEqual(h.state("seen", "a"), b"3")

    def test_deletes(self):
        class Forget(Count):
            def process(self, r, out, ctx):
                ctx.delete("n", r.key)

        h = Harness(Count)
        h.process([record("a", "x")])
        h._rt.op.__class__ = Forget
        h.process([record("a", "x")])
        self.assertIsNone(h.state("n", "a"))

    def test_map_state_reads_see_the_batch_writes(self):
        class Maps(weir.Operator):
            def process(self, r, out, ctx):
                if r.value == b"clear":
                    ctx.map_clear("m", r.key)
                else:
                    mk, _, v = r.value.partition(b"=")
                    if v:
                        ctx.map_put("m", r.key, mk, v)
                    else:
                        ctx.map_remove("m", r.key, mk)
                entries = ctx.map_entries("m", r.key)
                out.emit(r.key, ",".join(f"{k.decode()}={v.decode()}" for k, v in entries))
                out.emit(r.key, ctx.map_get("m", r.key, "b", default=b"-"))

        h = Harness(Maps)
        out = h.process([record("k", "b=2"), record("k", "a=1"), record("k", "b"), record("j", "z=9")])
        self.assertEqual([r.value for r in out], [b"b=2", b"2", b"a=1,b=2", b"2", b"a=1", b"-", b"z=9", b"-"])
        self.assertEqual(h.host.calls.get("apply"), 1)
        self.assertEqual(h.map_state("m", "k"), {b"a": b"1"})
        out = h.process([record("k", "clear"), record("k", "c=3")])
        self.assertEqual([r.value for r in out], [b"", b"-", b"c=3", b"-"])
        self.assertEqual(h.map_state("m", "k"), {b"c": b"3"})

    def test_a_state_value_of_the_wrong_layout_is_a_clear_error(self):
        h = Harness(Count)
        h.host.values[("n", b"a")] = b"abc"
        with self.assertRaises(Rejected) as e:
            h.process([record("a", "x")])
        self.assertIn("state 'n' holds 3 bytes that do not decode as weir_sdk.I64", e.exception.message)

    def test_refused_writes_blame_the_batch(self):
        h = Harness(Count)

        def refuse(ops):
            raise weir.StateError("too-large", 16)

        h.host.apply = refuse
        with self.assertRaises(Rejected) as e:
            h.process([record("a", "x"), record("b", "x")])
        self.assertEqual(e.exception.index, 2)
        self.assertIn("larger than the host's limit of 16 bytes", e.exception.message)


class Lifecycle(unittest.TestCase):
    def test_open_gets_the_config_and_info(self):
        class Opened(weir.Operator):
            def open(self, config, info):
                if "bad" in config:
                    raise weir.Error("`bad` is not allowed")
                self.seen = (config, info.subtask, info.parallelism)

        h = Harness(Opened, {"x": 1}, subtask=1, parallelism=3)
        self.assertEqual(h.operator.seen, ({"x": 1}, 1, 3))
        with self.assertRaises(OpenError) as e:
            Harness(Opened, {"bad": 1})
        self.assertEqual(str(e.exception), "`bad` is not allowed")
        with self.assertRaises(OpenError) as e:
            Harness(Opened, "{nope")
        self.assertIn("invalid config for operator 'op'", str(e.exception))

    def test_timers_watermark_log_and_close(self):
        class Timed(weir.Operator):
            def process(self, r, out, ctx):
                ctx.register_timer(r.key, r.timestamp + 10)
                ctx.register_timer(r.key, 1000, weir.PROCESSING_TIME)
                ctx.log(f"watermark {ctx.watermark()}", "debug")

            def on_timer(self, t, out, ctx):
                out.emit(t.key, f"{t.domain.value} {t.timestamp}", t.timestamp)

            def close(self, out, ctx):
                out.emit(None, "bye")

        h = Harness(Timed)
        h.process([record("a", "", 5), record("b", "", 1)])
        self.assertEqual(h.logs, [("debug", f"watermark {-(2**63)}")] * 2)
        self.assertEqual([r.value for r in h.advance_watermark(14)], [b"event-time 11"])
        self.assertEqual([r.value for r in h.advance_watermark(20)], [b"event-time 15"])
        self.assertEqual([r.value for r in h.advance_processing_time(999)], [])
        self.assertEqual([(r.key, r.value) for r in h.advance_processing_time(1000)], [(b"a", b"processing-time 1000"), (b"b", b"processing-time 1000")])
        self.assertEqual(h.close()[0].value, b"bye")

    def test_headers_travel_with_forward_and_emit(self):
        class Tag(weir.Operator):
            def process(self, r, out, ctx):
                out.forward(r)
                out.emit(r.key, r.text.upper(), r.timestamp, r)
                out.emit(None, "x", 0, [("n", "v")])

        h = Harness(Tag)
        out = h.process([record("k", "v", 7, [("trace", "1")])])
        self.assertEqual([(r.key, r.value, r.timestamp, r.headers) for r in out], [
            (b"k", b"v", 7, [(b"trace", b"1")]),
            (b"k", b"V", 7, [(b"trace", b"1")]),
            (None, b"x", 0, [(b"n", b"v")]),
        ])

    def test_filter_and_map(self):
        h = Harness(weir.filter(lambda r: b"error" in r.value))
        self.assertEqual([r.value for r in h.process([record(None, "ok"), record(None, "an error")])], [b"an error"])
        h = Harness(weir.map(lambda r: None if r.value == b"drop" else r.text.upper()))
        out = h.process([record("k", "a", 3), record(None, "drop")])
        self.assertEqual([(r.key, r.value, r.timestamp) for r in out], [(b"k", b"A", 3)])

    def test_export_makes_a_handler_without_importing_the_bindings(self):
        handler = weir.export(Count)
        self.assertEqual(handler.__name__, "Handler")
        self.assertNotIn("wit_world", sys.modules)
        with self.assertRaises(TypeError):
            weir.export(lambda r: r)


class Join(weir.Operator):
    """Joins orders (input "orders") with payments (input "payments") by
    key: whichever side comes first waits in value state under the key, the
    other emits the pair. Every record's value is also tagged with its
    input's name, and a timer per key reports which input it sees (0)."""

    def process(self, r, out, ctx):
        side = ctx.input_names()[ctx.input()]
        out.emit(r.key, f"{side}:{r.text}", r.timestamp)
        other = "payment" if ctx.input() == 0 else "order"
        waiting = ctx.get(other, r.key, weir.STR)
        if waiting is None:
            ctx.put("order" if ctx.input() == 0 else "payment", r.key, r.text, weir.STR)
            ctx.register_timer(r.key, r.timestamp + 10)
        else:
            ctx.delete(other, r.key)
            order, payment = (r.text, waiting) if ctx.input() == 0 else (waiting, r.text)
            out.emit(r.key, f"joined {order}+{payment}", r.timestamp)

    def on_timer(self, t, out, ctx):
        out.emit(t.key, f"timer input {ctx.input()}", t.timestamp)


class SeveralInputs(unittest.TestCase):
    def test_each_batch_says_its_input_and_state_is_shared(self):
        h = Harness(Join, inputs=["orders", "payments"])
        out = h.process_input(0, [record("a", "o1", 1), record("b", "o2", 2)])
        self.assertEqual([r.text for r in out], ["orders:o1", "orders:o2"])
        paid = h.process_input(1, [record("a", "p1", 3), record("c", "p3", 4)])
        self.assertEqual([(r.key, r.text) for r in paid], [(b"a", "payments:p1"), (b"a", "joined o1+p1"), (b"c", "payments:p3")])
        # Keyed state is shared by the inputs: the payment found the order under "a".
        self.assertIsNone(h.state("order", "a"))
        self.assertEqual(h.state("order", "b", weir.STR), "o2")
        self.assertEqual(h.state("payment", "c", weir.STR), "p3")
        # ``process`` is input 0; outside ``process`` the input is 0 too.
        self.assertEqual([r.text for r in h.process([record("c", "o3", 5)])], ["orders:o3", "joined o3+p3"])
        self.assertEqual([r.text for r in h.advance_watermark(100)], ["timer input 0"] * 3)

    def test_the_input_is_asked_once_per_batch_the_names_once(self):
        h = Harness(Join, inputs=["orders", "payments"])
        h.process_input(1, [record(f"k{i}", "p") for i in range(50)])
        self.assertEqual(h.host.calls["inputs.current"], 1)
        h.process_input(0, [record("k1", "o"), record("k2", "o")])
        self.assertEqual(h.host.calls["inputs.current"], 2)
        # The names were asked for when the operator opened, and kept.
        self.assertNotIn("inputs.names", h.host.calls)

        # A rejected batch does not leave its input cached for the next one.
        class Picky(Join):
            def process(self, r, out, ctx):
                if r.text == "bad":
                    raise weir.Error(f"bad record on input {ctx.input()}")
                super().process(r, out, ctx)

        p = Harness(Picky, inputs=["orders", "payments"])
        with self.assertRaises(Rejected) as e:
            p.process_input(1, [record("a", "bad")])
        self.assertEqual(e.exception.message, "bad record on input 1")
        self.assertEqual([r.text for r in p.process_input(0, [record("a", "o")])], ["orders:o"])

    def test_one_input_by_default_and_unknown_inputs_are_test_errors(self):
        class Names(weir.Operator):
            def open(self, config, info):
                self.inputs = info.inputs

            def process(self, r, out, ctx):
                out.emit(None, f"{ctx.input()} {','.join(ctx.input_names())}")

        h = Harness(Names)
        self.assertEqual(h.operator.inputs, ["input"])
        self.assertEqual([r.text for r in h.process([record(None, "x")])], ["0 input"])
        with self.assertRaises(IndexError):
            h.process_input(1, [record(None, "x")])
        with self.assertRaises(TypeError):
            Harness(Names, inputs=[])
        with self.assertRaises(TypeError):
            Harness(Names, inputs="left")
        two = Harness(Names, inputs=["l", "r"])
        self.assertEqual(two.operator.inputs, ["l", "r"])
        self.assertEqual([r.text for r in two.process_input(1, [record(None, "x")])], ["1 l,r"])


if __name__ == "__main__":
    unittest.main()
