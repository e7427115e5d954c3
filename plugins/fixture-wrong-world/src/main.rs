//! # fixture-wrong-world: a component that is not a weir operator
//!
//! A plain `wasi:cli` command (it exports `wasi:cli/run`, not the
//! `weir:plugin/operator` world), built from a binary crate. The host must
//! refuse to load it with a message that names the missing exports instead
//! of failing later. It deliberately does not depend on weir-sdk.

fn main() {
    println!("fixture-wrong-world: I am a wasi:cli command, not a weir operator");
}
