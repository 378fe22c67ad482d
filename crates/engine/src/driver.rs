//! The driver: one replica = a Raft [`Node`] + its durable [`LogStore`] + the [`KvStore`] state
//! machine, executed in the order the core demands (see [`raft::ready`]): send what may leave
//! early -> apply what is committed and answer -> persist (one sync per batch) -> send the rest.
//!
//! The driver is synchronous and deterministic: no threads, no clock, no sockets. The server runs it
//! on a thread of its own and feeds it requests, peer messages and ticks; the simulator runs several
//! of them over a virtual network and an in-memory disk. Either way the same code executes.
//!
//! Requests:
//! - A write is wrapped in a [`Proposal`] with this incarnation's session id and a fresh sequence
//!   number, then proposed (on the leader) or forwarded to the leader (on a follower). It is answered
//!   when *this* node applies an entry carrying its (session, seq): every node applies every entry, so
//!   no answer message is needed. A write whose fate is unclear (leader change, lost forward) is simply
//!   routed again with the same (session, seq); the state machine's sessions make the retry apply at
//!   most once (thesis §6.3).
//! - A read asks the core for a read index (ReadIndex, thesis §6.4; followers ask the leader) and is
//!   served from the local state machine once it has applied that index.
//! - A request not answered within `request_timeout_ticks` fails: with [`RequestError::NoLeader`] if a
//!   write was never handed to any leader (it certainly did not happen), with
//!   [`RequestError::Timeout`] otherwise (a write may or may not have happened).
//!
//! Sessions and `ack_below` (what the state machine may forget):
//! - Until the state machine has applied one proposal of this session, `ack_below` stays at
//!   [`kv::FIRST_SEQ`], so the session is created by whichever proposal arrives first.
//! - Afterwards `ack_below` is the lowest sequence number that is still unanswered or *in limbo*:
//!   a write that timed out after being routed may still be in some leader's log, so its number is
//!   kept (for `limbo_ticks`) until it is seen applied; a retry of it is then recognised as a duplicate.
//! - If the state machine ever refuses a proposal because the session was evicted
//!   ([`kv::SESSION_EXPIRED_ERR`], possible only after thousands of other sessions), the driver starts
//!   a new session and re-proposes its unanswered writes under it.
//!
//! Deferred syncs ([`DriverConfig::deferred_sync`]): the fdatasync of a batch's entries need not
//! block the thread that runs the driver. The entries are written to the OS, and the sync is handed
//! out as a [`SyncJob`] ([`Driver::take_sync_job`]) with a ticket; the caller runs it wherever it
//! likes and reports it with [`Driver::sync_finished`]. Meanwhile the driver goes on: it receives
//! acknowledgements, commits, applies and answers, appends and sends more entries. Until the ticket
//! is reported:
//! - the core is not told the entries are persisted (a leader does not count itself for them);
//! - the batch's acknowledgements (AppendEntriesResponse), and those of every later batch, are
//!   held, and leave in order once their ticket is reported. The other late messages (votes,
//!   heartbeat responses) depend at most on the hard state, which is always written inline, and
//!   leave at once.
//!
//! A job covers everything written before it was started, so running only the newest one covers
//! the older ones too (entries in earlier segments were synced when the segment was sealed). A
//! truncation or a log reset syncs inline and makes every job in flight stale: its report is then
//! ignored, and the messages held for it are dropped (they may acknowledge entries that are gone;
//! dropping a message is always safe in Raft).
//!
//! Invariants:
//! - Nothing leaves the node before the state it depends on is durable: a vote or an
//!   acknowledgement waits for this node's fsync (inline, or its sync job); an answer waits for its
//!   entry to be committed (durable on a majority) and applied, not for this node's fsync of later
//!   entries.
//! - Every request gets exactly one answer.
//! - `ack_below` sent in proposals never exceeds the lowest unanswered or in-limbo sequence number.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{Index, Message, MessageBody, Node, NodeId, ReadError, ReadState, Role, Term};
use storage::{FileSystem, LogOptions, LogStore, LogSync, SnapshotMeta, StorageError};

use crate::kv::{self, Command, KvError, KvStore, Proposal, Query, Reply};
use crate::snapshots::{ChunkStatus, Incoming, SnapshotConfig, SnapshotJob, SnapshotStats, Transfer};

mod snapshot;

/// Most proposal bytes in one Forward message (a single larger proposal travels alone).
const MAX_FORWARD_BYTES: usize = 4 << 20;

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

/// A deferred fdatasync of the log (see the module docs): run it anywhere, then report it with
/// [`Driver::sync_finished`].
pub struct SyncJob<F: FileSystem> {
    /// Identifies the job in the report.
    ticket: u64,
    /// The sync.
    sync: LogSync<F>,
}

impl<F: FileSystem> SyncJob<F> {
    /// The ticket to report.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Runs the fdatasync.
    pub fn run(&self) -> Result<(), StorageError> {
        self.sync.run()
    }
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
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No leader could take the request; it was not executed.
    #[error("no leader is available; the request was not executed")]
    NoLeader,
    /// The request was not answered in time; a write may or may not have been executed.
    #[error("timed out; a write may or may not have been executed")]
    Timeout,
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
    /// How long the sequence number of a timed-out write is remembered (see the module docs).
    pub limbo_ticks: u64,
    /// Storage options.
    pub log: LogOptions,
    /// Snapshot settings.
    pub snapshot: SnapshotConfig,
    /// Hand the fdatasync of appended entries to the caller as [`SyncJob`]s instead of running it
    /// inline (see the module docs).
    pub deferred_sync: bool,
}

/// A write waiting for its entry to be applied.
#[derive(Debug)]
struct PendingWrite {
    /// The caller's request id.
    request: RequestId,
    /// The encoded proposal (re-sent as is on retry).
    data: Bytes,
    /// Tick at which it was submitted.
    submitted: u64,
    /// Tick at which it was last proposed or forwarded (None: never handed to a leader).
    routed: Option<u64>,
}

/// A read waiting for its read index or for the state machine to catch up with it.
#[derive(Debug)]
struct PendingRead {
    /// The caller's request id.
    request: RequestId,
    /// The query.
    query: Query,
    /// Tick at which it was submitted.
    submitted: u64,
    /// Set once the read index is known.
    index: Option<Index>,
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
    /// The current session id.
    session: u64,
    /// True once the state machine has applied a proposal of `session` (it knows the session).
    session_known: bool,
    /// Next proposal sequence number of this session.
    next_seq: u64,
    /// Sequence numbers of timed-out writes that may still apply -> tick when they are forgotten.
    limbo: BTreeMap<u64, u64>,
    /// Unanswered writes by sequence number.
    writes: BTreeMap<u64, PendingWrite>,
    /// Unanswered reads by read id.
    reads: BTreeMap<u64, PendingRead>,
    /// Reads whose index is known but not yet applied: (index, read id).
    reads_by_index: BTreeSet<(Index, u64)>,
    /// Reads to ask the core again for (their previous attempt failed).
    reads_to_retry: Vec<u64>,
    /// Next read id.
    next_read: u64,
    /// Writes to route at the end of this round (sequence numbers).
    to_route: BTreeSet<u64>,
    /// The leader as of the last round (to notice changes).
    last_leader: Option<NodeId>,
    /// Messages to send.
    outbox: Vec<PeerMessage>,
    /// Answers to deliver.
    answers: Vec<(RequestId, Response)>,
    /// The file system (the store has its own handle).
    fs: F,
    /// The data directory.
    dir: PathBuf,
    /// The durable snapshot (what it covers, its file length), if any.
    snapshot: Option<(SnapshotMeta, u64)>,
    /// Entries and payload bytes applied since the snapshot (to decide when to take the next one).
    since_snapshot: (u64, u64),
    /// A snapshot job waiting to be taken by [`Driver::take_snapshot_job`].
    job: Option<SnapshotJob<F>>,
    /// True from creating a job until [`Driver::snapshot_finished`].
    job_running: bool,
    /// Admin snapshot requests: (request, index the snapshot must reach).
    snapshot_waiters: Vec<(RequestId, Index)>,
    /// Leader: snapshots being sent, by follower.
    transfers: BTreeMap<NodeId, Transfer>,
    /// Follower: the snapshot being received.
    incoming: Option<Incoming<F>>,
    /// Chunks and acknowledgements received, handled in the next [`Driver::process`].
    snapshot_inbox: Vec<PeerMessage>,
    /// Counters.
    snapshot_stats: SnapshotStats,
    /// Log entries dropped by the last compaction, for the caller to free off its hot path (see
    /// [`Driver::take_compacted_entries`]); freed here at the next compaction otherwise.
    compacted: std::collections::VecDeque<raft::Entry>,
    /// After a failed snapshot job, no new one starts before this tick.
    snapshot_retry_at: u64,
    /// Files no longer needed (the previous snapshot, log segments the snapshot covers), for the
    /// caller to delete off its hot path (see [`Driver::take_files_to_delete`]).
    to_delete: Vec<PathBuf>,
    /// Deferred syncs: the last ticket issued, and the last one reported (or made stale).
    sync_issued: u64,
    /// See `sync_issued`.
    sync_done: u64,
    /// The newest job not yet taken by the caller (it covers the older ones).
    sync_job: Option<SyncJob<F>>,
    /// Tickets in flight and the last log index each covers.
    syncs_in_flight: VecDeque<(u64, Index)>,
    /// Late messages waiting for a ticket, in order.
    held: VecDeque<(u64, Vec<PeerMessage>)>,
}

impl<F: FileSystem> Driver<F> {
    /// Opens the replica's storage in `dir` and recovers its state: the snapshot (if any), then the
    /// log entries after it (see [`crate::snapshots`] for how a log that does not continue the
    /// snapshot is reconciled).
    pub fn open(fs: F, dir: &Path, config: DriverConfig) -> Result<Self, FatalError> {
        config.snapshot.validate().map_err(FatalError::Recovery)?;
        let recovered = snapshot::recover(&fs, dir, &config)?;
        let snapshot::RecoveredState { store, kv, snapshot, hard_state, offset, entries } = recovered;
        let applied = snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let node = Node::new(config.raft.clone(), hard_state, offset.0, offset.1, entries, applied)
            .map_err(FatalError::Recovery)?;
        Ok(Driver {
            node,
            store,
            kv,
            now: 0,
            session: config.session,
            session_known: false,
            next_seq: kv::FIRST_SEQ,
            limbo: BTreeMap::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_by_index: BTreeSet::new(),
            reads_to_retry: Vec::new(),
            // Read ids travel to the leader (forwarded ReadIndex) and back: start this incarnation's
            // ids at a random point of the id space so a delayed answer meant for an earlier
            // incarnation never matches a read of this one (found by the simulator: a stale read).
            next_read: (config.session << 32) | 1,
            to_route: BTreeSet::new(),
            last_leader: None,
            outbox: Vec::new(),
            answers: Vec::new(),
            fs,
            dir: dir.to_path_buf(),
            snapshot,
            since_snapshot: (0, 0),
            job: None,
            job_running: false,
            snapshot_waiters: Vec::new(),
            transfers: BTreeMap::new(),
            incoming: None,
            snapshot_inbox: Vec::new(),
            snapshot_stats: SnapshotStats::default(),
            compacted: std::collections::VecDeque::new(),
            snapshot_retry_at: 0,
            to_delete: Vec::new(),
            sync_issued: 0,
            sync_done: 0,
            sync_job: None,
            syncs_in_flight: VecDeque::new(),
            held: VecDeque::new(),
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

    /// Number of requests not yet answered.
    pub fn pending(&self) -> usize {
        self.writes.len() + self.reads.len() + self.snapshot_waiters.len()
    }

    /// The durable snapshot: what it covers and its file length.
    pub fn snapshot(&self) -> Option<&(SnapshotMeta, u64)> {
        self.snapshot.as_ref()
    }

    /// Counters of snapshot work since this driver started.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.snapshot_stats
    }

    /// The log entries the last compaction dropped: free them on another thread (a large batch
    /// takes milliseconds to free). Optional: left here, they are freed at the next compaction.
    pub fn take_compacted_entries(&mut self) -> std::collections::VecDeque<raft::Entry> {
        std::mem::take(&mut self.compacted)
    }

    /// Files a snapshot made obsolete (the previous snapshot file, log segments it covers): delete
    /// them on another thread — freeing a 64 MiB segment or a 100 MB snapshot takes tens of
    /// milliseconds. In any order, without syncing. Optional: what is left here is deleted at the
    /// next snapshot, and what survives a crash is removed at startup.
    pub fn take_files_to_delete(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.to_delete)
    }

    /// True while a snapshot is being written.
    pub fn snapshot_in_progress(&self) -> bool {
        self.job_running
    }

    /// Followers a snapshot is being sent to (leader), and whether one is being received.
    pub fn snapshot_transfers(&self) -> (usize, bool) {
        (self.transfers.len(), self.incoming.is_some())
    }

    /// Submits a client request; its answer comes out of [`Driver::take_answers`].
    pub fn submit(&mut self, request: RequestId, req: Request) {
        match req {
            Request::Write(command) => {
                if let Err(e) = command.validate() {
                    self.answers.push((request, Ok(Reply::Error(e))));
                    return;
                }
                let submitted = self.now;
                self.enqueue_write(request, command, submitted);
            }
            Request::Read(query) => {
                let id = self.next_read;
                self.next_read = self.next_read.wrapping_add(1);
                self.reads.insert(id, PendingRead { request, query, submitted: self.now, index: None });
                self.node.read(id);
            }
            Request::Snapshot => self.request_snapshot(request),
        }
    }

    /// Wraps `command` in a proposal of the current session and queues it for routing.
    fn enqueue_write(&mut self, request: RequestId, command: Command, submitted: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let ack_below = if self.session_known {
            let pending = self.writes.keys().next().copied().unwrap_or(seq);
            let limbo = self.limbo.keys().next().copied().unwrap_or(seq);
            pending.min(limbo).min(seq)
        } else {
            kv::FIRST_SEQ
        };
        let data = kv::encode_proposal(&Proposal { session: self.session, seq, ack_below, command });
        self.writes.insert(seq, PendingWrite { request, data, submitted, routed: None });
        self.to_route.insert(seq);
    }

    /// Starts a new session (the old one was evicted by the state machine) and re-proposes every
    /// unanswered write under it.
    fn rotate_session(&mut self) {
        let mut rng = raft::Rng::new(self.session);
        self.session = rng.next_u64().max(1);
        self.session_known = false;
        self.next_seq = kv::FIRST_SEQ;
        self.limbo.clear();
        self.to_route.clear();
        for (_, w) in std::mem::take(&mut self.writes) {
            match kv::decode_proposal(&w.data) {
                Ok(p) => self.enqueue_write(w.request, p.command, w.submitted),
                Err(_) => self.answers.push((w.request, Err(RequestError::NoLeader))),
            }
        }
    }

    /// Handles a message from a peer.
    pub fn receive(&mut self, msg: PeerMessage) {
        match msg {
            PeerMessage::Raft(m) => self.node.step(m),
            m @ (PeerMessage::SnapshotChunk { .. } | PeerMessage::SnapshotAck { .. }) => {
                self.snapshot_inbox.push(m)
            }
            PeerMessage::Forward { proposals, .. } => {
                if self.node.role() == Role::Leader {
                    for data in proposals {
                        // Cannot fail on the leader; a refusal would only mean the origin retries.
                        let _ = self.node.propose(data);
                    }
                }
                // Not the leader (any more): drop; the origin retries with the same (session, seq).
            }
        }
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        self.node.tick();
        let now = self.now;
        let timeout = self.config.request_timeout_ticks;
        // Writes: time out, or route again when a forward went unanswered.
        let mut expired = Vec::new();
        for (&seq, w) in &self.writes {
            if now - w.submitted >= timeout {
                expired.push(seq);
            } else if w.routed.is_none_or(|t| now - t >= self.config.forward_retry_ticks) {
                self.to_route.insert(seq);
            }
        }
        for seq in expired {
            if let Some(w) = self.writes.remove(&seq) {
                self.to_route.remove(&seq);
                let err = if w.routed.is_some() {
                    self.limbo.insert(seq, now + self.config.limbo_ticks);
                    RequestError::Timeout
                } else {
                    RequestError::NoLeader
                };
                self.answers.push((w.request, Err(err)));
            }
        }
        self.limbo.retain(|_, forget_at| *forget_at > now);
        // Reads: time out, or retry those whose round failed.
        let expired: Vec<u64> =
            self.reads.iter().filter(|(_, r)| now - r.submitted >= timeout).map(|(&id, _)| id).collect();
        for id in expired {
            if let Some(r) = self.reads.remove(&id) {
                if let Some(index) = r.index {
                    self.reads_by_index.remove(&(index, id));
                }
                let err = if r.index.is_some() { RequestError::Timeout } else { RequestError::NoLeader };
                self.answers.push((r.request, Err(err)));
            }
        }
        for id in std::mem::take(&mut self.reads_to_retry) {
            if self.reads.contains_key(&id) {
                self.node.read(id);
            }
        }
        self.tick_snapshots();
    }

    /// Executes all work the core has produced, in the required order. An error means the node must
    /// stop: its storage or state machine can no longer be trusted. What may leave before the fsync
    /// is queued with the rest (see [`Driver::process_with`] to let it out earlier).
    pub fn process(&mut self) -> Result<(), FatalError> {
        let mut early = Early::default();
        let result = self.process_with(&mut |_, out| {
            early.messages.extend(out.messages);
            early.answers.extend(out.answers);
        });
        let late = std::mem::replace(&mut self.outbox, early.messages);
        self.outbox.extend(late);
        let late = std::mem::replace(&mut self.answers, early.answers);
        self.answers.extend(late);
        result
    }

    /// Like [`Driver::process`], but hands what may leave before this node's own fsync to `early`
    /// as soon as it exists (with the driver, so the caller can publish its state first):
    /// - a leader's appends and heartbeats, and forwarded proposals: they depend only on the
    ///   in-memory log, so the leader's disk write overlaps its followers' (thesis §10.2.1);
    /// - the answers to writes whose entries are committed and to reads whose index is applied.
    ///   Committed means durable on a majority, whatever this node's own disk holds, so applying
    ///   and answering need not wait for the fsync of the *new* entries of the same batch; waiting
    ///   would add one fsync to every answer under load (the next batch's sync would sit between
    ///   the acknowledgement that commits an entry and its answer).
    pub fn process_with(&mut self, early: &mut dyn FnMut(&Self, Early)) -> Result<(), FatalError> {
        for msg in std::mem::take(&mut self.snapshot_inbox) {
            self.handle_snapshot_message(msg)?;
        }
        loop {
            self.route_writes();
            if !self.node.has_ready() {
                break;
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
            for entry in &rd.committed {
                self.apply(entry.index, &entry.data)?;
            }
            for rs in rd.reads {
                self.read_state(rs);
            }
            self.serve_reads();
            out.answers = std::mem::take(&mut self.answers);
            if !out.messages.is_empty() || !out.answers.is_empty() {
                early(self, out);
            }
            // 2. Persist, with one sync for the whole batch.
            if let Some(hs) = rd.hard_state {
                self.store.set_hard_state(hs)?;
            }
            if let Some(from) = rd.truncate_from {
                self.store.truncate_suffix(from)?;
                if self.sync_done < self.sync_issued {
                    // Make what the jobs in flight cover durable here (a no-op when the truncation
                    // synced it already): they are abandoned.
                    self.store.sync()?;
                    self.node.on_persisted(self.store.last_index());
                    self.abandon_syncs();
                }
            }
            if !rd.entries.is_empty() {
                self.store.append(&rd.entries)?;
            }
            if self.config.deferred_sync {
                if let Some(sync) = self.store.start_sync()? {
                    self.sync_issued += 1;
                    let ticket = self.sync_issued;
                    self.syncs_in_flight.push_back((ticket, self.store.last_index()));
                    self.sync_job = Some(SyncJob { ticket, sync });
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
            // 3. Send what depends on the persisted state (votes, acknowledgements). Only an
            //    AppendEntriesResponse depends on the log's durability; the others depend at most on
            //    the hard state, written inline above. So with sync jobs in flight, the responses wait
            //    for their ticket (in order) and the rest leave now: a slow disk must not hold up
            //    heartbeat responses (a leader with CheckQuorum would step down) or votes.
            if self.sync_done < self.sync_issued {
                let (acks, rest): (Vec<_>, Vec<_>) = rd
                    .messages
                    .into_iter()
                    .partition(|m| matches!(m.body, MessageBody::AppendEntriesResponse { .. }));
                self.outbox.extend(rest.into_iter().map(PeerMessage::Raft));
                if !acks.is_empty() {
                    self.held
                        .push_back((self.sync_issued, acks.into_iter().map(PeerMessage::Raft).collect()));
                }
            } else {
                self.outbox.extend(rd.messages.into_iter().map(PeerMessage::Raft));
            }
            // 4. Snapshots for followers that need them.
            for peer in rd.snapshots {
                self.start_transfer(peer);
            }
        }
        self.pump_transfers()?;
        self.maybe_start_snapshot();
        Ok(())
    }

    /// True if the driver hands its fsyncs out as [`SyncJob`]s ([`DriverConfig::deferred_sync`]).
    pub fn deferred_sync(&self) -> bool {
        self.config.deferred_sync
    }

    /// The newest deferred sync to run (it covers every older one not yet taken): run it, then
    /// report it with [`Driver::sync_finished`]. Only with [`DriverConfig::deferred_sync`].
    pub fn take_sync_job(&mut self) -> Option<SyncJob<F>> {
        self.sync_job.take()
    }

    /// Reports a [`SyncJob`] run by the caller. An error stops the node, as a failed inline sync
    /// does (the log's durability is unknown). Call [`Driver::process`] afterwards: the leader may
    /// commit, and held messages are released into the outbox.
    pub fn sync_finished(&mut self, ticket: u64, result: Result<(), StorageError>) -> Result<(), FatalError> {
        result?;
        if ticket <= self.sync_done || ticket > self.sync_issued {
            return Ok(()); // Stale: a truncation or reset synced and superseded it.
        }
        self.sync_done = ticket;
        let mut persisted = None;
        while self.syncs_in_flight.front().is_some_and(|&(t, _)| t <= ticket) {
            persisted = self.syncs_in_flight.pop_front().map(|(_, index)| index);
        }
        if let Some(index) = persisted {
            self.node.on_persisted(index);
        }
        while self.held.front().is_some_and(|&(t, _)| t <= ticket) {
            if let Some((_, msgs)) = self.held.pop_front() {
                self.outbox.extend(msgs);
            }
        }
        Ok(())
    }

    /// After a truncation or reset, with everything still in the log durable: every sync in flight
    /// is stale, and the messages held for them are dropped (see the module docs).
    fn abandon_syncs(&mut self) {
        self.sync_done = self.sync_issued;
        self.sync_job = None;
        self.syncs_in_flight.clear();
        self.held.clear();
    }

    /// Takes the messages to send.
    pub fn take_messages(&mut self) -> Vec<PeerMessage> {
        std::mem::take(&mut self.outbox)
    }

    /// Takes the answers to deliver.
    pub fn take_answers(&mut self) -> Vec<(RequestId, Response)> {
        std::mem::take(&mut self.answers)
    }

    /// Proposes (leader) or forwards (follower) the writes waiting to be routed; on a leader change,
    /// every unanswered write is routed again (sessions make the duplicates harmless).
    fn route_writes(&mut self) {
        let leader = self.node.leader();
        if leader != self.last_leader {
            self.last_leader = leader;
            if leader.is_some() {
                self.to_route.extend(self.writes.keys().copied());
            }
        }
        let Some(leader) = leader else { return };
        if self.to_route.is_empty() {
            return;
        }
        let mut forwards = Vec::new();
        let mut forward_bytes = 0usize;
        for seq in std::mem::take(&mut self.to_route) {
            let Some(w) = self.writes.get_mut(&seq) else { continue };
            if leader == self.node.id() {
                if self.node.propose(w.data.clone()).is_err() {
                    continue;
                }
            } else {
                // Keep each Forward message well under the transport's frame limit.
                if forward_bytes + w.data.len() > MAX_FORWARD_BYTES && !forwards.is_empty() {
                    let proposals = std::mem::take(&mut forwards);
                    self.outbox.push(PeerMessage::Forward { from: self.node.id(), to: leader, proposals });
                    forward_bytes = 0;
                }
                forward_bytes += w.data.len();
                forwards.push(w.data.clone());
            }
            w.routed = Some(self.now);
        }
        if !forwards.is_empty() {
            self.outbox.push(PeerMessage::Forward { from: self.node.id(), to: leader, proposals: forwards });
        }
    }

    fn apply(&mut self, index: Index, data: &[u8]) -> Result<(), FatalError> {
        let applied = self.kv.apply(index, data).map_err(|source| FatalError::Apply { index, source })?;
        self.since_snapshot.0 += 1;
        self.since_snapshot.1 += data.len() as u64;
        let Some(a) = applied else { return Ok(()) };
        if a.session != self.session {
            return Ok(());
        }
        if a.duplicate && a.reply == Reply::Error(kv::SESSION_EXPIRED_ERR.to_owned()) {
            if self.writes.contains_key(&a.seq) {
                self.rotate_session();
            }
            return Ok(());
        }
        self.session_known = true;
        self.limbo.remove(&a.seq);
        if let Some(w) = self.writes.remove(&a.seq) {
            self.to_route.remove(&a.seq);
            self.answers.push((w.request, Ok(a.reply)));
        }
        Ok(())
    }

    fn read_state(&mut self, rs: ReadState) {
        let Some(r) = self.reads.get_mut(&rs.id) else { return };
        match rs.result {
            Ok(index) => {
                r.index = Some(index);
                self.reads_by_index.insert((index, rs.id));
            }
            Err(ReadError::NoLeader | ReadError::LeadershipChanged | ReadError::TimedOut) => {
                self.reads_to_retry.push(rs.id);
            }
        }
    }

    /// Answers every read whose index the state machine has reached.
    fn serve_reads(&mut self) {
        let applied = self.kv.applied_index();
        while let Some(&(index, id)) = self.reads_by_index.first() {
            if index > applied {
                break;
            }
            self.reads_by_index.pop_first();
            if let Some(r) = self.reads.remove(&id) {
                let reply = self.kv.query(&r.query);
                self.answers.push((r.request, Ok(reply)));
            }
        }
    }
}
