"""Async operators (world ``weir:plugin/async-operator``): one record per
call, with HTTP, SQL and key-value lookups that look blocking to the
operator while the host awaits them and runs other records in other slots.

Shared by the component glue (``async_component``) and the test harness."""

import json

from . import _frame
from ._core import Error, Output, Record, describe, open_operator


class Transient(Error):
    """Raise it from :meth:`AsyncOperator.process` when retrying may help
    (a lookup failed, a service answered 503): the host retries the record
    with backoff, then dead-letters it."""


class Permanent(Error):
    """Raise it when retrying will not help (malformed input): the record is
    dead-lettered at once. Any other exception (or :class:`Error`) is
    permanent too, reported with its file and line."""


class IoError(Transient):
    """A host call (``http``, ``sql``, ``kv_get``) failed: the service could
    not be reached, the call was not granted, the statement failed. It is
    :class:`Transient`, so an operator that does not catch it gets the
    record retried."""


class HttpResponse:
    """An HTTP response: ``status`` (int), ``headers`` (list of ``(name,
    value)`` str pairs, names lower-cased) and ``body`` (bytes)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, list(headers), bytes(body)

    @property
    def text(self):
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode(errors="replace")

    def json(self):
        """The body parsed as JSON."""
        return json.loads(self.body)

    def __repr__(self):
        return f"HttpResponse({self.status}, {self.body[:60]!r})"


class SqlRows:
    """The rows of a statement: ``columns`` (names) and ``rows``, each a list
    with one value per column in PostgreSQL's text form (None for NULL)."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns, rows):
        self.columns, self.rows = list(columns), [list(r) for r in rows]

    def first(self):
        """The first column of the first row, or None when there is no row."""
        return self.rows[0][0] if self.rows and self.rows[0] else None

    def dicts(self):
        """The rows as dicts from column name to value."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return f"SqlRows({self.columns!r}, {len(self.rows)} rows)"


def _sql_param(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"a SQL parameter is None, bool, int, float or str, not {type(v).__name__}")


class Io:
    """The host's I/O, handed to :meth:`AsyncOperator.process`. Every call
    blocks the operator (not weir) and raises :class:`IoError` when it
    fails. What a pipeline grants: ``async.allow-http`` (HTTP hosts) and
    ``async.connections`` (named PostgreSQL connections and key-value
    stores)."""

    __slots__ = ("_host",)

    def __init__(self, host):
        self._host = host

    def http(self, method, url, headers=(), body=b""):
        """One HTTP/1.1 request to a plain ``http://`` URL; any status,
        5xx included, is a response (:class:`HttpResponse`)."""
        headers = [(str(k), str(v)) for k, v in headers]
        body = body.encode() if isinstance(body, str) else bytes(body)
        status, rheaders, rbody = self._host.http(str(method), str(url), headers, body)
        return HttpResponse(status, rheaders, rbody)

    def get(self, url, headers=()):
        """``GET url``."""
        return self.http("GET", url, headers)

    def post(self, url, body, headers=()):
        """``POST url`` with ``body`` (str or bytes)."""
        return self.http("POST", url, headers, body)

    def sql(self, connection, query, *params):
        """Runs ``query`` with parameters ``$1``, ``$2``... (None, bool, int,
        float or str) on the named connection; returns :class:`SqlRows`."""
        columns, rows = self._host.sql(str(connection), str(query), [_sql_param(p) for p in params])
        return SqlRows(columns, rows)

    def kv_get(self, store, key):
        """The value under ``key`` (str) in the key-value store ``store``,
        as str, or None when there is none."""
        key = key.decode() if isinstance(key, (bytes, bytearray)) else str(key)
        return self._host.kv_get(str(store), key)


class AsyncOperator:
    """Base class of an async operator. Override :meth:`process`; ``open``
    is optional. An instance is created per slot (the host runs up to
    ``async.capacity`` of them per subtask), so keep no state that must be
    shared between records."""

    def open(self, config, info):
        """Called once per slot with the operator's ``config`` (a dict) and
        an :class:`OpenInfo`. Raise to refuse the config."""

    def process(self, record, out, io):
        """Handle one :class:`Record`: emit results into ``out``
        (:class:`Output`), look things up through ``io`` (:class:`Io`)."""
        raise NotImplementedError("an AsyncOperator overrides process")


class AsyncRuntime:
    """An opened async operator: the loop a component runs for each call,
    and the one the test harness runs. ``process`` returns the output frame
    buffer or raises :class:`Transient` / :class:`Permanent`."""

    def __init__(self, op_class, info, config_json, host):
        self.io = Io(host)
        self.op = open_operator(op_class, info, config_json)

    def process(self, batch):
        try:
            records = [Record(k, v, ts, h) for ts, k, v, h in _frame.read_frames(batch)]
        except _frame.FrameError as e:
            raise Permanent(f"malformed input: {e}") from None
        out = Output()
        for r in records:
            try:
                self.op.process(r, out, self.io)
            except (Transient, Permanent):
                raise
            except MemoryError:
                raise
            except Exception as e:
                raise Permanent(describe(e)) from None
        return out._bytes()
