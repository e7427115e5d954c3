"""The glue between componentize-py's bindings of the ``source`` and
``sink`` worlds and a :class:`weir_sdk.Source` or :class:`weir_sdk.Sink`.
Used through :func:`weir_sdk.export_source` and :func:`weir_sdk.export_sink`;
like ``component``, its imports succeed only inside a component build of
one of those worlds."""

from . import _connector
from .io_component import WasmIo

try:
    from componentize_py_types import Err
    from wit_world.imports import connector_types
except ImportError:  # natively, or in a build of another world
    Err = connector_types = None

try:
    from wit_world.exports import source_handler
except ImportError:  # a sink's build, or natively
    source_handler = None


def _info(info):
    return _connector.ConnectorInfo(info.pipeline, info.name, info.subtask, info.parallelism, info.checkpointing)


def _err(e):
    """A :class:`UserError` or :class:`ExternalError` as the WIT ``connector-error``."""
    if isinstance(e, _connector.ExternalError):
        return Err(connector_types.ConnectorError_External(str(e)))
    return Err(connector_types.ConnectorError_User(str(e)))


def _wit(f, *args):
    """Calls a runtime method, its :class:`UserError` or
    :class:`ExternalError` raised as the WIT ``connector-error``."""
    try:
        return f(*args)
    except _connector.Error as e:
        raise _err(e) from None


def source_handler_class(source_class):
    """The class componentize-py exports as ``weir:plugin/source-handler``."""

    class SourceHandler:
        _runtime = None

        def open(self, info):
            SourceHandler._runtime = _wit(_connector.SourceRuntime, source_class, _info(info), info.config, WasmIo())

        def restore(self, positions):
            _wit(SourceHandler._runtime.restore, positions)

        def poll(self, max_bytes):
            what, value = _wit(SourceHandler._runtime.poll, max_bytes)
            if what == "ready":
                return source_handler.PollResult_Ready(value)
            if what == "idle":
                return source_handler.PollResult_Idle(value)
            return source_handler.PollResult_Finished()

        def snapshot(self):
            return _wit(SourceHandler._runtime.snapshot)

        def checkpoint_complete(self, checkpoint, position):
            _wit(SourceHandler._runtime.checkpoint_complete, checkpoint, position)

    SourceHandler.__name__ = SourceHandler.__qualname__ = "SourceHandler"
    return SourceHandler


def sink_handler_class(sink_class):
    """The class componentize-py exports as ``weir:plugin/sink-handler``."""

    class SinkHandler:
        _runtime = None

        def open(self, info):
            SinkHandler._runtime = _wit(_connector.SinkRuntime, sink_class, _info(info), info.config, WasmIo())

        def start(self, recovered):
            _wit(SinkHandler._runtime.start, None if recovered is None else [(c.checkpoint, c.handle) for c in recovered])

        def write(self, batch, records):
            _wit(SinkHandler._runtime.write, batch)

        def pre_commit(self, checkpoint):
            return _wit(SinkHandler._runtime.pre_commit, checkpoint)

        def commit(self, checkpoint, handle):
            _wit(SinkHandler._runtime.commit, checkpoint, handle)

        def flush(self):
            _wit(SinkHandler._runtime.flush)

    SinkHandler.__name__ = SinkHandler.__qualname__ = "SinkHandler"
    return SinkHandler
