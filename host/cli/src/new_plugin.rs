//! `weir new-plugin`: scaffolds an operator project in Rust, JavaScript,
//! Python or C. Each scaffold holds the same example operator (keep the records
//! containing `needle`, prefix them with `prefix`) and a passing native test,
//! and builds to a component with one command.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# A weir plugin is a library compiled to a WebAssembly component:
#   cargo build --target wasm32-wasip2 --release
# produces target/wasm32-wasip2/release/{crate}.wasm
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# `path` builds against the weir checkout the scaffold came from; once
# weir-sdk is published, `weir-sdk = "0.1"` alone does.
weir-sdk = { version = "0.1", path = "{sdk}" }
serde = { version = "1", features = ["derive"] }
# JSON records: serde_json::from_slice::<serde_json::Value>(record.value)
serde_json = "1"

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
# keeps function names: `weir run --profile` shows where the time goes
strip = "debuginfo"
panic = "abort"

# A standalone project, not part of an enclosing workspace.
[workspace]
"#;

const LIB_RS: &str = r##"//! `{name}`: a weir operator.
//!
//! It keeps records whose value contains `needle` and prefixes their value
//! with `prefix`. Replace the logic in `process` with your own.
//!
//! ```toml
//! [[operators]]
//! name = "{name}"
//! plugin = "{name}"
//! config = { needle = "error", prefix = "ALERT " }
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// The operator's `config` table from the pipeline file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Keep records whose value contains this text.
    needle: String,
    /// Text put in front of kept values.
    #[serde(default)]
    prefix: String,
}

pub struct Plugin {
    config: Config,
}

impl Operator for Plugin {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        if config.needle.is_empty() {
            return Err(Error::msg("`needle` must not be empty"));
        }
        Ok(Plugin { config })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        let text = std::str::from_utf8(record.value)?;
        if text.contains(&self.config.needle) {
            out.emit_with(record.key, record.timestamp, |v| {
                v.extend_from_slice(self.config.prefix.as_bytes());
                v.extend_from_slice(record.value);
            });
        }
        Ok(())
    }
}

weir_sdk::export_operator!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{record, Harness};

    #[test]
    fn keeps_and_prefixes_matching_records() {
        let config = serde_json::json!({ "needle": "error", "prefix": "ALERT " });
        let mut h = Harness::<Plugin>::open(&config.to_string()).unwrap();
        let out = h.process(&[record(None, "all good"), record(None, "disk error")]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text(), "ALERT disk error");
    }

    #[test]
    fn an_empty_needle_is_refused() {
        assert!(Harness::<Plugin>::open(r#"{"needle": ""}"#).is_err());
    }
}
"##;

const JS_PACKAGE: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "description": "A weir operator in JavaScript",
  "scripts": {
    "test": "node --test test/",
    "build": "weir-js build src/operator.js -o {crate}.wasm"
  },
  "dependencies": {
    "weir-sdk": "file:{sdk}"
  }
}
"#;

const JS_OPERATOR: &str = r#"// `{name}`: a weir operator.
//
// It keeps records whose value contains `needle` and prefixes their value
// with `prefix`. Replace the logic in `process` with your own.
//
//   [[operators]]
//   name = "{name}"
//   plugin = "{name}"
//   config = { needle = "error", prefix = "ALERT " }
import { Operator, WeirError } from "weir-sdk";

export default class Plugin extends Operator {
  // `config` is the operator's config table from the pipeline file.
  open(config) {
    const { needle, prefix = "", ...unknown } = config;
    if (Object.keys(unknown).length) throw new WeirError(`unknown config key "${Object.keys(unknown)[0]}"`);
    if (typeof needle !== "string" || needle === "") throw new WeirError("`needle` must be a non-empty string");
    this.needle = needle;
    this.prefix = prefix;
  }

  // Called for each input record; `out.emit` / `out.forward` produce outputs,
  // a thrown WeirError rejects the record.
  process(record, out) {
    if (record.text.includes(this.needle)) out.emit(record.key, this.prefix + record.text, record.timestamp, record);
  }
}
"#;

const JS_TEST: &str = r#"// The operator's logic under Node: npm test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Harness, OpenError, record } from "weir-sdk/testing";
import Plugin from "../src/operator.js";

test("keeps and prefixes matching records", () => {
  const h = new Harness(Plugin, { needle: "error", prefix: "ALERT " });
  const out = h.process([record(null, "all good"), record(null, "disk error")]);
  assert.deepEqual(out.map((r) => r.text), ["ALERT disk error"]);
});

test("an empty needle is refused", () => {
  assert.throws(() => new Harness(Plugin, { needle: "" }), OpenError);
});
"#;

const PY_APP: &str = r#""""`{name}`: a weir operator.

It keeps records whose value contains `needle` and prefixes their value
with `prefix`. Replace the logic in `process` with your own.

    [[operators]]
    name = "{name}"
    plugin = "{name}"
    config = { needle = "error", prefix = "ALERT " }
"""

import weir_sdk as weir


class Plugin(weir.Operator):
    def open(self, config, info):
        """`config` is the operator's config table from the pipeline file."""
        unknown = set(config) - {"needle", "prefix"}
        if unknown:
            raise weir.Error(f"unknown config key {sorted(unknown)[0]!r}")
        self.needle = config.get("needle")
        if not isinstance(self.needle, str) or not self.needle:
            raise weir.Error("`needle` must be a non-empty string")
        self.prefix = config.get("prefix", "")

    def process(self, record, out, ctx):
        """Called for each input record; `out.emit` / `out.forward` produce
        outputs, a raised weir.Error rejects the record."""
        if self.needle in record.text:
            out.emit(record.key, self.prefix + record.text, record.timestamp, record)


# The component's export: componentize-py looks for `Handler` in `app`.
Handler = weir.export(Plugin)
"#;

const PY_TEST: &str = r#""""The operator's logic under CPython: python -m unittest."""

import unittest

from weir_sdk.testing import Harness, OpenError, record

from app import Plugin


class PluginTest(unittest.TestCase):
    def test_keeps_and_prefixes_matching_records(self):
        h = Harness(Plugin, {"needle": "error", "prefix": "ALERT "})
        out = h.process([record(None, "all good"), record(None, "disk error")])
        self.assertEqual([r.text for r in out], ["ALERT disk error"])

    def test_an_empty_needle_is_refused(self):
        with self.assertRaises(OpenError):
            Harness(Plugin, {"needle": ""})


if __name__ == "__main__":
    unittest.main()
"#;

const C_OPERATOR: &str = r#"/* `{name}`: a weir operator in C.
 *
 * It keeps records whose value contains `needle` and prefixes their value
 * with `prefix`. Replace the logic in `process` with your own; the whole
 * API is weir.h (docs/plugins/c.md in the weir source tree).
 *
 *   [[operators]]
 *   name = "{name}"
 *   plugin = "{name}"
 *   config = { needle = "error", prefix = "ALERT " }
 */
#include "weir.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    weir_buf needle;
    weir_buf prefix;
} plugin;

/* `config` is the operator's config table from the pipeline file, as JSON. */
static int open_plugin(const weir_info *info, weir_bytes config, void **self) {
    (void)info;
    plugin *p = calloc(1, sizeof *p);
    weir_bytes name, value;
    size_t at = 0;
    int more;
    while ((more = weir_json_next(config, &at, &name, &value)) == 1) {
        weir_buf *field = NULL;
        if (name.len == 6 && memcmp(name.ptr, "needle", 6) == 0) field = &p->needle;
        else if (name.len == 6 && memcmp(name.ptr, "prefix", 6) == 0) field = &p->prefix;
        else return weir_reject(NULL, "unknown config key \"%.*s\": expected needle or prefix", (int)name.len, name.ptr);
        if (weir_json_string(value, field) < 0) return weir_reject(NULL, "`%.*s` must be a string", (int)name.len, name.ptr);
    }
    if (more < 0) return weir_reject(NULL, "the config is not a JSON object");
    if (p->needle.len == 0) return weir_reject(NULL, "`needle` must be a non-empty string");
    *self = p;
    return 0;
}

static int contains(weir_bytes hay, const weir_buf *needle) {
    for (size_t i = 0; i + needle->len <= hay.len; i++)
        if (memcmp(hay.ptr + i, needle->ptr, needle->len) == 0) return 1;
    return 0;
}

/* Called for each input record; weir_emit / weir_forward produce outputs,
 * `return weir_reject(ctx, "why")` rejects the record. */
static int process(void *self, const weir_record *r, weir_out *out, weir_ctx *ctx) {
    (void)ctx;
    plugin *p = self;
    if (!contains(r->value, &p->needle)) return 0;
    weir_buf v = {0};
    weir_buf_put(&v, p->prefix.ptr, p->prefix.len);
    weir_buf_bytes(&v, r->value);
    weir_emit_with_headers(out, r->has_key ? &r->key : NULL, (weir_bytes){v.ptr, v.len}, r->timestamp, r->headers);
    weir_buf_free(&v);
    return 0;
}

const weir_operator weir_plugin = {.open = open_plugin, .process = process};
"#;

const C_TEST: &str = r#"/* The operator's logic natively, with weir's C test harness: make test */
#include "weir_testing.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static void keeps_and_prefixes_matching_records(void) {
    weir_harness *h = weir_harness_open("{\"needle\":\"error\",\"prefix\":\"ALERT \"}");
    assert(!weir_harness_error(h));
    weir_record in[] = {weir_test_record(NULL, "all good", 1), weir_test_record(NULL, "disk error", 2)};
    weir_outputs out = {0};
    assert(weir_harness_process(h, in, 2, &out) == 0);
    assert(out.len == 1 && weir_output_is(&out.records[0], "ALERT disk error"));
    weir_outputs_free(&out);
    weir_harness_close(h, &out);
}

static void an_empty_needle_is_refused(void) {
    weir_outputs out = {0};
    weir_harness *h = weir_harness_open("{\"needle\":\"\"}");
    assert(weir_harness_error(h) && strstr(weir_harness_error(h), "needle"));
    weir_harness_close(h, &out);
}

int main(void) {
    keeps_and_prefixes_matching_records();
    an_empty_needle_is_refused();
    puts("{name}: 2 tests passed");
    return 0;
}
"#;

const C_MAKEFILE: &str = r#"# `{name}`: a weir operator in C.
#   make test   # run its logic natively (cc and weir's C test harness)
#   make        # build the component {crate}.wasm (clang wasm32-wasi, wit-bindgen, component new)
# WEIR_SDK is the sdk/c directory of a weir source tree.
WEIR_SDK ?= {sdk}
CC ?= cc

{crate}.wasm: operator.c
	sh $(WEIR_SDK)/build.sh operator.c -o $@

test: test_operator
	./test_operator

test_operator: test_operator.c operator.c
	$(CC) -Wall -Wno-unused-function -I$(WEIR_SDK) -o $@ test_operator.c operator.c $(WEIR_SDK)/weir_testing.c

clean:
	rm -f {crate}.wasm test_operator

.PHONY: test clean
"#;

/// The language of a scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Cargo, weir-sdk.
    Rust,
    /// npm, weir-sdk from `sdk/js`, componentize-js.
    Js,
    /// pip, weir-sdk from `sdk/python`, componentize-py.
    Python,
    /// make, weir.h from `sdk/c`, clang (wasm32-wasi), wit-bindgen.
    C,
}

impl Lang {
    /// The SDK directory inside a weir source tree, and the file that marks it.
    fn sdk(self) -> (&'static str, &'static str) {
        match self {
            Lang::Rust => ("sdk", "Cargo.toml"),
            Lang::Js => ("sdk/js", "package.json"),
            Lang::Python => ("sdk/python", "pyproject.toml"),
            Lang::C => ("sdk/c", "weir.h"),
        }
    }
}

fn default_sdk(lang: Lang) -> Option<PathBuf> {
    let (dir, marker) = lang.sdk();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
    sdk.join(marker).is_file().then(|| sdk.canonicalize().unwrap_or(sdk))
}

/// Creates the project and says how to build and use it.
pub fn create(name: &str, lang: Lang, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || name.starts_with('-') {
        bail!("plugin name {name:?} must be lowercase letters, digits and '-' (it becomes the crate and file name)");
    }
    let (sdk_dir, marker) = lang.sdk();
    let sdk = match sdk.or_else(|| default_sdk(lang)) {
        Some(s) => s,
        None => bail!("cannot find weir-sdk; pass --sdk PATH (the `{sdk_dir}/` directory of the weir source tree)"),
    };
    if !sdk.join(marker).is_file() {
        bail!("{} is not weir-sdk for this language (no {marker} there); pass --sdk PATH (the `{sdk_dir}/` directory of the weir source tree)", sdk.display());
    }
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another --dir", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let fill = |t: &str| t.replace("{name}", name).replace("{crate}", &crate_name).replace("{sdk}", &sdk.display().to_string());
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(text)).with_context(|| format!("writing {}", path.display()))
    };
    let next: Vec<String> = match lang {
        Lang::Rust => {
            write("Cargo.toml", CARGO_TOML)?;
            write("src/lib.rs", LIB_RS)?;
            write(".gitignore", "/target\n")?;
            vec![
                "cargo test                                   # run its logic natively".into(),
                "cargo build --target wasm32-wasip2 --release # build the component".into(),
                format!("cp target/wasm32-wasip2/release/{crate_name}.wasm <your plugin-dir>/"),
            ]
        }
        Lang::Js => {
            write("package.json", JS_PACKAGE)?;
            write("src/operator.js", JS_OPERATOR)?;
            write("test/operator.test.js", JS_TEST)?;
            write(".gitignore", "node_modules/\n*.wasm\n")?;
            write(".npmrc", "package-lock=false\n")?;
            vec![
                "npm install      # weir-sdk and componentize-js".into(),
                "npm test         # run its logic under Node".into(),
                format!("npm run build    # build the component {crate_name}.wasm"),
                format!("cp {crate_name}.wasm <your plugin-dir>/"),
            ]
        }
        Lang::Python => {
            write("app.py", PY_APP)?;
            write("test_app.py", PY_TEST)?;
            write(".gitignore", "__pycache__/\n*.wasm\n")?;
            vec![
                format!("pip install componentize-py==0.25.1 {}   # once", sdk.display()),
                "python -m unittest                           # run its logic under CPython".into(),
                format!("python -m weir_sdk build app -o {crate_name}.wasm   # build the component"),
                format!("cp {crate_name}.wasm <your plugin-dir>/"),
            ]
        }
        Lang::C => {
            write("operator.c", C_OPERATOR)?;
            write("test_operator.c", C_TEST)?;
            write("Makefile", C_MAKEFILE)?;
            write(".gitignore", "*.wasm\ntest_operator\n")?;
            vec![
                "make test        # run its logic natively (cc)".into(),
                format!("make             # build the component {crate_name}.wasm (clang, wit-bindgen: see docs/plugins/c.md)"),
                format!("cp {crate_name}.wasm <your plugin-dir>/"),
            ]
        }
    };
    println!("Created plugin `{name}` in {}", dir.display());
    println!();
    println!("Next:");
    println!("  cd {}", dir.display());
    for line in next {
        println!("  {line}");
    }
    println!("and reference it from a pipeline with `plugin = \"{name}\"`.");
    Ok(())
}
