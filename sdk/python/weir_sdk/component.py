"""The glue between componentize-py's generated bindings (``wit_world``)
and an :class:`weir_sdk.Operator`. Used through :func:`weir_sdk.export`.

The bindings exist only inside a component build: natively (the test
harness runs the same operator without them) the imports below fail and
nothing here is called. In a build they must happen when the module is
imported, which componentize-py does while it pre-initializes the app:
modules first imported later, inside a call, are not in the component.
"""

from . import _core

try:
    from componentize_py_types import Err
    from wit_world.imports import inputs, log, state, timers, types
except ImportError:  # natively: weir_sdk.testing runs operators instead
    Err = inputs = log = state = timers = types = None


class _WasmHost:
    """The host seen through the WIT imports."""

    def __init__(self):
        self._Err, self._inputs, self._log, self._state, self._timers, self._types = Err, inputs, log, state, timers, types
        self._domains = {_core.EVENT_TIME: types.TimeDomain.EVENT_TIME, _core.PROCESSING_TIME: types.TimeDomain.PROCESSING_TIME}
        self._levels = {name: getattr(log.Level, name.upper()) for name in _core.LEVELS}

    def _state_call(self, f, *args):
        try:
            return f(*args)
        except self._Err as e:
            v = e.value
            kind = type(v).__name__
            if kind.endswith("KeyNotOwned"):
                raise _core.StateError("key-not-owned") from None
            if kind.endswith("TooLarge"):
                raise _core.StateError("too-large", v.value) from None
            raise _core.StateError("invalid", getattr(v, "value", repr(v))) from None

    def get(self, name, key):
        return self._state_call(self._state.get, name, key)

    def get_many(self, name, keys):
        return self._state_call(self._state.get_many, name, keys)

    def map_get(self, name, key, map_key):
        return self._state_call(self._state.map_get, name, key, map_key)

    def map_entries(self, name, key):
        return self._state_call(self._state.map_entries, name, key)

    def apply(self, ops):
        return self._state_call(self._state.apply, ops)

    def register_timer(self, domain, key, timestamp):
        self._timers.register(self._domains[domain], key, timestamp)

    def delete_timer(self, domain, key, timestamp):
        self._timers.delete(self._domains[domain], key, timestamp)

    def watermark(self):
        return self._timers.current_watermark()

    def processing_time(self):
        return self._timers.current_processing_time()

    def log(self, level, message):
        self._log.log(self._levels[level], message)

    def current_input(self):
        return self._inputs.current()

    def input_names(self):
        return self._inputs.names()


def handler(op_class):
    """The class componentize-py exports as ``weir:plugin/handler``."""

    class Handler:
        _runtime = None

        def open(self, info):
            try:
                rt = _core.Runtime(
                    op_class,
                    _core.OpenInfo(info.pipeline, info.operator, info.subtask, info.parallelism),
                    info.config,
                    _WasmHost(),
                )
            except _core.OpenError as e:
                raise Err(str(e)) from None
            Handler._runtime = rt

        def process(self, input):
            return self._output(*Handler._runtime.process(input))

        def on_timer(self, fired):
            domain = {types.TimeDomain.EVENT_TIME: _core.EVENT_TIME, types.TimeDomain.PROCESSING_TIME: _core.PROCESSING_TIME}
            timers = [_core.Timer(domain[t.domain], bytes(t.key), t.timestamp) for t in fired]
            return self._output(*Handler._runtime.on_timer(timers))

        def close(self):
            records, error = Handler._runtime.close()
            if error is not None:
                raise Err(error)
            return records

        @staticmethod
        def _output(records, error):
            if error is None:
                return types.BatchOutput(records, None)
            return types.BatchOutput(b"", types.RecordError(error[0], error[1]))

    Handler.__name__ = Handler.__qualname__ = "Handler"
    return Handler
