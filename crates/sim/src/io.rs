//! The simulator's side of the host loop ([`SimIo`]): it collects a batch's output, routed by the
//! world afterwards (virtual time does not pass during a batch), and checks every acknowledgement
//! of log entries against what the node's disk holds durably.

use std::collections::VecDeque;
use std::path::PathBuf;

use engine::{Driver, FatalError, Io, PeerMessage, RequestId, Response, RestoreJob, SnapshotJob, SyncJob};
use raft::{Entry, MessageBody};
use storage::{FileSystem, MemFs, StorageError};

/// The simulator's side of the host loop: collects a batch's output (routed by
/// [`World::run_node`] afterwards; virtual time does not pass during a batch) and checks every
/// acknowledgement of log entries against what the node's disk holds durably.
pub(crate) struct SimIo {
    /// The node's disk (obsolete files are deleted on it).
    pub(crate) fs: MemFs,
    /// Messages, in the order they left.
    pub(crate) messages: Vec<PeerMessage>,
    /// Answers, in the order they were delivered.
    pub(crate) answers: Vec<(RequestId, Response)>,
    /// A sync job to run later.
    pub(crate) sync: Option<SyncJob<MemFs>>,
    /// A snapshot job to run later.
    pub(crate) snapshot: Option<SnapshotJob<MemFs>>,
    /// A restore job (a received snapshot to check and load) to run later.
    pub(crate) restore: Option<RestoreJob<MemFs>>,
    /// The first violated promise, if any.
    pub(crate) violation: Option<String>,
    /// The node's wall clock (virtual time plus the node's skew), ms.
    pub(crate) clock_ms: u64,
}

impl SimIo {
    pub(crate) fn new(fs: MemFs) -> Self {
        SimIo {
            fs,
            messages: Vec::new(),
            answers: Vec::new(),
            sync: None,
            snapshot: None,
            restore: None,
            violation: None,
            clock_ms: 0,
        }
    }
}

impl Io<MemFs> for SimIo {
    fn send(&mut self, d: &Driver<MemFs>, messages: Vec<PeerMessage>) {
        let snapshot = d.snapshot().map_or(0, |(m, _)| m.index);
        for m in &messages {
            let PeerMessage::Raft(r) = m else { continue };
            if let MessageBody::AppendEntriesResponse { success: true, index, .. } = r.body {
                // The acknowledgement promises the leader this node holds everything up to
                // `index`: its snapshot or its durable log must, whatever a crash now keeps.
                if index > snapshot && !d.store().record_durable(index) && self.violation.is_none() {
                    self.violation = Some(format!(
                        "acknowledged index {index} to node {} (term {}) but holds it durably neither in its log (last {}) nor its snapshot ({snapshot})",
                        r.to,
                        r.term,
                        d.store().last_index()
                    ));
                }
            }
        }
        self.messages.extend(messages);
    }

    fn answer(&mut self, _: &Driver<MemFs>, answers: Vec<(RequestId, Response)>) {
        self.answers.extend(answers);
    }

    fn start_sync(&mut self, _: &Driver<MemFs>, job: SyncJob<MemFs>) -> Result<(), FatalError> {
        // The newest job covers the older ones.
        self.sync = Some(job);
        Ok(())
    }

    fn start_snapshot(&mut self, job: SnapshotJob<MemFs>) -> Result<(), StorageError> {
        self.snapshot = Some(job);
        Ok(())
    }

    fn start_restore(&mut self, job: RestoreJob<MemFs>) {
        self.restore = Some(job);
    }

    fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    fn free(&mut self, entries: VecDeque<Entry>, files: Vec<PathBuf>) {
        drop(entries);
        for path in files {
            // As the server's background deletion: a leftover is removed at the next start.
            let _ = self.fs.remove_file(&path);
        }
    }
}
