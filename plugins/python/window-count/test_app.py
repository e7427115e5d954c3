"""window-count's logic, natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

from weir_sdk.testing import Harness, OpenError, record

from app import WindowCount


class WindowCountTest(unittest.TestCase):
    def test_counts_per_key_and_window_when_the_watermark_passes(self):
        h = Harness(WindowCount, {"size-ms": 10})
        self.assertEqual(h.process([record("a", "x", 1), record("a", "x", 9), record("b", "x", 5), record("a", "x", 12)]), [])
        self.assertEqual(len(h.timers), 3)
        out = h.advance_watermark(9)
        self.assertEqual([r.text for r in out], ['{"key":"a","window_end":10,"count":2}', '{"key":"b","window_end":10,"count":1}'])
        self.assertEqual([r.timestamp for r in out], [9, 9])
        self.assertEqual(h.map_state("counts", "b"), {})
        # A record for a window the watermark has passed is late and ignored.
        self.assertEqual(h.process([record("a", "x", 3)]), [])
        out = h.advance_watermark(2**63 - 1)
        self.assertEqual([r.text for r in out], ['{"key":"a","window_end":20,"count":1}'])

    def test_needs_a_positive_size(self):
        for config in ({}, {"size-ms": 0}, {"size-ms": "10"}, {"size-ms": 10, "x": 1}):
            with self.assertRaises(OpenError):
                Harness(WindowCount, config)


if __name__ == "__main__":
    unittest.main()
