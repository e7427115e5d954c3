"""enrich-profile's logic, natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

import weir_sdk as weir
from weir_sdk.testing import AsyncHarness, OpenError, record

from app import EnrichProfile


class EnrichProfileTest(unittest.TestCase):
    def test_adds_the_profile_from_the_kv_store(self):
        h = AsyncHarness(EnrichProfile, {"lookup": "kv", "store": "p"}, kv={"p": {"u1": '{"tier":"gold"}'}})
        out = h.process(record("k", '{"user":"u1","id":1}', 7))
        self.assertEqual([(r.key, r.text, r.timestamp) for r in out], [(b"k", '{"id":1,"profile":{"tier":"gold"},"user":"u1"}', 7)])
        self.assertEqual(h.io.calls, [("kv", "p", "u1")])
        # No profile: null; not JSON: a string.
        self.assertEqual(h.process(record(None, '{"user":"u2"}'))[0].text, '{"profile":null,"user":"u2"}')
        h = AsyncHarness(EnrichProfile, {"lookup": "kv", "store": "p", "field": "id"}, kv={"p": {"42": "plain"}})
        self.assertEqual(h.process(record(None, '{"id":42}'))[0].text, '{"id":42,"profile":"plain"}')

    def test_sql_takes_the_first_column_of_the_first_row(self):
        h = AsyncHarness(EnrichProfile, {"lookup": "sql", "connection": "pg", "query": "SELECT p FROM t WHERE u = $1"}, sql=lambda c, q, p: [['{"a":1}', "x"]])
        self.assertEqual(h.process(record(None, '{"user":"u"}'))[0].text, '{"profile":{"a":1},"user":"u"}')
        self.assertEqual(h.io.calls, [("sql", "pg", "SELECT p FROM t WHERE u = $1", ["u"])])
        h = AsyncHarness(EnrichProfile, {"lookup": "sql", "connection": "pg", "query": "q"}, sql=lambda c, q, p: [])
        self.assertEqual(h.process(record(None, '{"user":"u"}'))[0].text, '{"profile":null,"user":"u"}')

    def test_http_statuses_and_failures_are_classified(self):
        answers = {"a": (200, b'{"name":"a"}'), "b": (404, b""), "c": (503, b"busy"), "d": (400, b"")}

        def http(method, url, headers, body):
            if url.endswith("/down"):
                raise ConnectionError("connection refused")
            return answers[url.rsplit("/", 1)[1]]

        h = AsyncHarness(EnrichProfile, {"lookup": "http", "url": "http://h/p/{key}"}, http=http)
        self.assertEqual(h.process(record(None, '{"user":"a"}'))[0].text, '{"profile":{"name":"a"},"user":"a"}')
        self.assertEqual(h.process(record(None, '{"user":"b"}'))[0].text, '{"profile":null,"user":"b"}')
        with self.assertRaisesRegex(weir.Transient, "HTTP 503: busy"):
            h.process(record(None, '{"user":"c"}'))
        with self.assertRaises(weir.Permanent):
            h.process(record(None, '{"user":"d"}'))
        with self.assertRaisesRegex(weir.IoError, "connection refused"):
            h.process(record(None, '{"user":"down"}'))
        self.assertEqual(h.io.calls[0], ("http", "GET", "http://h/p/a", [], b""))

    def test_bad_input_is_permanent_and_bad_config_refused(self):
        h = AsyncHarness(EnrichProfile, {"lookup": "kv", "store": "p"}, kv={})
        for bad in ["nope", "[1]", '{"user":null}', '{"other":1}']:
            with self.assertRaises(weir.Permanent, msg=bad):
                h.process(record(None, bad))
        with self.assertRaisesRegex(OpenError, "needs `query`"):
            AsyncHarness(EnrichProfile, {"lookup": "sql", "connection": "c"})
        with self.assertRaisesRegex(OpenError, "unknown field `stor`"):
            AsyncHarness(EnrichProfile, {"lookup": "kv", "stor": "p"})


if __name__ == "__main__":
    unittest.main()
