"""running-sum's logic, natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

import weir_sdk as weir
from weir_sdk.testing import Harness, OpenError, Rejected, record

from app import RunningSum


def amount(key, n):
    return record(key, f'{{"user":"{key}","amount":{n}}}')


class RunningSumTest(unittest.TestCase):
    def test_sums_per_key_across_batches(self):
        h = Harness(RunningSum)
        out = h.process([amount("a", 1), amount("b", 10), amount("a", 2)])
        self.assertEqual([r.text for r in out], ['{"key":"a","sum":1}', '{"key":"b","sum":10}', '{"key":"a","sum":3}'])
        self.assertEqual(out[1].key, b"b")
        self.assertEqual(h.state("sum", "a", weir.I64), 3)
        out = h.process([amount("a", -5), amount("b", 0)])
        self.assertEqual([r.text for r in out], ['{"key":"a","sum":-2}', '{"key":"b","sum":10}'])

    def test_keeps_timestamps_and_escapes_keys(self):
        out = Harness(RunningSum).process([record('a"b', '{"amount":4}', 99)])
        self.assertEqual((out[0].text, out[0].timestamp), ('{"key":"a\\"b","sum":4}', 99))

    def test_requires_a_key_and_a_failed_batch_changes_no_state(self):
        h = Harness(RunningSum)
        with self.assertRaises(Rejected) as e:
            h.process([amount("a", 1), record(None, '{"amount":1}')])
        self.assertEqual(e.exception.index, 1)
        self.assertIn("the record has no key", e.exception.message)
        self.assertIsNone(h.state("sum", "a", weir.I64))

    def test_tag_and_custom_field(self):
        out = Harness(RunningSum, {"field": "n", "tag": "v2"}).process([record("k", '{"n":7,"amount":100}')])
        self.assertEqual(out[0].text, '{"key":"k","sum":7,"version":"v2"}')

    def test_rejects_missing_and_non_integer_fields_and_overflow(self):
        h = Harness(RunningSum)

        def message(value):
            with self.assertRaises(Rejected) as e:
                h.process([record("k", value)])
            return e.exception.message

        self.assertIn('no field "amount" to add up', message('{"amt":1}'))
        self.assertIn("is not an integer", message('{"amount":1.5}'))
        self.assertIn("is not an integer", message('{"amount":"1"}'))
        self.assertIn("too large for 64 bits", message('{"amount":18446744073709551616}'))
        self.assertIn("not a well-formed JSON object", message('{"amount":1,}'))
        h.process([amount("k", 2**63 - 1)])
        self.assertIn("overflows", message('{"amount":1}'))
        with self.assertRaises(OpenError):
            Harness(RunningSum, {"feild": "x"})


if __name__ == "__main__":
    unittest.main()
