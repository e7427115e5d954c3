"""webhook-sink's logic, natively (python -m unittest in this directory)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

import weir_sdk as weir
from weir_sdk.testing import SinkHarness, record

from app import WebhookSink


def ok(method, url, headers, body):
    return 200, ""


class WebhookSinkTest(unittest.TestCase):
    def test_an_epoch_is_sent_at_commit_in_batches_with_one_key_each(self):
        h = SinkHarness(WebhookSink, {"url": "http://h/in", "batch": 2}, http=ok)
        h.start()
        h.write([record(None, "1"), record(None, '{"a":2}'), record(None, "3")])
        self.assertEqual(h.io.calls, [], "nothing is sent before the checkpoint completes")
        handle = h.pre_commit(7)
        self.assertEqual(weir.LIST.decode(handle), [b'[1,{"a":2}]', b"[3]"])
        h.commit(7, handle)
        self.assertEqual(
            [(c[1], c[2], dict(c[3])["Idempotency-Key"], c[4]) for c in h.io.calls],
            [("POST", "http://h/in", "weir-test-connector-0-7-0", b'[1,{"a":2}]'), ("POST", "http://h/in", "weir-test-connector-0-7-1", b"[3]")],
        )

    def test_a_restore_sends_the_recovered_handles_again_with_the_same_keys(self):
        first = SinkHarness(WebhookSink, {"url": "http://h/in"}, http=ok)
        first.write([record(None, '{"id":1}')])
        handle = first.pre_commit(3)
        h = SinkHarness(WebhookSink, {"url": "http://h/in"}, http=ok)
        h.start([(3, handle)])
        self.assertEqual([(dict(c[3])["Idempotency-Key"], c[4]) for c in h.io.calls], [("weir-test-connector-0-3-0", b'[{"id":1}]')])

    def test_failures_are_user_or_external_errors(self):
        h = SinkHarness(WebhookSink, {"url": "http://h/in", "attempts": 2, "backoff-ms": 1}, http=lambda *a: (503, "busy"))
        h.write([record(None, "1")])
        with self.assertRaisesRegex(weir.ExternalError, "failed 2 times; last: the receiver answered 503"):
            h.commit(1, h.pre_commit(1))
        h = SinkHarness(WebhookSink, {"url": "http://h/in", "attempts": 1}, http=lambda *a: 1 / 0)
        with self.assertRaisesRegex(weir.ExternalError, "last: division by zero"):
            h.commit(1, bodies_handle(b"[1]"))
        h = SinkHarness(WebhookSink, {"url": "http://h/in"}, http=lambda *a: (400, "no"))
        with self.assertRaisesRegex(weir.UserError, "refused the request with key weir-test-connector-0-1-0 .* status 400: no"):
            h.commit(1, bodies_handle(b"[1]"))
        with self.assertRaisesRegex(weir.UserError, "a record is not JSON"):
            h.write([record(None, "not json")])
        with self.assertRaisesRegex(weir.UserError, r'config.url: "https://x" must be a plain http:// URL'):
            SinkHarness(WebhookSink, {"url": "https://x"})

    def test_without_checkpoints_full_batches_go_out_as_written(self):
        h = SinkHarness(WebhookSink, {"url": "http://h/in", "batch": 2}, http=ok, checkpointing=False)
        h.write([record(None, "1"), record(None, "2"), record(None, "3")])
        self.assertEqual([c[4] for c in h.io.calls], [b"[1,2]"])
        h.flush()
        self.assertEqual([(dict(c[3])["Idempotency-Key"], c[4]) for c in h.io.calls][1:], [("weir-test-connector-0-run-2", b"[3]")])


def bodies_handle(body):
    return weir.LIST.encode([body])


if __name__ == "__main__":
    unittest.main()
