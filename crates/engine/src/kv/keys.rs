//! Commands over the key space as a whole: `KEYS`, `SCAN`, `TYPE`, `RANDOMKEY` (reads) and
//! `RENAME`, `RENAMENX`, `COPY`, `MSETNX`/`SETNX`, `FLUSHDB`/`FLUSHALL` (writes).
//!
//! # SCAN over an ordered map
//!
//! The key space is ordered by key bytes, so a scan needs no hash-table cursor tricks: one step
//! ([`super::Query::Scan`]) examines up to `COUNT` keys strictly after the last key the previous
//! step examined and returns that key as its position. Invariant: **every key present for the
//! whole scan (from the first step to the last) is returned exactly once** (if it matches), since
//! the steps examine disjoint, consecutive ranges of the key order that together cover all of it;
//! a key created or removed during the scan may or may not be returned, but never twice. Redis
//! gives "at least once"; this is stronger. `MATCH` with a literal prefix (`user:*`) starts at
//! the prefix and stops after it, so scanning a prefix costs what the prefix holds. `TYPE` and
//! `MATCH` filter the examined keys (a step may return nothing and still not be the last, as in
//! Redis). Expired keys are never returned.
//!
//! The step's position is a key; the server turns it into Redis' integer cursor (clients such
//! as `redis-cli` parse cursors as 64-bit integers) with a table on the node that answered (see
//! the server's `scan` module).
//!
//! # RANDOMKEY
//!
//! A read is answered by one node, so it may use randomness; but inside `MULTI` it runs on every
//! replica, so the choice is a pure function of the state and a seed the server draws (and that
//! the log carries inside a transaction). The key is the first live key at or after a key drawn
//! between the smallest and the largest key: every key can be chosen, not all equally often.
//!
//! # Deadlines
//!
//! As in Redis: `RENAME` moves the source's deadline to the destination (whose own deadline is
//! dropped), `COPY` copies it, `MSETNX` writes keys without one, `FLUSHALL` drops them all. Every
//! key written gets the entry's index as its version; `RENAME` and `FLUSHALL` are removals for
//! `WATCH` (see [`super::txn`]).

use std::ops::Bound;

use bytes::Bytes;

use super::command::{Command, Reply};
use super::glob::{glob_match, literal_prefix};
use super::store::{Db, Value, View};

/// Redis' error when the source of `RENAME` does not exist.
pub(crate) const NO_SUCH_KEY_ERR: &str = "ERR no such key";
/// Redis' error for `COPY k k`.
pub(crate) const SAME_OBJECT_ERR: &str = "ERR source and destination objects are the same";

/// Executes [`Command::Rename`], [`Command::Copy`], [`Command::Flush`] and [`Command::MSetNx`];
/// the expired keys the command names were purged.
pub(crate) fn execute(db: &mut Db<'_>, command: &Command) -> Reply {
    match command {
        Command::Rename { src, dst, nx } => {
            let Some(value) = db.data.get(src).cloned() else {
                return Reply::Error(NO_SUCH_KEY_ERR.to_owned());
            };
            if src == dst {
                return if *nx { Reply::Int(0) } else { Reply::Ok };
            }
            if *nx && db.data.contains_key(dst) {
                return Reply::Int(0);
            }
            let deadline = db.ttls.get(src);
            db.remove(src);
            db.remove(dst);
            db.data.insert(dst.clone(), Value { version: db.index, ..value });
            if let Some(d) = deadline {
                db.ttls.set(dst, d);
            }
            if *nx {
                Reply::Int(1)
            } else {
                Reply::Ok
            }
        }
        Command::Copy { src, dst, replace } => {
            if src == dst {
                return Reply::Error(SAME_OBJECT_ERR.to_owned());
            }
            let Some(value) = db.data.get(src).cloned() else { return Reply::Int(0) };
            if db.data.contains_key(dst) {
                if !*replace {
                    return Reply::Int(0);
                }
                db.remove(dst);
            }
            let deadline = db.ttls.get(src);
            db.data.insert(dst.clone(), Value { version: db.index, ..value });
            if let Some(d) = deadline {
                db.ttls.set(dst, d);
            }
            Reply::Int(1)
        }
        Command::Flush => {
            if !db.data.is_empty() {
                *db.last_removal = db.index;
            }
            db.data.clear();
            *db.ttls = Default::default();
            Reply::Ok
        }
        Command::MSetNx { pairs } => {
            if pairs.iter().any(|(k, _)| db.data.contains_key(k)) {
                return Reply::Int(0);
            }
            for (k, v) in pairs {
                db.put(k, v.clone());
            }
            Reply::Int(1)
        }
        _ => Reply::Error(format!("ERR internal: '{}' is not a key-space command", command.name())),
    }
}

impl View<'_> {
    /// True if `key` is present and not expired.
    fn is_live(&self, key: &[u8]) -> bool {
        !self.ttls.is_expired(key, self.time)
    }

    /// The keys in order from the first that can match `pattern` (strictly after `after` when
    /// given), stopping after the last that can.
    fn range_for<'s>(
        &'s self,
        pattern: Option<&[u8]>,
        after: Option<&'s [u8]>,
    ) -> impl Iterator<Item = (&'s Bytes, &'s Value)> + 's {
        let prefix = pattern.map(literal_prefix).unwrap_or_default();
        let lower = match after {
            Some(a) if a >= &prefix[..] => Bound::Excluded(a),
            _ => Bound::Included(&prefix[..]),
        };
        // The range borrows the bound only while it is built.
        let iter = self.data.range::<_, [u8]>((lower, Bound::Unbounded));
        iter.take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// `KEYS pattern`.
    pub(crate) fn keys_reply(&self, pattern: &[u8]) -> Reply {
        let keys = self
            .range_for(Some(pattern), None)
            .filter(|(k, _)| glob_match(pattern, k, false) && self.is_live(k))
            .map(|(k, _)| Reply::Bulk(k.clone()))
            .collect();
        Reply::Array(keys)
    }

    /// One `SCAN` step (see the module docs).
    pub(crate) fn scan_reply(
        &self,
        after: Option<&Bytes>,
        pattern: Option<&Bytes>,
        count: u64,
        kind: Option<&Bytes>,
    ) -> Reply {
        let count = count.max(1);
        let mut examined = 0u64;
        let mut last: Option<&Bytes> = None;
        let mut found = Vec::new();
        let mut iter = self.range_for(pattern.map(|p| &p[..]), after.map(|a| &a[..]));
        let mut done = true;
        for (k, v) in iter.by_ref() {
            examined += 1;
            last = Some(k);
            let wanted = pattern.is_none_or(|p| glob_match(p, k, false))
                && kind.is_none_or(|t| t.eq_ignore_ascii_case(v.type_name().as_bytes()))
                && self.is_live(k);
            if wanted {
                found.push(Reply::Bulk(k.clone()));
            }
            if examined >= count {
                done = false;
                break;
            }
        }
        // A step that stopped on the very last key says so, saving the client a round trip.
        if !done && iter.next().is_none() {
            done = true;
        }
        let position = match last {
            Some(k) if !done => Reply::Bulk(k.clone()),
            _ => Reply::Nil,
        };
        Reply::Array(vec![position, Reply::Array(found)])
    }

    /// `TYPE key`.
    pub(crate) fn type_reply(&self, key: &[u8]) -> Reply {
        let name = match self.data.get(key) {
            Some(v) if self.is_live(key) => v.type_name(),
            _ => "none",
        };
        Reply::Status(name.to_owned())
    }

    /// `RANDOMKEY` (see the module docs).
    pub(crate) fn random_key(&self, seed: u64) -> Reply {
        let (Some((min, _)), Some((max, _))) = (self.data.get_min(), self.data.get_max()) else {
            return Reply::Nil;
        };
        let mut rng = seed;
        let mut next = || {
            // splitmix64
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        // A key between min and max: their common prefix, a byte between theirs, random bytes.
        let common = min.iter().zip(max.iter()).take_while(|(a, b)| a == b).count();
        let mut probe = max[..common].to_vec();
        let lo = u64::from(min.get(common).copied().unwrap_or(0));
        let hi = u64::from(max.get(common).copied().unwrap_or(0));
        if hi > lo {
            probe.push((lo + next() % (hi - lo + 1)) as u8);
            probe.extend_from_slice(&next().to_be_bytes());
        }
        let after = self.data.range::<_, [u8]>((Bound::Included(&probe[..]), Bound::Unbounded));
        // Past expired keys (not yet swept), wrapping around once.
        after
            .chain(self.data.iter())
            .take(self.data.len())
            .find(|(k, _)| self.is_live(k))
            .map_or(Reply::Nil, |(k, _)| Reply::Bulk(k.clone()))
    }
}
