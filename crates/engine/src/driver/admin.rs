//! Membership changes and leadership transfers asked of a driver (admin requests), and the
//! membership its state machine has applied.
//!
//! - A change ([`MemberChange`]) is proposed by the core on the leader
//!   ([`raft::Node::propose_conf_change`]; a follower answers [`RequestError::NotLeader`] and the
//!   server relays the request to the leader). It is answered once *this* node applies the
//!   configuration entry at the index it was proposed at: with the changed node's id if the entry
//!   there has the term it was proposed in, with an error if another entry took that place (a
//!   leader change cut it). A refusal by the core (one change at a time, not caught up, unknown
//!   node...) is answered at once with its reason, and so is a name already in use.
//! - A transfer is started by the core on the leader ([`raft::Node::transfer_leader`]) and answered
//!   once this node sees the target lead, or with an error once the core gives the transfer up (an
//!   election timeout) or someone else leads.
//! - Both fail with [`RequestError::Timeout`] after the request timeout (the outcome is then
//!   unknown: the change may still commit).
//!
//! The applied membership (`applied`) is the configuration as of the state machine's applied
//! index: the snapshot's or the bootstrap one at start, then every configuration entry applied.
//! Snapshots record it. A member's record (its context) is raft-kv's `-gc` entry, whose part before
//! the first comma is the member's name: two members never share a name.
//!
//! Invariant: every admin request gets exactly one answer.

use bytes::Bytes;
use raft::{ConfChange, Entry, Index, Membership, Node, NodeId, Role, Term};

use super::{RequestError, RequestId, Response};
use crate::kv::Reply;

/// A membership change asked of the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Admit a new node as a learner with the given id (the next free one: [`Membership::next_id`])
    /// and record (raft-kv: its `-gc` entry `name,host,clientPort,corePort`).
    Add {
        /// The new node's id.
        id: NodeId,
        /// Its record.
        context: Bytes,
    },
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Remove a member.
    Remove(NodeId),
}

/// The name part of a member record (up to the first comma).
pub fn member_name(context: &[u8]) -> &[u8] {
    context.split(|&b| b == b',').next().unwrap_or(context)
}

/// A change waiting for its entry to be applied.
#[derive(Debug)]
struct PendingChange {
    request: RequestId,
    index: Index,
    term: Term,
    node: NodeId,
    submitted: u64,
}

/// A transfer waiting for the target to lead.
#[derive(Debug)]
struct PendingTransfer {
    request: RequestId,
    target: NodeId,
    term: Term,
    submitted: u64,
}

/// The driver's admin state. See the module docs.
#[derive(Debug)]
pub(super) struct Admin {
    /// The membership as of the applied index.
    pub(super) applied: Membership,
    /// The index of the configuration entry (or snapshot / bootstrap point) it comes from.
    pub(super) applied_index: Index,
    changes: Vec<PendingChange>,
    transfers: Vec<PendingTransfer>,
}

fn error(text: impl std::fmt::Display) -> Response {
    Ok(Reply::Error(format!("ERR {text}")))
}

impl Admin {
    pub(super) fn new(applied: Membership, applied_index: Index) -> Self {
        Admin { applied, applied_index, changes: Vec::new(), transfers: Vec::new() }
    }

    /// Requests waiting for an answer.
    pub(super) fn pending(&self) -> usize {
        self.changes.len() + self.transfers.len()
    }

    /// Proposes a change (see the module docs).
    pub(super) fn submit_change(
        &mut self,
        request: RequestId,
        change: MemberChange,
        node: &mut Node,
        now: u64,
        answers: &mut Vec<(RequestId, Response)>,
    ) {
        if node.role() != Role::Leader {
            answers.push((request, Err(RequestError::NotLeader { leader: node.leader() })));
            return;
        }
        let (id, change) = match change {
            MemberChange::Add { id, context } => {
                let name = member_name(&context);
                let taken = node.membership().members().values().any(|m| member_name(&m.context) == name);
                if taken {
                    let name = String::from_utf8_lossy(name);
                    answers.push((request, error(format!("a member named '{name}' exists already"))));
                    return;
                }
                (id, ConfChange::AddLearner { id, context })
            }
            MemberChange::Promote(id) => (id, ConfChange::Promote { id }),
            MemberChange::Remove(id) => (id, ConfChange::Remove { id }),
        };
        match node.propose_conf_change(change) {
            Ok(index) => self.changes.push(PendingChange {
                request,
                index,
                term: node.term(),
                node: id,
                submitted: now,
            }),
            Err(e) => answers.push((request, error(e))),
        }
    }

    /// Starts a leadership transfer (see the module docs).
    pub(super) fn submit_transfer(
        &mut self,
        request: RequestId,
        target: NodeId,
        node: &mut Node,
        now: u64,
        answers: &mut Vec<(RequestId, Response)>,
    ) {
        if node.role() != Role::Leader {
            answers.push((request, Err(RequestError::NotLeader { leader: node.leader() })));
            return;
        }
        if target == node.id() {
            answers.push((request, Ok(Reply::Ok)));
            return;
        }
        match node.transfer_leader(target) {
            Ok(()) => {
                self.transfers.push(PendingTransfer { request, target, term: node.term(), submitted: now })
            }
            Err(e) => answers.push((request, error(e))),
        }
    }

    /// The state machine applied configuration entry `entry`, whose membership is `m`.
    pub(super) fn applied_config(
        &mut self,
        entry: &Entry,
        m: Membership,
        answers: &mut Vec<(RequestId, Response)>,
    ) {
        self.applied = m;
        self.applied_index = entry.index;
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.changes).into_iter().partition(|c| c.index <= entry.index);
        self.changes = waiting;
        for c in done {
            let response = if c.index == entry.index && c.term == entry.term {
                Ok(Reply::Int(c.node as i64))
            } else {
                error("the change was cut from the log by a leader change; check the membership and retry")
            };
            answers.push((c.request, response));
        }
    }

    /// A snapshot moved the state machine to `index` with membership `m`: changes it covers have an
    /// unknown outcome here.
    pub(super) fn restored(&mut self, index: Index, m: Membership, answers: &mut Vec<(RequestId, Response)>) {
        self.applied = m;
        self.applied_index = index;
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.changes).into_iter().partition(|c| c.index <= index);
        self.changes = waiting;
        for c in done {
            answers.push((c.request, Err(RequestError::Timeout)));
        }
    }

    /// Answers the transfers whose outcome is known (after every Ready).
    pub(super) fn check_transfers(&mut self, node: &Node, answers: &mut Vec<(RequestId, Response)>) {
        if self.transfers.is_empty() {
            return;
        }
        let leader = node.leader();
        self.transfers.retain(|t| {
            let response = if leader == Some(t.target) && node.term() > t.term {
                Ok(Reply::Ok)
            } else if node.term() > t.term && leader.is_some() {
                error(format!("node {} leads now, not node {}", leader.unwrap_or(0), t.target))
            } else if node.role() == Role::Leader && node.transferring_to() != Some(t.target) {
                error(format!(
                    "node {} did not take over within an election timeout; this node still leads",
                    t.target
                ))
            } else {
                return true;
            };
            answers.push((t.request, response));
            false
        });
    }

    /// Fails requests older than `timeout` ticks.
    pub(super) fn tick(&mut self, now: u64, timeout: u64, answers: &mut Vec<(RequestId, Response)>) {
        self.changes.retain(|c| {
            let expired = now - c.submitted >= timeout;
            if expired {
                answers.push((c.request, Err(RequestError::Timeout)));
            }
            !expired
        });
        self.transfers.retain(|t| {
            let expired = now - t.submitted >= timeout;
            if expired {
                answers.push((t.request, Err(RequestError::Timeout)));
            }
            !expired
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_record_up_to_the_first_comma() {
        assert_eq!(member_name(b"D,host,1,2"), b"D");
        assert_eq!(member_name(b"D"), b"D");
        assert_eq!(member_name(b""), b"");
    }
}
