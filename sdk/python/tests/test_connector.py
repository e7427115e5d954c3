"""Unit tests of the Python SDK's Source and Sink, natively: what each call
returns to weir (the poll-result variant, bytes), and which exceptions
become a user error and which an external one."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import weir_sdk as weir
from weir_sdk._connector import ConnectorInfo, SinkRuntime, SourceRuntime
from weir_sdk.testing import SinkHarness, SourceHarness, record

INFO = ConnectorInfo("p", "s", 0, 1, True)


class Scripted(weir.Source):
    def open(self, config, info):
        self.script = config["script"]

    def poll(self, out, max_bytes):
        step = self.script.pop(0)
        for i in range(step["emit"]):
            out.emit(None, f"r{i}", i)
        say = step.get("say")
        if say == "idle":
            return weir.idle(7)
        if say == "finished":
            return weir.FINISHED
        if say == "junk":
            return 42
        if say == "raise":
            return {}["missing"]
        return None

    def snapshot(self):
        return "at-1"

    def restore(self, positions):
        pass


class Keep(weir.Sink):
    def open(self, config, info):
        self.got, self.published = [], []

    def write(self, records):
        self.got += [(r.key_text, r.text, r.timestamp) for r in records]

    def pre_commit(self, checkpoint):
        return b"\x01\x02"

    def commit(self, checkpoint, handle):
        self.published.append((checkpoint, handle))


class ConnectorTest(unittest.TestCase):
    def test_polls_return_value_becomes_the_poll_result_variant(self):
        script = [{"emit": 2}, {"emit": 0, "say": "idle"}, {"emit": 1, "say": "finished"}, {"emit": 0, "say": "finished"}, {"emit": 0, "say": "junk"}]
        rt = SourceRuntime(Scripted, INFO, json.dumps({"script": script}), None)
        what, frames = rt.poll(1024)
        self.assertEqual((what, len(frames)), ("ready", 2 * 20 + 4))
        self.assertEqual(rt.poll(1024), ("idle", 7))
        self.assertEqual(rt.poll(1024)[0], "ready", "records emitted with FINISHED go out first")
        self.assertEqual(rt.poll(1024), ("finished", None))
        with self.assertRaisesRegex(weir.UserError, "poll returned 42"):
            rt.poll(1024)
        self.assertEqual(rt.snapshot(), b"at-1", "a str position is UTF-8 bytes")

    def test_exceptions_become_user_or_external_errors(self):
        h = SourceHarness(Scripted, {"script": [{"emit": 0, "say": "raise"}]})
        with self.assertRaisesRegex(weir.UserError, r"^KeyError: 'missing' \(raised at test_connector.py:\d+ in poll\)$"):
            h.poll()

        class Down(weir.Sink):
            def write(self, records):
                self.io.get("http://h/")

            def commit(self, checkpoint, handle):
                raise weir.Transient("later")

            def pre_commit(self, checkpoint):
                raise weir.ExternalError("broker down")

        s = SinkHarness(Down, http=lambda *a: 1 / 0)
        with self.assertRaisesRegex(weir.ExternalError, "^division by zero$"):
            s.write([record(None, "x")])
        with self.assertRaisesRegex(weir.ExternalError, "^later$"):
            s.commit(1, b"")
        with self.assertRaisesRegex(weir.ExternalError, "^broker down$"):
            s.pre_commit(1)

    def test_a_sink_gets_records_and_start_commits_recovered_handles(self):
        h = SinkHarness(Keep)
        h.start([(3, b"\x09")])
        h.write([record("k", "v", 5), record(None, "w")])
        h.commit(4, h.pre_commit(4))
        self.assertEqual(h.sink.got, [("k", "v", 5), (None, "w", 0)])
        self.assertEqual(h.sink.published, [(3, b"\x09"), (4, b"\x01\x02")])
        with self.assertRaisesRegex(weir.UserError, "^the config of 's' is not a table$"):
            SinkRuntime(Keep, INFO, "[1]", None)
        with self.assertRaisesRegex(weir.UserError, "^invalid config for 's'"):
            SinkRuntime(Keep, INFO, "{", None)
        with self.assertRaisesRegex(weir.UserError, "is not a weir_sdk.Sink"):
            SinkRuntime(Scripted, INFO, "{}", None)
        with self.assertRaises(TypeError):
            weir.export_sink(Scripted)


if __name__ == "__main__":
    unittest.main()
