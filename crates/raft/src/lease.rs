//! Lease reads (thesis §6.4.1): a leader that a majority heard from recently serves linearizable
//! reads without a heartbeat round.
//!
//! # Why it is safe
//! With CheckQuorum, a voter that heard from the leader of its term refuses every vote and pre-vote
//! (except a campaign the leader asked for, a transfer) until `election_ticks` of its own ticks
//! passed since (`Node::step`; also if its term changed meanwhile); it campaigns itself only after its randomized timeout, which is at
//! least as long. A node that just started refuses for as long in lease mode (it may have heard from
//! the leader just before a crash and forgotten it). So if a majority answered a heartbeat that the
//! leader sent at clock `s`, each of them received it after `s` and no node can collect a majority
//! of votes (every majority includes one of them) before `election_ticks` of that node's ticks
//! passed since. The leader holds the lease until `s + election_ticks - lease_drift_ticks` on its
//! own clock: the drift bound covers clocks that run at different rates. Within the lease no other
//! leader exists, so the commit index (once the leader committed an entry of its term) covers every
//! acknowledged write, and a read is served at it at once.
//!
//! # The clock
//! The node's clock is its tick count ([`Node::tick_by`]), which the host must advance by every
//! tick period that passed, also after the node thread stalled (it may run the timers once for
//! them); a host that dropped ticks would let a stalled leader believe in an expired lease. A read
//! is served only while `clock + 1 < until`, since the host's real time may be up to one tick ahead
//! of the last tick it delivered.
//!
//! # What ends a lease
//! - A leadership transfer: the target campaigns with requests voters grant despite the lease, so
//!   the lease ends when the transfer starts and does not come back in this leadership (a
//!   TimeoutNow may arrive late, after the transfer was abandoned).
//! - A membership change (a configuration entry appended or truncated on the leader): heartbeats
//!   sent before it were counted under another configuration; only rounds sent after it count.
//! - Stepping down (a new leadership starts with no lease).
//!
//! Invariants: `sent` is ordered by round; only rounds above `floor` are recorded; `until` only
//! grows within one lease and is 0 after an end.

use std::collections::VecDeque;

use crate::config::ReadMode;
use crate::node::{Node, Role};

/// Most unconfirmed rounds remembered (dropping the oldest only shortens a lease).
const MAX_SENT: usize = 64;

/// The lease state of a leader.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Heartbeat rounds sent and not yet confirmed: (round, clock when first sent), by round.
    sent: VecDeque<(u64, u64)>,
    /// Rounds up to this one never extend the lease (sent before it was last ended).
    floor: u64,
    /// The lease holds while `clock + 1 < until`.
    pub(crate) until: u64,
    /// No lease for the rest of this leadership (a transfer started).
    revoked: bool,
}

impl Lease {
    /// A new leadership: no lease, rounds up to `round` were sent before it.
    pub(crate) fn reset(&mut self, round: u64) {
        *self = Lease { floor: round, ..Lease::default() };
    }

    /// Ends the lease; only rounds after `round` may give a new one.
    pub(crate) fn end(&mut self, round: u64) {
        self.until = 0;
        self.floor = self.floor.max(round);
        self.sent.clear();
    }

    /// Ends the lease for the rest of this leadership.
    pub(crate) fn revoke(&mut self, round: u64) {
        self.end(round);
        self.revoked = true;
    }

    fn record(&mut self, round: u64, clock: u64) {
        if self.revoked || round <= self.floor || self.sent.back().is_some_and(|&(r, _)| r >= round) {
            return;
        }
        if self.sent.len() == MAX_SENT {
            self.sent.pop_front();
        }
        self.sent.push_back((round, clock));
    }
}

impl Node {
    /// Whether reads use leases.
    pub(crate) fn lease_mode(&self) -> bool {
        self.config.read_mode == ReadMode::Lease
    }

    /// How long a lease lasts from when its heartbeats were sent, in ticks.
    pub(crate) fn lease_ticks(&self) -> u64 {
        u64::from(self.config.election_ticks.saturating_sub(self.config.lease_drift_ticks))
    }

    /// Leader: heartbeats of the current read round are being sent now.
    pub(crate) fn lease_round_sent(&mut self) {
        if self.lease_mode() && self.role == Role::Leader {
            self.lease.record(self.reads.round, self.ticks);
        }
    }

    /// Leader: extends the lease to the newest round a majority of the voters has answered.
    pub(crate) fn extend_lease(&mut self) {
        if !self.lease_mode() || self.role != Role::Leader {
            return;
        }
        let me = self.config.id;
        let progress = &self.progress;
        let membership = &self.configs.latest().membership;
        let confirmed = self.lease.sent.iter().enumerate().rev().find(|&(_, &(round, _))| {
            membership.has_quorum(|id| id == me || progress.get(&id).is_some_and(|p| p.read_round >= round))
        });
        if let Some((i, &(_, at))) = confirmed {
            let until = at + self.lease_ticks();
            self.lease.until = self.lease.until.max(until);
            self.lease.sent.drain(..=i);
        }
    }

    /// Leader: the lease holds now (and an entry of this term is committed), so a read may be
    /// served at the commit index without a round.
    pub fn has_lease(&self) -> bool {
        self.lease_mode()
            && self.role == Role::Leader
            && !self.lease.revoked
            && self.transfer.is_none()
            && self.ticks + 1 < self.lease.until
            && self.log.term(self.log.commit()) == Some(self.term)
    }

    /// Leader: a transfer starts; no lease for the rest of this leadership.
    pub(crate) fn revoke_lease(&mut self) {
        self.lease.revoke(self.reads.round);
    }

    /// Leader: the configuration changed; the lease ends until rounds sent after it are answered.
    pub(crate) fn end_lease(&mut self) {
        self.lease.end(self.reads.round);
    }
}
