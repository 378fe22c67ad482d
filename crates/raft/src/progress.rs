//! A leader's view of each follower's replication (paper Figure 2 "volatile state on leaders"; the
//! seed's "membership component").
//!
//! Invariants:
//! - `match_index < next_index`.
//! - In [`ProgressState::Probe`] at most one AppendEntries is outstanding (`probe_sent`), so a lost or
//!   rejected probe never triggers a cascade; in [`ProgressState::Replicate`] up to
//!   `max_inflight_messages` are outstanding (pipelining) and `next_index` runs ahead optimistically.
//! - `inflight` holds the last index and send time (tick) of each outstanding AppendEntries, by
//!   increasing index. A message unanswered for too long is presumed lost: the leader falls back to
//!   probing from `match_index + 1` (see [`Progress::retransmit_if_stale`]), so lost messages never
//!   stall a follower, even when no new entries arrive.
//! - In [`ProgressState::Snapshot`] the follower needs entries the leader has compacted away: no
//!   AppendEntries carrying entries is sent until the driver reports the snapshot transfer's outcome
//!   ([`Progress::snapshot_sent`] / [`Progress::snapshot_failed`]) or the follower acknowledges an
//!   index (it installed a snapshot and says so with a successful AppendEntriesResponse).
//!
//! Order: pipelining is fast only on a transport that keeps each link's order (ours does: one TCP
//! connection per direction, see raft-kv's `transport`). Safety never depends on it: an
//! AppendEntries that overtook an earlier one leaves a gap, the follower rejects it, and the leader
//! falls back to probing from the follower's last index, so a network that reorders everything
//! (the simulator's, in some runs while its faults last) costs round trips, not correctness.

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's log position is unknown: send one AppendEntries at a time and back off on rejection.
    Probe,
    /// The follower accepted entries: stream them, several messages in flight.
    Replicate,
    /// The follower needs a snapshot (its next entry was compacted away); the driver is sending one.
    Snapshot,
}

/// Replication progress of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be replicated on the follower.
    pub match_index: Index,
    /// The index of the next entry to send.
    pub next_index: Index,
    /// How entries are being sent.
    pub state: ProgressState,
    /// In Probe state: a probe is outstanding; cleared by any response or heartbeat response.
    pub probe_sent: bool,
    /// Last index and send tick of each outstanding AppendEntries (Replicate state).
    pub inflight: VecDeque<(Index, u64)>,
    /// The follower answered something in this term since the last CheckQuorum.
    pub recent_active: bool,
    /// The highest heartbeat read round the follower has answered.
    pub read_round: u64,
}

impl Progress {
    /// Progress for a follower of a brand new leader whose last index is `last_index`.
    pub fn new(last_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            read_round: 0,
        }
    }

    /// True if no more AppendEntries with entries may be sent now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an AppendEntries ending at `last` was sent at tick `now`.
    pub fn sent(&mut self, last: Index, now: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back((last, now));
            }
            ProgressState::Snapshot => {}
        }
    }

    /// The follower's next entry is compacted away: stop sending entries until a snapshot lands.
    pub fn need_snapshot(&mut self) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// The driver delivered a snapshot ending at `index` and the follower installed it: probe from
    /// right after it (the follower's own acknowledgement may have been lost).
    pub fn snapshot_sent(&mut self, index: Index) {
        if self.state != ProgressState::Snapshot {
            return;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.next_index = (index + 1).max(self.match_index + 1);
    }

    /// The snapshot transfer failed: probe again from `match_index + 1` (which asks for a new
    /// snapshot if that entry is still compacted away).
    pub fn snapshot_failed(&mut self) {
        if self.state != ProgressState::Snapshot {
            return;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
    }

    /// If the oldest outstanding AppendEntries was sent `timeout` ticks ago or more, presumes it lost
    /// and falls back to probing from `match_index + 1`. Returns true if it did.
    pub fn retransmit_if_stale(&mut self, now: u64, timeout: u64) -> bool {
        match self.inflight.front() {
            Some(&(_, sent)) if self.state == ProgressState::Replicate && now >= sent + timeout => {
                self.state = ProgressState::Probe;
                self.inflight.clear();
                self.probe_sent = false;
                self.next_index = self.match_index + 1;
                true
            }
            _ => false,
        }
    }

    /// The follower holds everything up to `index`; returns true if that is news.
    pub fn acknowledge(&mut self, index: Index) -> bool {
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|&(i, _)| i <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        if self.state != ProgressState::Replicate {
            self.state = ProgressState::Replicate;
            self.next_index = index + 1;
            self.inflight.clear();
        }
        true
    }

    /// The follower rejected `rejected` (a prev_log_index); `hint` is where to try next. Returns false
    /// if the rejection is stale (an answer to something already superseded).
    pub fn reject(&mut self, rejected: Index, hint: Index) -> bool {
        if rejected <= self.match_index || self.state == ProgressState::Snapshot {
            // Answer to an old message: the follower matched further since, or a snapshot is on its way.
            return false;
        }
        if self.state == ProgressState::Probe && rejected + 1 != self.next_index {
            return false; // Not the answer to the outstanding probe.
        }
        self.state = ProgressState::Probe;
        self.inflight.clear();
        self.probe_sent = false;
        self.next_index = hint.min(rejected).max(self.match_index + 1);
        true
    }
}
