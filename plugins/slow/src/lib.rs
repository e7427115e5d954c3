//! # slow: forwards every record after spending a set time on it
//!
//! A fixture for backpressure and bottleneck tests. Each record costs
//! `cost-us` microseconds, spent busy (`mode = "spin"`, burning CPU like a
//! heavy operator) or asleep (`mode = "sleep"`, like a blocking call). The
//! cost is paid once per batch (records x cost), which keeps the fixture
//! itself cheap and precise.
//!
//! The cost can be changed while the pipeline runs: with `control-file`
//! set, the file is read at most every 100 ms and its content (a number of
//! microseconds) replaces `cost-us`. The plugin can only read it if the
//! pipeline grants the directory, e.g. `allow-read = ["ctl"]`.
//!
//! With `burst-every-ms` set, the cost applies only during the first
//! `burst-ms` of every `burst-every-ms` (wall clock, from `open`); in
//! between records pass at no cost. That is an *alternating* bottleneck,
//! like a window that fires every few seconds and blocks its task meanwhile.
//!
//! ```toml
//! [[operators]]
//! name = "slow"
//! plugin = "slow"
//! disable-chaining = true
//! allow-read = ["ctl"]
//! config = { cost-us = 33.3, control-file = "ctl/cost" }
//! ```

use serde::Deserialize;
use std::time::{Duration, Instant};
use weir_sdk::{Context, Error, OpenContext, Operator, Output, Record};

/// How the time is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Busy-wait: the task shows as busy.
    #[default]
    Spin,
    /// Sleep: the task shows as busy too (it is inside the operator), but
    /// uses no CPU.
    Sleep,
}

/// Configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Microseconds per record.
    #[serde(default)]
    pub cost_us: f64,
    /// Spin or sleep.
    #[serde(default)]
    pub mode: Mode,
    /// A file whose content overrides `cost-us` while running.
    pub control_file: Option<String>,
    /// Pay the cost only in bursts, one every this many milliseconds.
    pub burst_every_ms: Option<u64>,
    /// How long each burst lasts, in milliseconds.
    #[serde(default)]
    pub burst_ms: u64,
}

/// The operator.
#[derive(Debug)]
pub struct Slow {
    cost_us: f64,
    mode: Mode,
    control_file: Option<String>,
    last_check: Option<Instant>,
    /// Time owed from earlier batches (sub-microsecond remainders add up).
    debt: Duration,
    /// `(every, length)` of the bursts, and when the first began.
    bursts: Option<(Duration, Duration, Instant)>,
}

impl Slow {
    fn refresh(&mut self) -> Result<(), Error> {
        let Some(path) = &self.control_file else { return Ok(()) };
        if self.last_check.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return Ok(());
        }
        self.last_check = Some(Instant::now());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.cost_us = text.trim().parse().map_err(|e| Error::msg(format_args!("control file {path} holds {:?}, not a number of microseconds: {e}", text.trim())))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::msg(format_args!("cannot read control file {path}: {e} (is its directory granted with allow-read?)"))),
        }
        Ok(())
    }

    fn pay(&mut self, records: usize) {
        if let Some((every, length, start)) = self.bursts {
            let phase = start.elapsed().as_nanos() % every.as_nanos().max(1);
            if phase >= length.as_nanos() {
                return;
            }
        }
        let owed = self.debt + Duration::from_nanos((self.cost_us * 1000.0 * records as f64) as u64);
        if owed < Duration::from_micros(50) {
            self.debt = owed;
            return;
        }
        self.debt = Duration::ZERO;
        match self.mode {
            Mode::Sleep => std::thread::sleep(owed),
            Mode::Spin => {
                let start = Instant::now();
                while start.elapsed() < owed {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

impl Operator for Slow {
    type Config = Config;

    fn open(config: Config, _ctx: &OpenContext) -> Result<Self, Error> {
        if !(config.cost_us >= 0.0 && config.cost_us.is_finite()) {
            return Err(Error::msg("`cost-us` must be a non-negative number of microseconds"));
        }
        let bursts = match config.burst_every_ms {
            Some(0) => return Err(Error::msg("`burst-every-ms` must be positive")),
            Some(every) if config.burst_ms > every => return Err(Error::msg("`burst-ms` must not exceed `burst-every-ms`")),
            Some(every) => Some((Duration::from_millis(every), Duration::from_millis(config.burst_ms), Instant::now())),
            None => None,
        };
        let mut slow =
            Slow { cost_us: config.cost_us, mode: config.mode, control_file: config.control_file, last_check: None, debt: Duration::ZERO, bursts };
        slow.refresh()?;
        Ok(slow)
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output, _ctx: &mut Context) -> Result<(), Error> {
        // The cost of the whole batch is paid on its first record.
        if out.is_empty() {
            self.refresh()?;
        }
        self.pay(1);
        out.forward(&record);
        Ok(())
    }
}

weir_sdk::export_operator!(Slow);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::{record, Harness};

    #[test]
    fn forwards_everything_and_takes_its_time() {
        let mut h = Harness::<Slow>::open(r#"{"cost-us": 100}"#).unwrap();
        let input: Vec<_> = (0..100).map(|i| record(None, &i.to_string())).collect();
        let start = Instant::now();
        let out = h.process(&input).unwrap();
        assert_eq!(out, input);
        assert!(start.elapsed() >= Duration::from_millis(10), "{:?}", start.elapsed());
    }

    #[test]
    fn the_control_file_changes_the_cost() {
        let dir = std::env::temp_dir().join(format!("weir-slow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cost");
        std::fs::write(&file, "0").unwrap();
        let config = format!(r#"{{"cost-us": 100000, "control-file": {:?}}}"#, file.display().to_string());
        let mut h = Harness::<Slow>::open(&config).unwrap();
        let start = Instant::now();
        h.process(&[record(None, "x"), record(None, "y")]).unwrap();
        assert!(start.elapsed() < Duration::from_millis(100), "the file's 0 replaced 100 ms");
        std::fs::write(&file, "not a number").unwrap();
        h.operator().last_check = None;
        assert!(h.process(&[record(None, "x")]).unwrap_err().message.contains("not a number"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
