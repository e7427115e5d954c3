//! Operators written in Python and JavaScript, built into components for
//! the tests with the SDKs' own build commands and cached by content.
//!
//! A componentize-py build takes about a minute and a componentize-js build
//! about half of one, so each component is built once per content hash of
//! its sources, the SDK and the WIT contract, into `target/lang-components/`,
//! and reused by every later test and run until one of those changes.

use crate::repo;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serializes builds within one test process (they are CPU-heavy).
static BUILDING: Mutex<()> = Mutex::new(());

/// Hashes the files directly in `dir` whose names end with one of `exts`,
/// in name order, names included.
fn hash_dir(h: &mut Sha256, dir: &Path, exts: &[&str]) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file() && exts.iter().any(|x| p.to_string_lossy().ends_with(x)))
        .collect();
    files.sort();
    for f in files {
        h.update(f.file_name().expect("file name").as_encoded_bytes());
        h.update(std::fs::read(&f).expect("read source"));
    }
}

/// Returns the component `name` cached for the content of `sources` (each
/// a directory and the file name endings that count in it, not recursive)
/// and `label`, or runs the command `build(out)` to make it at `out`.
pub fn cached_build(name: &str, label: &str, sources: &[(&Path, &[&str])], build: impl FnOnce(&Path) -> Command) -> PathBuf {
    let mut key = Sha256::new();
    key.update(label.as_bytes());
    for (dir, exts) in sources {
        hash_dir(&mut key, dir, exts);
    }
    hash_dir(&mut key, &repo().join("wit"), &[".wit"]);
    let dir = repo().join("target/lang-components");
    std::fs::create_dir_all(&dir).expect("create target/lang-components");
    let path = dir.join(format!("{name}-{}.wasm", &hex::encode(key.finalize())[..16]));
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return path;
    }
    // Build beside the final name and rename, so another test process never
    // sees a half-written file.
    let tmp = dir.join(format!(".{name}-{}.wasm", std::process::id()));
    let mut cmd = build(&tmp);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success() && tmp.is_file(),
        "building {name} failed ({cmd:?}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("move the built component into place");
    path
}

/// The Python operator whose module is `app.py` in `dir` (relative to the
/// repository), built with `python3 -m weir_sdk build` (componentize-py).
pub fn python_component(dir: &str) -> PathBuf {
    let dir = repo().join(dir);
    let name = dir.file_name().expect("dir name").to_string_lossy().replace('-', "_");
    let sources: [(&Path, &[&str]); 2] = [(&dir, &[".py"]), (&repo().join("sdk/python/weir_sdk"), &[".py"])];
    cached_build(&format!("py-{name}"), "componentize-py 0.25.1", &sources, |out| {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "weir_sdk", "build", "app", "-o"]).arg(out).current_dir(&dir).env("PYTHONPATH", repo().join("sdk/python"));
        cmd
    })
}

/// The JavaScript operator `module` (relative to the repository; its
/// default export is the operator), built with the SDK's `weir-js build`
/// (componentize-js).
pub fn js_component(module: &str) -> PathBuf {
    let module = repo().join(module);
    let tool = repo().join("sdk/js/node_modules/.bin/componentize-js");
    assert!(tool.exists(), "{} is missing: run `bash tests/run`, which installs it with `npm install` in sdk/js", tool.display());
    let name = module.file_stem().expect("module name").to_string_lossy().replace('-', "_");
    let label = format!("componentize-js 0.23.0 {}", module.display());
    let sources: [(&Path, &[&str]); 3] =
        [(module.parent().expect("module dir"), &[".js"]), (&repo().join("sdk/js/src"), &[".js"]), (&repo().join("sdk/js/bin"), &[".js"])];
    cached_build(&format!("js-{name}"), &label, &sources, |out| {
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("sdk/js/bin/weir-js.js")).arg("build").arg(&module).arg("-o").arg(out);
        cmd
    })
}

/// The C or C++ operator `source` (relative to the repository), built with
/// `sdk/c/build.sh` (clang's wasm32-wasi target, `wit-bindgen c`, then
/// `component new` by wasm-tools or jco).
pub fn c_component(source: &str) -> PathBuf {
    let source = repo().join(source);
    for tool in ["clang", "wit-bindgen"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: run `bash tests/run`, which installs the C toolchain (docs/plugins/c.md)");
    }
    let name = source.file_stem().expect("source name").to_string_lossy().into_owned();
    let sources: [(&Path, &[&str]); 2] = [(source.parent().expect("source dir"), &[".c", ".cpp", ".h"]), (&repo().join("sdk/c"), &[".c", ".h", ".sh"])];
    cached_build(&format!("c-{name}"), "clang wasm32-wasi, wit-bindgen-cli 0.63.0, component new", &sources, |out| {
        let mut cmd = Command::new("sh");
        cmd.arg(repo().join("sdk/c/build.sh")).arg(&source).arg("-o").arg(out);
        cmd
    })
}
