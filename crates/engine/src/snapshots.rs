//! Snapshots from the driver's side (paper §7): taking one in the background, sending one to a
//! follower in chunks, and receiving one.
//!
//! # Taking a snapshot
//! When enough has been applied since the last snapshot ([`SnapshotConfig::entries`] entries or
//! [`SnapshotConfig::log_bytes`] bytes), or on demand, the driver captures a [`SnapshotJob`]: an O(1)
//! consistent view of the state machine (a persistent map shares structure with the live one) plus
//! the last included index, its term and the membership. Whoever runs the driver executes the job
//! wherever it likes — a background thread in the server, inline at a random later virtual time in
//! the simulator — while writes go on. The job only writes and fsyncs `snapshot.tmp`; the driver then
//! installs it (rename + directory sync, [`storage::install_snapshot`]) and only after that drops the
//! log prefix, keeping [`SnapshotConfig::keep_entries`] entries behind it for followers that lag a
//! little. A crash anywhere leaves either the old snapshot with the full log, or the new one.
//!
//! # Sending a snapshot (leader)
//! The core asks for one when a follower needs entries that were compacted away. A [`Transfer`] sends
//! the raw bytes of the current snapshot file in chunks of [`SnapshotConfig::chunk_size`], at most
//! [`SnapshotConfig::window`] chunks unacknowledged (flow control). The follower acknowledges how
//! many bytes it holds; a lost chunk shows up as a gap (the follower reports the offset it expects)
//! or as silence (after [`SnapshotConfig::retransmit_ticks`] the leader resends from the last
//! acknowledged byte), so a transfer survives lost chunks and reconnects and resumes where it was.
//! A transfer with no acknowledgement for [`SnapshotConfig::abort_ticks`] is abandoned and reported
//! to the core, which asks again. If the leader's snapshot file changes meanwhile, the transfer
//! restarts with the new one.
//!
//! # Receiving a snapshot (follower)
//! An [`Incoming`] transfer appends the chunks to `snapshot.recv`, strictly in order. When complete
//! the file is renamed to `snapshot.restore` and handed out as a [`RestoreJob`]: the expensive part
//! (fsync, reading the whole file back and verifying header, trailer and checksums, then decoding
//! the state machine image into a [`KvStore`]) runs wherever the host likes (a background thread
//! in the server, a random later virtual time in the simulator), like a [`SnapshotJob`], because a
//! 100 MB image takes the best part of a second and the server's node loop shares its thread with
//! the node's sockets. Its outcome ([`Restored`]) comes back as an input; only then is the file
//! installed and the state machine replaced, after the driver checked that the result still
//! applies (same incarnation and job, same term, not a leader, not caught up by entries
//! meanwhile, no newer snapshot begun). A partial or damaged snapshot never replaces good state.
//! Chunks are accepted only from a sender in the receiver's current term, so a snapshot's term
//! never exceeds the node's term.
//!
//! Invariants:
//! - The durable snapshot's index only grows; the log prefix is dropped only up to an index a durable
//!   snapshot covers.
//! - A follower installs a snapshot only if it is newer than everything it applied.
//! - At most one restore job exists at a time; it owns `snapshot.restore` until its outcome is
//!   handed back (a newer snapshot completed meanwhile waits for it).

use std::path::PathBuf;

use raft::{Index, NodeId, Term};
use storage::{FileSystem, SnapshotMeta, SnapshotWriter, StorageError, SNAPSHOT_TMP};

use crate::kv::{KvStore, SnapshotView};

/// Snapshot settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Take a snapshot once this many entries were applied since the last one (0: never by count).
    pub entries: u64,
    /// Take a snapshot once this many bytes of entries were applied since the last one (0: never by
    /// size).
    pub log_bytes: u64,
    /// Entries kept in the log behind a snapshot, so a follower a little behind gets entries rather
    /// than a whole snapshot.
    pub keep_entries: u64,
    /// Bytes per InstallSnapshot chunk.
    pub chunk_size: usize,
    /// Chunks sent ahead of the follower's acknowledgement.
    pub window: usize,
    /// Without an acknowledgement for this many ticks, resend from the last acknowledged byte.
    pub retransmit_ticks: u64,
    /// Without an acknowledgement for this many ticks, give the transfer up (the core asks again).
    pub abort_ticks: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            entries: 100_000,
            log_bytes: 256 << 20,
            keep_entries: 5_000,
            chunk_size: 1 << 20,
            window: 4,
            retransmit_ticks: 50,
            abort_ticks: 500,
        }
    }
}

impl SnapshotConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.chunk_size == 0 || self.chunk_size > 16 << 20 {
            return Err(format!("snapshot chunk size must be 1 byte to 16 MiB, not {}", self.chunk_size));
        }
        if self.window == 0 {
            return Err("the snapshot window must be at least one chunk".into());
        }
        if self.retransmit_ticks == 0 || self.abort_ticks <= self.retransmit_ticks {
            return Err(format!(
                "need 0 < retransmit_ticks ({}) < abort_ticks ({})",
                self.retransmit_ticks, self.abort_ticks
            ));
        }
        Ok(())
    }
}

/// A snapshot to write: a consistent view of the state machine and what it covers. Run it anywhere
/// with [`SnapshotJob::run`], then hand the outcome to [`crate::Driver::snapshot_finished`].
pub struct SnapshotJob<F: FileSystem> {
    /// The file system.
    pub(crate) fs: F,
    /// The data directory.
    pub(crate) dir: PathBuf,
    /// What the snapshot covers.
    pub(crate) meta: SnapshotMeta,
    /// The state machine as of `meta.index`.
    pub(crate) view: SnapshotView,
    /// Whether to fsync.
    pub(crate) sync: bool,
}

/// A snapshot written to `snapshot.tmp` and synced, ready to be installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDone {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The file's length in bytes.
    pub len: u64,
}

impl<F: FileSystem> SnapshotJob<F> {
    /// The last index the snapshot covers.
    pub fn index(&self) -> Index {
        self.meta.index
    }

    /// Serializes the view into `snapshot.tmp` and syncs it. Does not install it.
    pub fn run(self) -> Result<SnapshotDone, StorageError> {
        let mut writer = SnapshotWriter::create(self.fs, &self.dir, SNAPSHOT_TMP, &self.meta, self.sync)?;
        let mut sink = Sink { writer: &mut writer, error: None };
        let written = self.view.write_to(&mut sink);
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
        written.map_err(|e| StorageError::io(self.dir.join(SNAPSHOT_TMP), e))?;
        let len = writer.finish()?;
        Ok(SnapshotDone { meta: self.meta, len })
    }
}

/// Adapts a [`SnapshotWriter`] to `std::io::Write`, keeping the storage error for the caller.
struct Sink<'a, F: FileSystem> {
    writer: &'a mut SnapshotWriter<F>,
    error: Option<StorageError>,
}

impl<F: FileSystem> std::io::Write for Sink<'_, F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.writer.write(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let text = e.to_string();
                self.error = Some(e);
                Err(std::io::Error::other(text))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A completely received snapshot to check and load: run it anywhere with [`RestoreJob::run`],
/// then hand the outcome to the driver as [`crate::Input::Restored`]. It touches only its own file
/// (`snapshot.restore`), which it removes if the snapshot is refused.
pub struct RestoreJob<F: FileSystem> {
    /// The driver's number for this job (a result that is not for the job it waits for is stale).
    pub(crate) ticket: u64,
    /// The file system (to remove a refused file).
    pub(crate) fs: F,
    /// The received file.
    pub(crate) receiver: storage::SnapshotReceiver<F>,
    /// The snapshot's last included index, as announced by the leader.
    pub(crate) index: Index,
    /// Its last included term, as announced.
    pub(crate) term: Term,
}

/// The outcome of a [`RestoreJob`].
pub struct Restored {
    /// The job's ticket.
    pub(crate) ticket: u64,
    /// The snapshot's meta and the state machine loaded from it, or why it was refused (the file
    /// is then removed).
    pub(crate) outcome: Result<(SnapshotMeta, KvStore), String>,
}

impl<F: FileSystem> RestoreJob<F> {
    /// The last index the snapshot covers.
    pub fn index(&self) -> Index {
        self.index
    }

    /// The job's ticket (the number its [`Restored`] carries).
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Syncs and verifies the received file and decodes its image. Does not install anything.
    pub fn run(self) -> Restored {
        let RestoreJob { ticket, fs, receiver, index, term } = self;
        let path = receiver.path().to_path_buf();
        let refuse = |why: String| {
            // (finish() removed the file itself when it failed.)
            let _ = fs.remove_file(&path);
            Err(why)
        };
        let outcome = match receiver.finish() {
            Err(e) => Err(format!("the received snapshot does not verify: {e}")),
            Ok((meta, _)) if meta.index != index || meta.term != term => refuse(format!(
                "the received snapshot covers {}/{}, not the announced {index}/{term}",
                meta.index, meta.term
            )),
            Ok((meta, data)) => match KvStore::restore(&data) {
                Ok(kv) if kv.applied_index() == index => Ok((meta, kv)),
                Ok(kv) => refuse(format!(
                    "the received snapshot's image is at index {}, not {index}",
                    kv.applied_index()
                )),
                Err(e) => refuse(format!("the received snapshot's image cannot be loaded: {e}")),
            },
        };
        Restored { ticket, outcome }
    }
}

impl Restored {
    /// The outcome of job `ticket` that could not run to its end (its thread panicked): the
    /// snapshot is refused, the leader told so.
    pub fn failed(ticket: u64, why: String) -> Restored {
        Restored { ticket, outcome: Err(why) }
    }

    /// The ticket of the job this is the outcome of.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// True if the snapshot verified and loaded.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match &self.outcome {
            Ok((meta, kv)) => format!("Ok({}/{}, {} keys)", meta.index, meta.term, kv.len()),
            Err(e) => format!("Err({e})"),
        };
        f.debug_struct("Restored").field("ticket", &self.ticket).field("outcome", &outcome).finish()
    }
}

/// Counters of snapshot work done by one driver since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots taken and installed locally.
    pub taken: u64,
    /// Snapshots received from a leader and installed.
    pub installed: u64,
    /// Snapshots sent to followers that installed them.
    pub sent: u64,
    /// Chunks sent (retransmissions included).
    pub chunks_sent: u64,
    /// Received snapshots refused (damaged or inconsistent).
    pub rejected: u64,
}

/// How a follower answers a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkStatus {
    /// It holds `received` bytes of the snapshot so far.
    Progress,
    /// The chunk did not start where expected: resend from `received`.
    Gap,
    /// The snapshot is installed (or the follower already had everything it covers).
    Installed,
    /// The complete snapshot failed verification and was thrown away: start over.
    Rejected,
}

/// Leader side: one snapshot being sent to one follower. It holds the snapshot file open (`file`)
/// and the driver reads each chunk from it when the window lets the chunk go, so starting a
/// transfer costs an `open` and a turn of the node loop reads at most a window of chunks (reading
/// a whole 119 MB snapshot at the start stalled a leader's loop for 428 ms, past the peers' idle
/// timeout). A newer local snapshot replacing the file never disturbs a transfer in progress: the
/// open handle still reads the file it was opened on (POSIX keeps an unlinked file's data for its
/// open handles; so does `MemFs` until a crash, which ends the driver too).
pub(crate) struct Transfer<H> {
    /// The snapshot being sent.
    pub index: Index,
    /// Its last included term.
    pub term: Term,
    /// The snapshot file, open.
    pub file: H,
    /// Length of the snapshot file.
    pub len: u64,
    /// Bytes the follower acknowledged holding.
    pub acked: u64,
    /// The offset of the next chunk to send.
    pub next: u64,
    /// Tick of the last acknowledgement (or of the start).
    pub last_ack: u64,
    /// Tick of the last (re)send from `acked`.
    pub last_rewind: u64,
    /// The offset of the last gap that caused a rewind.
    pub last_gap: Option<u64>,
}

impl<H> Transfer<H> {
    /// A transfer of the snapshot (`index`, `term`, open `file` of `len` bytes) starting at tick
    /// `now`.
    pub fn new(index: Index, term: Term, file: H, len: u64, now: u64) -> Self {
        Transfer {
            index,
            term,
            file,
            len,
            acked: 0,
            next: 0,
            last_ack: now,
            last_rewind: now,
            last_gap: None,
        }
    }

    /// The next chunk to send, if the window allows: (offset, length); the caller reads it from
    /// `file`.
    pub fn next_chunk(&mut self, config: &SnapshotConfig) -> Option<(u64, u64)> {
        let window = (config.window * config.chunk_size) as u64;
        if self.next >= self.len || self.next - self.acked >= window {
            return None;
        }
        let len = (self.len - self.next).min(config.chunk_size as u64);
        let offset = self.next;
        self.next += len;
        Some((offset, len))
    }

    /// Handles an acknowledgement of `received` bytes with `status`.
    pub fn acknowledge(&mut self, received: u64, status: ChunkStatus, now: u64) {
        self.last_ack = now;
        let received = received.min(self.len);
        if received < self.acked {
            // The follower lost its partial file (it restarted): follow it back.
            self.acked = received;
            self.next = received;
            self.last_gap = None;
            return;
        }
        self.acked = received;
        self.next = self.next.max(received);
        if status == ChunkStatus::Gap && received < self.next && self.last_gap != Some(received) {
            // A chunk was lost: resend from where the follower is. Later chunks already in flight
            // report the same gap; only the first report rewinds.
            self.next = received;
            self.last_gap = Some(received);
            self.last_rewind = now;
        }
    }

    /// Called every tick: resend from the last acknowledged byte after a silence; returns false if
    /// the transfer should be abandoned.
    pub fn tick(&mut self, now: u64, config: &SnapshotConfig) -> bool {
        if now.saturating_sub(self.last_ack) >= config.abort_ticks {
            return false;
        }
        let quiet = now.saturating_sub(self.last_ack.max(self.last_rewind));
        if quiet >= config.retransmit_ticks && self.next > self.acked {
            self.next = self.acked;
            self.last_rewind = now;
            self.last_gap = None;
        }
        true
    }
}

/// Follower side: one snapshot being received.
pub(crate) struct Incoming<F: FileSystem> {
    /// The sender.
    pub from: NodeId,
    /// The snapshot's last included index.
    pub index: Index,
    /// Its last included term.
    pub term: Term,
    /// Its total length.
    pub len: u64,
    /// The partial file.
    pub receiver: storage::SnapshotReceiver<F>,
    /// Tick of the last chunk taken (a receive that stops arriving is abandoned).
    pub last_chunk: u64,
}

/// What a follower does with a chunk, decided from its current state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkAction {
    /// Answer with this status and received count, do nothing else.
    Answer(ChunkStatus, u64),
    /// Start a new receive (dropping any other partial one), then append.
    Start,
    /// Append `data[skip..]` to the current receive.
    Append {
        /// Bytes of the chunk already held.
        skip: usize,
    },
}

/// Decides what to do with a chunk at `offset` of `data_len` bytes, for snapshot (`index`, `term`),
/// given what is being received (`current`: index, term, bytes held).
pub(crate) fn classify_chunk(
    current: Option<(Index, Term, u64)>,
    index: Index,
    term: Term,
    offset: u64,
    data_len: usize,
) -> ChunkAction {
    match current {
        Some((i, t, held)) if i == index && t == term => {
            if offset > held {
                ChunkAction::Answer(ChunkStatus::Gap, held)
            } else if offset + data_len as u64 <= held {
                ChunkAction::Answer(ChunkStatus::Progress, held) // a duplicate
            } else {
                ChunkAction::Append { skip: (held - offset) as usize }
            }
        }
        _ if offset == 0 => ChunkAction::Start,
        _ => ChunkAction::Answer(ChunkStatus::Gap, 0),
    }
}

impl<H> std::fmt::Debug for Transfer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("index", &self.index)
            .field("term", &self.term)
            .field("len", &self.len)
            .field("acked", &self.acked)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SnapshotConfig {
        SnapshotConfig {
            chunk_size: 10,
            window: 2,
            retransmit_ticks: 5,
            abort_ticks: 20,
            ..Default::default()
        }
    }

    #[test]
    fn transfer_sends_a_window_then_waits_for_acknowledgements() {
        let c = config();
        let mut t = Transfer::new(7, 2, (), 35, 0);
        assert_eq!(t.next_chunk(&c), Some((0, 10)));
        assert_eq!(t.next_chunk(&c), Some((10, 10)));
        assert_eq!(t.next_chunk(&c), None, "window full");
        t.acknowledge(10, ChunkStatus::Progress, 1);
        assert_eq!(t.next_chunk(&c), Some((20, 10)));
        t.acknowledge(30, ChunkStatus::Progress, 2);
        assert_eq!(t.next_chunk(&c), Some((30, 5)), "the last chunk is short");
        assert_eq!(t.next_chunk(&c), None, "everything sent");
    }

    #[test]
    fn a_gap_rewinds_once_and_silence_rewinds_after_the_retransmit_delay() {
        let c = config();
        let mut t = Transfer::new(7, 2, (), 100, 0);
        t.next_chunk(&c);
        t.next_chunk(&c);
        // Chunk 0 was lost: the follower reports a gap for chunk 10.
        t.acknowledge(0, ChunkStatus::Gap, 1);
        assert_eq!(t.next_chunk(&c), Some((0, 10)));
        t.acknowledge(0, ChunkStatus::Gap, 1); // the same gap reported again by a later chunk
        assert_eq!(t.next_chunk(&c), Some((10, 10)), "no second rewind for the same gap");
        // Silence: resend from the last acknowledged byte.
        assert!(t.tick(3, &c));
        assert_eq!(t.next_chunk(&c), None);
        assert!(t.tick(6, &c));
        assert_eq!(t.next_chunk(&c), Some((0, 10)));
        assert!(!t.tick(21, &c), "abandoned after abort_ticks without an acknowledgement");
    }

    #[test]
    fn a_follower_that_lost_its_partial_file_is_followed_back() {
        let c = config();
        let mut t = Transfer::new(7, 2, (), 100, 0);
        t.next_chunk(&c);
        t.acknowledge(10, ChunkStatus::Progress, 1);
        t.next_chunk(&c);
        t.next_chunk(&c);
        t.acknowledge(0, ChunkStatus::Progress, 2);
        assert_eq!(t.next_chunk(&c), Some((0, 10)));
    }

    #[test]
    fn chunks_are_taken_strictly_in_order() {
        use ChunkAction::*;
        assert_eq!(classify_chunk(None, 5, 1, 0, 10), Start);
        assert_eq!(classify_chunk(None, 5, 1, 10, 10), Answer(ChunkStatus::Gap, 0));
        assert_eq!(classify_chunk(Some((5, 1, 10)), 5, 1, 10, 10), Append { skip: 0 });
        assert_eq!(classify_chunk(Some((5, 1, 10)), 5, 1, 5, 10), Append { skip: 5 });
        assert_eq!(classify_chunk(Some((5, 1, 10)), 5, 1, 0, 10), Answer(ChunkStatus::Progress, 10));
        assert_eq!(classify_chunk(Some((5, 1, 10)), 5, 1, 20, 10), Answer(ChunkStatus::Gap, 10));
        // A different snapshot replaces a partial one only from its first byte.
        assert_eq!(classify_chunk(Some((5, 1, 10)), 6, 1, 0, 10), Start);
        assert_eq!(classify_chunk(Some((5, 1, 10)), 6, 1, 10, 10), Answer(ChunkStatus::Gap, 0));
    }
}
