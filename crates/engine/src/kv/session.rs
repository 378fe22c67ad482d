//! Client sessions and exactly-once application of writes (Raft thesis §6.3).
//!
//! # The problem
//!
//! A proposal can reach the log more than once: a follower forwards a write to a leader that
//! crashes after appending it, the follower retries through the next leader, and both copies end
//! up committed. Raft alone would apply the write twice (an `INCR` would count twice).
//!
//! # The protocol
//!
//! Every proposal carries `(session, seq, ack_below)`:
//!
//! * `session`: a random `u64` picked by the proposer when it starts (in raft-kv: one per server
//!   process incarnation). [`NO_SESSION`] (0) opts out of duplicate detection.
//! * `seq`: starts at [`FIRST_SEQ`] and grows by one per *new* proposal; a retry reuses it.
//! * `ack_below`: the proposer's lowest `seq` whose answer it has not yet received. Every lower
//!   `seq` was answered and will never be proposed again.
//!
//! The state machine keeps, per session, the highest `ack_below` seen and the reply of every
//! applied `seq >= ack_below`. Applying a proposal of a known session:
//!
//! 1. `seq` has a cached reply → duplicate: not executed, the cached reply is returned.
//! 2. `seq < ack_below` → duplicate whose reply was dropped: not executed, the reply is the
//!    error [`DUPLICATE_FORGOTTEN_ERR`]. Nobody waits for it: its proposer already had the answer.
//! 3. otherwise → executed; the reply is cached; then `ack_below` is raised to the proposal's
//!    and the cached replies below it are dropped.
//!
//! Because replies are cached only until acknowledged, the memory of a live session is bounded by
//! its proposer's in-flight window (the driver keeps at most a quarter of
//! [`MAX_REPLIES_PER_SESSION`] sequence numbers in flight). As a backstop against a proposer that
//! never acknowledges, a session caches at most [`MAX_REPLIES_PER_SESSION`] replies: a new `seq`
//! arriving when the cache is full is refused *unexecuted and unremembered*, with
//! [`SESSION_OVERLOADED_ERR`] (a later copy of it may run once there is room). Replies are never
//! evicted, so case 2 above is exact: a `seq` below `ack_below` was answered to its proposer, and
//! a write is never told "duplicate" unless it ran.
//!
//! # Bounding the number of sessions
//!
//! Proposers come and go (every server restart is a new session) and never announce their end, so
//! the table holds at most [`MAX_SESSIONS`] sessions and evicts the least recently used one, where
//! "used" is the log index of the last proposal applied for it. Log indexes are unique and equal
//! on every replica, so the eviction is deterministic.
//!
//! A proposal from a session the table does not know is either the first of a new session or a
//! late one from an evicted session. The two are told apart by `ack_below`: a new session has not
//! yet received any answer, so its `ack_below` is at most [`FIRST_SEQ`]. An unknown session with a
//! higher `ack_below` was evicted; since its earlier proposals may or may not have been applied,
//! the proposal is refused unexecuted with [`SESSION_EXPIRED_ERR`], and the proposer must continue
//! under a new session id (a live session is evicted only after [`MAX_SESSIONS`] other sessions
//! were used more recently than it, i.e. practically never).
//!
//! # The one remaining risk
//!
//! A session is evicted and afterwards a stale copy of one of its proposals that was sent before
//! the session received any answer (so `ack_below <= FIRST_SEQ`) is committed. The table cannot
//! tell it from the first proposal of a new session and executes it, possibly a second time. This
//! needs a proposal to stay in flight while [`MAX_SESSIONS`] other sessions are used — in raft-kv
//! that means thousands of server restarts during the lifetime of one forwarded message — so it
//! is accepted rather than paid for with unbounded memory or with wall-clock session expiry.

use std::collections::VecDeque;
use std::sync::Arc;

use imbl::OrdMap;

use super::command::Reply;

// The maps are persistent (`imbl::OrdMap`) rather than `BTreeMap`s so that
// `KvStore::snapshot_view` is O(1) for the session table too. Measured in release mode on 2
// busy cores: cloning a `BTreeMap` table of 4096 sessions costs 0.3 ms with 1 cached reply per
// session, 2 ms with 16 and 24 ms with 256 (the cap is 16 Ki), all of it on the apply thread;
// the persistent maps make an apply whose cost is all session bookkeeping (INCR of one key, 4
// sessions with 32 replies in flight) about 10-15 % slower (~40 ns), and SETs into a large key
// space not measurably slower.

/// The session id that disables duplicate detection: every proposal of session 0 is executed.
pub const NO_SESSION: u64 = 0;

/// The first sequence number of a session. A proposal with `ack_below <= FIRST_SEQ` from an
/// unknown session starts a new session.
pub const FIRST_SEQ: u64 = 1;

/// Maximum number of sessions remembered; the least recently used one is evicted beyond it.
pub const MAX_SESSIONS: usize = 4096;

/// Maximum number of unacknowledged replies cached for one session (the backstop described in
/// the module docs). A proposer must keep fewer proposals than this in flight.
pub const MAX_REPLIES_PER_SESSION: usize = 16 * 1024;

/// Reply to a duplicate whose original reply is no longer cached (its proposer already had it).
pub const DUPLICATE_FORGOTTEN_ERR: &str =
    "ERR duplicate request already executed; its reply is no longer available";

/// Reply to a new proposal of a session that already caches [`MAX_REPLIES_PER_SESSION`]
/// unacknowledged replies: it was *not* executed (and is not remembered: a later copy may run).
pub const SESSION_OVERLOADED_ERR: &str =
    "ERR too many unacknowledged requests in this client session; the request was not executed";

/// Reply to a proposal of an evicted session: it was *not* executed; the proposer must retry it
/// under a new session id.
pub const SESSION_EXPIRED_ERR: &str =
    "ERR client session expired; the request was not executed, retry it with a new session";

/// What the table remembers about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// Highest `ack_below` seen: every `seq` below it was answered and is never retried.
    pub ack_below: u64,
    /// Reply of every applied `seq >= ack_below`.
    pub replies: Replies,
    /// Log index of the last proposal applied for this session (the LRU key).
    pub last_index: u64,
}

/// The result of applying one proposal through the session table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The reply to hand back to the proposer.
    pub reply: Reply,
    /// True if the command was not executed by this entry.
    pub duplicate: bool,
}

/// All known sessions, with a deterministic LRU order: by [`Session::last_index`].
///
/// Invariant: no two sessions share a `last_index` (each is the log index of a distinct applied
/// entry), so the least recently used session is always unique. The order is not kept in a second
/// map: updating one cost two B-tree operations on every applied write (about a fifth of the
/// session bookkeeping, measured with callgrind), while it is needed only when a new session
/// arrives at a full table (a server restart), where a scan of the table finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionTable {
    /// Sessions by id.
    pub sessions: OrdMap<u64, Session>,
}

impl SessionTable {
    /// The session with the smallest `last_index` (unique, see the invariant), if any.
    pub fn least_recently_used(&self) -> Option<u64> {
        self.sessions.iter().min_by_key(|(_, s)| s.last_index).map(|(&id, _)| id)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Total number of cached replies over all sessions.
    pub fn cached_replies(&self) -> usize {
        self.sessions.values().map(|s| s.replies.len()).sum()
    }

    /// The cached reply of `(session, seq)`, if any.
    pub fn reply_for(&self, session: u64, seq: u64) -> Option<Reply> {
        self.sessions.get(&session)?.replies.get(seq).cloned()
    }

    /// Applies the proposal `(session, seq, ack_below)` at log `index`: decides whether it is a
    /// duplicate, calls `execute` exactly when it is not, and updates the table.
    ///
    /// `session` must not be [`NO_SESSION`] (the caller executes those directly) and `index` must
    /// be above every index passed before.
    pub fn apply(
        &mut self,
        index: u64,
        session: u64,
        seq: u64,
        ack_below: u64,
        execute: impl FnOnce() -> Reply,
    ) -> Outcome {
        let Some(s) = self.sessions.get_mut(&session) else {
            if ack_below > FIRST_SEQ {
                return Outcome { reply: Reply::Error(SESSION_EXPIRED_ERR.to_owned()), duplicate: true };
            }
            let reply = execute();
            let mut s = Session { ack_below: 0, replies: Replies::default(), last_index: index };
            s.record(seq, ack_below, &reply);
            self.sessions.insert(session, s);
            self.evict_beyond_capacity();
            return Outcome { reply, duplicate: false };
        };
        s.last_index = index;
        if let Some(cached) = s.replies.get(seq) {
            let reply = cached.clone();
            s.raise_ack(ack_below);
            return Outcome { reply, duplicate: true };
        }
        if seq < s.ack_below {
            s.raise_ack(ack_below);
            return Outcome { reply: Reply::Error(DUPLICATE_FORGOTTEN_ERR.to_owned()), duplicate: true };
        }
        s.raise_ack(ack_below);
        if s.replies.len() >= MAX_REPLIES_PER_SESSION {
            return Outcome { reply: Reply::Error(SESSION_OVERLOADED_ERR.to_owned()), duplicate: true };
        }
        let reply = execute();
        s.record(seq, ack_below, &reply);
        Outcome { reply, duplicate: false }
    }

    /// Evicts least recently used sessions until at most [`MAX_SESSIONS`] remain. Runs only when a
    /// session was added; the scan over the table (at most `MAX_SESSIONS + 1` entries) happens only
    /// when it is full.
    fn evict_beyond_capacity(&mut self) {
        while self.sessions.len() > MAX_SESSIONS {
            let Some(id) = self.least_recently_used() else { break };
            self.sessions.remove(&id);
        }
    }
}

impl Session {
    /// Caches the reply of a newly executed `seq`, then applies `ack_below`.
    fn record(&mut self, seq: u64, ack_below: u64, reply: &Reply) {
        self.replies.insert(seq, reply.clone());
        self.raise_ack(ack_below);
    }

    /// Raises `ack_below` (never lowers it) and drops the replies below it.
    fn raise_ack(&mut self, ack_below: u64) {
        if ack_below > self.ack_below {
            self.ack_below = ack_below;
            self.replies.drop_below(ack_below);
        }
    }
}

/// The cached replies of one session, in increasing `seq` order.
///
/// A proposer numbers its proposals in order and acknowledges from the lowest, so replies arrive
/// at the back and leave from the front: a double-ended queue does both in O(1) (a retried `seq`
/// applied late goes to its sorted place, O(n), rarely). The queue is behind an [`Arc`] so that
/// cloning the table for a snapshot view stays O(1) per session touched: the first change after a
/// view was taken copies that session's replies (at most its proposer's window) once. With a
/// persistent map here, its insert and removal were most of the session bookkeeping's
/// instructions per write (callgrind, 64-client writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Replies(Arc<VecDeque<(u64, Reply)>>);

impl Replies {
    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The position of `seq`, or where it would go.
    fn search(&self, seq: u64) -> Result<usize, usize> {
        match self.0.back() {
            Some(&(last, _)) if last < seq => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    /// The reply cached for `seq`.
    pub fn get(&self, seq: u64) -> Option<&Reply> {
        self.search(seq).ok().map(|i| &self.0[i].1)
    }

    /// Caches `reply` for `seq` (replacing one cached for it).
    pub fn insert(&mut self, seq: u64, reply: Reply) {
        let at = self.search(seq);
        let q = Arc::make_mut(&mut self.0);
        match at {
            Ok(i) => q[i].1 = reply,
            Err(i) if i == q.len() => q.push_back((seq, reply)),
            Err(i) => q.insert(i, (seq, reply)),
        }
    }

    /// Drops every reply of a `seq` below `seq`.
    pub fn drop_below(&mut self, seq: u64) {
        if self.0.front().is_some_and(|&(first, _)| first < seq) {
            let q = Arc::make_mut(&mut self.0);
            while q.front().is_some_and(|&(first, _)| first < seq) {
                q.pop_front();
            }
        }
    }

    /// The cached `(seq, reply)` pairs, in increasing `seq` order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Reply)> {
        self.0.iter().map(|(seq, reply)| (*seq, reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        t: &mut SessionTable,
        index: u64,
        session: u64,
        seq: u64,
        ack: u64,
        executed: &mut Vec<u64>,
    ) -> Outcome {
        t.apply(index, session, seq, ack, || {
            executed.push(index);
            Reply::Int(index as i64)
        })
    }

    #[test]
    fn replies_stay_sorted_and_a_clone_is_not_changed_by_the_original() {
        let mut r = Replies::default();
        for seq in [3, 4, 7] {
            r.insert(seq, Reply::Int(seq as i64));
        }
        // A late retry of a lower seq goes to its place; a seq already cached is replaced.
        r.insert(5, Reply::Int(5));
        r.insert(1, Reply::Int(1));
        r.insert(4, Reply::Ok);
        assert_eq!(r.iter().map(|(seq, _)| seq).collect::<Vec<_>>(), vec![1, 3, 4, 5, 7]);
        assert_eq!(r.get(4), Some(&Reply::Ok));
        assert_eq!(r.get(7), Some(&Reply::Int(7)));
        assert_eq!((r.get(2), r.get(8), r.get(0)), (None, None, None));
        let view = r.clone();
        r.drop_below(5);
        r.insert(9, Reply::Int(9));
        assert_eq!(r.iter().map(|(seq, _)| seq).collect::<Vec<_>>(), vec![5, 7, 9]);
        assert_eq!(view.iter().map(|(seq, _)| seq).collect::<Vec<_>>(), vec![1, 3, 4, 5, 7]);
        r.drop_below(100);
        assert_eq!(r.len(), 0);
        assert_eq!(view.len(), 5);
    }

    #[test]
    fn duplicate_returns_cached_reply_without_executing() {
        let mut t = SessionTable::default();
        let mut ex = vec![];
        assert_eq!(run(&mut t, 1, 9, 1, 1, &mut ex), Outcome { reply: Reply::Int(1), duplicate: false });
        assert_eq!(run(&mut t, 2, 9, 1, 1, &mut ex), Outcome { reply: Reply::Int(1), duplicate: true });
        assert_eq!(ex, vec![1]);
    }

    #[test]
    fn ack_below_prunes_and_refuses_old_seqs() {
        let mut t = SessionTable::default();
        let mut ex = vec![];
        for seq in 1..=5 {
            run(&mut t, seq, 9, seq, 1, &mut ex);
        }
        assert_eq!(t.sessions[&9].replies.len(), 5);
        // seq 6 acknowledges everything below 4.
        run(&mut t, 6, 9, 6, 4, &mut ex);
        let s = &t.sessions[&9];
        assert_eq!(s.ack_below, 4);
        assert_eq!(s.replies.iter().map(|(seq, _)| seq).collect::<Vec<_>>(), vec![4, 5, 6]);
        // A late copy of seq 2 is not executed.
        let o = run(&mut t, 7, 9, 2, 1, &mut ex);
        assert_eq!(o, Outcome { reply: Reply::Error(DUPLICATE_FORGOTTEN_ERR.to_owned()), duplicate: true });
        // ack_below never goes down.
        assert_eq!(t.sessions[&9].ack_below, 4);
        assert_eq!(ex, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_full_session_refuses_new_requests_unexecuted_and_forgets_them() {
        let mut t = SessionTable::default();
        let mut ex = vec![];
        let n = MAX_REPLIES_PER_SESSION as u64;
        // seq 1 is never applied (stuck somewhere); 2..=n+1 fill the cache.
        for seq in 2..=n + 1 {
            assert!(!run(&mut t, seq, 9, seq, 1, &mut ex).duplicate);
        }
        assert_eq!(t.sessions[&9].replies.len(), MAX_REPLIES_PER_SESSION);
        // A new seq is refused, not executed, not remembered...
        let o = run(&mut t, n + 2, 9, n + 2, 1, &mut ex);
        assert_eq!(o, Outcome { reply: Reply::Error(SESSION_OVERLOADED_ERR.to_owned()), duplicate: true });
        assert_eq!(ex.len() as u64, n);
        // ...and the stuck seq 1 is not told it already ran (it did not): it is refused the same way
        // while the cache is full, and runs once the proposer acknowledges earlier replies.
        let o = run(&mut t, n + 3, 9, 1, 1, &mut ex);
        assert_eq!(o.reply, Reply::Error(SESSION_OVERLOADED_ERR.to_owned()));
        assert_eq!(ex.len() as u64, n);
        // Once the proposer acknowledges (gave up on seq 1 and got the answers below n), there is
        // room again and a new seq runs.
        let o = run(&mut t, n + 4, 9, n + 3, n, &mut ex);
        assert!(!o.duplicate);
        assert_eq!(ex.len() as u64, n + 1);
        assert_eq!(t.sessions[&9].ack_below, n);
    }

    #[test]
    fn unknown_session_with_acknowledged_history_is_expired() {
        let mut t = SessionTable::default();
        let mut ex = vec![];
        let o = run(&mut t, 1, 9, 5, 5, &mut ex);
        assert_eq!(o, Outcome { reply: Reply::Error(SESSION_EXPIRED_ERR.to_owned()), duplicate: true });
        assert!(ex.is_empty());
        assert_eq!(t.len(), 0);
        // A fresh session (ack_below 0 or 1) is admitted even if its first applied seq is not 1.
        assert!(!run(&mut t, 2, 10, 2, 1, &mut ex).duplicate);
        assert!(!run(&mut t, 3, 11, 1, 0, &mut ex).duplicate);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn lru_eviction_is_by_last_applied_index() {
        let mut t = SessionTable::default();
        let mut ex = vec![];
        for id in 1..=MAX_SESSIONS as u64 {
            run(&mut t, id, id, 1, 1, &mut ex);
        }
        // Touch session 1 (a duplicate counts as use), making session 2 the least recent.
        let idx = MAX_SESSIONS as u64 + 1;
        assert!(run(&mut t, idx, 1, 1, 1, &mut ex).duplicate);
        run(&mut t, idx + 1, 100_000, 1, 1, &mut ex);
        assert_eq!(t.len(), MAX_SESSIONS);
        assert!(t.sessions.contains_key(&1));
        assert!(!t.sessions.contains_key(&2));
        assert!(t.sessions.contains_key(&3));
        assert_eq!(t.least_recently_used(), Some(3));
        // The evicted session's later proposals are refused once it had answers...
        assert!(run(&mut t, idx + 2, 2, 2, 2, &mut ex).duplicate);
        // ...but its stale first proposal is indistinguishable from a new session (the known risk).
        assert!(!run(&mut t, idx + 3, 2, 1, 1, &mut ex).duplicate);
    }
}
