"""Sources and sinks written as plugins (worlds ``weir:plugin/source`` and
``weir:plugin/sink``, ``wit/connector.wit``): the classes an author
subclasses and the loops that drive them, shared by the component glue
(``connector_component``) and the test harness.

The author never sees the frame format, the ``connector-error`` variant or
the ``poll-result`` variant: records come and go as :class:`Record` and
:class:`Output`, errors are exceptions (:class:`UserError`,
:class:`ExternalError`), and ``poll`` returns None, :func:`idle` or
:data:`FINISHED`."""

import json

from . import _frame
from ._async import Io, Transient
from ._core import Error, Output, Record, describe
from ._frame import as_bytes


class UserError(Error):
    """The configuration or the data is wrong: the pipeline stops with this
    message, and restarting will not help. Any exception other than
    :class:`ExternalError` (and :class:`Transient`, :class:`IoError`) is
    reported as a user error too, with its file and line."""


class ExternalError(Error):
    """A system outside weir failed (a server is down or refused a
    request): the pipeline stops and may be restarted from its last
    checkpoint (``weir serve`` does so with backoff). A failed ``io`` call
    that is not caught (:class:`IoError`) is reported as one."""


class ConnectorInfo:
    """Who a source or sink instance is, given to ``open``: ``pipeline``,
    ``name`` (the section's name in the pipeline file), ``subtask``,
    ``parallelism`` and ``checkpointing`` (whether the pipeline takes
    checkpoints; without them a sink's ``pre_commit`` and ``commit`` are
    never called)."""

    __slots__ = ("pipeline", "name", "subtask", "parallelism", "checkpointing")

    def __init__(self, pipeline, name, subtask=0, parallelism=1, checkpointing=True):
        self.pipeline, self.name, self.subtask, self.parallelism = pipeline, name, subtask, parallelism
        self.checkpointing = checkpointing

    def __repr__(self):
        return (f"ConnectorInfo({self.pipeline!r}, {self.name!r}, subtask={self.subtask}, "
                f"parallelism={self.parallelism}, checkpointing={self.checkpointing})")


class Committable:
    """A pre-commit handle from a checkpoint, handed to :meth:`Sink.start`
    on a restore: ``checkpoint`` (int) and ``handle`` (bytes, what
    :meth:`Sink.pre_commit` returned)."""

    __slots__ = ("checkpoint", "handle")

    def __init__(self, checkpoint, handle):
        self.checkpoint, self.handle = checkpoint, bytes(handle)

    def __eq__(self, other):
        return isinstance(other, Committable) and (self.checkpoint, self.handle) == (other.checkpoint, other.handle)

    def __repr__(self):
        return f"Committable({self.checkpoint}, {self.handle!r})"


class Idle:
    """What :func:`idle` returns: nothing now, poll again after at most
    ``ms`` milliseconds."""

    __slots__ = ("ms",)

    def __init__(self, ms):
        if not isinstance(ms, int) or not 0 <= ms <= 0xFFFFFFFF:
            raise ValueError(f"idle(ms) takes a whole number of milliseconds from 0 to 2**32-1, not {ms!r}")
        self.ms = ms

    def __eq__(self, other):
        return isinstance(other, Idle) and self.ms == other.ms

    def __repr__(self):
        return f"idle({self.ms})"


def idle(ms):
    """Return it from :meth:`Source.poll` when nothing is available now:
    weir polls again after at most ``ms`` milliseconds."""
    return Idle(ms)


class _Finished:
    __slots__ = ()

    def __repr__(self):
        return "FINISHED"


FINISHED = _Finished()
"""Return it from :meth:`Source.poll` when a bounded input is exhausted:
no more records, ever."""


class Source:
    """Base class of a source plugin. weir creates one instance per
    subtask and calls :meth:`open`, :meth:`restore` when the run resumes
    from a checkpoint, then :meth:`poll` whenever it wants records,
    :meth:`snapshot` at each checkpoint and :meth:`checkpoint_complete`
    once that checkpoint is complete. ``self.io`` (an :class:`Io`, set
    before ``open``) reaches what the section grants (``allow-http``,
    ``connections``)."""

    io = None

    def open(self, config, info):
        """Called once with the section's ``config`` (a dict) and a
        :class:`ConnectorInfo`. Raise to refuse the config."""

    def restore(self, positions):
        """Move to a checkpoint's position: ``positions`` is what
        :meth:`snapshot` returned on every subtask (a list of bytes, one per
        subtask of the run that took it)."""
        raise NotImplementedError("a Source overrides restore(positions)")

    def poll(self, out, max_bytes):
        """Emit records into ``out`` (:class:`Output`), about ``max_bytes``
        of them (``out.size`` says how many bytes so far). Return None when
        records were emitted (or may be soon), :func:`idle` when nothing is
        available now, :data:`FINISHED` when the input is exhausted."""
        raise NotImplementedError("a Source overrides poll(out, max_bytes)")

    def snapshot(self):
        """The position after the records emitted so far (bytes or str),
        stored in the checkpoint."""
        raise NotImplementedError("a Source overrides snapshot()")

    def checkpoint_complete(self, checkpoint, position):
        """Checkpoint ``checkpoint`` is complete; ``position`` is what
        :meth:`snapshot` returned for it. Acknowledge input upstream here,
        never earlier."""


class Sink:
    """Base class of a sink plugin. weir creates one instance per subtask
    and calls :meth:`open`, :meth:`start`, then :meth:`write` for every
    batch, :meth:`pre_commit` at each checkpoint barrier and :meth:`commit`
    once that checkpoint is complete, and :meth:`flush` at the end of
    input. ``self.io`` (an :class:`Io`, set before ``open``) reaches what
    the section grants (``allow-http``, ``connections``)."""

    io = None

    def open(self, config, info):
        """Called once with the section's ``config`` (a dict) and a
        :class:`ConnectorInfo`. Raise to refuse the config."""

    def start(self, recovered):
        """Before the first write. ``recovered`` is None on a fresh start;
        on a restore, the :class:`Committable` handles of the checkpoint the
        run resumes from, oldest first, to publish again. The default
        commits each."""
        for c in recovered or ():
            self.commit(c.checkpoint, c.handle)

    def write(self, records):
        """One batch: a list of :class:`Record`."""
        raise NotImplementedError("a Sink overrides write(records)")

    def pre_commit(self, checkpoint):
        """Seal what was written since the last checkpoint and return what
        :meth:`commit` needs to publish it (bytes or str; it is stored in
        the checkpoint)."""
        raise NotImplementedError("a Sink overrides pre_commit(checkpoint)")

    def commit(self, checkpoint, handle):
        """Publish what ``handle`` (bytes) describes. Must be idempotent:
        after a crash the same handle comes again."""
        raise NotImplementedError("a Sink overrides commit(checkpoint, handle)")

    def flush(self):
        """End of input. With checkpoints a final checkpoint follows, whose
        commit publishes the rest; without them, publish it here."""


def _failure(e):
    """Any exception as the :class:`UserError` or :class:`ExternalError`
    weir is told."""
    if isinstance(e, (UserError, ExternalError)):
        return e
    if isinstance(e, Transient):
        return ExternalError(str(e))
    return UserError(describe(e))


def _call(f, *args):
    try:
        return f(*args)
    except MemoryError:
        raise
    except Exception as e:
        raise _failure(e) from None


def _open(cls, base, info, config_json, host):
    try:
        config = json.loads(config_json) if config_json else {}
    except ValueError as e:
        raise UserError(f"invalid config for {info.name!r}: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"the config of {info.name!r} is not a table")
    c = _call(cls)
    if not isinstance(c, base):
        raise UserError(f"{cls.__name__} is not a weir_sdk.{base.__name__}")
    c.io = Io(host)
    _call(c.open, config, info)
    return c


class SourceRuntime:
    """An opened source: what the component's exports call, and what the
    test harness calls. Every method raises :class:`UserError` or
    :class:`ExternalError`."""

    def __init__(self, cls, info, config_json, host):
        self.source = _open(cls, Source, info, config_json, host)

    def restore(self, positions):
        _call(self.source.restore, [bytes(p) for p in positions])

    def poll(self, max_bytes):
        """``("ready", frames)``, ``("idle", ms)`` or ``("finished", None)``.
        Records emitted with :func:`idle` or :data:`FINISHED` go out first
        as ``ready``; the next poll says it again."""
        out = Output()
        said = _call(self.source.poll, out, max_bytes)
        if said is None or len(out):
            if said is not None and not isinstance(said, (Idle, _Finished)):
                raise UserError(f"poll returned {said!r}: return None, weir_sdk.idle(ms) or weir_sdk.FINISHED")
            return "ready", out._bytes()
        if isinstance(said, Idle):
            return "idle", said.ms
        if said is FINISHED:
            return "finished", None
        raise UserError(f"poll returned {said!r}: return None, weir_sdk.idle(ms) or weir_sdk.FINISHED")

    def snapshot(self):
        return as_bytes(_call(self.source.snapshot))

    def checkpoint_complete(self, checkpoint, position):
        _call(self.source.checkpoint_complete, checkpoint, bytes(position))


class SinkRuntime:
    """An opened sink: what the component's exports call, and what the
    test harness calls. Every method raises :class:`UserError` or
    :class:`ExternalError`."""

    def __init__(self, cls, info, config_json, host):
        self.sink = _open(cls, Sink, info, config_json, host)

    def start(self, recovered):
        _call(self.sink.start, None if recovered is None else [Committable(c, h) for c, h in recovered])

    def write(self, batch):
        try:
            records = [Record(k, v, ts, h) for ts, k, v, h in _frame.read_frames(batch)]
        except _frame.FrameError as e:
            raise UserError(f"malformed batch: {e}") from None
        _call(self.sink.write, records)

    def pre_commit(self, checkpoint):
        return as_bytes(_call(self.sink.pre_commit, checkpoint))

    def commit(self, checkpoint, handle):
        _call(self.sink.commit, checkpoint, bytes(handle))

    def flush(self):
        _call(self.sink.flush)
