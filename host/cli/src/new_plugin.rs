//! `weir new-plugin`: scaffolds a Rust operator project.

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
weir-sdk = { path = "{sdk}" }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
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
        let mut h = Harness::<Plugin>::open(r#"{"needle": "error", "prefix": "ALERT "}"#).unwrap();
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

fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk");
    sdk.join("Cargo.toml").is_file().then(|| sdk.canonicalize().unwrap_or(sdk))
}

/// Creates the project and says how to build and use it.
pub fn create(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || name.starts_with('-') {
        bail!("plugin name {name:?} must be lowercase letters, digits and '-' (it becomes the crate and file name)");
    }
    let sdk = match sdk.or_else(default_sdk) {
        Some(s) => s,
        None => bail!("cannot find the weir-sdk crate; pass --sdk PATH (the `sdk/` directory of the weir source tree)"),
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the weir-sdk crate (no Cargo.toml there); pass --sdk PATH", sdk.display());
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another --dir", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let fill = |t: &str| t.replace("{name}", name).replace("{crate}", &crate_name).replace("{sdk}", &sdk.display().to_string());
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), fill(CARGO_TOML)).context("writing Cargo.toml")?;
    std::fs::write(dir.join("src/lib.rs"), fill(LIB_RS)).context("writing src/lib.rs")?;
    std::fs::write(dir.join(".gitignore"), "/target\n").context("writing .gitignore")?;
    println!("Created plugin `{name}` in {}", dir.display());
    println!();
    println!("Next:");
    println!("  cd {}", dir.display());
    println!("  cargo test                                   # run its logic natively");
    println!("  cargo build --target wasm32-wasip2 --release # build the component");
    println!("  cp target/wasm32-wasip2/release/{crate_name}.wasm <your plugin-dir>/");
    println!("and reference it from a pipeline with `plugin = \"{name}\"`.");
    Ok(())
}
