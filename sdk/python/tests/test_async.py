"""Unit tests of the Python SDK's async operators, natively: one record per
call, the io calls and their failures, error classification."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import weir_sdk as weir
from weir_sdk.testing import AsyncHarness, OpenError, record


class Lookup(weir.AsyncOperator):
    def open(self, config, info):
        self.mode = config.get("mode", "all")

    def process(self, r, out, io):
        if self.mode == "raise":
            raise ValueError("boom")
        if self.mode == "error":
            raise weir.Error("bad input")
        rows = io.sql("pg", "SELECT $1, $2, $3, $4, $5", None, True, 3, 1.5, r.key_text)
        resp = io.post("http://h/x", r.value, [("x-a", "1")])
        kv = io.kv_get("s", r.key)
        out.emit(r.key, f"{rows.first()}|{rows.dicts()}|{resp.status}|{resp.json()}|{kv}", r.timestamp, r)
        out.forward(r)


class AsyncTest(unittest.TestCase):
    def test_calls_reach_the_host_and_answers_the_operator(self):
        h = AsyncHarness(
            Lookup,
            http=lambda m, u, hs, b: (201, [("content-type", "json")], b'{"got":%d}' % len(b)),
            sql=lambda c, q, p: (["a", "b"], [["1", None]]),
            kv={"s": {"k": "v"}},
        )
        out = h.process(record("k", "body", 9, [("h", "1")]))
        self.assertEqual(len(out), 2)
        self.assertEqual(out[0].text, "1|[{'a': '1', 'b': None}]|201|{'got': 4}|v")
        self.assertEqual((out[0].key, out[0].timestamp, out[0].headers), (b"k", 9, [(b"h", b"1")]))
        self.assertEqual((out[1].text, out[1].headers), ("body", [(b"h", b"1")]))
        self.assertEqual(
            h.io.calls,
            [("sql", "pg", "SELECT $1, $2, $3, $4, $5", [None, True, 3, 1.5, "k"]), ("http", "POST", "http://h/x", [("x-a", "1")], b"body"), ("kv", "s", "k")],
        )

    def test_failed_calls_are_transient_and_other_errors_permanent(self):
        h = AsyncHarness(Lookup, sql=lambda *a: (_ for _ in ()).throw(RuntimeError("no connection")))
        with self.assertRaises(weir.IoError) as e:
            h.process(record("k", "x"))
        self.assertIsInstance(e.exception, weir.Transient)
        self.assertEqual(str(e.exception), "no connection")
        with self.assertRaisesRegex(weir.Transient, "sql is not faked"):
            AsyncHarness(Lookup).process(record("k", "x"))
        with self.assertRaisesRegex(weir.Permanent, r"ValueError: boom \(raised at test_async.py:\d+ in process\)"):
            AsyncHarness(Lookup, {"mode": "raise"}).process(record("k", "x"))
        with self.assertRaisesRegex(weir.Permanent, "^bad input$"):
            AsyncHarness(Lookup, {"mode": "error"}).process(record("k", "x"))

    def test_a_bad_sql_parameter_and_a_bad_config_are_refused(self):
        class BadParam(weir.AsyncOperator):
            def process(self, r, out, io):
                io.sql("pg", "q", [1])

        with self.assertRaisesRegex(weir.Permanent, "TypeError: a SQL parameter is None, bool, int, float or str, not list"):
            AsyncHarness(BadParam, sql=lambda *a: []).process(record(None, "x"))
        with self.assertRaisesRegex(OpenError, "invalid config"):
            AsyncHarness(Lookup, "{nope")
        with self.assertRaises(TypeError):
            weir.export_async(Lookup.__base__.__base__)


if __name__ == "__main__":
    unittest.main()
