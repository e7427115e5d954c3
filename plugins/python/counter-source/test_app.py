"""counter-source's logic, natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

import weir_sdk as weir
from weir_sdk.testing import SourceHarness

from app import Counter


def position(n):
    return n.to_bytes(8, "little")


class CounterTest(unittest.TestCase):
    def test_counts_its_split_then_finishes(self):
        h = SourceHarness(Counter, {"count": 7, "per-poll": 2}, subtask=1, parallelism=2)
        out = h.poll()
        self.assertEqual(h.said, "ready")
        self.assertEqual([(r.key, r.text, r.timestamp) for r in out], [(b"1", '{"id":1}', 1), (b"3", '{"id":3}', 3)])
        self.assertEqual([r.text for r in h.poll()], ['{"id":5}'])
        self.assertEqual(h.snapshot(), position(7))
        self.assertEqual(h.poll(), [])
        self.assertEqual(h.said, "finished")

    def test_resumes_from_its_own_position(self):
        h = SourceHarness(Counter, {"count": 10}, subtask=1, parallelism=2)
        h.restore([position(4), position(7)])
        self.assertEqual([r.text for r in h.poll()], ['{"id":7}', '{"id":9}'])
        h = SourceHarness(Counter, {"count": 10}, subtask=0, parallelism=2)
        h.restore([b"", b""])  # a checkpoint taken before the first snapshot
        self.assertEqual(len(h.poll()), 5)
        with self.assertRaisesRegex(weir.UserError, "taken at parallelism 1"):
            SourceHarness(Counter, {"count": 10}, parallelism=2).restore([position(3)])

    def test_pauses_between_polls(self):
        h = SourceHarness(Counter, {"count": 100, "per-poll": 10, "pause-ms": 5})
        self.assertEqual(len(h.poll()), 10)
        self.assertEqual((h.poll(), h.said, h.idle_ms), ([], "idle", 5))
        self.assertEqual(h.poll()[0].text, '{"id":10}')

    def test_stops_at_max_bytes(self):
        h = SourceHarness(Counter, {"count": 100})
        self.assertEqual(len(h.poll(max_bytes=1)), 1)

    def test_refuses_a_bad_config(self):
        with self.assertRaisesRegex(weir.UserError, "config.count"):
            SourceHarness(Counter, {})
        with self.assertRaisesRegex(weir.UserError, "unknown field"):
            SourceHarness(Counter, {"count": 1, "rate": 2})


if __name__ == "__main__":
    unittest.main()
