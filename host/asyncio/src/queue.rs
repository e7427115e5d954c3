//! The records an async subtask has taken in and not yet let out, and the
//! rule for letting them out: in input order (`ordered`), or as they
//! complete but never across an *epoch* boundary (`unordered`). A checkpoint
//! barrier or a watermark starts a new epoch; a watermark is held until
//! every record before it has left.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

struct Entry<T> {
    record: Arc<[u8]>,
    epoch: u64,
    result: Option<T>,
}

/// In-flight records with their results as they arrive.
pub(crate) struct Queue<T> {
    ordered: bool,
    entries: BTreeMap<u64, Entry<T>>,
    next_seq: u64,
    epoch: u64,
    /// (first sequence number after the watermark, watermark).
    watermarks: VecDeque<(u64, i64)>,
}

impl<T> Queue<T> {
    pub(crate) fn new(ordered: bool) -> Self {
        Self { ordered, entries: BTreeMap::new(), next_seq: 0, epoch: 0, watermarks: VecDeque::new() }
    }

    /// Records taken in and not yet let out.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes a record in; returns its sequence number.
    pub(crate) fn push(&mut self, record: Arc<[u8]>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(seq, Entry { record, epoch: self.epoch, result: None });
        seq
    }

    /// A record's result arrived.
    pub(crate) fn complete(&mut self, seq: u64, result: T) {
        if let Some(e) = self.entries.get_mut(&seq) {
            e.result = Some(result);
        }
    }

    /// A checkpoint barrier passed: later records may not overtake earlier ones.
    pub(crate) fn barrier(&mut self) {
        self.epoch += 1;
    }

    /// A watermark arrived: held until every record before it has left.
    pub(crate) fn watermark(&mut self, watermark: i64) {
        self.epoch += 1;
        self.watermarks.push_back((self.next_seq, watermark));
    }

    /// Whether a watermark is waiting.
    pub(crate) fn holds_watermark(&self) -> bool {
        !self.watermarks.is_empty()
    }

    /// Forgets held watermarks (the input ended).
    pub(crate) fn clear_watermarks(&mut self) {
        self.watermarks.clear();
    }

    /// The newest held watermark every record before which has left.
    pub(crate) fn released_watermark(&mut self) -> Option<i64> {
        let low = self.entries.first_key_value().map_or(self.next_seq, |(s, _)| *s);
        let mut released = None;
        while let Some(&(boundary, w)) = self.watermarks.front()
            && boundary <= low
        {
            released = Some(w);
            self.watermarks.pop_front();
        }
        released
    }

    /// Lets out, in order, every record that may leave now.
    pub(crate) fn release<E>(&mut self, mut out: impl FnMut(Arc<[u8]>, T) -> Result<(), E>) -> Result<(), E> {
        loop {
            let Some((&first, head)) = self.entries.first_key_value() else { return Ok(()) };
            if self.ordered {
                if head.result.is_none() {
                    return Ok(());
                }
                let e = self.entries.remove(&first).expect("first entry");
                out(e.record, e.result.expect("checked"))?;
                continue;
            }
            let epoch = head.epoch;
            let ready: Vec<u64> = self.entries.iter().take_while(|(_, e)| e.epoch == epoch).filter(|(_, e)| e.result.is_some()).map(|(s, _)| *s).collect();
            for s in &ready {
                let e = self.entries.remove(s).expect("ready entry");
                out(e.record, e.result.expect("checked"))?;
            }
            // On to the next epoch only once this one is empty.
            if ready.is_empty() || self.entries.first_key_value().is_some_and(|(_, e)| e.epoch == epoch) {
                return Ok(());
            }
        }
    }

    /// The records not yet let out, in input order (for a snapshot).
    pub(crate) fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.values().map(|e| &*e.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> Arc<[u8]> {
        Arc::from(vec![n])
    }

    fn drain(q: &mut Queue<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        q.release(|_, r| {
            out.push(r);
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn ordered_waits_for_the_head() {
        let mut q = Queue::new(true);
        let (a, b, c) = (q.push(rec(0)), q.push(rec(1)), q.push(rec(2)));
        q.complete(c, 2);
        q.complete(b, 1);
        assert_eq!(drain(&mut q), Vec::<u8>::new());
        q.complete(a, 0);
        assert_eq!(drain(&mut q), [0, 1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn unordered_never_crosses_a_barrier_or_a_watermark() {
        let mut q = Queue::new(false);
        let a = q.push(rec(0));
        let b = q.push(rec(1));
        q.barrier();
        let c = q.push(rec(2));
        q.watermark(100);
        let d = q.push(rec(3));
        q.complete(d, 3);
        q.complete(c, 2);
        q.complete(b, 1);
        // b overtakes a (same epoch); c and d wait for a.
        assert_eq!(drain(&mut q), [1]);
        assert_eq!(q.released_watermark(), None);
        assert_eq!(q.records().map(|r| r[0]).collect::<Vec<_>>(), [0, 2, 3]);
        q.complete(a, 0);
        assert_eq!(drain(&mut q), [0, 2, 3]);
        assert_eq!(q.released_watermark(), Some(100));
        assert!(!q.holds_watermark());
    }

    #[test]
    fn a_watermark_waits_only_for_the_records_before_it() {
        let mut q = Queue::new(false);
        let a = q.push(rec(0));
        q.watermark(5);
        let b = q.push(rec(1));
        q.watermark(9);
        q.complete(a, 0);
        assert_eq!(drain(&mut q), [0]);
        assert_eq!(q.released_watermark(), Some(5));
        assert_eq!(q.released_watermark(), None, "9 waits for b");
        q.complete(b, 1);
        assert_eq!(drain(&mut q), [1]);
        assert_eq!(q.released_watermark(), Some(9));
    }
}
