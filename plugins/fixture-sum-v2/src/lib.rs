//! # fixture-sum-v2: fixture-sum-v1 built with the tag "v2" and a migrate hook
//!
//! The same operator as fixture-sum-v1 (its source is included), tagging
//! outputs `"version":"v2"`. It also exports the optional hot-reload hook
//! `weir:plugin/migrate@0.1.0`, generated here from the `migrate-hook`
//! world next to the SDK's `operator` bindings (the component linker
//! merges both): it logs the version it replaces. fixture-sum-v1 does not
//! export the hook, so a swap between the two exercises both cases.

/// The version tag in every output.
pub const TAG: &str = "v2";

#[path = "../../fixture-sum-v1/src/sum.rs"]
mod sum;
pub use sum::TaggedSum;

weir_sdk::export_operator!(TaggedSum);

// The generated export glue is unsafe code (as in the SDK's bindings).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod hook {
    wit_bindgen::generate!({ path: "../../wit", world: "migrate-hook" });

    struct Hook;

    impl exports::weir::plugin::migrate::Guest for Hook {
        fn migrate(previous_version: String) -> Result<(), String> {
            let short = &previous_version[..12.min(previous_version.len())];
            weir::plugin::log::log(weir::plugin::log::Level::Info, &format!("fixture-sum-v2: taking over the state of version {short}"));
            Ok(())
        }
    }

    export!(Hook);
}
