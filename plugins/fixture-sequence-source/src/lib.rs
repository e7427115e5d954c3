//! Test fixture: a source written as a plugin (world `weir:plugin/source`).
//!
//! Emits `{"id": n}` (key `n`, timestamp `n`) for every `n` in `0..count`
//! with `n % parallelism == subtask`, at most `rate` records a second per
//! subtask (0: as fast as polled). Its position is the next `n`, stored in
//! checkpoints; a restore must keep the parallelism (each subtask resumes
//! from its own position).
//! `fail-at` makes `poll` fail once `n` reaches it (an external error).

use serde::Deserialize;
use weir_sdk_source::{BatchWriter, Error, Info, Poll, Source};

/// The `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Records in all.
    pub count: u64,
    /// Records a second per subtask; 0 for no limit.
    #[serde(default)]
    pub rate: u64,
    /// Fail when reaching this record.
    pub fail_at: Option<u64>,
}

/// The source.
#[derive(Debug)]
pub struct Sequence {
    config: Config,
    subtask: u64,
    parallelism: u64,
    next: u64,
    started: std::time::Instant,
    emitted: u64,
}

impl Source for Sequence {
    type Config = Config;

    fn open(config: Config, info: &Info) -> Result<Self, Error> {
        let (subtask, parallelism) = (u64::from(info.subtask), u64::from(info.parallelism));
        Ok(Self { config, subtask, parallelism, next: subtask, started: std::time::Instant::now(), emitted: 0 })
    }

    fn restore(&mut self, positions: Vec<Vec<u8>>) -> Result<(), Error> {
        if positions.len() as u64 != self.parallelism {
            return Err(Error::user(format!("the checkpoint was taken at parallelism {}; this fixture restores only at the same parallelism", positions.len())));
        }
        let own = &positions[self.subtask as usize];
        if !own.is_empty() {
            let bytes: [u8; 8] = own.as_slice().try_into().map_err(|_| Error::user(format!("a position of {} bytes is not this source's", own.len())))?;
            self.next = u64::from_le_bytes(bytes);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut BatchWriter, max_bytes: usize) -> Result<Poll, Error> {
        if self.config.rate > 0 {
            let due = self.started.elapsed().as_millis() as u64 * self.config.rate / 1000;
            if self.emitted >= due {
                return Ok(Poll::Idle(5));
            }
        }
        while self.next < self.config.count && out.len() < max_bytes {
            if self.config.fail_at == Some(self.next) {
                return Err(Error::external(format!("fixture: failing at record {} as configured (fail-at)", self.next)));
            }
            let n = self.next.to_string();
            out.push(Some(n.as_bytes()), format!("{{\"id\":{n}}}").as_bytes(), self.next as i64, &[]);
            self.next += self.parallelism;
            self.emitted += 1;
            if self.config.rate > 0 && self.emitted % 64 == 0 {
                break;
            }
        }
        if self.next >= self.config.count && out.records() == 0 {
            return Ok(Poll::Finished);
        }
        Ok(Poll::Ready)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, Error> {
        Ok(self.next.to_le_bytes().to_vec())
    }
}

weir_sdk_source::export_source!(Sequence);
