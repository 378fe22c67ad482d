//! Leadership transfer (thesis §3.10).
//!
//! 1. The leader stops accepting proposals (and configuration changes): its last index no longer
//!    moves, so the target can catch up.
//! 2. It replicates to the target as usual; once the target holds the leader's whole log it sends
//!    the target [`MessageBody::TimeoutNow`].
//! 3. The target, if it is a voter, campaigns at once (no PreVote) with requests marked as a
//!    transfer, which voters answer even though they heard from the leader within the election
//!    timeout. Its log is as up to date as the leader's, so it wins unless something else moves.
//! 4. The leader steps down when it sees the target's higher term. If that has not happened within
//!    an election timeout (the target is slow, cut off, or the TimeoutNow was lost), the transfer
//!    is abandoned and proposals resume. The timeout counts from the start while the target
//!    catches up, and again from zero once TimeoutNow is sent (so a transfer takes at most two
//!    election timeouts): a target told to campaign must not find the leader's log grown past its
//!    own, or its campaign deposes the leader and loses.
//!
//! Safety does not rest on any of this: the target wins only by the usual election rules.
//! Invariant: `transfer` is `Some` only on a leader, and only for a voter of its latest
//! configuration.

use crate::message::MessageBody;
use crate::node::{Node, Role};
use crate::types::NodeId;

/// A leadership transfer in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The node that is to lead.
    pub target: NodeId,
    /// Ticks since the transfer started, or since TimeoutNow was sent.
    pub elapsed: u32,
    /// TimeoutNow has been sent.
    pub sent: bool,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader transfers leadership; `leader` is the one this node knows of.
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of the configuration in effect.
    NotAVoter {
        /// The target.
        id: NodeId,
    },
    /// Another transfer is in progress.
    InProgress {
        /// Its target.
        to: NodeId,
    },
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NotLeader { leader: Some(l) } => write!(f, "not the leader (node {l} is)"),
            TransferError::NotLeader { leader: None } => write!(f, "not the leader (no leader known)"),
            TransferError::NotAVoter { id } => write!(f, "node {id} is not a voter"),
            TransferError::InProgress { to } => {
                write!(f, "a leadership transfer to node {to} is in progress")
            }
        }
    }
}

impl std::error::Error for TransferError {}

impl Node {
    /// Leader: hands leadership to voter `target` (see the module docs). `Ok` once started (or at
    /// once if `target` is this node); the outcome shows in [`Node::leader`].
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader: self.leader });
        }
        if target == self.config.id {
            return Ok(());
        }
        if !self.membership().is_voter(target) {
            return Err(TransferError::NotAVoter { id: target });
        }
        match self.transfer {
            Some(t) if t.target == target => return Ok(()),
            Some(t) => return Err(TransferError::InProgress { to: t.target }),
            None => {}
        }
        self.transfer = Some(Transfer { target, elapsed: 0, sent: false });
        // The target's campaign is granted despite the lease (see `crate::lease`).
        self.revoke_lease();
        let last = self.log.last_index();
        let now = self.ticks;
        if let Some(pr) = self.progress.get_mut(&target) {
            if pr.match_index < last {
                // Whatever is in flight to the target may be lost: send from its match index now
                // rather than after the retransmission timeout, so the transfer is prompt.
                pr.retransmit_if_stale(now, 0);
            }
        }
        self.transfer_progressed(target);
        Ok(())
    }

    /// The target of the leadership transfer in progress, if any.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.target)
    }

    /// Leader: `peer` acknowledged entries; if it is the transfer's target and now holds the whole
    /// log, tell it to campaign.
    pub(crate) fn transfer_progressed(&mut self, peer: NodeId) {
        let Some(t) = self.transfer else { return };
        let caught_up = self.progress.get(&peer).is_some_and(|p| p.match_index >= self.log.last_index());
        if t.target == peer && !t.sent && caught_up {
            self.send(peer, MessageBody::TimeoutNow);
            // The target gets a whole election timeout from now to win: abandoning the transfer
            // earlier resumes proposals, so a TimeoutNow still on its way would start a campaign
            // with a log that is behind by then, which deposes this leader and cannot win
            // (found by the simulator: a target that took most of the timeout to catch up).
            self.transfer = Some(Transfer { sent: true, elapsed: 0, ..t });
        }
    }

    /// Leader: one tick of the transfer's clock; abandons it after an election timeout. A leader
    /// that removed itself steps down then in any case.
    pub(crate) fn tick_transfer(&mut self) {
        let Some(t) = &mut self.transfer else { return };
        t.elapsed += 1;
        if t.elapsed < self.config.election_ticks {
            return;
        }
        self.transfer = None;
        if !self.is_voter() && self.membership_index() <= self.log.commit() {
            self.become_follower(self.term, None);
        }
    }

    /// A leader that a committed configuration removed: stop taking proposals, hand over to the
    /// most caught-up voter (or step down at once if there is none to hand to).
    pub(crate) fn hand_over_after_removal(&mut self) {
        if self.transfer.is_some() {
            return;
        }
        let me = self.config.id;
        let best = self
            .membership()
            .voters()
            .into_iter()
            .filter(|&id| id != me)
            .max_by_key(|id| self.progress.get(id).map_or(0, |p| p.match_index));
        match best {
            Some(target) => {
                // Tell the followers the commit index first (the new configuration is committed).
                self.flush_appends();
                self.transfer = Some(Transfer { target, elapsed: 0, sent: false });
                self.revoke_lease();
                self.transfer_progressed(target);
            }
            None => self.become_follower(self.term, None),
        }
    }

    /// Follower: the leader asks this node to campaign now.
    pub(crate) fn handle_timeout_now(&mut self, _from: NodeId) {
        if self.role != Role::Follower || !self.is_voter() {
            return;
        }
        self.become_candidate(true);
    }
}
