//! Linearizable reads without writing the log: ReadIndex (thesis §6.4).
//!
//! On the leader, a read is served at a *read index* once leadership is confirmed:
//! 1. the leader must have committed an entry of its own term (its no-op), so its commit index is at
//!    least as high as any committed index of any earlier leader; reads wait for that;
//! 2. the read index is the commit index when the read's heartbeat round starts;
//! 3. the round's heartbeat goes to every follower; once a majority of the voters (counting the
//!    leader if it is one; learners never count) has answered a heartbeat of that round or a later
//!    one, no other leader can have existed when the round began, so the read index covers every
//!    write acknowledged before the read arrived;
//! 4. the driver serves the read after its state machine has applied the read index.
//!
//! All reads that arrive between two flushes share one round (one heartbeat broadcast): many
//! concurrent reads cost one round trip. A follower forwards its reads to the leader and serves
//! them locally at the index the leader returns; the reads that arrive between two flushes
//! ([`Node::ready`]) share one ReadIndex message, named by the first read's id, and its answer
//! serves them all. That is as linearizable as one message per read: the message leaves at the
//! flush, after every read of its group arrived, so the index the leader returns covers every
//! write acknowledged before any of them arrived. A leader that holds a lease ([`crate::lease`])
//! answers both kinds at once with its commit index, without a round.
//!
//! Invariants: rounds are numbered increasingly per leadership; `awaiting` is ordered by round; a
//! read is answered exactly once (Ok with an index, or an error the driver may retry); a
//! follower's read is either unsent or in exactly one forwarded group.

use std::collections::{BTreeMap, VecDeque};

use crate::message::MessageBody;
use crate::node::{Node, Role};
use crate::ready::{ReadError, ReadState};
use crate::types::{Index, NodeId};

/// Who asked for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOrigin {
    /// The local driver, with its id.
    Local(u64),
    /// A follower, with its request id.
    Remote(NodeId, u64),
}

/// ReadIndex bookkeeping of one node.
#[derive(Debug, Default)]
pub(crate) struct ReadIndex {
    /// Leader: the last heartbeat round started.
    pub(crate) round: u64,
    /// Leader: reads not yet in a round (new, or waiting for the first commit of the term).
    unassigned: Vec<ReadOrigin>,
    /// Leader: rounds in progress: (round, read index, reads).
    awaiting: VecDeque<(u64, Index, Vec<ReadOrigin>)>,
    /// Follower: reads not yet sent to the leader (they go at the next flush, as one message).
    unsent: Vec<u64>,
    /// Follower: groups of reads forwarded to the leader, by the request id their message
    /// carried (the group's first read id) -> (ticks waited, the group's read ids).
    forwarded: BTreeMap<u64, (u32, Vec<u64>)>,
}

impl ReadIndex {
    /// Forgets the leader-side state (new leadership).
    pub(crate) fn reset(&mut self) {
        self.unassigned.clear();
        self.awaiting.clear();
    }

    pub(crate) fn queue_local(&mut self, id: u64) {
        self.unassigned.push(ReadOrigin::Local(id));
    }

    pub(crate) fn has_unassigned(&self) -> bool {
        !self.unassigned.is_empty()
    }

    /// Follower: a read to forward at the next flush.
    pub(crate) fn forward(&mut self, id: u64) {
        self.unsent.push(id);
    }

    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Follower: the reads to send now as one group, and the request id that names it.
    fn take_unsent(&mut self) -> Option<u64> {
        let ids = std::mem::take(&mut self.unsent);
        let request_id = *ids.first()?;
        self.forwarded.insert(request_id, (0, ids));
        Some(request_id)
    }

    /// A forwarded group came back from the leader.
    pub(crate) fn forwarded_answered(
        &mut self,
        out: &mut Vec<ReadState>,
        request_id: u64,
        index: Option<Index>,
    ) {
        if let Some((_, ids)) = self.forwarded.remove(&request_id) {
            let result = index.ok_or(ReadError::LeadershipChanged);
            out.extend(ids.into_iter().map(|id| ReadState { id, result }));
        }
    }

    /// Ages forwarded groups; fails those older than `limit` ticks (the request or answer was lost).
    pub(crate) fn tick_forwarded(&mut self, out: &mut Vec<ReadState>, limit: u32) {
        let mut expired = Vec::new();
        for (request_id, (waited, _)) in self.forwarded.iter_mut() {
            *waited += 1;
            if *waited > limit {
                expired.push(*request_id);
            }
        }
        for request_id in expired {
            if let Some((_, ids)) = self.forwarded.remove(&request_id) {
                out.extend(ids.into_iter().map(|id| ReadState { id, result: Err(ReadError::TimedOut) }));
            }
        }
    }

    /// Fails every forwarded or unsent read (the term changed).
    pub(crate) fn fail_forwarded(&mut self, out: &mut Vec<ReadState>) {
        let groups = std::mem::take(&mut self.forwarded).into_values().flat_map(|(_, ids)| ids);
        let ids: Vec<u64> = groups.chain(std::mem::take(&mut self.unsent)).collect();
        out.extend(ids.into_iter().map(|id| ReadState { id, result: Err(ReadError::LeadershipChanged) }));
    }
}

impl Node {
    /// Follower: sends the reads that arrived since the last flush to the leader, as one request.
    /// A node that is no longer a follower of a known leader fails them (the driver retries).
    pub(crate) fn flush_forwarded_reads(&mut self) {
        if !self.reads.has_unsent() {
            return;
        }
        match (self.role, self.leader) {
            (Role::Leader, _) | (_, None) => {
                let ids = std::mem::take(&mut self.reads.unsent);
                let error =
                    if self.leader.is_none() { ReadError::NoLeader } else { ReadError::LeadershipChanged };
                self.read_states.extend(ids.into_iter().map(|id| ReadState { id, result: Err(error) }));
            }
            (_, Some(leader)) => {
                if let Some(request_id) = self.reads.take_unsent() {
                    self.send(leader, MessageBody::ReadIndex { request_id });
                }
            }
        }
    }

    /// Leader: a follower asks for a read index.
    pub(crate) fn handle_read_index(&mut self, from: NodeId, request_id: u64) {
        if self.role == Role::Leader && self.has_lease() {
            let index = Some(self.log.commit());
            self.send(from, MessageBody::ReadIndexResponse { request_id, index });
        } else if self.role == Role::Leader {
            self.reads.unassigned.push(ReadOrigin::Remote(from, request_id));
        } else {
            self.send(from, MessageBody::ReadIndexResponse { request_id, index: None });
        }
    }

    /// Leader: puts the unassigned reads into a new round and broadcasts its heartbeat, once an entry
    /// of the current term is committed.
    pub(crate) fn start_read_round(&mut self) {
        if self.reads.unassigned.is_empty() || self.log.term(self.log.commit()) != Some(self.term) {
            return;
        }
        self.reads.round += 1;
        let reads = std::mem::take(&mut self.reads.unassigned);
        self.reads.awaiting.push_back((self.reads.round, self.log.commit(), reads));
        if !self.peers.is_empty() {
            self.broadcast_heartbeat();
        }
        self.advance_reads();
    }

    /// Leader: the first commit of the term happened; reads parked until then may start.
    pub(crate) fn release_reads_waiting_for_commit(&mut self) {
        // Nothing to do eagerly: `start_read_round` runs at the next flush and checks the condition.
    }

    /// Leader: answers every round a majority has confirmed.
    pub(crate) fn advance_reads(&mut self) {
        while let Some(&(round, index, _)) = self.reads.awaiting.front() {
            let me = self.config.id;
            let progress = &self.progress;
            let confirmed = self
                .configs
                .latest()
                .membership
                .has_quorum(|id| id == me || progress.get(&id).is_some_and(|p| p.read_round >= round));
            if !confirmed {
                break;
            }
            let Some((_, _, reads)) = self.reads.awaiting.pop_front() else { break };
            for origin in reads {
                match origin {
                    ReadOrigin::Local(id) => self.read_states.push(ReadState { id, result: Ok(index) }),
                    ReadOrigin::Remote(peer, request_id) => {
                        self.send(peer, MessageBody::ReadIndexResponse { request_id, index: Some(index) })
                    }
                }
            }
        }
    }

    /// Leader stepping down: every read not yet confirmed fails.
    pub(crate) fn fail_leader_reads(&mut self) {
        let mut origins = std::mem::take(&mut self.reads.unassigned);
        for (_, _, reads) in std::mem::take(&mut self.reads.awaiting) {
            origins.extend(reads);
        }
        for origin in origins {
            match origin {
                ReadOrigin::Local(id) => {
                    self.read_states.push(ReadState { id, result: Err(ReadError::LeadershipChanged) })
                }
                ReadOrigin::Remote(peer, request_id) => {
                    self.send(peer, MessageBody::ReadIndexResponse { request_id, index: None })
                }
            }
        }
    }
}
