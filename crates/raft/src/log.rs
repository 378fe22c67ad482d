//! The in-memory view of the replicated log (paper §5.3) that the core reasons about.
//!
//! The core keeps every entry after the last compaction point in memory and tells the driver, through
//! [`crate::Ready`], which entries to persist. Storage is the driver's business; this module only tracks
//! which part of the log storage has not seen yet.
//!
//! Invariants:
//! - `entries[k].index == offset + 1 + k`: indexes are consecutive, starting right after the
//!   compaction point (`offset`, whose term is `offset_term`).
//! - Terms never decrease along the log.
//! - `applied <= commit <= last_index()`; `commit` never decreases, and no committed entry is ever
//!   truncated (an attempt is a safety violation and panics: it can only come from a bug).
//! - Every entry with index `>= unstable_from` differs from what storage holds (new or rewritten);
//!   everything below it is already handed to storage.
//! - `offset <= applied`: only what the state machine (and so a snapshot) covers is ever dropped,
//!   by [`RaftLog::compact`] (a local snapshot) or [`RaftLog::restore`] (an installed one).

use std::collections::VecDeque;

use crate::types::{Entry, EntryKind, Index, Term};

/// What storage must do when a snapshot is installed (see [`RaftLog::restore`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageAction {
    /// Storage holds the snapshot's last entry and everything the log keeps after it: drop the
    /// entries up to the snapshot's index.
    DropPrefix,
    /// Storage must discard its whole log and restart empty after the snapshot's index; the core
    /// hands any entries it kept after the snapshot to it again (in the next [`crate::Ready`]).
    Reset,
}

/// The replicated log as the core sees it.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// The entries after `offset`, consecutive.
    entries: VecDeque<Entry>,
    /// The index of the last entry removed by compaction (0 if none).
    offset: Index,
    /// The term of the entry at `offset` (0 if none).
    offset_term: Term,
    /// The highest index known to be committed.
    commit: Index,
    /// The highest index handed to the state machine.
    applied: Index,
    /// The lowest index whose entry storage has not been told about (new or rewritten).
    unstable_from: Index,
    /// The last index storage holds (after executing every Ready so far).
    stored_last: Index,
}

impl RaftLog {
    /// A log recovered from storage: `entries` follow the compaction point (`offset`, `offset_term`);
    /// `applied` is what the state machine already holds (at least `offset`).
    pub fn new(offset: Index, offset_term: Term, entries: Vec<Entry>, applied: Index) -> Self {
        let entries: VecDeque<Entry> = entries.into();
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.index, offset + 1 + k as u64, "recovered log is not consecutive");
        }
        let last = offset + entries.len() as u64;
        let applied = applied.max(offset).min(last);
        RaftLog {
            entries,
            offset,
            offset_term,
            commit: applied,
            applied,
            unstable_from: last + 1,
            stored_last: last,
        }
    }

    /// The first index held in memory (compaction point + 1).
    pub fn first_index(&self) -> Index {
        self.offset + 1
    }

    /// The index of the last entry (the compaction point if the log is empty).
    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as u64
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.offset_term, |e| e.term)
    }

    /// The commit index.
    pub fn commit(&self) -> Index {
        self.commit
    }

    /// The applied index.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The term of the entry at `index`, if known (the compaction point's term included).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held in memory.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    /// True if a log ending at (`last_index`, `last_term`) is at least as up to date as this one
    /// (§5.4.1: compare last terms, then lengths).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `lo` to `hi` inclusive, at most `max_count` and `max_bytes` of payload (but at
    /// least one if any is in range).
    pub fn slice(&self, lo: Index, hi: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let (first, last) = (lo.max(self.first_index()), hi.min(self.last_index()));
        if first > last {
            return Vec::new();
        }
        // Counted first, so that the `Vec` is allocated once (a leader slices for every follower
        // on every send: growing it one push at a time was ~0.8 reallocations per write).
        let start = (first - self.first_index()) as usize;
        let in_range = usize::try_from(last - first + 1).unwrap_or(usize::MAX).min(max_count);
        let mut bytes = 0usize;
        let mut count = 0;
        for e in self.entries.range(start..start + in_range) {
            bytes += e.data.len();
            if count > 0 && bytes > max_bytes {
                break;
            }
            count += 1;
        }
        self.entries.range(start..start + count).cloned().collect()
    }

    /// The first index of the run of entries with the same term as the entry at `index` (used as a
    /// fast-backtracking hint).
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else { return index };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index whose entry has term `term`, if any entry has it.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries.iter().rev().find(|e| e.term <= term).filter(|e| e.term == term).map(|e| e.index)
    }

    /// Appends a new entry at the end (leader).
    pub fn append(&mut self, term: Term, data: bytes::Bytes) -> Index {
        self.append_kind(term, EntryKind::Normal, data)
    }

    /// Appends a new entry of `kind` at the end (leader).
    pub fn append_kind(&mut self, term: Term, kind: EntryKind, data: bytes::Bytes) -> Index {
        let index = self.last_index() + 1;
        debug_assert!(term >= self.last_term());
        self.entries.push_back(Entry { term, index, kind, data });
        index
    }

    /// Follower side of AppendEntries: if the entry at `prev_index` has `prev_term`, merges `entries`
    /// (truncating at the first conflict) and returns the index of the last entry now known to match
    /// the leader and the index truncated from, if any; otherwise returns None.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<(Index, Option<Index>)> {
        if self.term(prev_index) != Some(prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        let mut truncated = None;
        for (k, e) in entries.iter().enumerate() {
            debug_assert_eq!(e.index, prev_index + 1 + k as u64);
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(
                        e.index > self.commit,
                        "safety violation: a leader asks to overwrite committed entry {} (commit {})",
                        e.index,
                        self.commit
                    );
                    self.truncate_from(e.index);
                    truncated = Some(e.index);
                }
                None => {}
            }
            for e in &entries[k..] {
                self.entries.push_back(e.clone());
            }
            break;
        }
        Some((last_new, truncated))
    }

    /// Removes every entry at or after `index`.
    fn truncate_from(&mut self, index: Index) {
        let keep = (index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Raises the commit index to `index` (never lowers it; never past the last entry).
    pub fn commit_to(&mut self, index: Index) -> bool {
        let index = index.min(self.last_index());
        if index > self.commit {
            self.commit = index;
            true
        } else {
            false
        }
    }

    /// True if storage has not yet been told about some entries.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index() || self.unstable_from <= self.stored_last
    }

    /// Hands the unstable part to storage: (truncate storage from this index first, then append these).
    pub fn take_unstable(&mut self) -> (Option<Index>, Vec<Entry>) {
        let truncate = (self.unstable_from <= self.stored_last).then_some(self.unstable_from);
        let from = self.unstable_from.max(self.first_index());
        let entries = self.slice(from, self.last_index(), usize::MAX, usize::MAX);
        self.unstable_from = self.last_index() + 1;
        self.stored_last = self.last_index();
        (truncate, entries)
    }

    /// True if committed entries wait to be applied.
    pub fn has_committed(&self) -> bool {
        self.commit > self.applied
    }

    /// Hands the committed, not yet applied entries to the state machine.
    pub fn take_committed(&mut self, max_count: usize) -> Vec<Entry> {
        let entries = self.slice(self.applied + 1, self.commit, max_count, usize::MAX);
        if let Some(last) = entries.last() {
            self.applied = last.index;
        }
        entries
    }

    /// Installs a snapshot ending at (`index`, `term`) that the state machine now reflects (§7, and
    /// etcd's rule): if the log holds an entry at `index` with `term`, the entries after it continue
    /// the snapshot and are kept, stored or not; otherwise the whole log is discarded. Commit and
    /// applied move up to `index` (commit never past the last index).
    ///
    /// Returns the [`StorageAction`]: storage may keep its entries after `index` only if it holds
    /// exactly what the log keeps up to there (every kept entry up to `index` was handed to it and
    /// none was rewritten since); otherwise it must discard its whole log and restart empty after
    /// `index`, and every entry kept in memory is handed to it again as unstable.
    ///
    /// The caller guarantees `index > applied` (a snapshot never moves the state machine back).
    ///
    /// # Panics
    /// If the log holds a committed entry that the snapshot contradicts (safety violation).
    pub fn restore(&mut self, index: Index, term: Term) -> StorageAction {
        debug_assert!(index > self.applied);
        let continues = self.term(index) == Some(term);
        let storage_keeps = continues && self.stored_last >= index && self.unstable_from > index;
        if continues {
            let n = (index - self.offset) as usize;
            self.entries.drain(..n);
        } else {
            assert!(
                self.commit <= index,
                "safety violation: snapshot {index}/{term} contradicts the log, committed up to {}",
                self.commit
            );
            self.entries.clear();
        }
        if !storage_keeps {
            self.unstable_from = index + 1;
            self.stored_last = index;
        }
        self.offset = index;
        self.offset_term = term;
        self.commit = self.commit.max(index);
        debug_assert!(self.commit <= self.last_index());
        self.applied = index;
        if storage_keeps {
            StorageAction::DropPrefix
        } else {
            StorageAction::Reset
        }
    }

    /// Drops entries up to and including `index` (after a snapshot covers them). Only applied
    /// entries may be compacted.
    ///
    /// Returns the removed entries, so the caller can free them wherever it likes (freeing a
    /// hundred thousand entries takes milliseconds); only the kept suffix is moved.
    pub fn compact(&mut self, index: Index) -> VecDeque<Entry> {
        if index <= self.offset || index > self.applied {
            return VecDeque::new();
        }
        let Some(term) = self.term(index) else { return VecDeque::new() };
        let n = (index - self.offset) as usize;
        let kept = self.entries.split_off(n);
        let removed = std::mem::replace(&mut self.entries, kept);
        self.offset = index;
        self.offset_term = term;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms.iter().enumerate().map(|(i, t)| Entry::new(*t, i as u64 + 1, "x")).collect();
        RaftLog::new(0, 0, entries, 0)
    }

    fn e(term: Term, index: Index) -> Entry {
        Entry::new(term, index, "y")
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of(&[1, 1, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(10, 1));
        assert!(!log.is_up_to_date(2, 2));
    }

    #[test]
    fn maybe_append_rejects_mismatch_and_truncates_conflicts() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.take_unstable();
        assert_eq!(log.maybe_append(2, 2, &[]), None);
        assert_eq!(log.maybe_append(5, 2, &[]), None);
        // Conflict at 3: truncate 3.., append new.
        assert_eq!(log.maybe_append(2, 1, &[e(3, 3)]), Some((3, Some(3))));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.take_unstable(), (Some(3), vec![e(3, 3)]));
        // A stale, shorter append that matches does not truncate.
        assert_eq!(log.maybe_append(1, 1, &[Entry::new(1, 2, "x")]), Some((2, None)));
        assert_eq!(log.last_index(), 3);
        assert!(!log.has_unstable());
    }

    #[test]
    #[should_panic(expected = "safety violation")]
    fn overwriting_a_committed_entry_panics() {
        let mut log = log_of(&[1, 1]);
        log.commit_to(2);
        log.maybe_append(1, 1, &[e(2, 2)]);
    }

    #[test]
    fn unstable_tracks_truncation_below_stored_entries() {
        let mut log = log_of(&[]);
        log.append(1, "a".into());
        log.append(1, "b".into());
        let (t, es) = log.take_unstable();
        assert_eq!((t, es.len()), (None, 2));
        log.append(1, "c".into());
        assert!(log.maybe_append(1, 1, &[e(2, 2)]).is_some());
        let (t, es) = log.take_unstable();
        assert_eq!(t, Some(2));
        assert_eq!(es, vec![e(2, 2)]);
    }

    #[test]
    fn hints_and_compaction() {
        let mut log = log_of(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        log.commit_to(4);
        assert_eq!(log.take_committed(usize::MAX).len(), 4);
        log.compact(3);
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert_eq!(log.slice(1, 10, 10, 10).first().map(|e| e.index), Some(4));
    }

    /// The loop `slice` was before it counted first: one push at a time.
    fn slice_by_pushes(
        log: &RaftLog,
        lo: Index,
        hi: Index,
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = lo.max(log.first_index());
        while index <= hi.min(log.last_index()) && out.len() < max_count {
            let Some(e) = log.entry(index) else { break };
            bytes += e.data.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            index += 1;
        }
        out
    }

    proptest::proptest! {
        /// `slice` takes the same entries as pushing them one by one, in one allocation.
        #[test]
        fn slice_takes_what_pushing_took(
            offset in 0u64..5,
            sizes in proptest::collection::vec(0usize..20, 0..30),
            lo in 0u64..40,
            hi in 0u64..40,
            max_count in proptest::prop_oneof![0usize..12, proptest::strategy::Just(usize::MAX)],
            max_bytes in proptest::prop_oneof![0usize..80, proptest::strategy::Just(usize::MAX)],
        ) {
            let entries = sizes.iter().enumerate().map(|(i, &n)| Entry::new(1, offset + i as u64 + 1, vec![7u8; n])).collect();
            let log = RaftLog::new(offset, if offset == 0 { 0 } else { 1 }, entries, offset);
            let got = log.slice(lo, hi, max_count, max_bytes);
            proptest::prop_assert_eq!(&got, &slice_by_pushes(&log, lo, hi, max_count, max_bytes));
            proptest::prop_assert_eq!(got.capacity(), got.len());
        }
    }
}
