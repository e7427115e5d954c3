//! # split-words: one record per word
//!
//! Splits each record's value, which must be UTF-8 text, on whitespace
//! (Unicode `White_Space`) and emits one record per word, with the word as
//! both key and value and the input's timestamp. A value that is not UTF-8
//! is rejected with the byte offset of the first invalid byte.
//!
//! Config keys (all optional):
//!
//! - `lowercase` (bool, default `false`): lower-case each word (Unicode rules).
//! - `min-length` (integer, default `1`): drop words shorter than this many
//!   characters (counted after lower-casing).
//!
//! ```toml
//! [[operators]]
//! name = "words"
//! plugin = "split-words"
//! config = { lowercase = true, min-length = 3 }
//! ```

use serde::Deserialize;
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Config {
    /// Lower-case each word.
    pub lowercase: bool,
    /// Shortest word emitted, in characters.
    pub min_length: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { lowercase: false, min_length: 1 }
    }
}

/// The split-words operator.
#[derive(Debug)]
pub struct SplitWords {
    lowercase: bool,
    min_length: usize,
    lowered: String,
}

impl Operator for SplitWords {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        Ok(SplitWords { lowercase: config.lowercase, min_length: config.min_length, lowered: String::new() })
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        let text = std::str::from_utf8(record.value).map_err(|e| {
            Error::msg(format_args!(
                "value is not UTF-8 text: invalid byte 0x{:02x} at byte offset {}",
                record.value[e.valid_up_to()],
                e.valid_up_to()
            ))
        })?;
        let min = self.min_length;
        for word in text.split_whitespace() {
            let word = if self.lowercase { self.lower(word) } else { word };
            // A word has at least as many bytes as characters: count only when it matters.
            if word.len() >= min && (min <= 1 || word.chars().count() >= min) {
                out.emit(Some(word.as_bytes()), word.as_bytes(), record.timestamp);
            }
        }
        Ok(())
    }
}

impl SplitWords {
    /// `word` lower-cased, in a buffer reused across words.
    fn lower(&mut self, word: &str) -> &str {
        self.lowered.clear();
        if word.is_ascii() {
            self.lowered.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            self.lowered.extend(word.chars().flat_map(char::to_lowercase));
        }
        &self.lowered
    }
}

weir_sdk::export_operator!(SplitWords);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{Harness, OwnedRecord, record};

    fn words(config: &str, text: &str) -> Vec<String> {
        let mut h = Harness::<SplitWords>::open(config).unwrap();
        let input = OwnedRecord { timestamp: 7, ..record(Some("line"), text) };
        let out = h.process(&[input]).unwrap();
        for r in &out {
            assert_eq!((r.key.as_deref(), r.timestamp), (Some(&r.value[..]), 7));
        }
        out.iter().map(|r| r.text().to_owned()).collect()
    }

    #[test]
    fn splits_on_any_whitespace() {
        assert_eq!(words("{}", "  the Quick\tbrown\n\nfox\u{3000}jumps "), ["the", "Quick", "brown", "fox", "jumps"]);
        assert!(words("{}", " \t\n").is_empty());
    }

    #[test]
    fn lowercases_and_filters_by_length_in_characters() {
        assert_eq!(words(r#"{"lowercase":true}"#, "The ÉTÉ Fox"), ["the", "été", "fox"]);
        assert_eq!(words(r#"{"min-length":3}"#, "a été to the"), ["été", "the"]);
    }

    #[test]
    fn rejects_non_utf8_with_offset() {
        let mut h = Harness::<SplitWords>::open("{}").unwrap();
        let bad = OwnedRecord { value: b"ok \xff no".to_vec(), ..record(None, "") };
        let e = h.process(&[record(None, "fine"), bad]).unwrap_err();
        assert_eq!(e.index, 1);
        assert_eq!(e.message, "value is not UTF-8 text: invalid byte 0xff at byte offset 3");
    }

    #[test]
    fn rejects_unknown_settings() {
        assert!(Harness::<SplitWords>::open(r#"{"min_length":3}"#).unwrap_err().contains("unknown field"));
    }
}
