//! A throttled exchange, for fault-injection tests of the bottleneck
//! analysis.
//!
//! Within one process an exchange between tasks is never slower than its
//! tasks; across a network it can be. `WEIR_THROTTLE_EXCHANGE=VERTEX=RATE`
//! (e.g. `work=256KiB`) puts a *wire* thread on every channel into
//! `VERTEX`: it delivers at most `RATE` bytes of buffers per second per
//! channel. Buffers on the wire still belong to the sender's pool, so the
//! sender runs out of buffers and is backpressured while the receiver's
//! input gate stays empty: the signature of a network-exchange bottleneck.
//! Like `WEIR_FAILPOINTS`, it is read once per process and meant for
//! tests; pipelines have no setting for it.

use crate::{Message, OutputChannel};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that throttles an exchange.
pub const ENV: &str = "WEIR_THROTTLE_EXCHANGE";

fn armed() -> Option<&'static (String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let spec = std::env::var(ENV).ok()?;
        let parsed = spec.split_once('=').and_then(|(v, r)| Some((v.trim().to_owned(), parse_rate(r.trim())?)));
        if parsed.is_none() {
            weir_events::emit(weir_events::SettingIgnored { variable: ENV, value: &spec, why: "write VERTEX=BYTES_PER_SECOND, e.g. work=256KiB" });
        }
        parsed
    })
    .as_ref()
}

fn parse_rate(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let mult = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        _ => return None,
    };
    Some(n * mult).filter(|&r| r > 0)
}

/// `channel`, or a throttled channel in its place when
/// `WEIR_THROTTLE_EXCHANGE` names `receiver`.
pub fn arm(receiver: &str, channel: OutputChannel) -> OutputChannel {
    match armed() {
        Some((vertex, rate)) if vertex == receiver => throttled(channel, *rate),
        _ => channel,
    }
}

/// A channel that delivers at most `bytes_per_second` of data buffers to
/// the receiver of `channel`, through a wire thread.
pub fn throttled(channel: OutputChannel, bytes_per_second: u64) -> OutputChannel {
    let (tx, rx) = crossbeam_channel::unbounded::<crate::Envelope>();
    let out = channel.tx.clone();
    let _ = std::thread::Builder::new().name("weir-wire".into()).spawn(move || {
        let mut free_at = Instant::now();
        for env in rx {
            if let Message::Data { buf, .. } = &env.msg {
                let cost = Duration::from_secs_f64(buf.len() as f64 / bytes_per_second as f64);
                free_at = free_at.max(Instant::now()) + cost;
                std::thread::sleep(free_at.saturating_duration_since(Instant::now()));
            }
            if out.send(env).is_err() {
                break;
            }
        }
    });
    OutputChannel { tx, channel: channel.channel, closed: channel.closed, records: channel.records, allowance: channel.allowance }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("256KiB"), Some(256 << 10));
        assert_eq!(parse_rate("1000"), Some(1000));
        assert_eq!(parse_rate("0"), None);
        assert_eq!(parse_rate("fast"), None);
    }
}
