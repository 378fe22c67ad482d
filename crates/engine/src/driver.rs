//! The driver: one replica = a Raft [`Node`] + its durable [`LogStore`] + the [`KvStore`] state
//! machine, executed in the order the core demands (see [`raft::ready`]): send what may leave
//! early -> apply what is committed and answer -> persist (one sync per batch) -> send the rest.
//!
//! The driver is synchronous and deterministic: no threads, no clock, no sockets. It is run only by
//! the host loop ([`crate::host`]), which the server runs on its node thread and the simulator runs
//! for each simulated node: both feed it batches of inputs (client requests, peer messages, ticks,
//! reports of background work) and carry out what it hands back; only the I/O behind differs.
//!
//! It is made of parts that own their state:
//! - [`requests`]: client writes and reads, the session and its sequence numbers, routing to the
//!   leader, timeouts, back-pressure;
//! - [`sync`]: deferred syncs and the acknowledgements held for them;
//! - [`snapshot`]: taking, sending, receiving and installing snapshots;
//! - [`admin`]: membership changes and leadership transfers asked of the node, and the membership
//!   the state machine has applied (snapshots record it);
//!
//! and this file, which owns the core, the log store and the state machine and runs each batch.
//!
//! Invariants:
//! - Nothing leaves the node before the state it depends on is durable: a vote waits for the hard
//!   state, an acknowledgement of log entries ([`raft::Ready::log_acks`]) for the fsync that covers
//!   them (inline, or its sync job); an answer waits for its entry to be committed (durable on a
//!   majority) and applied, not for this node's fsync of later entries.
//! - No acknowledgement leaves for entries the log no longer holds: when a conflict truncates the
//!   log or a snapshot install discards it, acknowledgements already handed out by the core but not
//!   yet sent (a sync report earlier in the same batch released them, or they wait for one) are
//!   dropped (the core drops those it still holds itself).
//! - Every request gets exactly one answer.
//! - Inputs take effect in the order they are given, snapshot chunks included.
//! - One run of the batch ([`Driver::process_with`]) executes at most [`MAX_READY_ROUNDS`] Readys:
//!   the core settles within a few; more means it would spin, and the node stops with
//!   [`FatalError::Stuck`] instead of holding its port while serving nothing.

use std::path::Path;

use bytes::Bytes;
use raft::{Entry, Index, Membership, Message, Node, NodeId, Role, Term};
use storage::{FileSystem, LogOptions, LogStore, StorageError};

use crate::kv::{Command, KvError, KvStore, Query, Reply};
use crate::snapshots::{ChunkStatus, SnapshotConfig};

mod admin;
mod clock;
mod read_table;
mod requests;
mod snapshot;
mod sync;

pub use admin::{member_name, MemberChange};
pub use clock::SWEEP_BATCH;
pub use requests::DEFAULT_WRITE_WINDOW;
pub use sync::SyncJob;

use admin::Admin;
use clock::Clock;
use requests::{Requests, Timing};
use snapshot::SnapshotWork;
use sync::SyncTickets;

/// Most Readys one batch may execute before the driver declares the core stuck.
pub const MAX_READY_ROUNDS: usize = 64;

/// A caller's id for a request, echoed in its answer.
pub type RequestId = u64;

/// What may leave a node before its own fsync of the current batch (see [`Driver::process_with`]).
#[derive(Debug, Default)]
pub struct Early {
    /// Messages to send.
    pub messages: Vec<PeerMessage>,
    /// Answers to deliver.
    pub answers: Vec<(RequestId, Response)>,
}

/// Messages between drivers: Raft's own, and writes forwarded to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// A Raft message.
    Raft(Message),
    /// Encoded [`Proposal`]s for the leader to propose.
    Forward {
        /// The forwarding node.
        from: NodeId,
        /// The destination (the leader as the sender knows it).
        to: NodeId,
        /// Encoded proposals.
        proposals: Vec<Bytes>,
    },
    /// A piece of the leader's snapshot file (InstallSnapshot, §7; see [`crate::snapshots`]).
    SnapshotChunk {
        /// The leader.
        from: NodeId,
        /// The follower.
        to: NodeId,
        /// The leader's current term.
        term: Term,
        /// The snapshot's last included index.
        index: Index,
        /// The snapshot's last included term.
        snap_term: Term,
        /// Offset of `data` in the snapshot file.
        offset: u64,
        /// Length of the whole snapshot file.
        len: u64,
        /// The bytes.
        data: Bytes,
    },
    /// A follower's answer to a chunk.
    SnapshotAck {
        /// The follower.
        from: NodeId,
        /// The leader.
        to: NodeId,
        /// The snapshot's last included index.
        index: Index,
        /// The snapshot's last included term.
        snap_term: Term,
        /// Bytes of the snapshot the follower holds (the next offset it expects).
        received: u64,
        /// What the follower did.
        status: ChunkStatus,
    },
}

impl PeerMessage {
    /// The destination node.
    pub fn to(&self) -> NodeId {
        match self {
            PeerMessage::Raft(m) => m.to,
            PeerMessage::Forward { to, .. }
            | PeerMessage::SnapshotChunk { to, .. }
            | PeerMessage::SnapshotAck { to, .. } => *to,
        }
    }

    /// The sending node.
    pub fn from(&self) -> NodeId {
        match self {
            PeerMessage::Raft(m) => m.from,
            PeerMessage::Forward { from, .. }
            | PeerMessage::SnapshotChunk { from, .. }
            | PeerMessage::SnapshotAck { from, .. } => *from,
        }
    }
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A replicated write.
    Write(Command),
    /// A linearizable read.
    Read(Query),
    /// Take a snapshot now (an admin command): answered with the index of a durable snapshot that
    /// covers everything applied when the request arrived.
    Snapshot,
    /// Change the membership (leader only): answered with the changed node's id once this node
    /// applied the change (see [`admin`]).
    Member(MemberChange),
    /// Hand leadership to a voter (leader only): answered once it leads (see [`admin`]).
    TransferLeader(NodeId),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No leader could take the request; it was not executed.
    #[error("no leader is available; the request was not executed")]
    NoLeader,
    /// The node had too many writes in flight for the whole wait; the request was not executed.
    #[error("too many writes in flight on this node; the request was not executed")]
    Overloaded,
    /// The request was not answered in time; a write may or may not have been executed.
    #[error("timed out; a write may or may not have been executed")]
    Timeout,
    /// Only the leader does this (membership changes, leadership transfer); `leader` is the one
    /// this node knows of. Nothing was done.
    #[error("not the leader; nothing was done")]
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
}

/// The answer to a request.
pub type Response = Result<Reply, RequestError>;

/// A failure that stops the node: its durability or its state machine can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A committed entry could not be applied.
    #[error("applying entry {index}: {source}")]
    Apply {
        /// The entry's index.
        index: Index,
        /// What went wrong.
        source: KvError,
    },
    /// The durable state is unusable.
    #[error("bad durable state: {0}")]
    Recovery(String),
    /// The core kept producing work without settling (a bug): stopping beats spinning.
    #[error("the consensus core did not settle: {0}")]
    Stuck(String),
    /// A committed configuration entry does not decode (a damaged log or another version's).
    #[error("applying configuration entry {index}: {reason}")]
    Membership {
        /// The entry's index.
        index: Index,
        /// What went wrong.
        reason: String,
    },
}

/// Driver settings (times in ticks).
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The Raft configuration.
    pub raft: raft::Config,
    /// The session id of this incarnation (random and unique per process start; never 0).
    pub session: u64,
    /// A request unanswered after this many ticks fails.
    pub request_timeout_ticks: u64,
    /// A forwarded write unanswered after this many ticks is forwarded again.
    pub forward_retry_ticks: u64,
    /// How long the sequence number of a timed-out write is remembered (see [`requests`]).
    pub limbo_ticks: u64,
    /// Most writes of this node in flight at once (the rest wait; see [`requests`]). At most a
    /// quarter of [`crate::kv::MAX_REPLIES_PER_SESSION`].
    pub write_window: usize,
    /// Storage options.
    pub log: LogOptions,
    /// Snapshot settings.
    pub snapshot: SnapshotConfig,
    /// Hand the fdatasync of appended entries to the host as [`SyncJob`]s instead of running it
    /// inline (see [`sync`]).
    pub deferred_sync: bool,
    /// Record every applied proposal's (index, session, seq, executed) for
    /// [`Driver::take_apply_records`] (the simulator checks exactly-once execution with it).
    pub record_applies: bool,
}

impl DriverConfig {
    /// Checks the settings that can be wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.snapshot.validate()?;
        if self.write_window == 0 || self.write_window > crate::kv::MAX_REPLIES_PER_SESSION / 4 {
            return Err(format!(
                "the write window must be between 1 and {} (got {})",
                crate::kv::MAX_REPLIES_PER_SESSION / 4,
                self.write_window
            ));
        }
        Ok(())
    }
}

/// One applied proposal, as recorded with [`DriverConfig::record_applies`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyRecord {
    /// The entry's index.
    pub index: Index,
    /// The proposal's session.
    pub session: u64,
    /// Its sequence number.
    pub seq: u64,
    /// True if the command ran (it was not a duplicate or refused).
    pub executed: bool,
}

/// One replica. See the module docs.
pub struct Driver<F: FileSystem> {
    /// Settings.
    config: DriverConfig,
    /// The consensus core.
    node: Node,
    /// The durable log.
    store: LogStore<F>,
    /// The state machine.
    kv: KvStore,
    /// Logical time (ticks since start).
    now: u64,
    /// The host's wall clock, stamps and sweeps (see [`clock`]).
    clock: Clock,
    /// Client requests.
    requests: Requests,
    /// Deferred syncs.
    syncs: SyncTickets<F>,
    /// Snapshot work.
    snap: SnapshotWork<F>,
    /// Admin requests and the applied membership.
    admin: Admin,
    /// Messages to send.
    outbox: Vec<PeerMessage>,
    /// Answers to deliver.
    answers: Vec<(RequestId, Response)>,
    /// Applied proposals (with [`DriverConfig::record_applies`]).
    apply_records: Vec<ApplyRecord>,
    /// The host's clock, if it measures how long applying takes ([`Driver::measure_apply_time`]).
    apply_clock: Option<fn() -> std::time::Instant>,
    /// Entries applied and the time it took, per run of committed entries, since the last
    /// [`Driver::take_apply_timings`].
    apply_timings: Vec<(usize, std::time::Duration)>,
}

impl<F: FileSystem> Driver<F> {
    /// Opens the replica's storage in `dir` and recovers its state: the snapshot (if any), then the
    /// log entries after it (see [`crate::snapshots`] for how a log that does not continue the
    /// snapshot is reconciled). The bootstrap membership is `config.raft.voters` (see
    /// [`Driver::open_with`]).
    pub fn open(fs: F, dir: &Path, config: DriverConfig) -> Result<Self, FatalError> {
        let bootstrap = Membership::from_voters(&config.raft.voters);
        Self::open_with(fs, dir, config, bootstrap)
    }

    /// Like [`Driver::open`], with `bootstrap` the membership as of log index 0 (the members a
    /// cluster was bootstrapped with, with their records; empty for a node that joined a running
    /// cluster). A snapshot's membership, when there is one, takes its place; a version 1
    /// snapshot's voters get their records from `bootstrap`.
    pub fn open_with(
        fs: F,
        dir: &Path,
        config: DriverConfig,
        bootstrap: Membership,
    ) -> Result<Self, FatalError> {
        config.validate().map_err(FatalError::Recovery)?;
        let recovered = snapshot::recover(&fs, dir, &config, &bootstrap)?;
        let snapshot::RecoveredState { store, kv, snapshot, hard_state, offset, entries, membership } =
            recovered;
        let applied = snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let node = Node::with_membership(
            config.raft.clone(),
            membership.clone(),
            hard_state,
            offset.0,
            offset.1,
            entries,
            applied,
        )
        .map_err(FatalError::Recovery)?;
        let timing = Timing {
            request_timeout: config.request_timeout_ticks,
            forward_retry: config.forward_retry_ticks,
            limbo: config.limbo_ticks,
            leaderless: u64::from(config.raft.election_ticks),
        };
        Ok(Driver {
            node,
            store,
            kv,
            now: 0,
            clock: Clock::default(),
            requests: Requests::new(config.session, timing, config.write_window),
            syncs: SyncTickets::new(),
            snap: SnapshotWork::new(fs, dir.to_path_buf(), snapshot, config.session),
            admin: Admin::new(membership, applied),
            outbox: Vec::new(),
            answers: Vec::new(),
            apply_records: Vec::new(),
            apply_clock: None,
            apply_timings: Vec::new(),
            config,
        })
    }

    /// The consensus core (read-only: for status and checks).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The state machine (read-only).
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The durable log (read-only).
    pub fn store(&self) -> &LogStore<F> {
        &self.store
    }

    /// True if the driver hands its fsyncs out as [`SyncJob`]s ([`DriverConfig::deferred_sync`]).
    pub fn deferred_sync(&self) -> bool {
        self.config.deferred_sync
    }

    /// Logical time: ticks since the driver started.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of requests not yet answered.
    pub fn pending(&self) -> usize {
        self.requests.pending() + self.snap.waiters() + self.admin.pending()
    }

    /// The membership as of the state machine's applied index, and the index it comes from (the
    /// configuration entry's, or the snapshot's / 0 for the bootstrap one). The core's
    /// [`Node::membership`] is the latest in the log, committed or not.
    pub fn applied_membership(&self) -> (&Membership, Index) {
        (&self.admin.applied, self.admin.applied_index)
    }

    /// Writes in flight (proposed or forwarded) and writes waiting for room in the window.
    pub fn writes_in_flight(&self) -> (usize, usize) {
        self.requests.writes_in_flight()
    }

    /// The current session id (it changes only if the state machine evicted the previous one).
    pub fn session(&self) -> u64 {
        self.requests.session()
    }

    /// Takes the applied proposals recorded since the last call (with
    /// [`DriverConfig::record_applies`]).
    pub fn take_apply_records(&mut self) -> Vec<ApplyRecord> {
        std::mem::take(&mut self.apply_records)
    }

    /// Measures, with the host's `clock`, how long applying each run of committed entries takes
    /// (the server does for its metrics). The driver never reads a clock otherwise: without this
    /// (the simulator), nothing is timed.
    pub fn measure_apply_time(&mut self, clock: fn() -> std::time::Instant) {
        self.apply_clock = Some(clock);
    }

    /// Takes the (entries, duration) of every run of committed entries applied since the last call
    /// (with [`Driver::measure_apply_time`]).
    pub fn take_apply_timings(&mut self) -> Vec<(usize, std::time::Duration)> {
        std::mem::take(&mut self.apply_timings)
    }

    /// Writes routed to a leader again (after a leader change, or unanswered for the forward
    /// retry delay) since this driver started.
    pub fn writes_retried(&self) -> u64 {
        self.requests.retried()
    }

    /// Submits a client request; its answer comes out of the host loop.
    pub(crate) fn submit(&mut self, request: RequestId, req: Request) {
        match req {
            Request::Write(command) => {
                if let Err(e) = command.validate() {
                    self.answers.push((request, Ok(Reply::Error(e))));
                    return;
                }
                self.requests.submit_write(request, command, self.now);
            }
            Request::Read(query) => self.requests.submit_read(request, query, self.now, &mut self.node),
            Request::Snapshot => self.request_snapshot(request),
            Request::Member(change) => {
                self.admin.submit_change(request, change, &mut self.node, self.now, &mut self.answers)
            }
            Request::TransferLeader(target) => {
                self.admin.submit_transfer(request, target, &mut self.node, self.now, &mut self.answers)
            }
        }
    }

    /// Handles a message from a peer. An error stops the node (installing a received snapshot
    /// failed in storage).
    pub(crate) fn receive(&mut self, msg: PeerMessage) -> Result<(), FatalError> {
        match msg {
            PeerMessage::Raft(m) => self.node.step(m),
            m @ (PeerMessage::SnapshotChunk { .. } | PeerMessage::SnapshotAck { .. }) => {
                self.handle_snapshot_message(m)?
            }
            PeerMessage::Forward { proposals, .. } => {
                if self.node.role() == Role::Leader {
                    let mut entries = self.clock.stamped_batch(&self.kv, proposals.iter().map(|p| &p[..]));
                    for data in &proposals {
                        let Some(entry) = entries.next(data.len()) else { break };
                        // Cannot fail on the leader; a refusal would only mean the origin retries.
                        let _ = self.node.propose(entry);
                    }
                }
                // Not the leader (any more): drop; the origin retries with the same (session, seq).
            }
        }
        Ok(())
    }

    /// Records the host's wall clock (ms since the Unix epoch) for the stamps of the entries this
    /// node appends as leader (see [`clock`]); nothing else reads it.
    pub(crate) fn set_clock(&mut self, ms: u64) {
        self.clock.set_wall(ms);
    }

    /// `n` ticks of logical time passed (see [`crate::Input::Ticks`]).
    pub(crate) fn tick(&mut self, n: u64) {
        self.now += n.max(1);
        self.node.tick_by(n);
        self.requests.tick(self.now, &mut self.node, &mut self.answers);
        self.admin.tick(self.now, self.config.request_timeout_ticks, &mut self.answers);
        self.tick_snapshots();
    }

    /// Executes all work the core has produced, in the required order, handing what may leave
    /// before this node's own fsync to `early` as soon as it exists (with the driver, so the host can
    /// publish its state first):
    /// - a leader's appends and heartbeats, and forwarded proposals: they depend only on the
    ///   in-memory log, so the leader's disk write overlaps its followers' (thesis §10.2.1);
    /// - the answers to writes whose entries are committed and to reads whose index is applied.
    ///   Committed means durable on a majority, whatever this node's own disk holds, so applying
    ///   and answering need not wait for the fsync of the *new* entries of the same batch; waiting
    ///   would add one fsync to every answer under load (the next batch's sync would sit between
    ///   the acknowledgement that commits an entry and its answer).
    ///
    /// What depends on this node's disk stays in the outbox and the answers for
    /// [`Driver::take_messages`] / [`Driver::take_answers`]. An error means the node must stop: its
    /// storage or state machine can no longer be trusted (early output already handed over stays
    /// valid: it never depended on this node's disk).
    pub(crate) fn process_with(&mut self, early: &mut dyn FnMut(&Self, Early)) -> Result<(), FatalError> {
        let mut rounds = 0;
        loop {
            // Idle: nothing of this node's clients waits and nothing in the log waits to commit
            // (followers' forwarded writes are entries here by now).
            let idle_batch_start =
                rounds == 0 && self.requests.pending() == 0 && self.node.commit() == self.node.last_index();
            self.clock.maybe_sweep(
                &mut self.node,
                &self.kv,
                self.now,
                self.config.request_timeout_ticks,
                idle_batch_start,
            );
            let (clock, kv) = (&mut self.clock, &self.kv);
            self.requests.route(&mut self.node, self.now, &mut self.outbox, &mut || clock.stamp(kv));
            if !self.node.has_ready() {
                break;
            }
            rounds += 1;
            if rounds > MAX_READY_ROUNDS {
                return Err(FatalError::Stuck(format!(
                    "{MAX_READY_ROUNDS} Readys in one batch; commit {} last index {} applied {}",
                    self.node.commit(),
                    self.node.last_index(),
                    self.node.applied()
                )));
            }
            let rd = self.node.ready();
            // 0. Leader appends and heartbeats, and forwarded proposals.
            let mut out = Early {
                messages: rd.early_messages.into_iter().map(PeerMessage::Raft).collect(),
                answers: Vec::new(),
            };
            out.messages.extend(self.outbox.extract_if(.., |m| matches!(m, PeerMessage::Forward { .. })));
            // 1. Apply what is committed and serve the reads it allows (see above for why this may
            //    precede the persist step).
            let started = self.apply_clock.filter(|_| !rd.committed.is_empty()).map(|clock| (clock, clock()));
            for entry in &rd.committed {
                self.apply(entry)?;
            }
            if let Some((clock, started)) = started {
                self.apply_timings.push((rd.committed.len(), clock() - started));
            }
            for rs in rd.reads {
                self.requests.read_state(rs);
            }
            self.requests.serve_reads(&self.kv, &mut self.answers);
            out.answers = std::mem::take(&mut self.answers);
            if !out.messages.is_empty() || !out.answers.is_empty() {
                early(self, out);
            }
            // 2. Persist, with one sync for the whole batch.
            if let Some(hs) = rd.hard_state {
                self.store.set_hard_state(hs)?;
            }
            if let Some(from) = rd.truncate_from {
                // Acknowledgements already handed out (released by a sync report earlier in this
                // batch, or held for one) must not claim the entries a conflict replaced.
                self.drop_acks_beyond(from - 1);
                self.store.truncate_suffix(from)?;
                if self.syncs.pending() {
                    // Make what the jobs in flight cover durable here (a no-op when the truncation
                    // synced it already): they are abandoned.
                    self.store.sync()?;
                    self.node.on_persisted(self.store.last_index());
                    self.syncs.abandon();
                }
            }
            if !rd.entries.is_empty() {
                self.store.append(&rd.entries)?;
            }
            if self.config.deferred_sync {
                if let Some(sync) = self.store.start_sync()? {
                    self.syncs.issue(sync, self.store.last_index());
                } else if let Some(last) = rd.entries.last() {
                    self.node.on_persisted(last.index); // Syncing is off.
                }
            } else {
                if rd.truncate_from.is_some() || !rd.entries.is_empty() {
                    self.store.sync()?;
                }
                if let Some(last) = rd.entries.last() {
                    self.node.on_persisted(last.index);
                }
            }
            // 3. Send what depends on the persisted state: the core's `messages` need at most the
            //    hard state (written inline above); its `log_acks` wait for the sync that covers
            //    their entries, in order, when syncs are in flight.
            self.outbox.extend(rd.messages.into_iter().map(PeerMessage::Raft));
            let acks = rd.log_acks.into_iter().map(PeerMessage::Raft);
            if self.syncs.pending() {
                self.syncs.hold(acks.collect());
            } else {
                self.outbox.extend(acks);
            }
            // 4. Snapshots for followers that need them.
            for peer in rd.snapshots {
                self.start_transfer(peer);
            }
            self.admin.check_transfers(&self.node, &mut self.answers);
        }
        self.admin.check_transfers(&self.node, &mut self.answers);
        self.pump_transfers();
        self.maybe_start_snapshot();
        Ok(())
    }

    /// The newest deferred sync to run (it covers every older one not yet taken). Only with
    /// [`DriverConfig::deferred_sync`].
    pub(crate) fn take_sync_job(&mut self) -> Option<SyncJob<F>> {
        self.syncs.take_job()
    }

    /// Reports a [`SyncJob`] run by the host. An error stops the node, as a failed inline sync
    /// does (the log's durability is unknown). The leader may commit, and held acknowledgements are
    /// released into the outbox (the host processes the batch afterwards).
    pub(crate) fn sync_finished(
        &mut self,
        ticket: u64,
        result: Result<(), StorageError>,
    ) -> Result<(), FatalError> {
        result?;
        let (persisted, released) = self.syncs.finished(ticket);
        if let Some(index) = persisted {
            self.node.on_persisted(index);
        }
        self.outbox.extend(released);
        Ok(())
    }

    /// Takes the messages to send.
    pub(crate) fn take_messages(&mut self) -> Vec<PeerMessage> {
        std::mem::take(&mut self.outbox)
    }

    /// Takes the answers to deliver.
    pub(crate) fn take_answers(&mut self) -> Vec<(RequestId, Response)> {
        std::mem::take(&mut self.answers)
    }

    /// Drops the successful acknowledgements of log entries beyond `last` that the core already
    /// handed out and that have not left yet (in the outbox, or held for a sync): the log no longer
    /// holds those entries (a conflict replaced them, or a snapshot install discarded them).
    /// Dropping a message is always safe; sending one would let a leader count entries this node
    /// lacks.
    fn drop_acks_beyond(&mut self, last: Index) {
        let stale = |m: &PeerMessage| {
            matches!(m, PeerMessage::Raft(r) if matches!(r.body,
                raft::MessageBody::AppendEntriesResponse { success: true, index, .. } if index > last))
        };
        self.outbox.retain(|m| !stale(m));
        self.syncs.drop_held(stale);
    }

    fn apply(&mut self, entry: &Entry) -> Result<(), FatalError> {
        let (index, data) = (entry.index, &entry.data[..]);
        if entry.is_config() {
            // The state machine only moves past it; the membership is the admin part's.
            let m = Membership::decode(data)
                .map_err(|e| FatalError::Membership { index, reason: e.to_string() })?;
            self.kv.advance_to(index).map_err(|source| FatalError::Apply { index, source })?;
            self.snap.applied(data.len());
            self.admin.applied_config(entry, m, &mut self.answers);
            return Ok(());
        }
        let applied = self.kv.apply(index, data).map_err(|source| FatalError::Apply { index, source })?;
        self.snap.applied(data.len());
        let Some(a) = applied else { return Ok(()) };
        if self.config.record_applies {
            self.apply_records.push(ApplyRecord {
                index,
                session: a.session,
                seq: a.seq,
                executed: !a.duplicate,
            });
        }
        self.requests.applied(a, self.now, &mut self.answers);
        Ok(())
    }
}
