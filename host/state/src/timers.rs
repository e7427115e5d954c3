//! Timers per key, in event time and processing time.
//!
//! Timers live in host memory, so a plugin could register them without end
//! (10 M timers took 1.34 GiB, 40 timers with 64 MiB keys 5.3 GiB). A
//! [`TimerBudget`] bounds how many one operator subtask holds and how many
//! bytes their keys take; a registration past it is refused with an error
//! naming the bound, and the host traps the call.

use std::collections::BTreeSet;
use std::fmt;

/// How many timers one operator subtask may hold, and how large their keys may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerBudget {
    /// Timers registered at once (both domains), at most.
    pub count: usize,
    /// Bytes of the keys of all registered timers together, at most.
    pub key_bytes: usize,
}

impl TimerBudget {
    /// No bound (tests, and state being moved between instances).
    pub const UNBOUNDED: TimerBudget = TimerBudget { count: usize::MAX, key_bytes: usize::MAX };
}

impl Default for TimerBudget {
    fn default() -> Self {
        Self::UNBOUNDED
    }
}

/// A timer registration refused by the [`TimerBudget`] or the key size bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerError(pub String);

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimerError {}

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
    /// Registrations among `staged`, and the bytes of their keys: a commit
    /// adds at most these to the registered timers.
    staged_adds: (usize, usize),
    /// Bytes of the keys of all `staged` operations.
    staged_key_bytes: usize,
    /// Bytes of the keys of the registered timers.
    key_bytes: usize,
    budget: TimerBudget,
    in_call: bool,
    /// While set, event-time timers that commits add at or before the
    /// watermark are also listed in `rearmed`.
    track_rearms: bool,
    rearmed: Vec<(i64, Vec<u8>)>,
    /// Current event-time watermark.
    pub watermark: i64,
}

impl TimerService {
    /// No timers, watermark at `i64::MIN`.
    pub fn new() -> Self {
        Self { watermark: i64::MIN, ..Self::default() }
    }

    /// Bounds the timers from now on (those already registered stay, even
    /// past it: a restore never fails on a budget).
    pub fn set_budget(&mut self, budget: TimerBudget) {
        self.budget = budget;
    }

    /// Bytes of the keys of the registered timers.
    pub fn key_bytes(&self) -> usize {
        self.key_bytes
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
            self.apply(event, add, ts, key);
        }
        self.clear_staged();
        self.in_call = false;
    }

    fn clear_staged(&mut self) {
        self.staged.clear();
        self.staged_adds = (0, 0);
        self.staged_key_bytes = 0;
    }

    fn apply(&mut self, event: bool, add: bool, ts: i64, key: Vec<u8>) {
        let len = key.len();
        if !add {
            if self.set(event).remove(&(ts, key)) {
                self.key_bytes -= len;
            }
            return;
        }
        let listed = self.track_rearms && event && ts <= self.watermark;
        let rearm = listed.then(|| key.clone());
        if self.set(event).insert((ts, key)) {
            self.key_bytes += len;
            if let Some(key) = rearm {
                self.rearmed.push((ts, key));
            }
        }
    }

    /// Refuses an operation that could take the timers past the budget:
    /// the registered timers plus every registration staged in this call
    /// (duplicates and later deletions are not subtracted, so the check
    /// errs on the safe side), and the staged operations themselves.
    fn check(&self, add: bool, key: &[u8]) -> Result<(), TimerError> {
        if key.len() > crate::MAX_ENTRY_BYTES {
            return Err(TimerError(format!(
                "registered a timer with a key of {} bytes, more than the largest timer key of {} bytes (the state key bound)",
                key.len(),
                crate::MAX_ENTRY_BYTES
            )));
        }
        let (adds, add_bytes) = if add { (self.staged_adds.0 + 1, self.staged_adds.1 + key.len()) } else { self.staged_adds };
        let count = self.len().saturating_add(adds).max(self.staged.len() + 1);
        if count > self.budget.count {
            return Err(TimerError(format!(
                "would hold more than {} timers (limits.timers): {} are registered and {} registrations or deletions are pending in this call",
                self.budget.count,
                self.len(),
                self.staged.len() + 1
            )));
        }
        let bytes = self.key_bytes.saturating_add(add_bytes).max(self.staged_key_bytes + key.len());
        if bytes > self.budget.key_bytes {
            return Err(TimerError(format!(
                "would hold timer keys of more than {} bytes together (limits.memory): the registered timers' keys take {} bytes and this call's pending ones {} bytes",
                self.budget.key_bytes,
                self.key_bytes,
                self.staged_key_bytes + key.len()
            )));
        }
        Ok(())
    }

    /// Starts or stops listing the event-time timers that calls add at or
    /// before the watermark (due at once). The host tracks them around
    /// `on-timer` calls: an `on-timer` that keeps re-registering the timers
    /// it fires at or before the watermark would fire forever.
    pub fn track_rearms(&mut self, on: bool) {
        self.track_rearms = on;
        self.rearmed.clear();
    }

    /// The timers listed since the last call (see [`TimerService::track_rearms`]).
    pub fn take_rearmed(&mut self) -> Vec<(i64, Vec<u8>)> {
        std::mem::take(&mut self.rearmed)
    }

    /// True when an event-time timer is due at `watermark`.
    pub fn event_due(&self, watermark: i64) -> bool {
        self.next_event().is_some_and(|t| t <= watermark)
    }

    /// Drops the call's registrations and deletions.
    pub fn rollback(&mut self) {
        self.clear_staged();
        self.in_call = false;
    }

    /// Registers a timer (`event`: event time, else processing time);
    /// refused past the [`TimerBudget`].
    pub fn register(&mut self, event: bool, key: &[u8], timestamp: i64) -> Result<(), TimerError> {
        self.stage_op(event, true, key, timestamp)
    }

    /// Deletes a timer. Deletions staged in a call count against the
    /// budget until the call ends, like registrations.
    pub fn delete(&mut self, event: bool, key: &[u8], timestamp: i64) -> Result<(), TimerError> {
        self.stage_op(event, false, key, timestamp)
    }

    fn stage_op(&mut self, event: bool, add: bool, key: &[u8], timestamp: i64) -> Result<(), TimerError> {
        self.check(add, key)?;
        if self.in_call {
            self.staged.push((event, add, timestamp, key.to_vec()));
            self.staged_key_bytes += key.len();
            if add {
                self.staged_adds.0 += 1;
                self.staged_adds.1 += key.len();
            }
        } else {
            self.apply(event, add, timestamp, key.to_vec());
        }
        Ok(())
    }

    /// Adds a timer from a snapshot, whatever the budget.
    pub(crate) fn restore(&mut self, event: bool, key: &[u8], timestamp: i64) {
        self.apply(event, true, timestamp, key.to_vec());
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
        self.key_bytes -= due.iter().map(|(_, k)| k.len()).sum::<usize>();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearms_are_new_event_timers_at_or_before_the_watermark() {
        let mut t = TimerService::new();
        t.watermark = 100;
        t.register(true, b"x", 1).unwrap();
        t.track_rearms(true);
        assert!(t.take_rearmed().is_empty(), "only timers added while tracking are listed");
        t.begin();
        t.register(true, b"a", 100).unwrap();
        t.register(true, b"b", 50).unwrap();
        t.register(true, b"c", 101).unwrap();
        t.register(false, b"d", 10).unwrap();
        t.register(true, b"x", 1).unwrap();
        t.commit();
        assert_eq!(t.take_rearmed(), vec![(100, b"a".to_vec()), (50, b"b".to_vec())]);
        // A rolled-back call lists nothing.
        t.begin();
        t.register(true, b"z", 1).unwrap();
        t.rollback();
        assert!(t.take_rearmed().is_empty());
        t.track_rearms(false);
        t.register(true, b"y", 2).unwrap();
        assert!(t.take_rearmed().is_empty());
        assert!(t.event_due(100));
        assert_eq!(t.take_due(true, 1, 10), vec![(1, b"x".to_vec())]);
        assert_eq!(t.take_due(true, 100, 10).len(), 3);
        assert!(!t.event_due(100));
    }

    #[test]
    fn the_budget_bounds_timer_count_and_key_bytes_including_a_call_s_pending_ones() {
        let mut t = TimerService::new();
        t.set_budget(TimerBudget { count: 3, key_bytes: 10 });
        t.register(true, b"aa", 1).unwrap();
        t.begin();
        t.register(true, b"bb", 2).unwrap();
        t.register(false, b"cc", 3).unwrap();
        let e = t.register(true, b"dd", 4).unwrap_err();
        assert!(e.0.contains("more than 3 timers (limits.timers)"), "{e}");
        let e = t.register(true, b"long-key", 5);
        assert!(e.is_err(), "the count is checked before the bytes");
        t.commit();
        assert_eq!((t.len(), t.key_bytes()), (3, 6));
        // Firing frees room; deleting does too once the call ends.
        assert_eq!(t.take_due(true, 1, 10).len(), 1);
        assert_eq!(t.key_bytes(), 4);
        let e = t.register(true, b"seven!!", 9).unwrap_err();
        assert!(e.0.contains("more than 10 bytes together (limits.memory)"), "{e}");
        t.delete(false, b"cc", 3).unwrap();
        assert_eq!((t.len(), t.key_bytes()), (1, 2));
        // A restore is never refused by the budget.
        let mut r = TimerService::new();
        r.set_budget(TimerBudget { count: 1, key_bytes: 1 });
        r.restore(true, b"restored", 1);
        r.restore(true, b"restored", 2);
        assert_eq!(r.len(), 2);
        // A key larger than a state key is refused whatever the budget.
        let e = TimerService::new().register(true, &vec![0; crate::MAX_ENTRY_BYTES + 1], 1).unwrap_err();
        assert!(e.0.contains("the state key bound"), "{e}");
    }
}
