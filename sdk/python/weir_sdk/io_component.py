"""The host's ``async-io`` imports seen through componentize-py's
bindings, shared by every world that imports them (``async-operator``,
``source``, ``sink``). Like ``component``, its imports succeed only inside
a component build of such a world."""

from . import _async

try:
    from componentize_py_types import Err
    from wit_world.imports import async_io
except ImportError:  # natively, or in a build of the batch world
    Err = async_io = None


class WasmIo:
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
