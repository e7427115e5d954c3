"""only-errors natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

from weir_sdk.testing import Harness, record

from app import only_errors


class OnlyErrorsTest(unittest.TestCase):
    def test_keeps_only_errors_unchanged(self):
        out = Harness(only_errors).process([record("a", "all good"), record("b", "disk error", 5), record(None, "error")])
        self.assertEqual([(r.key, r.text, r.timestamp) for r in out], [(b"b", "disk error", 5), (None, "error", 0)])


if __name__ == "__main__":
    unittest.main()
