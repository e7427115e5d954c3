"""Native test harness: run an operator under plain CPython, no Wasm.

The harness drives the same batch loop as a component (state prefetch
through ``get-many``, one ``apply`` per batch, rejections) against an
in-memory host, so a test exercises the code path weir runs::

    from weir_sdk.testing import Harness, record

    h = Harness(RunningSum, {"field": "amount"})
    out = h.process([record("a", '{"amount": 2}')])
    assert out[0].text == '{"key":"a","sum":2}'
    assert h.state("sum", "a", weir_sdk.I64) == 2

:class:`AsyncHarness` does the same for an async operator, with the
lookups answered by the test (:class:`FakeIo`); :class:`SourceHarness` and
:class:`SinkHarness` drive a source or sink plugin through the calls weir
makes, with its ``self.io`` answered the same way.
"""

import json

from . import _core, _frame
from ._async import AsyncRuntime, IoError
from ._connector import ConnectorInfo, SinkRuntime, SourceRuntime
from ._core import BYTES, EVENT_TIME, PROCESSING_TIME, OpenError, Record, Runtime, Timer
from ._frame import as_bytes

MIN_WATERMARK = -(2**63)


def record(key, value, timestamp=0, headers=()):
    """A test record; ``key`` and ``value`` are str or bytes (``key`` may be None)."""
    return Record(None if key is None else as_bytes(key), as_bytes(value), timestamp, _frame.encode_headers(headers))


class Rejected(Exception):
    """The operator rejected input ``index`` (a record or a timer) with ``message``."""

    def __init__(self, index, message):
        super().__init__(f"input #{index} rejected: {message}")
        self.index, self.message = index, message


class MemoryHost:
    """The host in memory: value and map state, timers, clocks, log lines,
    the operator's inputs (``inputs``, names) and the input of the batch
    being processed (``input``), plus a count of the host calls made
    (``calls``)."""

    def __init__(self, inputs=("input",)):
        self.inputs = list(inputs)
        self.input = 0
        self.values = {}  # (name, key) -> bytes
        self.maps = {}  # (name, key) -> {map_key: bytes}
        self.timers = set()  # Timer
        self.watermark_ms = MIN_WATERMARK
        self.processing_time_ms = 0
        self.logs = []  # (level, message)
        self.calls = {}  # host function -> count

    def _count(self, what):
        self.calls[what] = self.calls.get(what, 0) + 1

    def get(self, name, key):
        self._count("get")
        return self.values.get((name, key))

    def get_many(self, name, keys):
        self._count("get-many")
        entries, first = [], {}
        for i, k in enumerate(_frame.read_lp_list(keys)):
            if k in first:
                entries.append(("repeat", first[k]))
            else:
                first[k] = i
                entries.append(self.values.get((name, k)))
        return _frame.encode_get_many_response(entries)

    def map_get(self, name, key, map_key):
        self._count("map-get")
        return self.maps.get((name, key), {}).get(map_key)

    def map_entries(self, name, key):
        self._count("map-entries")
        return sorted(self.maps.get((name, key), {}).items())

    def apply(self, ops):
        self._count("apply")
        try:
            decoded = _frame.decode_ops(ops)
        except (_frame.FrameError, UnicodeDecodeError) as e:
            raise _core.StateError("invalid", str(e)) from None
        for op, name, key, *rest in decoded:
            if op == _frame.PUT:
                self.values[(name, key)] = rest[0]
            elif op == _frame.DELETE:
                self.values.pop((name, key), None)
            elif op == _frame.MAP_PUT:
                self.maps.setdefault((name, key), {})[rest[0]] = rest[1]
            elif op == _frame.MAP_REMOVE:
                self.maps.get((name, key), {}).pop(rest[0], None)
                if not self.maps.get((name, key), True):
                    del self.maps[(name, key)]
            elif op == _frame.MAP_CLEAR:
                self.maps.pop((name, key), None)

    def register_timer(self, domain, key, timestamp):
        self._count("register")
        self.timers.add(Timer(domain, key, timestamp))

    def delete_timer(self, domain, key, timestamp):
        self._count("delete")
        self.timers.discard(Timer(domain, key, timestamp))

    def watermark(self):
        return self.watermark_ms

    def processing_time(self):
        return self.processing_time_ms

    def log(self, level, message):
        self.logs.append((level, message))

    def current_input(self):
        self._count("inputs.current")
        return self.input

    def input_names(self):
        self._count("inputs.names")
        return list(self.inputs)


def _records(batch):
    return [Record(k, v, ts, h) for ts, k, v, h in _frame.read_frames(batch)]


class Harness:
    """Runs one operator instance natively.

    ``Harness(MyOperator, config)`` opens it (``config`` a dict or JSON
    text) as subtask 0 of 1, with one input named ``"input"``; an ``open``
    that fails raises :class:`OpenError` with weir's message. An operator
    with several inputs is opened with their names, ``Harness(Join,
    config, inputs=["orders", "payments"])``, and fed with
    :meth:`process_input`.
    """

    def __init__(self, op_class, config=None, subtask=0, parallelism=1, inputs=("input",)):
        if isinstance(inputs, str) or not inputs or not all(isinstance(n, str) for n in inputs):
            raise TypeError(f"inputs is a non-empty list of input names, not {inputs!r}")
        self.host = MemoryHost(inputs)
        config_json = config if isinstance(config, str) else json.dumps(config or {})
        self._rt = Runtime(op_class, _core.OpenInfo("test", "op", subtask, parallelism), config_json, self.host)
        # ``calls`` counts the batches' host calls, not the input names the
        # SDK asks for once when it opens the operator.
        self.host.calls.clear()

    @property
    def operator(self):
        """The operator instance."""
        return self._rt.op

    def process(self, records):
        """Processes one batch (a list of :class:`Record`, see :func:`record`)
        from input 0; returns the output records, or raises :class:`Rejected`."""
        return self.process_input(0, records)

    def process_input(self, input, records):
        """Processes one batch from input ``input`` (an index into ``inputs``)."""
        batch = bytearray()
        for r in records:
            _frame.write_frame(batch, r.key, r.value, r.timestamp, r.raw_headers)
        return self.process_raw(bytes(batch), input)

    def process_raw(self, batch, input=0):
        """Processes one batch given in frame format, from input ``input``."""
        n = len(self.host.inputs)
        if isinstance(input, bool) or not isinstance(input, int) or not 0 <= input < n:
            raise IndexError(f"input {input!r} is not one of the operator's {n} inputs ({', '.join(self.host.inputs)})")
        # As the host does: the batch's input while it is processed, 0
        # outside ``process`` (timers, close).
        self.host.input = input
        try:
            out, error = self._rt.process(batch)
        finally:
            self.host.input = 0
        if error is not None:
            raise Rejected(*error)
        return _records(out)

    def advance_watermark(self, time):
        """Sets the watermark to ``time`` and fires the event-time timers due, in order."""
        self.host.watermark_ms = time
        return self._fire(EVENT_TIME, time)

    def advance_processing_time(self, time):
        """Sets the processing time to ``time`` and fires the processing-time timers due."""
        self.host.processing_time_ms = time
        return self._fire(PROCESSING_TIME, time)

    def _fire(self, domain, time):
        due = sorted((t for t in self.host.timers if t.domain == domain and t.timestamp <= time), key=lambda t: (t.timestamp, t.key))
        self.host.timers.difference_update(due)
        out, error = self._rt.on_timer(due)
        if error is not None:
            raise Rejected(*error)
        return _records(out)

    def close(self):
        """Signals the end of input; returns what the operator emits."""
        out, error = self._rt.close()
        if error is not None:
            raise Rejected(0, error)
        return _records(out)

    def state(self, name, key, codec=BYTES):
        """Value state ``name`` of ``key``, decoded with ``codec``; None when absent."""
        value = self.host.values.get((name, as_bytes(key)))
        return None if value is None else codec.decode(value)

    def map_state(self, name, key):
        """Map state ``name`` of ``key`` as a dict of bytes."""
        return dict(self.host.maps.get((name, as_bytes(key)), {}))

    @property
    def timers(self):
        """The registered timers, ordered by timestamp."""
        return sorted(self.host.timers, key=lambda t: (t.timestamp, t.key))

    @property
    def logs(self):
        """The ``(level, message)`` lines the operator logged."""
        return self.host.logs


class FakeIo:
    """The host's I/O for an async operator under test: answers from
    ``http`` (a callable ``(method, url, headers, body)`` returning
    ``(status, body)`` or ``(status, headers, body)``), ``sql`` (a callable
    ``(connection, query, params)`` returning a list of rows, or ``(columns,
    rows)``) and ``kv`` (a dict ``{store: {key: value}}`` or a callable
    ``(store, key)``). An answer that raises (any exception) is a failed
    call: the operator sees :class:`weir_sdk.IoError` with its message.
    ``calls`` lists every call made, as tuples."""

    def __init__(self, http=None, sql=None, kv=None):
        self._http, self._sql, self._kv = http, sql, kv
        self.calls = []

    def _answer(self, what, f, *args):
        self.calls.append((what, *args))
        if f is None:
            raise IoError(f"{what} is not faked in this test: pass {what}= to AsyncHarness")
        try:
            return f(*args)
        except IoError:
            raise
        except Exception as e:
            raise IoError(str(e)) from None

    def http(self, method, url, headers, body):
        r = self._answer("http", self._http, method, url, headers, body)
        status, headers, body = r if len(r) == 3 else (r[0], [], r[1])
        return status, headers, as_bytes(body)

    def sql(self, connection, query, params):
        r = self._answer("sql", self._sql, connection, query, params)
        columns, rows = r if isinstance(r, tuple) else ([f"column{i + 1}" for i in range(len(r[0]) if r else 0)], r)
        return columns, rows

    def kv_get(self, store, key):
        kv = self._kv
        if isinstance(kv, dict):
            tables = kv
            kv = lambda s, k: tables.get(s, {}).get(k)  # noqa: E731
        return self._answer("kv", kv, store, key)


class AsyncHarness:
    """Runs one async operator instance (one slot) natively, against a
    :class:`FakeIo` built from ``http``, ``sql`` and ``kv``::

        h = AsyncHarness(Enrich, {"store": "profiles"}, kv={"profiles": {"u1": '{"tier":1}'}})
        out = h.process(record("u1", '{"user":"u1"}'))

    ``process`` returns the output records, or raises
    :class:`weir_sdk.Transient` / :class:`weir_sdk.Permanent` as weir
    would see them (``h.io.calls`` lists the lookups made).
    """

    def __init__(self, op_class, config=None, http=None, sql=None, kv=None, subtask=0, parallelism=1):
        self.io = FakeIo(http, sql, kv)
        config_json = config if isinstance(config, str) else json.dumps(config or {})
        self._rt = AsyncRuntime(op_class, _core.OpenInfo("test", "op", subtask, parallelism), config_json, self.io)

    @property
    def operator(self):
        """The operator instance."""
        return self._rt.op

    def process(self, rec):
        """Processes one record (see :func:`record`)."""
        batch = bytearray()
        _frame.write_frame(batch, rec.key, rec.value, rec.timestamp, rec.raw_headers)
        return _records(self._rt.process(bytes(batch)))


def _connector_info(subtask, parallelism, checkpointing):
    return ConnectorInfo("test", "connector", subtask, parallelism, checkpointing)


class SourceHarness:
    """Runs one source instance natively through the calls weir makes::

        h = SourceHarness(Counter, {"count": 3})
        assert [r.text for r in h.poll()] == ['{"id":0}', '{"id":1}', '{"id":2}']
        assert h.said == "ready"
        h.poll(); assert h.said == "finished"

    ``poll`` returns the records emitted and sets ``said`` to ``"ready"``,
    ``"idle"`` (``idle_ms``) or ``"finished"``; failures raise
    :class:`weir_sdk.UserError` or :class:`weir_sdk.ExternalError` as weir
    would see them. ``io`` is a :class:`FakeIo` built from ``http``, ``sql``
    and ``kv``."""

    def __init__(self, source_class, config=None, http=None, sql=None, kv=None, subtask=0, parallelism=1, checkpointing=True):
        self.io = FakeIo(http, sql, kv)
        config_json = config if isinstance(config, str) else json.dumps(config or {})
        self._rt = SourceRuntime(source_class, _connector_info(subtask, parallelism, checkpointing), config_json, self.io)
        self.said, self.idle_ms = None, None

    @property
    def source(self):
        """The source instance."""
        return self._rt.source

    def restore(self, positions):
        """``restore`` with the positions of every subtask (bytes)."""
        self._rt.restore(positions)

    def poll(self, max_bytes=1 << 20):
        """One ``poll``: the records emitted."""
        self.said, value = self._rt.poll(max_bytes)
        self.idle_ms = value if self.said == "idle" else None
        return _records(value) if self.said == "ready" else []

    def snapshot(self):
        """``snapshot``: the position, as bytes."""
        return self._rt.snapshot()

    def checkpoint_complete(self, checkpoint, position):
        """``checkpoint-complete``."""
        self._rt.checkpoint_complete(checkpoint, position)


class SinkHarness:
    """Runs one sink instance natively through the calls weir makes::

        h = SinkHarness(Hook, {"url": "http://x/in"}, http=lambda *a: (200, ""))
        h.start()
        h.write([record(None, '{"id":1}')])
        handle = h.pre_commit(1)
        h.commit(1, handle)
        assert h.io.calls[0][0] == "http"

    Failures raise :class:`weir_sdk.UserError` or
    :class:`weir_sdk.ExternalError` as weir would see them."""

    def __init__(self, sink_class, config=None, http=None, sql=None, kv=None, subtask=0, parallelism=1, checkpointing=True):
        self.io = FakeIo(http, sql, kv)
        config_json = config if isinstance(config, str) else json.dumps(config or {})
        self._rt = SinkRuntime(sink_class, _connector_info(subtask, parallelism, checkpointing), config_json, self.io)

    @property
    def sink(self):
        """The sink instance."""
        return self._rt.sink

    def start(self, recovered=None):
        """``start``; ``recovered`` is None or a list of ``(checkpoint, handle)``."""
        self._rt.start(recovered)

    def write(self, records):
        """``write`` of one batch of records (see :func:`record`)."""
        batch = bytearray()
        for r in records:
            _frame.write_frame(batch, r.key, r.value, r.timestamp, r.raw_headers)
        self._rt.write(bytes(batch))

    def pre_commit(self, checkpoint):
        """``pre-commit``: the handle, as bytes."""
        return self._rt.pre_commit(checkpoint)

    def commit(self, checkpoint, handle):
        """``commit``."""
        self._rt.commit(checkpoint, handle)

    def flush(self):
        """``flush``."""
        self._rt.flush()


__all__ = ["AsyncHarness", "FakeIo", "Harness", "MemoryHost", "OpenError", "Rejected", "SinkHarness", "SourceHarness", "record"]
