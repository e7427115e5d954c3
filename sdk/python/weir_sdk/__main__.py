"""``python -m weir_sdk build APP -o OUT.wasm``: builds the module APP (its
``Handler``, from :func:`weir_sdk.export`) into a weir operator component
with componentize-py, against the WIT contract shipped in this package."""

import argparse
import os
import shutil
import subprocess
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m weir_sdk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a module into a .wasm component")
    build.add_argument("app", help="the module that defines Handler (app for app.py)")
    build.add_argument("-o", "--output", required=True, help="the .wasm file to write")
    build.add_argument("-p", "--path", action="append", default=[], help="extra directory to find modules in (repeatable); the current directory is searched")
    args = parser.parse_args(argv)

    tool = shutil.which("componentize-py")
    if tool is None:
        sys.exit("componentize-py is not installed: pip install componentize-py==0.25.1")
    here = os.path.dirname(os.path.abspath(__file__))
    wit = os.path.join(here, "wit")
    cmd = [tool, "-d", wit, "-w", "operator", "componentize", args.app, "-o", args.output, "-p", os.path.dirname(here), "-p", "."]
    for p in args.path:
        cmd += ["-p", p]
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
