"""The glue between componentize-py's bindings of the ``async-operator``
world and an :class:`weir_sdk.AsyncOperator`. Used through
:func:`weir_sdk.export_async`; like ``component``, its imports succeed only
inside a component build of that world."""

from . import _async, _core

try:
    from componentize_py_types import Err
    from wit_world.exports import async_handler
    from wit_world.imports import async_io
except ImportError:  # natively, or in a build of the batch world
    Err = async_handler = async_io = None


class _WasmIo:
    """The host's ``async-io`` imports, their errors raised as :class:`IoError`."""

    def _call(self, f, *args):
        try:
            return f(*args)
        except Err as e:
            raise _async.IoError(str(e.value)) from None

    def http(self, method, url, headers, body):
        r = self._call(async_io.http, method, url, headers, body)
        return r.status, r.headers, r.body

    def sql(self, connection, query, params):
        rows = self._call(async_io.sql, connection, query, [_sql_value(p) for p in params])
        return rows.columns, rows.rows

    def kv_get(self, store, key):
        return self._call(async_io.kv_get, store, key)


def _sql_value(v):
    if v is None:
        return async_io.SqlValue_Null()
    if isinstance(v, bool):
        return async_io.SqlValue_Boolean(v)
    if isinstance(v, int):
        return async_io.SqlValue_Int(v)
    if isinstance(v, float):
        return async_io.SqlValue_Float(v)
    return async_io.SqlValue_Text(v)


def handler(op_class):
    """The class componentize-py exports as ``weir:plugin/async-handler``."""
    class AsyncHandler:
        _runtime = None

        def open(self, info):
            try:
                rt = _async.AsyncRuntime(
                    op_class,
                    _core.OpenInfo(info.pipeline, info.operator, info.subtask, info.parallelism),
                    info.config,
                    _WasmIo(),
                )
            except _core.OpenError as e:
                raise Err(str(e)) from None
            AsyncHandler._runtime = rt

        def process(self, input):
            try:
                return AsyncHandler._runtime.process(input)
            except _async.Transient as e:
                raise Err(async_handler.ProcessError_Transient(str(e))) from None
            except _async.Permanent as e:
                raise Err(async_handler.ProcessError_Permanent(str(e))) from None

    AsyncHandler.__name__ = AsyncHandler.__qualname__ = "AsyncHandler"
    return AsyncHandler
