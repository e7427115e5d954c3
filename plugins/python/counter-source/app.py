"""counter-source: a deterministic source written with the Python SDK's
:class:`weir_sdk.Source`.

Emits ``{"id": n}`` (key ``n``, timestamp ``n``) for every ``n`` in
``0..count`` with ``n % parallelism == subtask``: subtask 0 of 2 counts 0,
2, 4... Its position is the next ``n``, eight bytes little-endian, which
weir keeps in its checkpoints: a restarted pipeline resumes where the
checkpoint left off, and with an exactly-once sink writes every number
once. A restore must keep the parallelism (each subtask resumes from its
own position)::

    [sources.numbers]
    type = "wasm"
    plugin = "counter-source-py"
    parallelism = 2
    config = { count = 1000000, per-poll = 100, pause-ms = 5 }

``per-poll`` caps the records of one poll; with ``pause-ms`` the poll
after one that emitted says "idle" for that long, which paces the source
without reading a clock.
"""

import struct

import weir_sdk as weir

_POSITION = struct.Struct("<Q")


class Counter(weir.Source):
    def open(self, config, info):
        unknown = set(config) - {"count", "per-poll", "pause-ms"}
        if unknown:
            raise weir.UserError(f"config: unknown field(s) {', '.join(sorted(unknown))}")
        if not isinstance(config.get("count"), int) or config["count"] < 0:
            raise weir.UserError("config.count: a whole number of records (at least 0) is required")
        self.count = config["count"]
        self.per_poll = config.get("per-poll", 100)
        self.pause_ms = config.get("pause-ms", 0)
        if self.per_poll < 1:
            raise weir.UserError("config.per-poll must be at least 1")
        self.subtask, self.parallelism = info.subtask, info.parallelism
        self.next = info.subtask
        self.rest = False

    def restore(self, positions):
        if len(positions) != self.parallelism:
            raise weir.UserError(
                f"the checkpoint was taken at parallelism {len(positions)}; counter-source restores only at the same parallelism"
            )
        own = positions[self.subtask]
        if own:
            if len(own) != _POSITION.size:
                raise weir.UserError(f"a position of {len(own)} bytes is not counter-source's")
            (self.next,) = _POSITION.unpack(own)

    def poll(self, out, max_bytes):
        if self.rest:
            self.rest = False
            return weir.idle(self.pause_ms)
        while self.next < self.count and len(out) < self.per_poll and out.size < max_bytes:
            out.emit(str(self.next), f'{{"id":{self.next}}}', self.next)
            self.next += self.parallelism
        if not len(out):
            return weir.FINISHED
        self.rest = self.pause_ms > 0
        return None

    def snapshot(self):
        return _POSITION.pack(self.next)


SourceHandler = weir.export_source(Counter)
