//! Timers per key, in event time and processing time.

use std::collections::BTreeSet;

/// Registered timers of one operator subtask.
///
/// A timer is identified by (timestamp, key) within its domain; registering
/// it twice keeps one. Registrations made during a plugin call are staged
/// like state writes and dropped if the call fails.
#[derive(Debug, Default)]
pub struct TimerService {
    event: BTreeSet<(i64, Vec<u8>)>,
    processing: BTreeSet<(i64, Vec<u8>)>,
    staged: Vec<(bool, bool, i64, Vec<u8>)>,
    in_call: bool,
    /// Current event-time watermark.
    pub watermark: i64,
}

impl TimerService {
    /// No timers, watermark at `i64::MIN`.
    pub fn new() -> Self {
        Self { watermark: i64::MIN, ..Self::default() }
    }

    fn set(&mut self, event: bool) -> &mut BTreeSet<(i64, Vec<u8>)> {
        if event { &mut self.event } else { &mut self.processing }
    }

    /// Starts a plugin call.
    pub fn begin(&mut self) {
        self.in_call = true;
    }

    /// Applies the call's registrations and deletions.
    pub fn commit(&mut self) {
        for (event, add, ts, key) in std::mem::take(&mut self.staged) {
            if add {
                self.set(event).insert((ts, key));
            } else {
                self.set(event).remove(&(ts, key));
            }
        }
        self.in_call = false;
    }

    /// Drops the call's registrations and deletions.
    pub fn rollback(&mut self) {
        self.staged.clear();
        self.in_call = false;
    }

    /// Registers a timer (`event`: event time, else processing time).
    pub fn register(&mut self, event: bool, key: &[u8], timestamp: i64) {
        if self.in_call {
            self.staged.push((event, true, timestamp, key.to_vec()));
        } else {
            self.set(event).insert((timestamp, key.to_vec()));
        }
    }

    /// Deletes a timer.
    pub fn delete(&mut self, event: bool, key: &[u8], timestamp: i64) {
        if self.in_call {
            self.staged.push((event, false, timestamp, key.to_vec()));
        } else {
            self.set(event).remove(&(timestamp, key.to_vec()));
        }
    }

    /// Earliest processing-time timer, if any.
    pub fn next_processing(&self) -> Option<i64> {
        self.processing.first().map(|(t, _)| *t)
    }

    /// Earliest event-time timer, if any.
    pub fn next_event(&self) -> Option<i64> {
        self.event.first().map(|(t, _)| *t)
    }

    /// Removes and returns every timer of the domain due at `time`, in
    /// timestamp order (at most `max`).
    pub fn take_due(&mut self, event: bool, time: i64, max: usize) -> Vec<(i64, Vec<u8>)> {
        let set = self.set(event);
        let mut due = Vec::new();
        while due.len() < max {
            match set.first() {
                Some((t, _)) if *t <= time => due.push(set.pop_first().expect("non-empty")),
                _ => break,
            }
        }
        due
    }

    /// Adds every registered timer to a snapshot (between plugin calls).
    pub fn snapshot(&self, out: &mut crate::snapshot::SnapshotWriter) {
        for (event, set) in [(true, &self.event), (false, &self.processing)] {
            for (ts, key) in set {
                out.timer(event, key, *ts);
            }
        }
    }

    /// Number of registered timers.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// True when no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
