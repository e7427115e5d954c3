"""``python -m weir_sdk build APP -o OUT.wasm``: builds the module APP into a
weir operator component with componentize-py, against the WIT contract
shipped in this package. APP defines ``Handler`` (from
:func:`weir_sdk.export`: world ``operator``), ``AsyncHandler`` (from
:func:`weir_sdk.export_async`: world ``async-operator``), ``SourceHandler``
(from :func:`weir_sdk.export_source`: world ``source``) or ``SinkHandler``
(from :func:`weir_sdk.export_sink`: world ``sink``); the build imports APP
natively to see which."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m weir_sdk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a module into a .wasm component")
    build.add_argument("app", help="the module that defines Handler (app for app.py)")
    build.add_argument("-o", "--output", required=True, help="the .wasm file to write")
    build.add_argument("-p", "--path", action="append", default=[], help="extra directory to find modules in (repeatable); the current directory is searched")
    build.add_argument("--world", choices=list(_WORLDS.values()), help="the WIT world (default: from what APP exports)")
    args = parser.parse_args(argv)
    world = args.world or _world_of(args.app, args.path)

    here = os.path.dirname(os.path.abspath(__file__))
    wit = os.path.join(here, "wit")
    # The module path of the build holds the app's directory and a copy of
    # this package alone, not the whole site-packages it may be installed in.
    with tempfile.TemporaryDirectory(prefix="weir-sdk-") as sdk_path:
        shutil.copytree(here, os.path.join(sdk_path, "weir_sdk"), ignore=shutil.ignore_patterns("wit", "__pycache__"))
        cmd = [*_componentize_py(), "-d", wit, "-w", world, "componentize", args.app, "-o", args.output, "-p", ".", "-p", sdk_path]
        for p in args.path:
            cmd += ["-p", p]
        code = subprocess.call(cmd)
    sys.exit(code)


# What an app module assigns, and the world it builds.
_WORLDS = {"Handler": "operator", "AsyncHandler": "async-operator", "SourceHandler": "source", "SinkHandler": "sink"}


def _world_of(app, paths):
    """The world of what the module APP exports (see ``_WORLDS``)."""
    import importlib

    sys.path[:0] = [os.getcwd(), *paths]
    try:
        module = importlib.import_module(app)
    except Exception as e:
        sys.exit(f"weir_sdk build: importing {app} to see what it exports failed: {type(e).__name__}: {e} (or pass --world)")
    found = [name for name in _WORLDS if hasattr(module, name)]
    if len(found) == 1:
        return _WORLDS[found[0]]
    if found:
        sys.exit(f"weir_sdk build: {app} defines {' and '.join(found)}; a component is one plugin (pass --world to choose)")
    sys.exit(f"weir_sdk build: {app} defines none of Handler = weir_sdk.export(...), AsyncHandler = weir_sdk.export_async(...), "
             "SourceHandler = weir_sdk.export_source(...) or SinkHandler = weir_sdk.export_sink(...)")


def _componentize_py():
    """componentize-py from this interpreter's packages, or else from PATH
    (pip may put its script in a directory that is not on PATH)."""
    try:
        import componentize_py  # noqa: F401
    except ImportError:
        tool = shutil.which("componentize-py")
        if tool is None:
            sys.exit("componentize-py is not installed: pip install componentize-py==0.25.1")
        return [tool]
    return [sys.executable, "-c", "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())"]


if __name__ == "__main__":
    main()
