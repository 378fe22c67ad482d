//! The driver's snapshot work: recovery from snapshot + log, taking snapshots, sending them to
//! followers and installing received ones. The protocol and its invariants are described in
//! [`crate::snapshots`]; [`SnapshotWork`] holds its state and this file wires it into the
//! [`Driver`].
//!
//! Invariants (beyond [`crate::snapshots`]):
//! - At most one snapshot job exists at a time (`job_running` from creation to its report).
//! - A leader does not compact past what a follower that just installed one of its snapshots holds,
//!   until it caught up past the compaction point or for `abort_ticks` at most (`catching_up`):
//!   compaction only frees memory, holding entries is always safe, and the hold is bounded.
//! - A leader sends a snapshot to a follower only while the core's progress for it is in
//!   [`ProgressState::Snapshot`]: once an acknowledgement moved it out (the follower caught up by
//!   entries, or installed the snapshot and said so), the transfer stops, so a follower is never
//!   handed a snapshot the leader no longer means to send.
//! - Installing a received snapshot follows the core's verdict ([`raft::StorageAction`]): the
//!   log keeps its suffix only if storage holds exactly what the core keeps.
//! - A received snapshot is checked and loaded by a [`RestoreJob`] off the driver (see
//!   [`crate::snapshots`]); at most one exists at a time (`restoring` from its creation to its
//!   outcome). Meanwhile the receive is held open: a chunk of the same snapshot is answered
//!   `Progress` with the whole length (the leader's transfer then waits: nothing is unacknowledged,
//!   so it neither resends nor advances), never `Installed` and never a new receive; a chunk of an
//!   older snapshot is not answered (the job covers it); the first chunk of a newer one starts a new
//!   receive in `snapshot.recv` and makes the job's outcome stale (if that receive completes
//!   before the outcome is back, it waits for it, complete, in `incoming`).
//! - The outcome is installed only if nothing it depends on changed: it is the outcome of the job
//!   the driver waits for (tickets are unique per incarnation), not stale, the node's term is the
//!   one the last chunk arrived in and it does not lead, and the state machine has not applied
//!   the snapshot's index by entries meanwhile (entries applied meanwhile are all below that
//!   index, so the snapshot covers them: nothing applied is lost, and the writes they answered
//!   stay answered). Otherwise the file is removed and the state machine kept; the leader gets
//!   `Installed` if the node has applied the index, no answer after a term change or a newer
//!   snapshot (that leader asks again or is gone), `Rejected` if the job refused the file.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::progress::ProgressState;
use raft::{Entry, HardState, Index, Membership, NodeId, Role, StorageAction};
use storage::{FileSystem, FsFile, LogStore, SnapshotMeta, SnapshotReceiver, SNAPSHOT_RESTORE, SNAPSHOT_TMP};

use super::{Driver, DriverConfig, FatalError, PeerMessage, RequestId};
use crate::kv::{KvStore, Reply};
use crate::snapshots::{
    classify_chunk, ChunkAction, ChunkStatus, Incoming, RestoreJob, Restored, SnapshotDone, SnapshotJob,
    SnapshotStats, Transfer,
};

/// The driver's snapshot state.
pub(super) struct SnapshotWork<F: FileSystem> {
    /// The file system (the store has its own handle).
    fs: F,
    /// The data directory.
    dir: PathBuf,
    /// The durable snapshot (what it covers, its file length), if any.
    current: Option<(SnapshotMeta, u64)>,
    /// Entries and payload bytes applied since the snapshot (to decide when to take the next one).
    since: (u64, u64),
    /// A snapshot job waiting to be taken by the host.
    job: Option<SnapshotJob<F>>,
    /// True from creating a job until its report.
    job_running: bool,
    /// Admin snapshot requests: (request, index the snapshot must reach).
    waiters: Vec<(RequestId, Index)>,
    /// Leader: snapshots being sent, by follower.
    transfers: BTreeMap<NodeId, Transfer<F::File>>,
    /// Leader: followers that installed a snapshot from this node, with the tick they said so.
    /// For `abort_ticks` after that, or until they hold everything a compaction would drop, the
    /// log is not compacted past what they hold: a follower's restore takes time (the better part
    /// of a second for 1M keys) during which the leader applies more, and with a compaction right
    /// after its install it would need yet another snapshot, again and again under load.
    catching_up: BTreeMap<NodeId, u64>,
    /// Follower: the snapshot being received (or, complete, waiting for a stale restore job to
    /// report before its own job starts).
    incoming: Option<Incoming<F>>,
    /// Follower: a restore job waiting to be taken by the host.
    restore_job: Option<RestoreJob<F>>,
    /// Follower: the restore job handed out, from its creation to its outcome.
    restoring: Option<Restoring>,
    /// The ticket of the last restore job (unique per incarnation: it starts from the session).
    restore_ticket: u64,
    /// State machines no longer used (replaced by a received snapshot, or restored too late), for
    /// the host to drop off its hot path.
    retired: Vec<KvStore>,
    /// Counters.
    stats: SnapshotStats,
    /// Log entries dropped by the last compaction, for the host to free off its hot path; freed
    /// here at the next compaction otherwise.
    compacted: VecDeque<Entry>,
    /// After a failed snapshot job, no new one starts before this tick.
    retry_at: u64,
    /// Files no longer needed (the previous snapshot, log segments the snapshot covers), for the
    /// host to delete off its hot path.
    to_delete: Vec<PathBuf>,
}

/// Follower: a received snapshot whose [`RestoreJob`] is out.
#[derive(Debug)]
struct Restoring {
    /// The job's ticket.
    ticket: u64,
    /// The leader that sent it.
    from: NodeId,
    /// The snapshot's last included index.
    index: Index,
    /// Its last included term.
    term: raft::Term,
    /// The file's length.
    len: u64,
    /// The node's term when the last chunk arrived (the sender's).
    leader_term: raft::Term,
    /// A newer snapshot began arriving meanwhile: the outcome will be dropped.
    stale: bool,
    /// Tick of the last acknowledgement sent for it (the leader is told every `retransmit_ticks`
    /// that the whole file is held, so that it neither abandons nor restarts the transfer while
    /// the job runs, however long that takes).
    last_ack: u64,
}

impl<F: FileSystem> SnapshotWork<F> {
    pub(super) fn new(fs: F, dir: PathBuf, current: Option<(SnapshotMeta, u64)>, session: u64) -> Self {
        SnapshotWork {
            fs,
            dir,
            current,
            since: (0, 0),
            job: None,
            job_running: false,
            waiters: Vec::new(),
            transfers: BTreeMap::new(),
            catching_up: BTreeMap::new(),
            incoming: None,
            restore_job: None,
            restoring: None,
            restore_ticket: session.wrapping_shl(32),
            retired: Vec::new(),
            stats: SnapshotStats::default(),
            compacted: VecDeque::new(),
            retry_at: 0,
            to_delete: Vec::new(),
        }
    }

    /// An entry of `bytes` payload was applied.
    pub(super) fn applied(&mut self, bytes: usize) {
        self.since.0 += 1;
        self.since.1 += bytes as u64;
    }

    /// Admin requests waiting for a snapshot.
    pub(super) fn waiters(&self) -> usize {
        self.waiters.len()
    }

    /// The index of the durable snapshot (0 if none).
    fn index(&self) -> Index {
        self.current.as_ref().map_or(0, |(m, _)| m.index)
    }
}

/// What [`recover`] rebuilt from disk.
pub(super) struct RecoveredState<F: FileSystem> {
    pub store: LogStore<F>,
    pub kv: KvStore,
    pub snapshot: Option<(SnapshotMeta, u64)>,
    pub hard_state: HardState,
    /// The compaction point the core starts from (index, term): the snapshot's, or an earlier
    /// entry still in the log when the log continues the snapshot (see [`recover`]).
    pub offset: (Index, raft::Term),
    /// The log entries after `offset`.
    pub entries: Vec<Entry>,
    /// The membership as of the snapshot's index (the bootstrap one without a snapshot).
    pub membership: Membership,
}

/// A version 1 snapshot records voter ids only: their records come from the bootstrap membership
/// (such a snapshot was written before any membership change, so the bootstrap members are its
/// members).
fn with_records(mut m: Membership, bootstrap: &Membership) -> Membership {
    let missing: Vec<(NodeId, raft::Suffrage)> = m
        .members()
        .iter()
        .filter(|(_, rec)| rec.context.is_empty())
        .map(|(&id, rec)| (id, rec.suffrage))
        .collect();
    for (id, suffrage) in missing {
        if let Some(rec) = bootstrap.get(id) {
            m.insert(id, suffrage, rec.context.clone());
        }
    }
    m
}

/// Loads the snapshot (if any), then the log after it. A log that does not continue the snapshot
/// (it ends before the snapshot's index, or holds another term there: a crash between installing a
/// received snapshot and discarding the old log) is discarded, exactly as the install would have.
pub(super) fn recover<F: FileSystem>(
    fs: &F,
    dir: &Path,
    config: &DriverConfig,
    bootstrap: &Membership,
) -> Result<RecoveredState<F>, FatalError> {
    fs.create_dir_all(dir).map_err(|e| FatalError::Storage(storage::StorageError::io(dir, e)))?;
    storage::remove_snapshot_temporaries(fs, dir, config.log.sync)?;
    let (kv, snapshot) = match storage::read_snapshot(fs, dir)? {
        None => (KvStore::new(), None),
        Some((meta, data)) => {
            let kv = KvStore::restore(&data).map_err(|e| {
                FatalError::Recovery(format!("the snapshot in {} cannot be loaded: {e}", dir.display()))
            })?;
            if kv.applied_index() != meta.index {
                return Err(FatalError::Recovery(format!(
                    "the snapshot file says it covers index {} but its state machine image is at index {}",
                    meta.index,
                    kv.applied_index()
                )));
            }
            let len = storage::read_snapshot_meta(fs, dir)?.map_or(0, |(_, len)| len);
            (kv, Some((meta, len)))
        }
    };
    let (snap_index, snap_term) = snapshot.as_ref().map_or((0, 0), |(m, _)| (m.index, m.term));
    let (mut store, recovered) = LogStore::open_after(fs.clone(), dir, config.log.clone(), snap_index)?;
    let mut entries = recovered.entries;
    let mut offset = (snap_index, snap_term);
    if snap_index > 0 {
        let continues = recovered.first_index == snap_index + 1
            || entries.iter().any(|e| e.index == snap_index && e.term == snap_term);
        if continues {
            // Entries up to the snapshot are kept behind it (at most `keep_entries` of them, as
            // the compaction left them), so a follower a little behind still gets entries after
            // this node restarts instead of a whole snapshot. The core's compaction point is the
            // first entry kept (its term is known), and the state machine starts at the snapshot.
            let keep_from =
                snap_index.saturating_sub(config.snapshot.keep_entries).max(recovered.first_index);
            entries.retain(|e| e.index >= keep_from);
            match entries.first() {
                // (Not if the snapshot's term is above the stored term, which a crash right after
                // installing one can leave: the core then starts at the snapshot and moves its term
                // up to it; with older entries in front, their terms would be checked instead.)
                Some(first) if first.index < snap_index && snap_term <= recovered.hard_state.term => {
                    offset = (first.index, first.term);
                    entries.remove(0);
                }
                _ => entries.retain(|e| e.index > snap_index),
            }
        } else {
            tracing::warn!(
                snapshot_index = snap_index,
                log_last = store.last_index(),
                "the log does not continue the snapshot (a crash while installing one): discarding it"
            );
            store.reset(snap_index + 1)?;
            entries.clear();
        }
    } else if recovered.first_index != 1 {
        return Err(FatalError::Recovery(format!(
            "the log starts at index {} but no snapshot covers the entries before it",
            recovered.first_index
        )));
    }
    let membership = match &snapshot {
        Some((meta, _)) => with_records(meta.membership.clone(), bootstrap),
        None => bootstrap.clone(),
    };
    Ok(RecoveredState { store, kv, snapshot, hard_state: recovered.hard_state, offset, entries, membership })
}

impl<F: FileSystem> Driver<F> {
    /// The index of the durable snapshot (0 if none).
    fn snapshot_index(&self) -> Index {
        self.snap.index()
    }

    /// The durable snapshot: what it covers and its file length.
    pub fn snapshot(&self) -> Option<&(SnapshotMeta, u64)> {
        self.snap.current.as_ref()
    }

    /// Counters of snapshot work since this driver started.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.snap.stats
    }

    /// True while a snapshot is being written.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snap.job_running
    }

    /// Followers a snapshot is being sent to (leader), and whether one is being received (or
    /// restored from a received file).
    pub fn snapshot_transfers(&self) -> (usize, bool) {
        (self.snap.transfers.len(), self.snap.incoming.is_some() || self.snap.restoring.is_some())
    }

    /// The snapshot transfers in progress, for diagnostics: sent (leader), received and restored
    /// (follower).
    pub fn describe_transfers(&self) -> String {
        let incoming =
            self.snap.incoming.as_ref().map(|i| (i.index, i.term, i.receiver.len(), i.len, i.last_chunk));
        format!(
            "sending {:?}, receiving {incoming:?}, restoring {:?}",
            self.snap.transfers, self.snap.restoring
        )
    }

    /// True while a received snapshot is being checked and loaded by a [`RestoreJob`].
    pub fn restore_in_progress(&self) -> bool {
        self.snap.restoring.is_some()
    }

    /// The log entries the last compaction dropped, for the host to free off its hot path (a large
    /// batch takes milliseconds to free).
    pub(crate) fn take_compacted_entries(&mut self) -> VecDeque<Entry> {
        std::mem::take(&mut self.snap.compacted)
    }

    /// State machines the driver no longer uses, for the host to drop off its hot path (see
    /// [`crate::Io::retire`]).
    pub(crate) fn take_retired_states(&mut self) -> Vec<KvStore> {
        std::mem::take(&mut self.snap.retired)
    }

    /// Files a snapshot made obsolete (the previous snapshot file, log segments it covers), for the
    /// host to delete off its hot path — freeing a 64 MiB segment or a 100 MB snapshot takes tens
    /// of milliseconds. In any order, without syncing. What is left is deleted at the next
    /// snapshot, and what survives a crash is removed at startup.
    pub(crate) fn take_files_to_delete(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.snap.to_delete)
    }

    /// An admin request for a snapshot covering everything applied now.
    pub(super) fn request_snapshot(&mut self, request: RequestId) {
        let want = self.kv.applied_index();
        if want == 0 || want <= self.snapshot_index() {
            let index = self.snapshot_index();
            self.answers.push((request, Ok(Reply::Int(index as i64))));
            return;
        }
        self.snap.waiters.push((request, want));
    }

    /// Creates a snapshot job if one is due (by entries or bytes since the last, or requested) and
    /// none is running.
    pub(super) fn maybe_start_snapshot(&mut self) {
        if self.snap.job_running || self.now < self.snap.retry_at {
            return;
        }
        let cfg = &self.config.snapshot;
        let (entries, bytes) = self.snap.since;
        let due = (cfg.entries > 0 && entries >= cfg.entries)
            || (cfg.log_bytes > 0 && bytes >= cfg.log_bytes)
            || self.snap.waiters.iter().any(|&(_, want)| want > self.snapshot_index());
        let index = self.kv.applied_index();
        if !due || index <= self.snapshot_index() {
            return;
        }
        if self.admin.applied.is_empty() {
            // A node that joined a running cluster and has not applied the configuration that
            // admitted it yet: its snapshot would record no membership.
            return;
        }
        let Some(term) = self.node.entry_term(index) else {
            return; // Cannot happen: the applied entry is in the log or is its compaction point.
        };
        let meta = SnapshotMeta { index, term, membership: self.admin.applied.clone() };
        self.snap.job = Some(SnapshotJob {
            fs: self.snap.fs.clone(),
            dir: self.snap.dir.clone(),
            meta,
            view: self.kv.snapshot_view(),
            sync: self.config.log.sync,
        });
        self.snap.job_running = true;
        self.snap.since = (0, 0);
    }

    /// Takes the snapshot job to run, if one is due. Run it (anywhere: it only touches
    /// `snapshot.tmp`) and hand the result to [`Driver::snapshot_finished`].
    pub(crate) fn take_snapshot_job(&mut self) -> Option<SnapshotJob<F>> {
        self.snap.job.take()
    }

    /// Installs a finished snapshot job's file and drops the log prefix it covers. A job that failed
    /// is logged and retried when the next one is due; only a failure to change the log is fatal.
    pub(crate) fn snapshot_finished(
        &mut self,
        result: Result<SnapshotDone, storage::StorageError>,
    ) -> Result<(), FatalError> {
        self.snap.job_running = false;
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "taking a snapshot failed; the log is kept and it will be tried again");
                // Not in a tight loop: wait as long as a silent transfer would be given.
                self.snap.retry_at = self.now + self.config.snapshot.abort_ticks;
                for (request, _) in std::mem::take(&mut self.snap.waiters) {
                    self.answers
                        .push((request, Ok(Reply::Error(format!("ERR taking a snapshot failed: {e}")))));
                }
                return Ok(());
            }
        };
        if done.meta.index <= self.snapshot_index() {
            // A snapshot received from the leader meanwhile is newer: keep it.
            let _ = self.snap.fs.remove_file(&self.snap.dir.join(SNAPSHOT_TMP));
            return Ok(());
        }
        self.delete_leftovers();
        let displaced =
            storage::install_snapshot(&self.snap.fs, &self.snap.dir, SNAPSHOT_TMP, self.config.log.sync)?;
        self.snap.to_delete.extend(displaced);
        tracing::info!(index = done.meta.index, term = done.meta.term, bytes = done.len, "snapshot taken");
        let index = done.meta.index;
        self.snap.current = Some((done.meta, done.len));
        self.snap.stats.taken += 1;
        // Keep the entries after any snapshot still being sent, so its follower continues with
        // entries once it installed it instead of needing yet another snapshot; and, for a while,
        // those a follower that just installed one still lacks (see `catching_up`).
        let sending = self.snap.transfers.values().map(|t| t.index).min().unwrap_or(index);
        let upto = index.saturating_sub(self.config.snapshot.keep_entries).min(sending);
        let (node, now, hold) = (&self.node, self.now, self.config.snapshot.abort_ticks);
        self.snap.catching_up.retain(|&peer, &mut since| {
            node.role() == Role::Leader
                && now.saturating_sub(since) < hold
                && node.progress(peer).is_some_and(|pr| pr.match_index < upto)
        });
        let behind =
            self.snap.catching_up.keys().filter_map(|&p| node.progress(p)).map(|pr| pr.match_index).min();
        let upto = upto.min(behind.unwrap_or(Index::MAX));
        if upto >= self.node.first_index() {
            // The previous batch, if nobody took it, is freed now.
            self.snap.compacted = self.node.compact(upto);
            let stale = self.store.compact_deferred(upto)?;
            self.snap.to_delete.extend(stale);
        }
        self.answer_snapshot_waiters();
        Ok(())
    }

    /// Deletes the files of the previous snapshot that nobody took (see
    /// [`Driver::take_files_to_delete`]), before a new install could move a file to the same name.
    fn delete_leftovers(&mut self) {
        for path in std::mem::take(&mut self.snap.to_delete) {
            if let Err(e) = self.snap.fs.remove_file(&path) {
                tracing::debug!(path = %path.display(), error = %e, "could not delete an obsolete file");
            }
        }
    }

    fn answer_snapshot_waiters(&mut self) {
        let index = self.snapshot_index();
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.snap.waiters).into_iter().partition(|&(_, want)| want <= index);
        self.snap.waiters = waiting;
        for (request, _) in done {
            self.answers.push((request, Ok(Reply::Int(index as i64))));
        }
    }

    /// Leader: the core asks for a snapshot to be sent to `peer`: the current snapshot file is
    /// loaded (or shared with another transfer of it) and sent from memory.
    pub(super) fn start_transfer(&mut self, peer: NodeId) {
        if self.snap.transfers.contains_key(&peer) {
            return;
        }
        let Some((meta, len)) = self.snap.current.clone() else {
            // Cannot happen (entries are compacted only behind a durable snapshot).
            tracing::error!(peer, "a follower needs a snapshot but there is none");
            self.node.snapshot_failed(peer);
            return;
        };
        // Opened, not read: each chunk is read when its turn comes (see `Transfer`).
        let path = self.snap.dir.join(storage::SNAPSHOT_FILE);
        let file = match self.snap.fs.open(&path) {
            Ok(file) if file.len().is_ok_and(|l| l == len) => file,
            Ok(_) | Err(_) => {
                tracing::error!(peer, index = meta.index, "cannot open our snapshot file to send it");
                self.node.snapshot_failed(peer);
                return;
            }
        };
        self.snap.transfers.insert(peer, Transfer::new(meta.index, meta.term, file, len, self.now));
    }

    /// Leader: stops the transfers the core no longer wants (see the module docs) and sends the
    /// chunks each remaining transfer's window allows.
    pub(super) fn pump_transfers(&mut self) {
        if self.snap.transfers.is_empty() {
            return;
        }
        let node = &self.node;
        self.snap.transfers.retain(|&peer, _| {
            node.role() == Role::Leader
                && node.progress(peer).is_some_and(|pr| pr.state == ProgressState::Snapshot)
        });
        let term = self.node.term();
        let me = self.node.id();
        let mut unreadable = Vec::new();
        for (&peer, t) in self.snap.transfers.iter_mut() {
            while let Some((offset, len)) = t.next_chunk(&self.config.snapshot) {
                let mut buf = vec![0u8; len as usize];
                if let Err(e) = t.file.read_exact_at(&mut buf, offset) {
                    tracing::error!(peer, index = t.index, offset, error = %e, "cannot read our snapshot file to send it");
                    unreadable.push(peer);
                    break;
                }
                let data = Bytes::from(buf);
                self.snap.stats.chunks_sent += 1;
                self.outbox.push(PeerMessage::SnapshotChunk {
                    from: me,
                    to: peer,
                    term,
                    index: t.index,
                    snap_term: t.term,
                    offset,
                    len: t.len,
                    data,
                });
            }
        }
        for peer in unreadable {
            self.snap.transfers.remove(&peer);
            self.node.snapshot_failed(peer);
        }
    }

    /// Called every tick: retransmits and abandons silent transfers, and abandons a partial receive
    /// that stopped arriving.
    pub(super) fn tick_snapshots(&mut self) {
        let now = self.now;
        let cfg = self.config.snapshot.clone();
        let mut abandoned = Vec::new();
        for (&peer, t) in self.snap.transfers.iter_mut() {
            if !t.tick(now, &cfg) {
                abandoned.push(peer);
            }
        }
        for peer in abandoned {
            tracing::warn!(peer, "snapshot transfer abandoned: no answer");
            self.snap.transfers.remove(&peer);
            self.node.snapshot_failed(peer);
        }
        if let Some(r) = self.snap.restoring.as_mut() {
            let current = !r.stale && r.leader_term == self.node.term();
            if current && now.saturating_sub(r.last_ack) >= cfg.retransmit_ticks {
                // Still restoring: the leader keeps waiting (see `Restoring::last_ack`).
                r.last_ack = now;
                let (to, index, term, len) = (r.from, r.index, r.term, r.len);
                self.ack_chunk(to, index, term, len, ChunkStatus::Progress);
            }
        }
        if let Some(inc) = &self.snap.incoming {
            // (A complete one waits for the restore job out, not for chunks.)
            let partial = inc.receiver.len() < inc.len;
            if partial && now.saturating_sub(inc.last_chunk) >= cfg.abort_ticks {
                if let Some(inc) = self.snap.incoming.take() {
                    inc.receiver.abort();
                }
            }
        }
    }

    /// Handles a chunk (follower) or an acknowledgement (leader).
    pub(super) fn handle_snapshot_message(&mut self, msg: PeerMessage) -> Result<(), FatalError> {
        match msg {
            PeerMessage::SnapshotAck { from, index, snap_term, received, status, .. } => {
                let Some(t) = self.snap.transfers.get_mut(&from) else { return Ok(()) };
                if t.index != index || t.term != snap_term {
                    return Ok(());
                }
                match status {
                    ChunkStatus::Installed => {
                        self.snap.stats.sent += 1;
                        self.snap.transfers.remove(&from);
                        self.snap.catching_up.insert(from, self.now);
                        self.node.snapshot_sent(from, index);
                    }
                    ChunkStatus::Rejected => {
                        tracing::warn!(peer = from, index, "follower rejected our snapshot");
                        self.snap.transfers.remove(&from);
                        self.node.snapshot_failed(from);
                    }
                    ChunkStatus::Progress | ChunkStatus::Gap => t.acknowledge(received, status, self.now),
                }
                Ok(())
            }
            PeerMessage::SnapshotChunk { from, term, index, snap_term, offset, len, data, .. } => {
                self.receive_chunk(from, term, index, snap_term, offset, len, &data)
            }
            _ => Ok(()),
        }
    }

    /// Queues an acknowledgement of a chunk of snapshot (`index`, `snap_term`) to `to`.
    fn ack_chunk(
        &mut self,
        to: NodeId,
        index: Index,
        snap_term: raft::Term,
        received: u64,
        status: ChunkStatus,
    ) {
        self.outbox.push(PeerMessage::SnapshotAck {
            from: self.node.id(),
            to,
            index,
            snap_term,
            received,
            status,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_chunk(
        &mut self,
        from: NodeId,
        term: raft::Term,
        index: Index,
        snap_term: raft::Term,
        offset: u64,
        len: u64,
        data: &[u8],
    ) -> Result<(), FatalError> {
        // Only the leader of our current term; a stale or future sender is ignored (a future one's
        // heartbeats bring us to its term first, then it resends).
        if term != self.node.term() || self.node.role() == Role::Leader {
            return Ok(());
        }
        if index <= self.kv.applied_index() {
            // We already have everything it covers.
            self.ack_chunk(from, index, snap_term, len, ChunkStatus::Installed);
            return Ok(());
        }
        if let Some(r) = self.snap.restoring.as_mut().filter(|r| !r.stale) {
            if (index, snap_term) == (r.index, r.term) {
                // Its job holds the complete file: hold the leader at the whole length (it waits
                // for the outcome instead of resending), neither a new receive nor `Installed`.
                // The leader of a newer term sending the same snapshot takes the job over.
                (r.from, r.leader_term, r.last_ack) = (from, term, self.now);
                let received = r.len;
                self.ack_chunk(from, index, snap_term, received, ChunkStatus::Progress);
                return Ok(());
            }
            if index < r.index {
                return Ok(()); // Covered by the job's snapshot once it is installed.
            }
            if offset == 0 {
                // A newer snapshot: it is received, the job's outcome will be dropped.
                tracing::info!(index, restoring = r.index, "a newer snapshot arrives while one is restored");
                r.stale = true;
            }
        }
        let current = self.snap.incoming.as_ref().map(|i| (i.index, i.term, i.receiver.len()));
        let skip = match classify_chunk(current, index, snap_term, offset, data.len()) {
            ChunkAction::Answer(status, received) => {
                self.ack_chunk(from, index, snap_term, received, status);
                return Ok(());
            }
            ChunkAction::Start => {
                if let Some(old) = self.snap.incoming.take() {
                    old.receiver.abort();
                }
                match SnapshotReceiver::create(self.snap.fs.clone(), &self.snap.dir, self.config.log.sync) {
                    Ok(receiver) => {
                        self.snap.incoming = Some(Incoming {
                            from,
                            index,
                            term: snap_term,
                            len,
                            receiver,
                            last_chunk: self.now,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot receive a snapshot");
                        self.ack_chunk(from, index, snap_term, 0, ChunkStatus::Rejected);
                        return Ok(());
                    }
                }
                0
            }
            ChunkAction::Append { skip } => skip,
        };
        let Some(inc) = self.snap.incoming.as_mut() else { return Ok(()) };
        inc.last_chunk = self.now;
        let room = inc.len.saturating_sub(inc.receiver.len()) as usize;
        let part = &data[skip..];
        if part.len() > room || inc.receiver.append(part).is_err() {
            if let Some(inc) = self.snap.incoming.take() {
                inc.receiver.abort();
            }
            self.ack_chunk(from, index, snap_term, 0, ChunkStatus::Rejected);
            return Ok(());
        }
        let received = inc.receiver.len();
        if received == inc.len && self.snap.restoring.is_none() {
            if let Some(inc) = self.snap.incoming.take() {
                self.start_restore(inc);
            }
        }
        // Complete or not, the leader learns how much is held: with all of it, it waits for the
        // restore job's outcome (`Installed` or `Rejected`).
        if self.snap.incoming.is_some() || self.snap.restoring.is_some() {
            self.ack_chunk(from, index, snap_term, received, ChunkStatus::Progress);
        }
        Ok(())
    }

    /// Hands a completely received snapshot to a [`RestoreJob`] (none may be out): its file is
    /// renamed to `snapshot.restore`, so that a newer transfer can start meanwhile.
    fn start_restore(&mut self, inc: Incoming<F>) {
        debug_assert!(self.snap.restoring.is_none() && self.snap.restore_job.is_none());
        let Incoming { from, index, term, len, mut receiver, .. } = inc;
        if let Err(e) = receiver.rename_to(SNAPSHOT_RESTORE) {
            tracing::warn!(index, error = %e, "cannot set the received snapshot aside to check it");
            receiver.abort();
            self.snap.stats.rejected += 1;
            self.ack_chunk(from, index, term, 0, ChunkStatus::Rejected);
            return;
        }
        self.snap.restore_ticket = self.snap.restore_ticket.wrapping_add(1);
        let ticket = self.snap.restore_ticket;
        self.snap.restore_job = Some(RestoreJob { ticket, fs: self.snap.fs.clone(), receiver, index, term });
        self.snap.restoring = Some(Restoring {
            ticket,
            from,
            index,
            term,
            len,
            leader_term: self.node.term(),
            stale: false,
            last_ack: self.now,
        });
    }

    /// Takes the restore job to run, if one was created. Run it anywhere (it only touches
    /// `snapshot.restore`) and hand its outcome back as [`crate::Input::Restored`].
    pub(crate) fn take_restore_job(&mut self) -> Option<RestoreJob<F>> {
        self.snap.restore_job.take()
    }

    /// The outcome of a [`RestoreJob`]: installs it if it still applies (see the module docs), then
    /// starts the job of a newer snapshot that completed meanwhile. An error stops the node
    /// (installing the file or resetting the log failed in storage).
    pub(crate) fn restore_finished(&mut self, restored: Restored) -> Result<(), FatalError> {
        let Restored { ticket, outcome } = restored;
        if self.snap.restoring.as_ref().is_none_or(|r| r.ticket != ticket) {
            // Not the job this driver waits for (cannot happen: a host drops the outcomes of a
            // previous incarnation). Its file, if any, is not touched: it may be another job's.
            tracing::warn!(ticket, "ignoring the outcome of an unknown restore job");
            return Ok(());
        }
        let Some(r) = self.snap.restoring.take() else { return Ok(()) };
        let current = !r.stale && self.node.term() == r.leader_term && self.node.role() != Role::Leader;
        let path = self.snap.dir.join(SNAPSHOT_RESTORE);
        match outcome {
            Err(why) => {
                // The job removed the file.
                tracing::warn!(index = r.index, reason = %why, "refusing a received snapshot");
                self.snap.stats.rejected += 1;
                if current {
                    self.ack_chunk(r.from, r.index, r.term, 0, ChunkStatus::Rejected);
                }
            }
            Ok((_, kv)) if !current => {
                self.snap.retired.push(kv);
                tracing::info!(
                    index = r.index,
                    stale = r.stale,
                    term = self.node.term(),
                    "dropping a restored snapshot: a newer one or another term came meanwhile"
                );
                let _ = self.snap.fs.remove_file(&path);
            }
            Ok((_, kv)) if r.index <= self.kv.applied_index() => {
                // Caught up by entries meanwhile: nothing to install.
                self.snap.retired.push(kv);
                let _ = self.snap.fs.remove_file(&path);
                self.ack_chunk(r.from, r.index, r.term, r.len, ChunkStatus::Installed);
            }
            Ok((meta, kv)) => {
                self.install_restored(&r, meta, kv)?;
                self.ack_chunk(r.from, r.index, r.term, r.len, ChunkStatus::Installed);
            }
        }
        if self.snap.incoming.as_ref().is_some_and(|i| i.receiver.len() == i.len) {
            if let Some(inc) = self.snap.incoming.take() {
                self.start_restore(inc);
            }
        }
        Ok(())
    }

    /// The short part of installing a received snapshot, once its job checked and loaded it: the
    /// file (rename + directory sync), the state machine, the core, the log, the waiters.
    fn install_restored(&mut self, r: &Restoring, meta: SnapshotMeta, kv: KvStore) -> Result<(), FatalError> {
        let (index, term) = (r.index, r.term);
        // From here on the new snapshot is the durable one; a crash before the log is reconciled is
        // repaired by `recover`.
        self.delete_leftovers();
        let displaced =
            storage::install_snapshot(&self.snap.fs, &self.snap.dir, SNAPSHOT_RESTORE, self.config.log.sync)?;
        self.snap.to_delete.extend(displaced);
        let membership = with_records(meta.membership.clone(), &self.admin.applied);
        self.snap.current = Some((meta, r.len));
        let old = std::mem::replace(&mut self.kv, kv);
        self.snap.retired.push(old);
        self.snap.since = (0, 0);
        let restored = self.node.restore_with_membership(index, term, membership.clone(), r.from);
        self.admin.restored(index, membership, &mut self.answers);
        self.drop_acks_beyond(self.node.last_index());
        match restored {
            Some(StorageAction::DropPrefix) => self.store.compact(index)?,
            Some(StorageAction::Reset) => {
                self.store.reset(index + 1)?;
                self.syncs.abandon();
            }
            None => {
                return Err(FatalError::Recovery(format!(
                    "the core refused snapshot {index} after it was checked as installable"
                )))
            }
        }
        tracing::info!(index, term, bytes = r.len, leader = r.from, "installed a snapshot from the leader");
        self.snap.stats.installed += 1;
        self.requests.answer_from_snapshot(&self.kv, self.now, &mut self.answers);
        self.requests.serve_reads(&self.kv, &mut self.answers);
        self.answer_snapshot_waiters();
        Ok(())
    }
}
