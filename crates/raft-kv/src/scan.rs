//! Redis' integer cursors for `SCAN` and `HSCAN` over positions that are keys.
//!
//! A scan step of the state machine (`engine::kv::keys`) resumes strictly after a *key* (or a
//! hash field), which is what makes every key present for the whole scan come back exactly once.
//! Clients, however, treat the cursor as a 64-bit integer (`redis-cli` parses it with
//! `strtoull`, go-redis as a `uint64`), so the node keeps a table from cursor numbers to
//! positions:
//!
//! - cursor `0` starts a scan, and a step that reaches the end answers `0`;
//! - every other step answers a fresh number, remembered with the position it stands for (and,
//!   for `HSCAN`, the hash's key, so a cursor cannot be used on another hash);
//! - the table belongs to the node that answered: a cursor is valid on that node, for any of
//!   its connections, until the node restarts or the table forgets it, oldest first, beyond
//!   [`MAX_CURSORS`] cursors or [`MAX_CURSOR_BYTES`] bytes of positions. A cursor the node does
//!   not know is answered `ERR invalid cursor`, never resumed elsewhere: the client starts again
//!   at 0. Numbers start at a random offset per process, so a cursor of a previous incarnation
//!   is not mistaken for a new one (except with negligible probability).
//!
//! Reusing a cursor (a client retrying a step) answers the same step again.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use bytes::Bytes;

/// Most cursors remembered by one node.
pub const MAX_CURSORS: usize = 16 * 1024;
/// Most bytes of positions (keys and fields) remembered by one node.
pub const MAX_CURSOR_BYTES: usize = 64 * 1024 * 1024;

/// Where a cursor resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// `HSCAN`: the hash's key; `None` for `SCAN`.
    pub key: Option<Bytes>,
    /// The last key (or field) the step examined.
    pub after: Bytes,
}

impl Position {
    fn size(&self) -> usize {
        self.after.len() + self.key.as_ref().map_or(0, Bytes::len) + 64
    }
}

#[derive(Debug)]
struct Table {
    /// Cursor number -> (insertion sequence, position).
    by_cursor: HashMap<u64, (u64, Position)>,
    /// Insertion sequence -> cursor number, oldest first.
    by_age: BTreeMap<u64, u64>,
    /// Bytes of the positions held.
    bytes: usize,
    /// Next insertion sequence.
    seq: u64,
    /// Random offset of this process's cursor numbers.
    base: u64,
}

/// The table of one node (see the module docs).
#[derive(Debug)]
pub struct Cursors {
    table: Mutex<Table>,
}

impl Default for Cursors {
    fn default() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        Cursors {
            table: Mutex::new(Table {
                by_cursor: HashMap::new(),
                by_age: BTreeMap::new(),
                bytes: 0,
                seq: 0,
                base: h.finish(),
            }),
        }
    }
}

impl Cursors {
    /// The position of `cursor` (`Ok(None)` for 0, the start); `Err(())` if unknown.
    #[allow(clippy::result_unit_err)]
    pub fn resolve(&self, cursor: u64) -> Result<Option<Position>, ()> {
        if cursor == 0 {
            return Ok(None);
        }
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.by_cursor.get(&cursor).map(|(_, p)| Some(p.clone())).ok_or(())
    }

    /// A new cursor for `position`.
    pub fn issue(&self, position: Position) -> u64 {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let size = position.size();
        while !t.by_age.is_empty() && (t.by_cursor.len() >= MAX_CURSORS || t.bytes + size > MAX_CURSOR_BYTES)
        {
            if let Some((_, old)) = t.by_age.pop_first() {
                if let Some((_, p)) = t.by_cursor.remove(&old) {
                    t.bytes -= p.size();
                }
            }
        }
        loop {
            t.seq += 1;
            let seq = t.seq;
            // An odd multiplier makes the numbers of one process distinct; skip 0 and any
            // number still in use after wrapping.
            let cursor = t.base.wrapping_add(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            if cursor == 0 || t.by_cursor.contains_key(&cursor) {
                continue;
            }
            t.bytes += size;
            t.by_age.insert(seq, cursor);
            t.by_cursor.insert(cursor, (seq, position));
            return cursor;
        }
    }

    /// Number of cursors remembered.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).by_cursor.len()
    }

    /// True if no cursor is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(k: &str) -> Position {
        Position { key: None, after: Bytes::copy_from_slice(k.as_bytes()) }
    }

    #[test]
    fn issue_and_resolve() {
        let c = Cursors::default();
        assert_eq!(c.resolve(0), Ok(None));
        let a = c.issue(pos("a"));
        let b = c.issue(pos("b"));
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(c.resolve(a), Ok(Some(pos("a"))));
        assert_eq!(c.resolve(a), Ok(Some(pos("a"))), "a retried step resolves again");
        assert_eq!(c.resolve(b), Ok(Some(pos("b"))));
        assert_eq!(c.resolve(a ^ b ^ 1), Err(()));
    }

    #[test]
    fn oldest_are_forgotten_first() {
        let c = Cursors::default();
        let first = c.issue(pos("first"));
        let mut last = 0;
        for i in 0..MAX_CURSORS {
            last = c.issue(pos(&format!("k{i}")));
        }
        assert_eq!(c.len(), MAX_CURSORS);
        assert_eq!(c.resolve(first), Err(()));
        assert!(c.resolve(last).is_ok());
        let big = Position { key: None, after: Bytes::from(vec![0u8; MAX_CURSOR_BYTES - 100]) };
        let b = c.issue(big);
        assert!(c.resolve(b).is_ok());
        assert!(c.len() < 100, "bytes bound evicts the rest: {}", c.len());
    }
}
