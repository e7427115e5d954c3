//! Value types shared by connector and pipeline configuration: durations
//! and sizes written the way people write them (`"100ms"`, `"32KiB"`).
//!
//! This is the one parser of durations and sizes in weir: pipeline files,
//! connector sections and `weir serve`'s config all read them through
//! [`DurationStr`] and [`ByteSize`] (or the `deserialize_with` helpers
//! [`duration`] and [`byte_size`] for plain `Duration`/`u64` fields).

use serde::Deserialize;
use std::time::Duration;

/// A duration written like `100ms`, `10s`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationStr(pub Duration);

/// The longest duration any setting takes: 366 days. Intervals, timeouts
/// and delays are added to clock readings; a bound keeps that arithmetic
/// far from overflow, and no pipeline means a longer one.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

impl DurationStr {
    /// Parses `100ms`, `10s`, `1m 30s` or `0`, up to [`MAX_DURATION`]; the
    /// error says how to write one.
    pub fn parse(s: &str) -> Result<Duration, String> {
        if s.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        let d = humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"100ms\", \"10s\", \"2m\""))?;
        if d > MAX_DURATION {
            return Err(format!("duration {s:?} is longer than the longest weir accepts, 366 days"));
        }
        Ok(d)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map(Self).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(deserialize_with = "duration")]` for a `Duration` field.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    DurationStr::deserialize(d).map(|d| d.0)
}

/// A plugin's `config` table as the JSON object its `open` receives (an
/// operator's, a plugin source's or sink's alike).
pub fn config_json(config: &toml::Table) -> String {
    // Every TOML value has a JSON form (datetimes become strings), so this
    // cannot fail for a table that was parsed.
    serde_json::to_string(config).expect("a TOML table is valid JSON")
}

/// `#[serde(deserialize_with = "byte_size")]` for a `u64` field of bytes.
pub fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ByteSize::deserialize(d).map(|b| b.0)
}

/// A size written like `32KiB`, `256 MiB`, `1GiB`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `32KiB`, `1 MiB`, `4096`, `2GB` (decimal units are accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult).map(Self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => Self::parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid size {s:?}; write e.g. \"32KiB\", \"256MiB\", \"1GiB\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(DurationStr::parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(DurationStr::parse("366days"), Ok(MAX_DURATION));
        let e = DurationStr::parse("300000000000y").unwrap_err();
        assert!(e.contains("366 days") || e.contains("invalid duration"), "{e}");
        assert!(DurationStr::parse("367days").unwrap_err().contains("366 days"));
    }
}

/// `retry.*` of a sink that sends requests to a server (object storage,
/// HTTP): exponential backoff between attempts, and how long to keep trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RetryConfig {
    /// First wait after a failed request; it doubles for each further one.
    #[serde(deserialize_with = "duration")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Give up on a request that has failed for this long.
    #[serde(deserialize_with = "duration")]
    pub give_up_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(10), give_up_after: Duration::from_secs(300) }
    }
}
