//! Writes `wasi_snapshot_preview1.reactor.wasm` (the WASI preview-1 to
//! preview-2 adapter for library-style modules) to the path given.

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: weir-c-adapter OUT.wasm");
        std::process::exit(2);
    };
    let bytes = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    if let Err(e) = std::fs::write(&out, bytes) {
        eprintln!("weir-c-adapter: writing {}: {e}", std::path::Path::new(&out).display());
        std::process::exit(1);
    }
}
