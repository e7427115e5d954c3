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
        self.in_call = false;
    }

    fn apply(&mut self, event: bool, add: bool, ts: i64, key: Vec<u8>) {
        if !add {
            self.set(event).remove(&(ts, key));
            return;
        }
        let listed = self.track_rearms && event && ts <= self.watermark;
        if self.set(event).insert((ts, key.clone())) && listed {
            self.rearmed.push((ts, key));
        }
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
        self.staged.clear();
        self.in_call = false;
    }

    /// Registers a timer (`event`: event time, else processing time).
    pub fn register(&mut self, event: bool, key: &[u8], timestamp: i64) {
        if self.in_call {
            self.staged.push((event, true, timestamp, key.to_vec()));
        } else {
            self.apply(event, true, timestamp, key.to_vec());
        }
    }

    /// Deletes a timer.
    pub fn delete(&mut self, event: bool, key: &[u8], timestamp: i64) {
        if self.in_call {
            self.staged.push((event, false, timestamp, key.to_vec()));
        } else {
            self.apply(event, false, timestamp, key.to_vec());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearms_are_new_event_timers_at_or_before_the_watermark() {
        let mut t = TimerService::new();
        t.watermark = 100;
        t.register(true, b"x", 1);
        t.track_rearms(true);
        assert!(t.take_rearmed().is_empty(), "only timers added while tracking are listed");
        t.begin();
        t.register(true, b"a", 100);
        t.register(true, b"b", 50);
        t.register(true, b"c", 101);
        t.register(false, b"d", 10);
        t.register(true, b"x", 1);
        t.commit();
        assert_eq!(t.take_rearmed(), vec![(100, b"a".to_vec()), (50, b"b".to_vec())]);
        // A rolled-back call lists nothing.
        t.begin();
        t.register(true, b"z", 1);
        t.rollback();
        assert!(t.take_rearmed().is_empty());
        t.track_rearms(false);
        t.register(true, b"y", 2);
        assert!(t.take_rearmed().is_empty());
        assert!(t.event_due(100));
        assert_eq!(t.take_due(true, 1, 10), vec![(1, b"x".to_vec())]);
        assert_eq!(t.take_due(true, 100, 10).len(), 3);
        assert!(!t.event_due(100));
    }
}
