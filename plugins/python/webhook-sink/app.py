"""webhook-sink in Python: the Rust ``webhook-sink`` plugin written with
the Python SDK's :class:`weir_sdk.Sink`.

POSTs records (JSON values) to one URL as JSON arrays of up to ``batch``
records. With checkpoints, each epoch's request bodies are built when it
is sealed (``pre_commit``), kept in weir's checkpoint as the handle, and
sent when the checkpoint completes (``commit``), each with the header
``Idempotency-Key: weir-PIPELINE-SINK-SUBTASK-CHECKPOINT-N``. A restarted
pipeline sends the handles of its checkpoint again with the same keys and
bodies, so a receiver that deduplicates by key sees every record exactly
once. Without checkpoints it sends as batches fill up (at-least-once)::

    [sinks.hook]
    type = "wasm"
    plugin = "webhook-sink-py"
    allow-http = ["127.0.0.1:8080"]
    config = { url = "http://127.0.0.1:8080/in", batch = 500 }

Failed requests (no answer, 5xx, 429) are retried ``attempts`` times with
a doubling backoff from ``backoff-ms``; then the pipeline stops (an
external error: ``weir serve`` restarts it from its last checkpoint). A
4xx answer stops it naming the request's key: the receiver refused the
data, and sending it again will not help.
"""

import json
import time

import weir_sdk as weir

class Bodies:
    """Request bodies being built: JSON arrays of at most ``batch`` records."""

    def __init__(self, batch):
        self.batch, self.sealed, self.open = batch, [], []

    def push(self, value):
        self.open.append(value)
        if len(self.open) == self.batch:
            self.seal_open()

    def seal_open(self):
        if self.open:
            self.sealed.append(b"[" + b",".join(self.open) + b"]")
            self.open = []

    def take_sealed(self):
        sealed, self.sealed = self.sealed, []
        return sealed

    def take_all(self):
        """Every body, the open one sealed, as one handle (``weir.LIST``: ``[len u32 LE][body]...``)."""
        self.seal_open()
        return weir.LIST.encode(self.take_sealed())


class WebhookSink(weir.Sink):
    def open(self, config, info):
        unknown = set(config) - {"url", "batch", "attempts", "backoff-ms", "idempotency-header"}
        if unknown:
            raise weir.UserError(f"config: unknown field(s) {', '.join(sorted(unknown))}")
        self.url = config.get("url")
        if not isinstance(self.url, str) or not self.url.startswith("http://"):
            raise weir.UserError(f"config.url: {json.dumps(self.url)} must be a plain http:// URL")
        self.batch = config.get("batch", 500)
        self.attempts = config.get("attempts", 8)
        if self.batch < 1 or self.attempts < 1:
            raise weir.UserError("config.batch and config.attempts must be at least 1")
        self.backoff_ms = config.get("backoff-ms", 100)
        self.header = config.get("idempotency-header", "Idempotency-Key")
        self.key_prefix = f"weir-{info.pipeline}-{info.name}-{info.subtask}"
        self.checkpointing = info.checkpointing
        self.bodies = Bodies(self.batch)
        self.sent = 0  # requests sent without checkpoints (part of their keys)

    def send(self, key, body):
        """POSTs one body, retrying what may pass later."""
        headers = [("Content-Type", "application/json"), (self.header, key)]
        wait, last = self.backoff_ms, ""
        for attempt in range(1, self.attempts + 1):
            try:
                r = self.io.post(self.url, body, headers)
            except weir.IoError as e:
                last = str(e)
            else:
                if 200 <= r.status < 300:
                    return
                if r.status != 429 and r.status < 500:
                    raise weir.UserError(
                        f"{self.url} refused the request with key {key} ({len(body)} bytes) with status {r.status}: {r.text[:200]}"
                    )
                last = f"the receiver answered {r.status}"
            if attempt < self.attempts:
                time.sleep(wait / 1000)
                wait = min(wait * 2, 5000)
        raise weir.ExternalError(f"POST {self.url} with key {key} failed {self.attempts} times; last: {last}")

    def write(self, records):
        for r in records:
            try:
                json.loads(r.value)
            except ValueError as e:
                raise weir.UserError(f"a record is not JSON ({e}): {r.value[:80]!r}; this sink sends JSON arrays") from None
            self.bodies.push(r.value)
        if not self.checkpointing:
            for body in self.bodies.take_sealed():
                self.sent += 1
                self.send(f"{self.key_prefix}-run-{self.sent}", body)

    def pre_commit(self, checkpoint):
        return self.bodies.take_all()

    def commit(self, checkpoint, handle):
        for i, body in enumerate(weir.LIST.decode(handle)):
            self.send(f"{self.key_prefix}-{checkpoint}-{i}", body)

    def flush(self):
        # With checkpoints the final one publishes the rest.
        if not self.checkpointing:
            self.bodies.seal_open()
            for body in self.bodies.take_sealed():
                self.sent += 1
                self.send(f"{self.key_prefix}-run-{self.sent}", body)


SinkHandler = weir.export_sink(WebhookSink)
