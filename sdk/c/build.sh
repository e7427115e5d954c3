#!/bin/sh
# Builds a weir operator written in C or C++ into a WebAssembly component.
#
#   sh sdk/c/build.sh OPERATOR.c|OPERATOR.cpp [MORE ...] -o OUT.wasm [-- CLANG-FLAGS]
#
# Needs Debian's clang and lld with the wasm32-wasi sysroot (wasi-libc,
# libclang-rt-dev-wasm32; for C++ also libc++-dev-wasm32, which brings
# libc++abi), wit-bindgen-cli 0.63.0 (cargo install --locked),
# a `component new`: `wasm-tools` 1.263.0 when it is on PATH, else jco
# (npm, installed with componentize-js by `npm install` in sdk/js), and
# cargo to write the WASI preview-1 adapter once (sdk/c/adapter). The
# steps: `wit-bindgen c` generates the bindings of the `operator` world
# from wit/; clang compiles them, sdk/c/weir.c and the operator into a
# wasm32-wasi reactor module; `component new` wraps the module with the
# adapter into a component.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
wit=${WEIR_WIT:-$here/../../wit}
sources=
out=
extra=
while [ $# -gt 0 ]; do
    case $1 in
    -o) out=$2; shift 2 ;;
    --) shift; extra="$*"; break ;;
    *) sources="$sources $1"; shift ;;
    esac
done
if [ -z "$out" ] || [ -z "$sources" ]; then
    echo "usage: sh sdk/c/build.sh OPERATOR.c|OPERATOR.cpp [MORE ...] -o OUT.wasm [-- CLANG-FLAGS]" >&2
    exit 2
fi
for tool in clang wit-bindgen; do
    command -v $tool >/dev/null 2>&1 || { echo "build.sh: $tool is missing (docs/plugins/c.md says how to install it)" >&2; exit 1; }
done
if command -v wasm-tools >/dev/null 2>&1; then
    component_new="wasm-tools component new"
elif [ -x "$here/../js/node_modules/.bin/jco" ]; then
    component_new="$here/../js/node_modules/.bin/jco new"
else
    echo "build.sh: neither wasm-tools nor jco is installed: cargo install wasm-tools --version 1.263.0 --locked, or npm install in sdk/js" >&2
    exit 1
fi
adapter=${WEIR_C_ADAPTER:-$here/wasi_snapshot_preview1.reactor.wasm}
if [ ! -s "$adapter" ]; then
    cargo run --quiet --release --locked --manifest-path "$here/adapter/Cargo.toml" -- "$adapter"
fi
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
wit-bindgen c "$wit" --world operator --out-dir "$gen" >/dev/null 2>&1 || wit-bindgen c "$wit" --world operator --out-dir "$gen"
# C sources build with clang, C++ sources (.cc, .cpp, .cxx) with clang++
# and libc++ (no exceptions on wasm32-wasi); the link is clang++'s when
# there is C++.
link=clang
objs=
n=0
for src in $sources "$here/weir.c" "$gen/operator.c"; do
    n=$((n + 1))
    case $src in
    *.cc | *.cpp | *.cxx) cc="clang++ -std=c++17 -fno-exceptions"; link=clang++ ;;
    *) cc=clang ;;
    esac
    # shellcheck disable=SC2086
    $cc --target=wasm32-wasi -O2 -Wall -Wno-unused-function -I"$here" -I"$gen" -c "$src" -o "$gen/$n.o" $extra
    objs="$objs $gen/$n.o"
done
if [ $link = clang++ ] && ! command -v clang++ >/dev/null 2>&1; then
    echo "build.sh: clang++ is missing (apt-get install clang)" >&2
    exit 1
fi
# shellcheck disable=SC2086
$link --target=wasm32-wasi -mexec-model=reactor -O2 $objs "$gen/operator_component_type.o" -o "$gen/core.wasm" $extra
$component_new "$gen/core.wasm" --adapt "wasi_snapshot_preview1=$adapter" -o "$out" >/dev/null
