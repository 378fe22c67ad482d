//! The Raft node: one member's consensus state machine (paper §5, Figure 2; thesis §6.4, §9.6).
//!
//! A [`Node`] is pure: it never performs I/O, reads no clock and starts no thread. The driver feeds it
//! inputs — [`Node::tick`] (logical time), [`Node::step`] (a message from a peer), [`Node::propose`]
//! (a command from a client), [`Node::read`] (a linearizable read) — and collects the resulting work
//! with [`Node::ready`] (see [`crate::ready`] for the order the driver must follow). Its only
//! randomness is its own seeded RNG, so the same inputs always produce the same outputs.
//!
//! Invariants kept here (checked by the simulator after every step):
//! - `term` never decreases; `voted_for` is set at most once per term.
//! - A message that reveals a higher term turns the node into a follower of that term before it is
//!   handled (except PreVote traffic, which never changes a term).
//! - A node is leader of a term only with votes from a majority; a leader never overwrites its log.
//! - Hard state and entries reach `Ready` before, or together with, the messages that depend on them.
//!
//! The per-role logic lives in sibling modules: [`crate::election`] (PreVote, RequestVote),
//! [`crate::replication`] (AppendEntries, heartbeats, commit), [`crate::read_index`] (ReadIndex),
//! [`crate::membership`] (voters, learners, configuration changes) and [`crate::transfer`]
//! (leadership transfer). Every majority is counted over the voters of the latest configuration in
//! the log ([`Node::membership`]); messages are accepted from any node (thesis §4.1: a node may not
//! know the configuration that makes its sender a member yet).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::events::{ElectionEvent, ElectionLog, Refusal};
use crate::lease::Lease;
use crate::log::{RaftLog, StorageAction};
use crate::membership::{Configs, Membership};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::read_index::ReadIndex;
use crate::ready::{ProposeError, ReadError, ReadState, Ready};
use crate::rng::Rng;
use crate::transfer::Transfer;
use crate::types::{Entry, EntryKind, HardState, Index, NodeId, Term};

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether a majority would vote for it (PreVote), without having changed its term.
    PreCandidate,
    /// Campaigning for votes in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

impl Role {
    /// The role's name, as shown to users.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// One Raft node.
#[derive(Debug)]
pub struct Node {
    /// The static configuration.
    pub(crate) config: Config,
    /// Every other member this node replicates to when it leads, sorted: the voters and learners
    /// of the latest configuration and of the latest committed one (so that a removed node hears
    /// of its removal). Recomputed on every configuration change.
    pub(crate) peers: Vec<NodeId>,
    /// The configurations; the latest is in effect (see [`crate::membership`]).
    pub(crate) configs: Configs,
    /// Leader: the leadership transfer in progress, if any (proposals wait meanwhile).
    pub(crate) transfer: Option<Transfer>,
    /// The current term.
    pub(crate) term: Term,
    /// Whom this node voted for in `term`.
    pub(crate) voted_for: Option<NodeId>,
    /// The current role.
    pub(crate) role: Role,
    /// The leader of `term`, if known.
    pub(crate) leader: Option<NodeId>,
    /// The log.
    pub(crate) log: RaftLog,
    /// The node's own RNG.
    pub(crate) rng: Rng,
    /// Ticks since the last election reset (heard from leader, voted, campaigned) or, on a leader,
    /// since the last CheckQuorum.
    pub(crate) election_elapsed: u32,
    /// This term's randomized election timeout, in `[election_ticks, 2 * election_ticks)`.
    pub(crate) election_timeout: u32,
    /// Ticks since the leader's last heartbeat.
    pub(crate) heartbeat_elapsed: u32,
    /// Ticks since this node started: the node's monotonic clock (retransmission, leases).
    pub(crate) ticks: u64,
    /// `ticks` when this node last heard from the leader of its term (AppendEntries, heartbeat),
    /// whatever its term and role since: CheckQuorum's vote refusal lasts an election timeout from
    /// there (thesis §4.2.3), also across a term change (a leadership transfer's vote).
    pub(crate) heard_leader_at: Option<u64>,
    /// Votes received in the current (pre-)campaign: voter -> granted.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leader only: replication progress of each peer.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Leader only: the commit index has to be pushed to peers at the next flush.
    pub(crate) commit_dirty: bool,
    /// ReadIndex bookkeeping.
    pub(crate) reads: ReadIndex,
    /// Leader: the read lease (lease mode only; see [`crate::lease`]).
    pub(crate) lease: Lease,
    /// The hard state as last handed to the driver.
    pub(crate) stored_hard_state: HardState,
    /// The last log index the driver reported durable ([`Node::on_persisted`]).
    pub(crate) persisted: Index,
    /// Outgoing messages not yet handed over.
    pub(crate) msgs: Vec<Message>,
    /// Read outcomes not yet handed over.
    pub(crate) read_states: Vec<ReadState>,
    /// Leader: followers that need a snapshot, not yet handed over.
    pub(crate) snapshot_requests: Vec<NodeId>,
    /// The last election decisions, for observers (see [`crate::events`]).
    pub(crate) election_log: ElectionLog,
}

impl Node {
    /// Starts a node from its durable state: the hard state, and the log after the compaction point
    /// (`offset`, `offset_term`; 0 and 0 if nothing was ever compacted). `applied` is the index the
    /// state machine already reflects (a snapshot's index, or 0). The membership as of `offset` is
    /// `config.voters`; see [`Node::with_membership`] to give it explicitly.
    pub fn new(
        config: Config,
        hard_state: HardState,
        offset: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        applied: Index,
    ) -> Result<Node, String> {
        let base = Membership::from_voters(&config.voters);
        Node::with_membership(config, base, hard_state, offset, offset_term, entries, applied)
    }

    /// Like [`Node::new`], with `base` the membership as of `offset` (the snapshot's, or the
    /// bootstrap configuration when nothing was compacted; empty for a node that waits to be
    /// added). The configuration entries in `entries` apply on top of it.
    pub fn with_membership(
        config: Config,
        base: Membership,
        hard_state: HardState,
        offset: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        applied: Index,
    ) -> Result<Node, String> {
        config.validate()?;
        if let Some(last) = entries.last() {
            if last.term > hard_state.term {
                return Err(format!("log term {} is above the stored term {}", last.term, hard_state.term));
            }
        }
        for (k, e) in entries.iter().enumerate() {
            if e.index != offset + 1 + k as u64 {
                return Err(format!("log is not consecutive at index {}", e.index));
            }
        }
        let mut configs = Configs::new(offset, offset_term, base);
        for e in entries.iter().filter(|e| e.kind == EntryKind::Config) {
            let m = Membership::decode(&e.data)
                .map_err(|err| format!("configuration entry {} (term {}): {err}", e.index, e.term))?;
            configs.push(e.index, e.term, m);
        }
        let rng = Rng::new(config.seed);
        let persisted = offset + entries.len() as u64;
        // A snapshot installed just before a crash may be of a term the hard state never recorded:
        // keep `term >= last log term` by moving up to it (no vote was ever cast in that term here,
        // or the hard state would hold it); the next Ready persists it.
        let (term, voted_for) = if offset_term > hard_state.term {
            (offset_term, None)
        } else {
            (hard_state.term, hard_state.voted_for)
        };
        let mut node = Node {
            peers: Vec::new(),
            configs,
            transfer: None,
            term,
            voted_for,
            role: Role::Follower,
            leader: None,
            log: RaftLog::new(offset, offset_term, entries, applied),
            rng,
            election_elapsed: 0,
            election_timeout: config.election_ticks,
            heartbeat_elapsed: 0,
            ticks: 0,
            heard_leader_at: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            commit_dirty: false,
            reads: ReadIndex::default(),
            lease: Lease::default(),
            stored_hard_state: hard_state,
            persisted,
            msgs: Vec::new(),
            read_states: Vec::new(),
            snapshot_requests: Vec::new(),
            election_log: ElectionLog::default(),
            config,
        };
        node.reset_election_timer();
        node.membership_changed();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The known leader of the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The vote cast in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// The hard state (term, vote) as it is now in memory.
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for }
    }

    /// The commit index.
    pub fn commit(&self) -> Index {
        self.log.commit()
    }

    /// The index of the last entry handed out for applying.
    pub fn applied(&self) -> Index {
        self.log.applied()
    }

    /// The last log index.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The term of the last log entry.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    /// The first index still held in the in-memory log.
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The term of the entry at `index`, if held.
    pub fn entry_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Every other member this node replicates to when it leads (voters and learners, sorted).
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    /// Ticks since the election timer was last reset (on a leader: since the last CheckQuorum).
    pub fn election_elapsed(&self) -> u32 {
        self.election_elapsed
    }

    /// The election timeout drawn for the current wait, in ticks.
    pub fn election_timeout(&self) -> u32 {
        self.election_timeout
    }

    /// The last election decisions of this node (see [`crate::events`]).
    pub fn election_log(&self) -> &ElectionLog {
        &self.election_log
    }

    /// Leader only: a peer's replication progress.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.tick_by(1);
    }

    /// `n` ticks (at least one) passed since the last call: the clock advances by all of them, the
    /// timers (elections, heartbeats, CheckQuorum) by one step. A host whose thread fell behind
    /// passes every tick period that elapsed: leases are measured on this clock
    /// ([`crate::lease`]), and timers that lag only make this node slower to suspect a leader.
    pub fn tick_by(&mut self, n: u64) {
        self.ticks += n.max(1);
        self.reads.tick_forwarded(&mut self.read_states, 2 * self.config.election_ticks);
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.election_timeout {
            if self.is_voter() {
                self.campaign();
            } else if self.election_elapsed == self.election_timeout {
                // Learners, removed nodes and nodes that wait to be added never campaign.
                let (term, config_index) = (self.term, self.membership_index());
                self.election_log.push(ElectionEvent::NotAVoter { term, config_index });
            }
        }
    }

    fn tick_leader(&mut self) {
        let timeout = u64::from(self.config.election_ticks);
        for pr in self.progress.values_mut() {
            pr.retransmit_if_stale(self.ticks, timeout);
        }
        self.tick_transfer();
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                // Voters only; the leader counts itself only if it is one (it may be leaving).
                let me = self.config.id;
                let progress = &self.progress;
                let active = self
                    .membership()
                    .has_quorum(|id| id == me || progress.get(&id).is_some_and(|p| p.recent_active));
                if !active {
                    // CheckQuorum: we cannot reach a majority; stop pretending to lead.
                    let heard = self
                        .membership()
                        .voters()
                        .into_iter()
                        .filter(|&id| id == me || progress.get(&id).is_some_and(|p| p.recent_active))
                        .collect();
                    self.election_log.push(ElectionEvent::CheckQuorumStepDown { term: self.term, heard });
                    self.become_follower(self.term, None);
                    return;
                }
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            if self.lease_mode() {
                // Every heartbeat is a round of its own, so its answers renew the lease.
                self.reads.round += 1;
            }
            self.broadcast_heartbeat();
        }
    }

    /// Proposes a command. On the leader it is appended to the log and its index returned; it is
    /// committed if and when it shows up in `Ready::committed` with the same index and term.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if let Some(t) = &self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.target });
        }
        Ok(self.log.append(self.term, data))
    }

    /// Asks for a linearizable read. The outcome comes back in `Ready::reads` under `id`.
    ///
    /// `id` must never have been passed before, by this node or an earlier incarnation of it (a
    /// read that failed is asked again under a new id): on a follower the reads of a flush share
    /// one ReadIndex request named by the first one's id, and a late answer to an earlier request
    /// of the same name would serve reads that arrived after its index was taken.
    pub fn read(&mut self, id: u64) {
        match (self.role, self.leader) {
            (Role::Leader, _) if self.has_lease() => {
                self.read_states.push(ReadState { id, result: Ok(self.log.commit()) })
            }
            (Role::Leader, _) => self.reads.queue_local(id),
            (_, Some(_)) => self.reads.forward(id),
            (_, None) => self.read_states.push(ReadState { id, result: Err(ReadError::NoLeader) }),
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.config.id || msg.from == self.config.id || msg.from == 0 {
            return; // Misrouted: not ours to handle.
        }
        if msg.term > self.term {
            // In lease mode a node that just started refuses as long: it may have heard from a
            // leader just before it went down (see `crate::lease`).
            let election_ticks = u64::from(self.config.election_ticks);
            let just_started = self.lease_mode() && self.ticks < election_ticks;
            // Heard from a leader within an election timeout, even if it has moved to a newer term
            // since (it granted a leadership transfer's vote, whose winner it has not heard from
            // yet): a candidate that is not that transfer's target is just as disruptive then.
            // Found by the simulator: a removed node that never learned of its removal (no
            // PreVote) raised a voter's term in that gap and deposed the transfer's winner.
            let heard_recently = self.heard_leader_at.is_some_and(|t| self.ticks < t + election_ticks);
            let in_lease = self.config.check_quorum
                && (((self.leader.is_some() || just_started)
                    && self.election_elapsed < self.config.election_ticks)
                    || heard_recently);
            match msg.body {
                MessageBody::PreVote { .. } | MessageBody::RequestVote { transfer: false, .. }
                    if in_lease =>
                {
                    // We heard from a live leader recently: this candidate is disruptive (§9.6, §6;
                    // a removed node that has not heard of its removal, §4.2.3). A campaign the
                    // leader asked for (leadership transfer, §3.10) is not.
                    let elapsed = match (self.leader, self.heard_leader_at) {
                        (Some(_), _) => u64::from(self.election_elapsed),
                        (None, Some(t)) => self.ticks - t,
                        (None, None) => self.ticks,
                    };
                    let refused = Refusal::Lease { leader: self.leader, elapsed };
                    self.record_vote(&msg, Some(refused));
                    return;
                }
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    self.become_follower(msg.term, Some(msg.from));
                }
                MessageBody::RequestVote { .. } => {
                    // Adopt the term without restarting the election timer: only a granted vote
                    // restarts it (§5.2, as etcd's raft does). Otherwise a candidate whose log is
                    // behind, campaigning again and again (without PreVote), keeps the one voter
                    // that could win from ever timing out: found by the simulator (a two-voter
                    // configuration with no leader for over a second after the faults stopped).
                    let (elapsed, timeout) = (self.election_elapsed, self.election_timeout);
                    self.become_follower(msg.term, None);
                    self.election_elapsed = elapsed;
                    self.election_timeout = timeout;
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            match msg.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    // A stale leader: tell it about the newer term so it steps down.
                    self.send(msg.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::PreVote { .. } => {
                    self.record_vote(&msg, Some(Refusal::StaleTerm { ours: self.term }));
                    self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
                }
                MessageBody::RequestVote { .. } => {
                    self.record_vote(&msg, Some(Refusal::StaleTerm { ours: self.term }));
                    self.send(msg.from, MessageBody::RequestVoteResponse { granted: false });
                }
                _ => {}
            }
            return;
        }

        match msg.body {
            MessageBody::PreVote { last_log_index, last_log_term } => {
                self.handle_pre_vote(msg.from, msg.term, last_log_index, last_log_term)
            }
            MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
                self.handle_request_vote(msg.from, last_log_index, last_log_term)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(msg.from),
            MessageBody::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(msg.from, msg.term, granted)
            }
            MessageBody::RequestVoteResponse { granted } => self.handle_vote_response(msg.from, granted),
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                self.follow(msg.from);
                self.handle_append_entries(msg.from, prev_log_index, prev_log_term, &entries, leader_commit);
            }
            MessageBody::Heartbeat { leader_commit, read_round } => {
                self.follow(msg.from);
                self.log.commit_to(leader_commit);
                self.send(msg.from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::AppendEntriesResponse { success, index, conflict_term, conflict_index } => {
                self.handle_append_response(msg.from, success, index, conflict_term, conflict_index)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(msg.from, read_round)
            }
            MessageBody::ReadIndex { request_id } => self.handle_read_index(msg.from, request_id),
            MessageBody::ReadIndexResponse { request_id, index } => {
                self.reads.forwarded_answered(&mut self.read_states, request_id, index)
            }
        }
    }

    /// Collects the work accumulated since the last call (see [`crate::ready`] for what the driver
    /// must do with it, and in which order).
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.maybe_commit();
            self.start_read_round();
            self.flush_appends();
        }
        self.flush_forwarded_reads();
        let mut ready = Ready::default();
        let hs = self.hard_state();
        if hs != self.stored_hard_state {
            self.stored_hard_state = hs;
            ready.hard_state = Some(hs);
        }
        if self.log.has_unstable() {
            let (truncate_from, entries) = self.log.take_unstable();
            if let Some(from) = truncate_from {
                self.persisted = self.persisted.min(from - 1);
            }
            ready.truncate_from = truncate_from;
            ready.entries = entries;
        }
        ready.committed = self.log.take_committed(usize::MAX);
        // A leader's appends and heartbeats depend only on its in-memory log: they may leave before
        // its own fsync (its commit index counts itself only up to `persisted`).
        for m in std::mem::take(&mut self.msgs) {
            match m.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                    ready.early_messages.push(m)
                }
                MessageBody::AppendEntriesResponse { .. } => ready.log_acks.push(m),
                _ => ready.messages.push(m),
            }
        }
        ready.reads = std::mem::take(&mut self.read_states);
        ready.snapshots = std::mem::take(&mut self.snapshot_requests);
        ready
    }

    /// The driver made every entry up to `index` (as handed out by [`Node::ready`]) durable.
    pub fn on_persisted(&mut self, index: Index) {
        let index = index.min(self.log.last_index());
        if index > self.persisted {
            self.persisted = index;
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
    }

    /// True if [`Node::ready`] would return work.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.reads.has_unsent()
            || !self.snapshot_requests.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed()
            || self.hard_state() != self.stored_hard_state
            || (self.role == Role::Leader
                && (self.commit_dirty
                    || (self.reads.has_unassigned() && self.log.term(self.log.commit()) == Some(self.term))))
    }

    /// Drops log entries up to `index` from memory after the state machine's snapshot covers them
    /// (only applied entries are dropped; a larger `index` is clamped to the applied index).
    /// Returns the removed entries (see [`RaftLog::compact`]).
    pub fn compact(&mut self, index: Index) -> std::collections::VecDeque<Entry> {
        self.log.compact(index.min(self.log.applied()))
    }

    /// Follower: the driver has made a snapshot ending at (`index`, `term`) durable and the state
    /// machine now reflects it (§7, InstallSnapshot). The log keeps the entries after `index` if it
    /// holds that entry with that term (stored yet or not), and is discarded otherwise; commit and
    /// applied move up to `index` (commit never past the last index); `leader` (the sender) is told
    /// the follower now holds everything up to `index`.
    ///
    /// Returns None if the snapshot is refused (this node is the leader, it already applied `index`,
    /// or `term` is above its current term): nothing changed, and the driver must keep its current
    /// state. Otherwise what storage must do ([`StorageAction`]): drop its prefix up to `index`, or
    /// discard its whole log and restart empty after `index` (the core then hands the entries it
    /// kept after `index`, if any, to storage again in the next [`Ready`]).
    ///
    /// Acknowledgements already queued stay truthful: those for entries the log keeps leave with
    /// (after) the Ready that makes them durable; those for entries a discarded log held are dropped.
    ///
    /// Safe whoever sent it: a snapshot only holds committed entries, which every later leader has.
    pub fn restore(&mut self, index: Index, term: Term, leader: NodeId) -> Option<StorageAction> {
        if self.role == Role::Leader || index <= self.log.applied() || term > self.term {
            // A snapshot of a term this node has not reached yet would break `term >= last log
            // term`; its sender is in a newer term, which this node learns from it first.
            return None;
        }
        let action = self.log.restore(index, term);
        self.persisted = match action {
            StorageAction::DropPrefix => self.persisted.max(index),
            StorageAction::Reset => index,
        };
        self.drop_acks_beyond(self.log.last_index());
        if self.peers.contains(&leader) {
            self.send(
                leader,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    index,
                    conflict_term: 0,
                    conflict_index: 0,
                },
            );
        }
        Some(action)
    }

    /// Drops queued successful acknowledgements of entries beyond `last` (the log no longer holds
    /// them: a snapshot replaced it, or a conflict truncated it before they were stored). Dropping a
    /// message is always safe; sending one would let a leader count entries this node lacks.
    pub(crate) fn drop_acks_beyond(&mut self, last: Index) {
        self.msgs.retain(|m| {
            !matches!(m.body, MessageBody::AppendEntriesResponse { success: true, index, .. } if index > last)
        });
    }

    /// Leader: the driver delivered a snapshot ending at `index` to `peer`, which installed it.
    pub fn snapshot_sent(&mut self, peer: NodeId, index: Index) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.snapshot_sent(index);
        }
    }

    /// Leader: sending a snapshot to `peer` failed; it will be asked for again if still needed.
    pub fn snapshot_failed(&mut self, peer: NodeId) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.snapshot_failed();
        }
    }

    /// Queues a message to `to` in the current term.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message { from: self.config.id, to, term: self.term, body });
    }

    /// Queues a message with an explicit term (PreVote traffic uses terms ahead of ours).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message { from: self.config.id, to, term, body });
    }

    /// Draws a new election timeout and restarts the election clock.
    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let min = u64::from(self.config.election_ticks);
        self.election_timeout = self.rng.range(min, 2 * min) as u32;
    }

    /// Accepts `leader` as the leader of the current term (it sent us AppendEntries or a heartbeat).
    fn follow(&mut self, leader: NodeId) {
        if self.role == Role::Leader {
            panic!("safety violation: two leaders in term {} ({} and {})", self.term, self.config.id, leader);
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(leader));
        }
        self.leader = Some(leader);
        self.election_elapsed = 0;
        self.heard_leader_at = Some(self.ticks);
    }

    /// Becomes a follower in `term` (raising it if higher; the vote is kept only within a term).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.reads.fail_forwarded(&mut self.read_states);
        }
        if self.role == Role::Leader {
            self.fail_leader_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.transfer = None;
        self.progress.clear();
        self.snapshot_requests.clear();
        self.votes.clear();
        self.commit_dirty = false;
        self.reset_election_timer();
    }
}
