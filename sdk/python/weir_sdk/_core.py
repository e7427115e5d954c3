"""The operator API and the batch loop shared by the component and the test harness."""

import json
import os
import struct
import sys
import traceback
from enum import Enum

from . import _frame
from ._frame import as_bytes

_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


class TimeDomain(Enum):
    """The clock a timer follows."""

    EVENT_TIME = "event-time"
    """Fires when the watermark passes the timer's timestamp."""
    PROCESSING_TIME = "processing-time"
    """Fires when the host's wall clock passes the timer's timestamp."""


EVENT_TIME = TimeDomain.EVENT_TIME
PROCESSING_TIME = TimeDomain.PROCESSING_TIME

LEVELS = ("trace", "debug", "info", "warn", "error")


class Error(Exception):
    """Raise it from ``process`` or ``on_timer`` to reject the record (or
    timer), or from ``open`` to refuse a config. The message is shown to
    the person running the pipeline with the plugin, operator and record:
    say what is wrong with the input."""


class StateError(Error):
    """A state access the host refused: ``kind`` is ``"key-not-owned"``,
    ``"too-large"`` (``detail``: the limit in bytes) or ``"invalid"``."""

    def __init__(self, kind, detail=None):
        self.kind, self.detail = kind, detail
        if kind == "key-not-owned":
            text = 'state key is owned by another subtask: partition this operator\'s input by key (partition = "hash")'
        elif kind == "too-large":
            text = f"state key or value larger than the host's limit of {detail} bytes"
        else:
            text = f"invalid state request: {detail}"
        super().__init__(text)


class Codec:
    """How a state value is kept as bytes: the same layouts as the Rust SDK,
    so state written by an operator in one language reads in another."""

    def __init__(self, name, encode, decode):
        self.name, self.encode, self.decode = name, encode, decode

    def __repr__(self):
        return f"weir_sdk.{self.name}"


def _decode_fixed(s, name):
    def decode(b):
        if len(b) != s.size:
            raise ValueError(f"{len(b)} bytes do not decode as {name}")
        return s.unpack(b)[0]
    return decode


I64 = Codec("I64", _I64.pack, _decode_fixed(_I64, "I64"))
"""A signed 64-bit integer, 8 bytes little-endian (Rust ``i64``)."""
U64 = Codec("U64", _U64.pack, _decode_fixed(_U64, "U64"))
"""An unsigned 64-bit integer, 8 bytes little-endian (Rust ``u64``)."""
F64 = Codec("F64", _F64.pack, _decode_fixed(_F64, "F64"))
"""A float, 8 bytes little-endian (Rust ``f64``)."""
STR = Codec("STR", lambda s: s.encode(), lambda b: b.decode())
"""Text, UTF-8 (Rust ``String``)."""
JSON = Codec("JSON", lambda v: json.dumps(v, separators=(",", ":")).encode(), json.loads)
"""Any JSON-serializable value, as compact JSON text."""
BYTES = Codec("BYTES", as_bytes, bytes)
"""Raw bytes (the default)."""


def _encode_list(items):
    out = bytearray()
    for item in items:
        _frame.put_lp(out, as_bytes(item))
    return bytes(out)


LIST = Codec("LIST", _encode_list, _frame.read_lp_list)
"""A list of byte strings (str as UTF-8), each a ``u32`` little-endian
length then the bytes; decodes to a list of bytes. A sink's handle that
holds several request bodies, say."""


class OpenInfo:
    """Who an instance is, given to :meth:`Operator.open`. ``inputs`` is
    the operator's input names (:meth:`Context.input_names`; a join can
    check it has two), None for an async operator (one input)."""

    __slots__ = ("pipeline", "operator", "subtask", "parallelism", "inputs")

    def __init__(self, pipeline, operator, subtask, parallelism, inputs=None):
        self.pipeline, self.operator, self.subtask, self.parallelism = pipeline, operator, subtask, parallelism
        self.inputs = inputs

    def __repr__(self):
        return f"OpenInfo({self.pipeline!r}, {self.operator!r}, subtask={self.subtask}, parallelism={self.parallelism}, inputs={self.inputs!r})"


class Record:
    """One input record, a view of the batch: ``key`` (bytes or None),
    ``value`` (bytes), ``timestamp`` (ms, int) and ``headers``."""

    __slots__ = ("key", "value", "timestamp", "raw_headers")

    def __init__(self, key, value, timestamp=0, raw_headers=b""):
        self.key, self.value, self.timestamp, self.raw_headers = key, value, timestamp, raw_headers

    @property
    def headers(self):
        """The headers as a list of ``(name, value)`` bytes pairs."""
        return _frame.decode_headers(self.raw_headers) if self.raw_headers else []

    @property
    def text(self):
        """The value decoded as UTF-8."""
        return self.value.decode()

    @property
    def key_text(self):
        """The key decoded as UTF-8 (None without a key)."""
        return None if self.key is None else self.key.decode()

    def json(self):
        """The value parsed as JSON."""
        return json.loads(self.value)

    def __repr__(self):
        return f"Record(key={self.key!r}, value={self.value!r}, timestamp={self.timestamp})"


class Timer:
    """A fired timer: its ``domain``, ``key`` (bytes) and ``timestamp`` (ms)."""

    __slots__ = ("domain", "key", "timestamp")

    def __init__(self, domain, key, timestamp):
        self.domain, self.key, self.timestamp = domain, key, timestamp

    def __eq__(self, other):
        return isinstance(other, Timer) and (self.domain, self.key, self.timestamp) == (other.domain, other.key, other.timestamp)

    def __hash__(self):
        return hash((self.domain, self.key, self.timestamp))

    def __repr__(self):
        return f"Timer({self.domain.value}, {self.key!r}, {self.timestamp})"


class Output:
    """Collects a call's output records into one frame buffer."""

    __slots__ = ("_buf", "_count")

    def __init__(self):
        self._buf = bytearray()
        self._count = 0

    def emit(self, key, value, timestamp=0, headers=None):
        """Emits a record. ``key`` is str, bytes or None; ``value`` str or
        bytes; ``headers`` a list of ``(name, value)`` pairs, or a
        :class:`Record` to carry that record's headers on unchanged."""
        if isinstance(headers, Record):
            raw = headers.raw_headers
        else:
            raw = _frame.encode_headers(headers) if headers else b""
        _frame.write_frame(self._buf, None if key is None else as_bytes(key), as_bytes(value), timestamp, raw)
        self._count += 1

    def forward(self, record):
        """Emits an input record unchanged (key, value, timestamp, headers)."""
        _frame.write_frame(self._buf, record.key, record.value, record.timestamp, record.raw_headers)
        self._count += 1

    def __len__(self):
        return self._count

    @property
    def size(self):
        """The bytes emitted so far, in frame format (what a source's
        ``max_bytes`` counts)."""
        return len(self._buf)

    def _bytes(self):
        return bytes(self._buf)


class Context:
    """The operator's view of the host for one call: keyed state, timers,
    the watermark, logging, and which input a batch came from.

    Value states named in :attr:`Operator.prefetch` are fetched for every
    key of a batch in one host call before the batch; other reads are one
    host call per key and batch, then cached. Every write is buffered and
    sent to the host in one call when the batch ends, so a rejected record
    leaves no trace.
    """

    def __init__(self, host):
        self._host = host
        # The input names are fixed for the instance's life (the pipeline
        # file's ``inputs``): asked of the host once, on first use.
        self._input_names = None
        self._reset()

    def _reset(self):
        # The input of the batch: asked of the host on first use in a
        # batch, then cached. ``_reset`` ends every call (batch, timers,
        # close), so the next batch asks again.
        self._input = None
        # name -> key -> [value or None, dirty]
        self._values = {}
        # (name, key) -> [cleared, {map_key: value or None}] pending map writes
        self._map_writes = {}
        # (name, key, map_key) -> value read from the host this batch
        self._map_reads = {}
        self._ops = bytearray()

    # ---- value state -------------------------------------------------------

    def _slot(self, name, key):
        per_name = self._values.get(name)
        if per_name is None:
            per_name = self._values[name] = {}
        slot = per_name.get(key)
        if slot is None:
            slot = per_name[key] = [self._host.get(name, key), False]
        return slot

    def get(self, name, key, codec=BYTES, default=None):
        """Value state ``name`` of ``key`` (str or bytes), decoded with
        ``codec`` (:data:`BYTES`, :data:`I64`, :data:`U64`, :data:`F64`,
        :data:`STR`, :data:`JSON`); ``default`` when there is none."""
        value = self._slot(name, as_bytes(key))[0]
        if value is None:
            return default
        try:
            return codec.decode(value)
        except ValueError as e:
            raise StateError("invalid", f"state {name!r} holds {len(value)} bytes that do not decode as {codec!r}: {e}") from None

    def put(self, name, key, value, codec=BYTES):
        """Sets value state ``name`` of ``key``. Applied when the batch ends."""
        self._values.setdefault(name, {})[as_bytes(key)] = [codec.encode(value), True]

    def delete(self, name, key):
        """Deletes value state ``name`` of ``key``. Applied when the batch ends."""
        self._values.setdefault(name, {})[as_bytes(key)] = [None, True]

    # ---- map state ---------------------------------------------------------

    def map_get(self, name, key, map_key, codec=BYTES, default=None):
        """Map state ``name`` of ``key`` at ``map_key``."""
        key, map_key = as_bytes(key), as_bytes(map_key)
        pending = self._map_writes.get((name, key))
        if pending is not None and map_key in pending[1]:
            value = pending[1][map_key]
        elif pending is not None and pending[0]:
            value = None
        else:
            at = (name, key, map_key)
            if at not in self._map_reads:
                self._map_reads[at] = self._host.map_get(name, key, map_key)
            value = self._map_reads[at]
        return default if value is None else codec.decode(value)

    def map_entries(self, name, key, codec=BYTES):
        """Every entry of map state ``name`` of ``key``: ``[(map_key, value)]``
        ordered by map key (bytes)."""
        key = as_bytes(key)
        pending = self._map_writes.get((name, key))
        entries = {} if pending is not None and pending[0] else dict(self._host.map_entries(name, key))
        if pending is not None:
            for mk, v in pending[1].items():
                if v is None:
                    entries.pop(mk, None)
                else:
                    entries[mk] = v
        return [(mk, codec.decode(v)) for mk, v in sorted(entries.items())]

    def _pending(self, name, key):
        p = self._map_writes.get((name, key))
        if p is None:
            p = self._map_writes[(name, key)] = [False, {}]
        return p

    def map_put(self, name, key, map_key, value, codec=BYTES):
        """Sets map state ``name`` of ``key`` at ``map_key``."""
        key, map_key, value = as_bytes(key), as_bytes(map_key), codec.encode(value)
        self._pending(name, key)[1][map_key] = value
        _frame.encode_op(self._ops, _frame.MAP_PUT, name.encode(), key, map_key, value)

    def map_remove(self, name, key, map_key):
        """Removes map state ``name`` of ``key`` at ``map_key``."""
        key, map_key = as_bytes(key), as_bytes(map_key)
        self._pending(name, key)[1][map_key] = None
        _frame.encode_op(self._ops, _frame.MAP_REMOVE, name.encode(), key, map_key)

    def map_clear(self, name, key):
        """Removes every entry of map state ``name`` of ``key``."""
        key = as_bytes(key)
        self._map_writes[(name, key)] = [True, {}]
        _frame.encode_op(self._ops, _frame.MAP_CLEAR, name.encode(), key)

    # ---- timers, clocks, log -------------------------------------------------

    def register_timer(self, key, timestamp, domain=EVENT_TIME):
        """Asks for :meth:`Operator.on_timer` once ``domain``'s clock reaches
        ``timestamp`` (ms). The same (domain, key, timestamp) twice is one timer."""
        self._host.register_timer(domain, as_bytes(key), timestamp)

    def delete_timer(self, key, timestamp, domain=EVENT_TIME):
        """Forgets a timer registered earlier (unknown timers are ignored)."""
        self._host.delete_timer(domain, as_bytes(key), timestamp)

    def watermark(self):
        """The event-time watermark (ms); -2**63 before the first."""
        return self._host.watermark()

    def processing_time(self):
        """The host's wall clock (ms since the Unix epoch)."""
        return self._host.processing_time()

    # ---- several inputs ------------------------------------------------------

    def input(self):
        """The index into :meth:`input_names` of the input the current batch
        came from, for an operator with several inputs (``inputs =
        ["orders", "payments"]`` in the pipeline file). 0 for an operator
        with one input, and in ``on_timer`` and ``close``. One host call per
        batch, however many records ask."""
        if self._input is None:
            self._input = self._host.current_input()
        return self._input

    def input_names(self):
        """The operator's inputs, in the order of its ``inputs`` (or
        ``input``) setting: the names of the upstream sources or operators,
        as a list of str. Keyed state and timers are shared by all of them:
        a join keeps both sides of a key under that key."""
        if self._input_names is None:
            self._input_names = tuple(self._host.input_names())
        return list(self._input_names)

    def log(self, message, level="info"):
        """Writes a line to weir's log, tagged with this operator.
        ``level``: trace, debug, info, warn or error."""
        if level not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        self._host.log(level, str(message))

    # ---- the batch ---------------------------------------------------------

    def _prefetch(self, names, keys):
        """One ``get-many`` per name for the keys of the batch."""
        if not keys:
            return
        req = bytearray()
        for k in keys:
            _frame.put_lp(req, k)
        req = bytes(req)
        for name in names:
            values = _frame.read_get_many_response(self._host.get_many(name, req), len(keys))
            per_name = self._values.setdefault(name, {})
            for k, v in zip(keys, values):
                if k not in per_name:
                    per_name[k] = [v, False]

    def _flush(self):
        """Sends the batch's writes to the host in one ``apply`` call."""
        ops = self._ops
        for name, per_name in self._values.items():
            n = name.encode()
            for key, (value, dirty) in per_name.items():
                if not dirty:
                    continue
                if value is None:
                    _frame.encode_op(ops, _frame.DELETE, n, key)
                else:
                    _frame.encode_op(ops, _frame.PUT, n, key, value)
        try:
            if ops:
                self._host.apply(bytes(ops))
        finally:
            self._reset()


class Operator:
    """A stream operator. Subclass it and override :meth:`process`; the
    other methods default to doing nothing.

    The host creates one instance per parallel subtask, calls
    :meth:`open` with the operator's ``config`` table (a dict) and an
    :class:`OpenInfo`, then :meth:`process` for every input record (of
    every input: :meth:`Context.input` says which), :meth:`on_timer` for
    fired timers and :meth:`close` at the end of the input.
    """

    prefetch = ()
    """Value-state names read for (nearly) every record's key: fetched for
    a whole batch in one host call per name."""

    def open(self, config, info):
        """Prepares the instance; raise :class:`Error` to refuse the config
        (the pipeline then stops before any data flows)."""

    def process(self, record, out, ctx):
        """Handles one input record, emitting any number of outputs."""
        raise NotImplementedError("an Operator must define process(self, record, out, ctx)")

    def on_timer(self, timer, out, ctx):
        """Handles a fired :class:`Timer`."""

    def close(self, out, ctx):
        """End of input: emit what the operator still holds."""


def filter(predicate):
    """An operator that keeps the records for which ``predicate(record)``
    is true, unchanged::

        Handler = weir_sdk.export(weir_sdk.filter(lambda r: b"error" in r.value))
    """

    class Filter(Operator):
        def process(self, record, out, ctx):
            if predicate(record):
                out.forward(record)

    Filter.__name__ = Filter.__qualname__ = getattr(predicate, "__name__", "Filter")
    return Filter


def map(function):
    """An operator that replaces each record's value with
    ``function(record)`` (str or bytes), keeping key, timestamp and
    headers; a ``None`` result drops the record::

        Handler = weir_sdk.export(weir_sdk.map(lambda r: r.text.upper()))
    """

    class Map(Operator):
        def process(self, record, out, ctx):
            value = function(record)
            if value is not None:
                out.emit(record.key, value, record.timestamp, record)

    Map.__name__ = Map.__qualname__ = getattr(function, "__name__", "Map")
    return Map


_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
_STDLIB = os.path.dirname(os.__file__)


def describe(e):
    """The message for an exception: an :class:`Error`'s own text, or for
    any other exception its type, text and where it was raised in the
    operator's code (file, line, function)."""
    if isinstance(e, Error):
        return str(e)
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if not f.filename.startswith((_SDK_DIR, _STDLIB)) and "/lib/python3" not in f.filename]
    where = (ours or frames or [None])[-1]
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if where is None:
        return text
    return f"{text} (raised at {os.path.basename(where.filename)}:{where.lineno} in {where.name})"


class OpenError(Exception):
    """``open`` failed; the message is for the person running the pipeline."""


def open_operator(op_class, info, config_json):
    """A new ``op_class`` opened with the config (JSON text); a failure
    raises :class:`OpenError` with weir's message."""
    try:
        config = json.loads(config_json) if config_json else {}
    except ValueError as e:
        raise OpenError(f"invalid config for operator {info.operator!r}: {e}") from None
    try:
        op = op_class()
        op.open(config, info)
    except MemoryError:
        raise
    except Exception as e:
        raise OpenError(describe(e)) from None
    return op


class Runtime:
    """An opened operator with its context: the loop a component runs for
    each export call, and the one the test harness runs."""

    def __init__(self, op_class, info, config_json, host):
        self.ctx = Context(host)
        # ``open`` gets the input names too; the context keeps them, so this
        # is the instance's one host call for them.
        info.inputs = self.ctx.input_names()
        self.op = open_operator(op_class, info, config_json)
        self.prefetch = tuple(getattr(self.op, "prefetch", ()) or ())

    def process(self, batch):
        """Returns ``(records, None)`` or ``(b"", (index, message))``."""
        try:
            records = [Record(k, v, ts, h) for ts, k, v, h in _frame.read_frames(batch)]
        except _frame.FrameError as e:
            return b"", (0, f"malformed batch: {e}")
        out = Output()
        ctx = self.ctx
        try:
            if self.prefetch:
                ctx._prefetch(self.prefetch, [r.key for r in records if r.key is not None])
        except MemoryError:
            raise
        except Exception as e:
            ctx._reset()
            return b"", (len(records), f"prefetching state: {describe(e)}")
        process = self.op.process
        for i, r in enumerate(records):
            try:
                process(r, out, ctx)
            except MemoryError:
                raise
            except Exception as e:
                ctx._reset()
                return b"", (i, describe(e))
        return self._finish(out, len(records))

    def on_timer(self, timers):
        out = Output()
        for i, t in enumerate(timers):
            try:
                self.op.on_timer(t, out, self.ctx)
            except MemoryError:
                raise
            except Exception as e:
                self.ctx._reset()
                return b"", (i, describe(e))
        return self._finish(out, len(timers))

    def close(self):
        """Returns ``(records, None)`` or ``(b"", message)``."""
        out = Output()
        try:
            self.op.close(out, self.ctx)
        except MemoryError:
            raise
        except Exception as e:
            self.ctx._reset()
            return b"", describe(e)
        records, err = self._finish(out, 0)
        return records, err and err[1]

    def _finish(self, out, inputs):
        try:
            self.ctx._flush()
        except MemoryError:
            raise
        except Exception as e:
            return b"", (inputs, f"the host refused the batch's state writes: {describe(e)}")
        return out._bytes(), None
