//! # fixture-sum-v1: a tagged running sum (hot-reload tests)
//!
//! Adds the integer field `amount` of each record's JSON value to a total
//! kept per key in the host's keyed state (state `"sum"`), and emits
//! `{"id":N,"key":K,"amount":A,"sum":S,"version":"v1"}`. fixture-sum-v2 is
//! the same operator built with the tag `"v2"` (and a `migrate` hook):
//! copied in turn over one plugin file, they are two versions of one plugin
//! whose outputs say which version processed each record, and whose sums
//! show that the state survived each swap. No configuration.

/// The version tag in every output.
pub const TAG: &str = "v1";

mod sum;
pub use sum::TaggedSum;

weir_sdk::export_operator!(TaggedSum);
