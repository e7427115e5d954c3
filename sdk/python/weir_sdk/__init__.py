"""weir-sdk: stream operators for weir, in Python, as WebAssembly components.

An operator is a class; one line turns it into the component's export::

    import weir_sdk as weir

    class Shout(weir.Operator):
        def process(self, record, out, ctx):
            out.emit(record.key, record.value.upper(), record.timestamp)

    Handler = weir.export(Shout)

Build it with ``python -m weir_sdk build app -o shout.wasm`` (``app`` is the
module, ``app.py``); test it natively with :mod:`weir_sdk.testing`.

A batch of records crosses into the component as one buffer; the SDK walks
it and calls ``process`` once per record with a :class:`Record` view.
Outputs go to an :class:`Output`. Keyed state lives in the host
(:class:`Context`): the states named in ``prefetch`` are fetched for a
whole batch in one host call, and writes are applied in one host call when
the batch ends. Raising :class:`Error` (or any exception) rejects the
record: its message, with the file and line for unexpected exceptions, is
what weir reports.

An *async* operator (:class:`AsyncOperator`, exported with
:func:`export_async` as ``AsyncHandler``) gets one record per call and an
:class:`Io` for HTTP, SQL and key-value lookups; it raises
:class:`Transient` (retried, then dead-lettered) or :class:`Permanent`
(dead-lettered at once).

A *source* or *sink* written as a plugin (:class:`Source`, :class:`Sink`,
exported with :func:`export_source` as ``SourceHandler`` or
:func:`export_sink` as ``SinkHandler``) gets the same :class:`Record` and
:class:`Output`, reaches the outside through ``self.io`` (:class:`Io`),
and raises :class:`UserError` (stop) or :class:`ExternalError` (stop,
restart from the last checkpoint may help).
"""

from ._connector import FINISHED, Committable, ConnectorInfo, ExternalError, Idle, Sink, Source, UserError, idle
from ._async import AsyncOperator, HttpResponse, Io, IoError, Permanent, SqlRows, Transient
from ._core import (
    BYTES,
    EVENT_TIME,
    F64,
    I64,
    JSON,
    LIST,
    PROCESSING_TIME,
    STR,
    U64,
    Codec,
    Context,
    Error,
    OpenInfo,
    Operator,
    Output,
    Record,
    StateError,
    TimeDomain,
    Timer,
    filter,
    map,
)

__all__ = [
    "BYTES", "EVENT_TIME", "F64", "I64", "JSON", "LIST", "PROCESSING_TIME", "STR", "U64",
    "Codec", "Context", "Error", "OpenInfo", "Operator", "Output", "Record", "StateError",
    "TimeDomain", "Timer", "export", "filter", "map",
    "AsyncOperator", "HttpResponse", "Io", "IoError", "Permanent", "SqlRows", "Transient", "export_async",
    "Committable", "ConnectorInfo", "ExternalError", "FINISHED", "Idle", "Sink", "Source", "UserError",
    "export_sink", "export_source", "idle",
]

__version__ = "0.1.0"


def export(op_class):
    """Makes ``op_class`` (an :class:`Operator` subclass, or what
    :func:`filter` / :func:`map` return) the component's operator. Assign
    the result to ``Handler`` at the top level of the app module."""
    if not (isinstance(op_class, type) and issubclass(op_class, Operator)):
        raise TypeError(f"weir_sdk.export takes an Operator subclass, not {op_class!r}")
    from .component import handler

    return handler(op_class)


def export_async(op_class):
    """Makes ``op_class`` (an :class:`AsyncOperator` subclass) the
    component's async operator (world ``weir:plugin/async-operator``).
    Assign the result to ``AsyncHandler`` at the top level of the app
    module; ``python -m weir_sdk build`` then builds that world."""
    if not (isinstance(op_class, type) and issubclass(op_class, AsyncOperator)):
        raise TypeError(f"weir_sdk.export_async takes an AsyncOperator subclass, not {op_class!r}")
    from .async_component import handler

    return handler(op_class)


def export_source(source_class):
    """Makes ``source_class`` (a :class:`Source` subclass) the component's
    source (world ``weir:plugin/source``). Assign the result to
    ``SourceHandler`` at the top level of the app module; ``python -m
    weir_sdk build`` then builds that world."""
    if not (isinstance(source_class, type) and issubclass(source_class, Source)):
        raise TypeError(f"weir_sdk.export_source takes a Source subclass, not {source_class!r}")
    from .connector_component import source_handler_class

    return source_handler_class(source_class)


def export_sink(sink_class):
    """Makes ``sink_class`` (a :class:`Sink` subclass) the component's sink
    (world ``weir:plugin/sink``). Assign the result to ``SinkHandler`` at
    the top level of the app module; ``python -m weir_sdk build`` then
    builds that world."""
    if not (isinstance(sink_class, type) and issubclass(sink_class, Sink)):
        raise TypeError(f"weir_sdk.export_sink takes a Sink subclass, not {sink_class!r}")
    from .connector_component import sink_handler_class

    return sink_handler_class(sink_class)
