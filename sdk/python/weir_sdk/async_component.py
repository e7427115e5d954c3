"""The glue between componentize-py's bindings of the ``async-operator``
world and an :class:`weir_sdk.AsyncOperator`. Used through
:func:`weir_sdk.export_async`; like ``component``, its imports succeed only
inside a component build of that world."""

from . import _async, _core
from .io_component import WasmIo

try:
    from componentize_py_types import Err
    from wit_world.exports import async_handler
except ImportError:  # natively, or in a build of another world
    Err = async_handler = None


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
                    WasmIo(),
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
