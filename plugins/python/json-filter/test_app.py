"""json-filter's logic, natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

from weir_sdk.testing import Harness, OpenError, Rejected, record

from app import JsonFilter


def run(config, values):
    return Harness(JsonFilter, config).process([record("in", v) for v in values])


class JsonFilterTest(unittest.TestCase):
    def test_filters_projects_and_keys(self):
        out = run({"filter": "amount >= 10", "project": ["user", "amount"], "key": "user"},
                  ['{"id":1,"user":"u1","amount":9}', '{"amount" : 10.0, "user":"u\\u0032", "x":[1]}', '{"user":"u3","amount":17}'])
        self.assertEqual([(r.key, r.text) for r in out], [(b"u2", '{"user":"u\\u0032","amount":10.0}'), (b"u3", '{"user":"u3","amount":17}')])

    def test_forwards_unchanged_without_project_and_key(self):
        raw = ' {"amount": 12} '
        out = Harness(JsonFilter, {"filter": "amount > 11"}).process([record("k", raw, 5, [("h", "1")])])
        self.assertEqual((out[0].key, out[0].text, out[0].timestamp, out[0].headers), (b"k", raw, 5, [(b"h", b"1")]))

    def test_clause_semantics(self):
        def kept(filter, value):
            return len(run({"filter": filter}, [value])) == 1

        self.assertTrue(kept('user == "bob" and ok == true', '{"user":"bob","ok":true}'))
        self.assertFalse(kept("x == 1", '{"y":1}'))
        self.assertFalse(kept("x != 1", '{"x":null}'))
        self.assertTrue(kept("x == null", '{"x":null}'))
        self.assertTrue(kept("x != null", '{"x":0}'))
        self.assertTrue(kept("x < 9223372036854775807", '{"x":9223372036854775806}'))
        self.assertTrue(kept("x > 1.5", '{"x":2}'))
        self.assertTrue(kept('s < "b"', '{"s":"a\\u00e9"}'))
        self.assertTrue(kept('"odd name" >= -2.5e1', '{"odd name":-25}'))

    def test_keys_from_numbers_and_booleans_keep_their_json_text(self):
        out = run({"key": "k"}, ['{"k":1.50}', '{"k":true}'])
        self.assertEqual([r.key for r in out], [b"1.50", b"true"])

    def test_rejections_name_the_problem(self):
        with self.assertRaises(Rejected) as e:
            run({"filter": "amount >= 10"}, ['{"amount":10}', '{"amount":"17"}'])
        self.assertEqual(e.exception.index, 1)
        self.assertIn('compares field "amount" with a number, but this record\'s "amount" is a string', e.exception.message)
        for value in ['{"a":1', "17", "", '{"a":1} x', '{"a":NaN}']:
            with self.assertRaises(Rejected) as e:
                run({}, [value])
            self.assertTrue(e.exception.message.startswith("value is not a well-formed JSON object: "), e.exception.message)
        with self.assertRaises(Rejected) as e:
            run({"key": "k"}, ['{"k":[1]}'])
        self.assertIn("is an array, which cannot be a record key", e.exception.message)
        with self.assertRaises(Rejected) as e:
            run({"key": "k"}, ["{}"])
        self.assertIn('no field "k" to take its key from', e.exception.message)

    def test_config_errors(self):
        cases = [
            ({"filter": "amount >> 10"}, 'invalid `filter` "amount >> 10"'),
            ({"filter": ""}, "`filter` is empty"),
            ({"filter": "amount = 10"}, "use == to compare for equality (at position 7)"),
            ({"filter": "user == bob"}, 'double-quoted string (user == "bob")'),
            ({"filter": "amount >= 10 or x == 1"}, "expected `and` or the end of the filter"),
            ({"filter": "amount >= 10 and"}, "expected a field name after `and`"),
            ({"filter": "a.b == 1"}, "nested paths"),
            ({"filter": "x < true"}, "true, false and null allow only == and !="),
            ({"filter": "x == [1]"}, "objects and arrays cannot be compared"),
            ({"filter": "x == 01"}, "leading zeros"),
            ({"filter": "amount"}, "expected a comparison"),
            ({"project": ["a", "a"]}, 'lists the field "a" twice'),
            ({"projection": ["a"]}, "unknown field `projection`"),
        ]
        for config, wanted in cases:
            with self.assertRaises(OpenError, msg=str(config)) as e:
                Harness(JsonFilter, config)
            self.assertIn(wanted, str(e.exception))


if __name__ == "__main__":
    unittest.main()
