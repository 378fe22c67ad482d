//! The driver's snapshot work: recovery from snapshot + log, taking snapshots, sending them to
//! followers and installing received ones. The protocol and its invariants are described in
//! [`crate::snapshots`]; this file wires them into the [`Driver`].

use std::path::Path;

use raft::{Entry, HardState, Index, NodeId, Role};
use storage::{FileSystem, LogStore, SnapshotMeta, SnapshotReceiver, SNAPSHOT_RECV, SNAPSHOT_TMP};

use super::{Driver, DriverConfig, FatalError, PeerMessage, RequestId};
use crate::kv::{KvStore, Reply};
use crate::snapshots::{
    classify_chunk, ChunkAction, ChunkStatus, Incoming, SnapshotDone, SnapshotJob, Transfer,
};

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
}

/// Loads the snapshot (if any), then the log after it. A log that does not continue the snapshot
/// (it ends before the snapshot's index, or holds another term there: a crash between installing a
/// received snapshot and discarding the old log) is discarded, exactly as the install would have.
pub(super) fn recover<F: FileSystem>(
    fs: &F,
    dir: &Path,
    config: &DriverConfig,
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
    Ok(RecoveredState { store, kv, snapshot, hard_state: recovered.hard_state, offset, entries })
}

impl<F: FileSystem> Driver<F> {
    /// The index of the durable snapshot (0 if none).
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |(m, _)| m.index)
    }

    /// An admin request for a snapshot covering everything applied now.
    pub(super) fn request_snapshot(&mut self, request: RequestId) {
        let want = self.kv.applied_index();
        if want == 0 || want <= self.snapshot_index() {
            let index = self.snapshot_index();
            self.answers.push((request, Ok(Reply::Int(index as i64))));
            return;
        }
        self.snapshot_waiters.push((request, want));
    }

    /// Creates a snapshot job if one is due (by entries or bytes since the last, or requested) and
    /// none is running.
    pub(super) fn maybe_start_snapshot(&mut self) {
        if self.job_running || self.now < self.snapshot_retry_at {
            return;
        }
        let cfg = &self.config.snapshot;
        let (entries, bytes) = self.since_snapshot;
        let due = (cfg.entries > 0 && entries >= cfg.entries)
            || (cfg.log_bytes > 0 && bytes >= cfg.log_bytes)
            || self.snapshot_waiters.iter().any(|&(_, want)| want > self.snapshot_index());
        let index = self.kv.applied_index();
        if !due || index <= self.snapshot_index() {
            return;
        }
        let Some(term) = self.node.entry_term(index) else {
            return; // Cannot happen: the applied entry is in the log or is its compaction point.
        };
        let meta = SnapshotMeta { index, term, voters: self.config.raft.voters.clone() };
        self.job = Some(SnapshotJob {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            meta,
            view: self.kv.snapshot_view(),
            sync: self.config.log.sync,
        });
        self.job_running = true;
        self.since_snapshot = (0, 0);
    }

    /// Takes the snapshot job to run, if one is due. Run it (anywhere: it only touches
    /// `snapshot.tmp`) and hand the result to [`Driver::snapshot_finished`].
    pub fn take_snapshot_job(&mut self) -> Option<SnapshotJob<F>> {
        self.job.take()
    }

    /// Installs a finished snapshot job's file and drops the log prefix it covers. A job that failed
    /// is logged and retried when the next one is due; only a failure to change the log is fatal.
    pub fn snapshot_finished(
        &mut self,
        result: Result<SnapshotDone, storage::StorageError>,
    ) -> Result<(), FatalError> {
        self.job_running = false;
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "taking a snapshot failed; the log is kept and it will be tried again");
                // Not in a tight loop: wait as long as a silent transfer would be given.
                self.snapshot_retry_at = self.now + self.config.snapshot.abort_ticks;
                for (request, _) in std::mem::take(&mut self.snapshot_waiters) {
                    self.answers
                        .push((request, Ok(Reply::Error(format!("ERR taking a snapshot failed: {e}")))));
                }
                return Ok(());
            }
        };
        if done.meta.index <= self.snapshot_index() {
            // A snapshot received from the leader meanwhile is newer: keep it.
            let _ = self.fs.remove_file(&self.dir.join(SNAPSHOT_TMP));
            return Ok(());
        }
        self.delete_leftovers();
        let displaced = storage::install_snapshot(&self.fs, &self.dir, SNAPSHOT_TMP, self.config.log.sync)?;
        self.to_delete.extend(displaced);
        tracing::info!(index = done.meta.index, term = done.meta.term, bytes = done.len, "snapshot taken");
        let index = done.meta.index;
        self.snapshot = Some((done.meta, done.len));
        self.snapshot_stats.taken += 1;
        // Keep the entries after any snapshot still being sent, so its follower continues with
        // entries once it installed it instead of needing yet another snapshot.
        let sending = self.transfers.values().map(|t| t.index).min().unwrap_or(index);
        let upto = index.saturating_sub(self.config.snapshot.keep_entries).min(sending);
        if upto >= self.node.first_index() {
            // The previous batch, if nobody took it, is freed now.
            self.compacted = self.node.compact(upto);
            let stale = self.store.compact_deferred(upto)?;
            self.to_delete.extend(stale);
        }
        self.answer_snapshot_waiters();
        Ok(())
    }

    /// Deletes the files of the previous snapshot that nobody took (see
    /// [`Driver::take_files_to_delete`]), before a new install could move a file to the same name.
    fn delete_leftovers(&mut self) {
        for path in std::mem::take(&mut self.to_delete) {
            if let Err(e) = self.fs.remove_file(&path) {
                tracing::debug!(path = %path.display(), error = %e, "could not delete an obsolete file");
            }
        }
    }

    fn answer_snapshot_waiters(&mut self) {
        let index = self.snapshot_index();
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.snapshot_waiters).into_iter().partition(|&(_, want)| want <= index);
        self.snapshot_waiters = waiting;
        for (request, _) in done {
            self.answers.push((request, Ok(Reply::Int(index as i64))));
        }
    }

    /// Leader: the core asks for a snapshot to be sent to `peer`: the current snapshot file is
    /// loaded (or shared with another transfer of it) and sent from memory.
    pub(super) fn start_transfer(&mut self, peer: NodeId) {
        if self.transfers.contains_key(&peer) {
            return;
        }
        let Some((meta, len)) = self.snapshot.clone() else {
            // Cannot happen (entries are compacted only behind a durable snapshot).
            tracing::error!(peer, "a follower needs a snapshot but there is none");
            self.node.snapshot_failed(peer);
            return;
        };
        let shared = self.transfers.values().find(|t| t.index == meta.index && t.term == meta.term);
        let data = match shared {
            Some(t) => t.data.clone(),
            None => match storage::read_snapshot_chunk(&self.fs, &self.dir, 0, len as usize) {
                Ok(data) if data.len() as u64 == len => data,
                Ok(_) | Err(_) => {
                    tracing::error!(peer, index = meta.index, "cannot read our snapshot file to send it");
                    self.node.snapshot_failed(peer);
                    return;
                }
            },
        };
        self.transfers.insert(peer, Transfer::new(meta.index, meta.term, data, self.now));
    }

    /// Leader: sends the chunks each transfer's window allows.
    pub(super) fn pump_transfers(&mut self) -> Result<(), FatalError> {
        if self.transfers.is_empty() {
            return Ok(());
        }
        if self.node.role() != Role::Leader {
            self.transfers.clear();
            return Ok(());
        }
        let term = self.node.term();
        let me = self.node.id();
        for (&peer, t) in self.transfers.iter_mut() {
            while let Some((offset, data)) = t.next_chunk(&self.config.snapshot) {
                self.snapshot_stats.chunks_sent += 1;
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
        Ok(())
    }

    /// Called every tick: retransmits and abandons silent transfers, and abandons a partial receive
    /// that stopped arriving.
    pub(super) fn tick_snapshots(&mut self) {
        let now = self.now;
        let cfg = self.config.snapshot.clone();
        let mut abandoned = Vec::new();
        for (&peer, t) in self.transfers.iter_mut() {
            if !t.tick(now, &cfg) {
                abandoned.push(peer);
            }
        }
        for peer in abandoned {
            tracing::warn!(peer, "snapshot transfer abandoned: no answer");
            self.transfers.remove(&peer);
            self.node.snapshot_failed(peer);
        }
        if let Some(inc) = &self.incoming {
            if now.saturating_sub(inc.last_chunk) >= cfg.abort_ticks {
                if let Some(inc) = self.incoming.take() {
                    inc.receiver.abort();
                }
            }
        }
    }

    /// Handles a chunk (follower) or an acknowledgement (leader).
    pub(super) fn handle_snapshot_message(&mut self, msg: PeerMessage) -> Result<(), FatalError> {
        match msg {
            PeerMessage::SnapshotAck { from, index, snap_term, received, status, .. } => {
                let Some(t) = self.transfers.get_mut(&from) else { return Ok(()) };
                if t.index != index || t.term != snap_term {
                    return Ok(());
                }
                match status {
                    ChunkStatus::Installed => {
                        self.snapshot_stats.sent += 1;
                        self.transfers.remove(&from);
                        self.node.snapshot_sent(from, index);
                    }
                    ChunkStatus::Rejected => {
                        tracing::warn!(peer = from, index, "follower rejected our snapshot");
                        self.transfers.remove(&from);
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
        let ack = |d: &mut Self, received: u64, status: ChunkStatus| {
            d.outbox.push(PeerMessage::SnapshotAck {
                from: d.node.id(),
                to: from,
                index,
                snap_term,
                received,
                status,
            });
        };
        if index <= self.kv.applied_index() {
            // We already have everything it covers.
            ack(self, len, ChunkStatus::Installed);
            return Ok(());
        }
        let current = self.incoming.as_ref().map(|i| (i.index, i.term, i.receiver.len()));
        let skip = match classify_chunk(current, index, snap_term, offset, data.len()) {
            ChunkAction::Answer(status, received) => {
                ack(self, received, status);
                return Ok(());
            }
            ChunkAction::Start => {
                if let Some(old) = self.incoming.take() {
                    old.receiver.abort();
                }
                match SnapshotReceiver::create(self.fs.clone(), &self.dir, self.config.log.sync) {
                    Ok(receiver) => {
                        self.incoming = Some(Incoming {
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
                        ack(self, 0, ChunkStatus::Rejected);
                        return Ok(());
                    }
                }
                0
            }
            ChunkAction::Append { skip } => skip,
        };
        let Some(inc) = self.incoming.as_mut() else { return Ok(()) };
        inc.last_chunk = self.now;
        let room = inc.len.saturating_sub(inc.receiver.len()) as usize;
        let part = &data[skip..];
        if part.len() > room || inc.receiver.append(part).is_err() {
            if let Some(inc) = self.incoming.take() {
                inc.receiver.abort();
            }
            ack(self, 0, ChunkStatus::Rejected);
            return Ok(());
        }
        let received = inc.receiver.len();
        if received < inc.len {
            ack(self, received, ChunkStatus::Progress);
            return Ok(());
        }
        let Some(inc) = self.incoming.take() else { return Ok(()) };
        let status = self.install_incoming(inc)?;
        if status == ChunkStatus::Rejected {
            self.snapshot_stats.rejected += 1;
        }
        ack(self, if status == ChunkStatus::Installed { len } else { 0 }, status);
        Ok(())
    }

    /// Verifies a completely received snapshot and installs it: file, state machine, core, log.
    fn install_incoming(&mut self, inc: Incoming<F>) -> Result<ChunkStatus, FatalError> {
        let (index, term) = (inc.index, inc.term);
        let path = self.dir.join(SNAPSHOT_RECV);
        let (meta, data) = match inc.receiver.finish() {
            Ok((meta, data)) if meta.index == index && meta.term == term => (meta, data),
            Ok((meta, _)) => {
                tracing::warn!(index, got = meta.index, "received snapshot is not the one announced");
                let _ = self.fs.remove_file(&path);
                return Ok(ChunkStatus::Rejected);
            }
            Err(_) => return Ok(ChunkStatus::Rejected), // Logged and removed by finish.
        };
        if self.node.role() == Role::Leader || index <= self.kv.applied_index() || term > self.node.term() {
            // Caught up by entries meanwhile (or roles changed): nothing to install.
            let _ = self.fs.remove_file(&path);
            return Ok(ChunkStatus::Installed);
        }
        let kv = match KvStore::restore(&data) {
            Ok(kv) if kv.applied_index() == index => kv,
            Ok(kv) => {
                tracing::warn!(
                    index,
                    image = kv.applied_index(),
                    "received snapshot image has the wrong index"
                );
                let _ = self.fs.remove_file(&path);
                return Ok(ChunkStatus::Rejected);
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "received snapshot cannot be loaded");
                let _ = self.fs.remove_file(&path);
                return Ok(ChunkStatus::Rejected);
            }
        };
        drop(data);
        // From here on the new snapshot is the durable one; a crash before the log is reconciled is
        // repaired by `recover`.
        self.delete_leftovers();
        let displaced = storage::install_snapshot(&self.fs, &self.dir, SNAPSHOT_RECV, self.config.log.sync)?;
        self.to_delete.extend(displaced);
        self.snapshot = Some((meta, inc.len));
        self.kv = kv;
        self.since_snapshot = (0, 0);
        match self.node.restore(index, term, inc.from) {
            Some(true) => self.store.compact(index)?,
            Some(false) => {
                self.store.reset(index + 1)?;
                self.abandon_syncs();
            }
            None => {
                return Err(FatalError::Recovery(format!(
                    "the core refused snapshot {index} after it was checked as installable"
                )))
            }
        }
        tracing::info!(
            index,
            term,
            bytes = inc.len,
            leader = inc.from,
            "installed a snapshot from the leader"
        );
        self.snapshot_stats.installed += 1;
        self.answer_from_snapshot();
        self.serve_reads();
        self.answer_snapshot_waiters();
        Ok(ChunkStatus::Installed)
    }

    /// After installing a snapshot: writes whose entries it covers are answered from the session
    /// table (their entries will never be applied one by one here).
    fn answer_from_snapshot(&mut self) {
        let session = self.session;
        let covered: Vec<(u64, Reply)> =
            self.writes.keys().filter_map(|&seq| self.kv.reply_for(session, seq).map(|r| (seq, r))).collect();
        for (seq, reply) in covered {
            self.session_known = true;
            self.limbo.remove(&seq);
            if let Some(w) = self.writes.remove(&seq) {
                self.to_route.remove(&seq);
                self.answers.push((w.request, Ok(reply)));
            }
        }
        let in_limbo: Vec<u64> = self.limbo.keys().copied().collect();
        for seq in in_limbo {
            if self.kv.reply_for(session, seq).is_some() {
                self.limbo.remove(&seq);
            }
        }
    }
}
