//! The in-memory index: log index -> (segment, byte offset, record length).
//!
//! The index is never written to disk. It is rebuilt from the segments at every open (the recovery
//! scan reads every record anyway to verify checksums, so rebuilding costs nothing extra), which
//! removes a whole class of "index and data disagree" bugs. It costs 8 bytes per entry.
//!
//! Invariants of a [`SegmentIndex`]:
//! - `offsets[i]` is the byte offset of the record of entry `base + i`; offsets strictly increase and
//!   the first one is the segment header length;
//! - `end` is the byte offset just past the last record (the logical length of the segment, counting
//!   records still in the store's write buffer), so the record of entry `base + i` spans
//!   `offsets[i] .. offsets.get(i + 1).unwrap_or(end)`.
//!
//! Across segments (kept by [`crate::log::LogStore`]): segment bases strictly increase and each
//! segment starts right after the previous one's last entry (`base[k+1] == base[k] + len[k]`).

use crate::record::SEGMENT_HEADER_LEN;

/// Where the records of one segment are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// Index of the first entry this segment holds (or would hold, if empty).
    pub base: u64,
    /// Byte offset of each entry's record, in index order.
    pub offsets: Vec<u64>,
    /// Byte offset just past the last record.
    pub end: u64,
}

impl SegmentIndex {
    /// The index of an empty segment whose first entry will be `base`.
    pub fn new(base: u64) -> Self {
        SegmentIndex { base, offsets: Vec::new(), end: SEGMENT_HEADER_LEN as u64 }
    }

    /// Number of entries.
    pub fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index of the last entry, or `base - 1` if empty.
    pub fn last_index(&self) -> u64 {
        self.base + self.count() - 1
    }

    /// `(offset, record length)` of entry `index`, if this segment holds it.
    pub fn locate(&self, index: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(index.checked_sub(self.base)?).ok()?;
        let start = *self.offsets.get(i)?;
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.end);
        Some((start, end - start))
    }

    /// Records that the next entry's record, `len` bytes long, starts at `end`.
    pub fn push(&mut self, len: u64) {
        self.offsets.push(self.end);
        self.end += len;
    }

    /// Forgets entries `>= from` and returns the byte offset where the first of them started (the
    /// new `end`). `from` must be in `base ..= last_index() + 1`.
    pub fn truncate_from(&mut self, from: u64) -> u64 {
        let keep = (from.saturating_sub(self.base) as usize).min(self.offsets.len());
        if let Some(&cut) = self.offsets.get(keep) {
            self.end = cut;
        }
        self.offsets.truncate(keep);
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_push_truncate() {
        let h = SEGMENT_HEADER_LEN as u64;
        let mut s = SegmentIndex::new(10);
        assert_eq!(s.last_index(), 9);
        assert_eq!(s.locate(10), None);
        s.push(30);
        s.push(40);
        s.push(50);
        assert_eq!(s.last_index(), 12);
        assert_eq!(s.locate(9), None);
        assert_eq!(s.locate(10), Some((h, 30)));
        assert_eq!(s.locate(11), Some((h + 30, 40)));
        assert_eq!(s.locate(12), Some((h + 70, 50)));
        assert_eq!(s.locate(13), None);
        assert_eq!(s.truncate_from(13), h + 120);
        assert_eq!(s.truncate_from(11), h + 30);
        assert_eq!(s.last_index(), 10);
        assert_eq!(s.truncate_from(10), h);
        assert_eq!(s.count(), 0);
    }
}
