//! The keys a config type accepts, read from its serde shape.
//!
//! `#[derive(Deserialize)]` on a struct hands the list of its field names
//! (after `rename_all`/`rename`, aliases included) to
//! `Deserializer::deserialize_struct`. A deserializer that only records
//! that list gives the keys of any config struct without a second,
//! hand-written list that could drift: the configuration reference in
//! `docs/` is checked against it.

use serde::de::{self, DeserializeOwned, Visitor};
use std::fmt;

#[derive(Debug)]
enum Probe {
    Fields(&'static [&'static str]),
    NotAStruct,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Probe {}

impl de::Error for Probe {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probe::NotAStruct
    }
}

struct FieldProbe;

impl<'de> de::Deserializer<'de> for FieldProbe {
    type Error = Probe;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
        Err(Probe::NotAStruct)
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Probe> {
        Err(Probe::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The field names of config struct `C`, as a pipeline file spells them;
/// empty when `C` does not deserialize as a struct.
pub fn struct_fields<C: DeserializeOwned>() -> Vec<&'static str> {
    match C::deserialize(FieldProbe) {
        Err(Probe::Fields(f)) => f.to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Example {
        max_rows: u32,
        #[serde(rename = "async")]
        async_io: bool,
        #[serde(skip)]
        index: usize,
    }

    #[test]
    fn fields_come_from_the_serde_shape() {
        assert_eq!(super::struct_fields::<Example>(), ["max-rows", "async"]);
        assert!(super::struct_fields::<u32>().is_empty());
    }
}
