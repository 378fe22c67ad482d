//! [`LogStore`]: the durable Raft log (a segmented write-ahead log) and hard state of one node.
//!
//! The Raft core keeps the log in memory; this store only makes it durable and hands it back at
//! recovery ([`LogStore::open`] returns every entry). The directory holds:
//! - `NNNNNNNNNNNNNNNNNNNN.wal`: log segments, named after their first index (see [`crate::segment`]
//!   and the byte format in [`crate::record`]);
//! - `hardstate`: term and vote, replaced atomically (see [`crate::hard_state`]);
//! - `snapshot` (and its temporaries): the state machine image the log continues (see
//!   [`crate::snapshot`]; written and read by the caller, not by this type);
//! - `LOCK`: used by [`crate::DirLock`] (not by this type).
//!
//! # Durability contract
//! - [`LogStore::append`] only buffers (records are written to the OS when the buffer exceeds
//!   [`LogOptions::write_buffer_size`], never synced). [`LogStore::sync`] makes everything appended so
//!   far durable with one fdatasync of the active segment: callers get group commit by appending a
//!   batch and syncing once. Entries appended but not synced may or may not survive a crash; if some
//!   do, they are a prefix of them.
//! - [`LogStore::truncate_suffix`] and [`LogStore::compact`] are durable on return, as is
//!   [`LogStore::set_hard_state`].
//! - [`LogStore::start_sync`] is `sync` split in two: it writes the buffer and returns a
//!   [`PendingSync`] that the caller runs wherever it likes (a thread of its own), so that appending
//!   goes on while the disk works. Everything appended before `start_sync` is durable once that
//!   `PendingSync` (or any later one, or [`LogStore::sync`]) has run successfully; entries in
//!   earlier segments already are (a segment is synced before the next one starts). A failed
//!   `PendingSync` must be treated like a failed `sync`: the store cannot know of it, so the
//!   caller must stop using the store and reopen it.
//! - With [`LogOptions::sync`] false nothing is ever fsynced (`--unsafe-no-fsync`): data survives a
//!   process crash but not a power failure or kernel crash.
//!
//! # Preallocation
//! fdatasync of a file that grew must also write its inode (the new size): a second I/O per sync.
//! So the active segment is kept filled with zeros ([`LogOptions::preallocate`] bytes, written but
//! not synced on their own) ahead of its records: most syncs then only overwrite blocks the file
//! already has, and the size changes once per chunk of zeros (measured on ext4: fdatasync p50
//! 0.095 vs 0.13-0.14 ms alone, 0.148 vs 0.184 ms with three processes syncing at once). A segment
//! therefore ends with zeros after its last record (sealed segments too); recovery reads a zero
//! tail as the clean end of the segment (no record starts with zeros: its header checksum would
//! not match), and records are written at the segment's logical end, not at the file's length.
//!
//! # Crash safety of truncation
//! Overwriting a conflicting suffix (§5.3) must never leave a mix of old and new entries: if the
//! file were cut but the cut not yet durable, new records written at the same offsets could later
//! sit in front of surviving old records with consecutive indexes, resurrecting entries that were
//! truncated. So `truncate_suffix` first removes whole later segments newest first, syncing the
//! directory after each removal (so no gap can appear whatever order the file system persists
//! them), then cuts the segment that holds `from` and fdatasyncs it (which persists the new size)
//! before returning; only then can new entries be appended. After a crash during truncation the log
//! is the old log minus some suffix of the entries being removed: never anything new mixed in.
//!
//! # Segment invariants (see [`crate::segment`])
//! Before the first record goes into a new segment, the previous one is synced and the new one's
//! header and directory entry are durable, so only the last segment can be torn by a crash.
//! Compaction removes whole segments oldest first, syncing the directory after each, so the
//! surviving segments are always contiguous. Recovery cuts a torn tail of the last segment with a
//! warning and refuses everything else (checksum failure elsewhere, a gap, a missing segment).
//!
//! # Snapshots: compaction, reset, and opening after a snapshot
//! Entries covered by a durable snapshot may go. The two ways, and why a crash is harmless:
//! - [`LogStore::compact`] after taking a snapshot: the snapshot is installed (durable) first, then
//!   whole segments are removed oldest first with a directory sync after each, so a crash leaves a
//!   contiguous suffix of the log that still starts at or before `snapshot index + 1`.
//! - [`LogStore::reset`] after installing a snapshot the log does not continue (received from the
//!   leader): every segment is removed newest first with a directory sync after each (a crash
//!   leaves a contiguous *prefix* of the old log, never a gap), the write buffer is dropped, then an
//!   empty segment whose first index is `next_index` is created durably. A crash in the middle
//!   leaves a prefix of the old log, or no segment at all, or the new empty segment (possibly with a
//!   torn header, which recovery removes and recreates). The caller, seeing the new snapshot and a
//!   log that does not hold the snapshot's last entry with the snapshot's term, resets again.
//!
//! - [`LogStore::compact_deferred`]: like `compact`, but the caller deletes the files later, in any
//!   order and without syncing; segments that survive a crash are recognised by `open_after` as
//!   covered by the snapshot (a later segment starts at or below `snapshot_index + 1`) and deleted.
//!
//! [`LogStore::open_after`] opens a log knowing that entries `<= snapshot_index` are in a durable
//! snapshot: no segment at all is then normal (a crash during `reset` can leave none, even with a
//! hard state) and an empty log starting at `snapshot_index + 1` is created; a log starting after `snapshot_index + 1` is refused, since the
//! entries in between exist nowhere. It still returns every entry found, covered ones included.
//! [`LogStore::open`] is `open_after(.., 0)`: no snapshot is known, and it accepts a log starting at
//! any index (it cannot tell a compacted log from a damaged one: a caller that has no snapshot and
//! gets `first_index > 1` should refuse to start).
//!
//! # Errors
//! Any I/O failure while changing files poisons the store: every later call returns
//! [`StorageError::Poisoned`] (after a failed fsync the kernel may have dropped the dirty pages, so
//! retrying could report success for data that is gone). Reopen to continue from what is durable.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{Entry, HardState};

use crate::error::{Result, StorageError};
use crate::fs::{read_all, FileSystem, FsFile, SyncHandle};
use crate::hard_state;
use crate::record::{encode_record, record_len, MAX_PAYLOAD_LEN};
use crate::segment::{self, parse_segment_name, Scanned, Segment};

/// Options of a [`LogStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// A new segment is started when appending a record would make the active segment larger than
    /// this many bytes (a segment always takes at least one record, however large).
    pub segment_size: u64,
    /// Whether to fsync at all. `false` is `--unsafe-no-fsync`: fast, and unsafe on power loss.
    pub sync: bool,
    /// Appended records are handed to the OS (written, not synced) once this many bytes are buffered.
    pub write_buffer_size: usize,
    /// Bytes of zeros kept written ahead of the records in the active segment (0: none; see
    /// "Preallocation" in the module docs). At most `segment_size` per segment.
    pub preallocate: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_size: 64 << 20, sync: true, write_buffer_size: 1 << 20, preallocate: 1 << 20 }
    }
}

/// What [`LogStore::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written (the default, term 0 and no vote, if none ever was).
    pub hard_state: HardState,
    /// Index of the first entry kept: 1 if never compacted. `entries` starts here (if not empty).
    pub first_index: u64,
    /// Every entry in the log, in index order, consecutive from `first_index`. Their payloads are
    /// zero-copy slices of one read buffer per segment, which stays allocated while any entry of that
    /// segment is alive (copy an entry's data if you keep a few of them for a long time).
    pub entries: Vec<Entry>,
    /// Set if a torn tail (from a crash during a write) was cut off the last segment.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail cut off at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file that was cut (or removed, if its header was incomplete).
    pub path: PathBuf,
    /// The length the file was cut to.
    pub offset: u64,
    /// How many bytes were dropped.
    pub dropped: u64,
    /// Why the tail could not be a complete record.
    pub reason: String,
}

/// A sync of the log started by [`LogStore::start_sync`], to be run anywhere (see the module docs).
#[derive(Debug)]
pub struct PendingSync<H> {
    /// Syncs the segment that was active when the sync was started.
    handle: H,
    /// That segment (for error messages).
    path: PathBuf,
}

/// The [`PendingSync`] of a [`LogStore`] over file system `F`.
pub type LogSync<F> = PendingSync<<<F as FileSystem>::File as FsFile>::SyncHandle>;

impl<H: SyncHandle> PendingSync<H> {
    /// Makes everything appended before [`LogStore::start_sync`] durable (one fdatasync). An error
    /// means the store's durability is lost: stop using it (see the module docs).
    pub fn run(&self) -> Result<()> {
        self.handle.sync().map_err(|e| StorageError::io(&self.path, e))
    }
}

/// The durable log and hard state of one node, in one directory, over file system `F`.
#[derive(Debug)]
pub struct LogStore<F: FileSystem> {
    /// The file system.
    fs: F,
    /// The data directory.
    dir: PathBuf,
    /// Options.
    opts: LogOptions,
    /// The segments in log order; never empty. The last one is the active segment, appended to.
    segments: VecDeque<Segment<F::File>>,
    /// Encoded records appended to the active segment but not yet written to its file; they sit at
    /// file offsets `written .. index.end` of the active segment.
    buf: Vec<u8>,
    /// True if the active segment has bytes (written or buffered) that are not yet synced, nor
    /// covered by a [`PendingSync`].
    unsynced: bool,
    /// True if a [`PendingSync`] was handed out since the last [`LogStore::sync`] (which then syncs
    /// even if nothing was appended since: it cannot know whether that one has run).
    handed_out: bool,
    /// The current (durable) hard state.
    hard_state: HardState,
    /// Set by an I/O failure while changing files; then every call fails.
    poisoned: bool,
}

impl<F: FileSystem> LogStore<F> {
    /// Opens (creating if needed) the log in `dir`, recovering and verifying everything in it.
    ///
    /// A torn tail of the last segment is cut off (logged with `tracing::warn!` and reported in
    /// [`Recovered::torn_tail`]); any other damage is refused with an error naming the file and byte
    /// offset. Reads every segment with one sequential read each.
    pub fn open(fs: F, dir: &Path, opts: LogOptions) -> Result<(Self, Recovered)> {
        Self::open_after(fs, dir, opts, 0)
    }

    /// Like [`LogStore::open`], knowing that the entries `<= snapshot_index` are covered by a durable
    /// snapshot (0: none). Then no segment at all is not an error, even with a hard state: an empty
    /// log whose first index is `snapshot_index + 1` is created. A log whose first index is greater
    /// than `snapshot_index + 1` is refused as corrupt (entries would be missing). Every entry found
    /// is returned, including those `<= snapshot_index`: the caller drops them and checks that the
    /// entry at `snapshot_index`, if present, has the snapshot's term (else it calls
    /// [`LogStore::reset`]). See the module docs.
    pub fn open_after(fs: F, dir: &Path, opts: LogOptions, snapshot_index: u64) -> Result<(Self, Recovered)> {
        fs.create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let stored_hard_state = hard_state::read(&fs, dir)?;
        let mut bases = Vec::new();
        for name in fs.list_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            match parse_segment_name(&name) {
                None => {}
                Some(Ok(base)) if base > 0 => bases.push(base),
                Some(_) => {
                    return Err(StorageError::corrupt(dir.join(&name), 0, "malformed segment file name"))
                }
            }
        }
        bases.sort_unstable();
        if snapshot_index > 0 {
            // Segments followed by one that starts at or below `snapshot_index + 1` hold only
            // entries the snapshot covers. They are left behind by `compact_deferred` when the
            // process stops before deleting them (in any order, so with gaps between them): they
            // are deleted here, never read.
            let live_from = bases.iter().rposition(|&b| b <= snapshot_index.saturating_add(1)).unwrap_or(0);
            for &stale in &bases[..live_from] {
                let path = dir.join(segment::segment_name(stale));
                tracing::info!(path = %path.display(), "removing a log segment the snapshot covers");
                fs.remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            }
            bases.drain(..live_from);
        }
        if let Some(&first) = bases.first() {
            if snapshot_index > 0 && first > snapshot_index.saturating_add(1) {
                return Err(StorageError::corrupt(
                    dir.join(segment::segment_name(first)),
                    0,
                    format!(
                        "the log starts at index {first} but the snapshot only covers up to {snapshot_index}: \
                         entries {}..{} are missing",
                        snapshot_index + 1,
                        first - 1
                    ),
                ));
            }
        }
        if bases.is_empty() && stored_hard_state.is_some() && snapshot_index == 0 {
            return Err(StorageError::corrupt(
                dir,
                0,
                "a hard state file exists but no log segment does: the log files are missing",
            ));
        }

        let mut segments: VecDeque<Segment<F::File>> = VecDeque::new();
        let mut entries = Vec::new();
        let mut torn_tail = None;
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let path = dir.join(segment::segment_name(base));
            let mut file = fs.open(&path).map_err(|e| StorageError::io(&path, e))?;
            let data = Bytes::from(read_all(&file).map_err(|e| StorageError::io(&path, e))?);
            if let Some(prev) = segments.back() {
                let expected = prev.index.last_index() + 1;
                if base != expected {
                    return Err(StorageError::corrupt(
                        &path,
                        0,
                        format!(
                            "log is not contiguous: {} ends at index {}, but this segment starts at index {base} \
                             (a segment file is missing or was altered)",
                            prev.path.display(),
                            expected - 1,
                        ),
                    ));
                }
            }
            match segment::scan(&path, &data, base, is_last, &mut entries)? {
                Scanned::TornHeader => {
                    tracing::warn!(
                        path = %path.display(), len = data.len(),
                        "removing last log segment whose header was never completely written (crash during creation)"
                    );
                    drop(file);
                    fs.remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
                    if opts.sync {
                        fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
                    }
                    torn_tail = Some(TornTail {
                        path: path.clone(),
                        offset: 0,
                        dropped: data.len() as u64,
                        reason: "incomplete segment header".into(),
                    });
                    if segments.is_empty() {
                        segments.push_back(segment::create(&fs, dir, base, &opts)?);
                    }
                }
                Scanned::Segment(scan) => {
                    if let Some((reason, dropped)) = scan.torn {
                        tracing::warn!(
                            path = %path.display(), offset = scan.index.end, dropped, reason = %reason,
                            "cutting torn tail off the last log segment (crash during a write)"
                        );
                        file.truncate(scan.index.end).map_err(|e| StorageError::io(&path, e))?;
                        if opts.sync {
                            file.sync().map_err(|e| StorageError::io(&path, e))?;
                        }
                        torn_tail =
                            Some(TornTail { path: path.clone(), offset: scan.index.end, dropped, reason });
                    }
                    let written = scan.index.end;
                    segments.push_back(Segment { path, file, index: scan.index, written });
                }
            }
        }
        if segments.is_empty() {
            let base = snapshot_index.saturating_add(1);
            if snapshot_index > 0 {
                tracing::info!(
                    dir = %dir.display(), first_index = base,
                    "no log segment: starting an empty log right after the snapshot"
                );
            }
            segments.push_back(segment::create(&fs, dir, base, &opts)?);
        }

        let hard_state = stored_hard_state.unwrap_or_default();
        let first_index = segments.front().map_or(1, |s| s.index.base);
        let store = LogStore {
            fs,
            dir: dir.to_path_buf(),
            opts,
            segments,
            buf: Vec::new(),
            unsynced: false,
            handed_out: false,
            hard_state,
            poisoned: false,
        };
        Ok((store, Recovered { hard_state, first_index, entries, torn_tail }))
    }

    /// Index of the first entry kept (entries below it were compacted away).
    pub fn first_index(&self) -> u64 {
        self.segments.front().map_or(1, |s| s.index.base)
    }

    /// Index of the last entry, or `first_index() - 1` if the log is empty.
    pub fn last_index(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.index.last_index())
    }

    /// The current hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.opts
    }

    /// Number of segment files (for tests and statistics).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check(&self) -> Result<()> {
        if self.poisoned {
            Err(StorageError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Runs a file-changing step; any failure poisons the store.
    fn guarded<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check()?;
        let result = step(self);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Appends `entries`, which must be consecutive and start at `last_index() + 1`. Buffered: call
    /// [`LogStore::sync`] to make them durable. On an invalid argument nothing is appended.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check()?;
        let next = self.last_index() + 1;
        for (i, e) in entries.iter().enumerate() {
            if e.index != next + i as u64 {
                return Err(StorageError::InvalidArgument(format!(
                    "append must be contiguous: expected index {}, got {}",
                    next + i as u64,
                    e.index
                )));
            }
            if e.data.len() > MAX_PAYLOAD_LEN {
                return Err(StorageError::InvalidArgument(format!(
                    "entry {} is {} bytes, more than the maximum {MAX_PAYLOAD_LEN}",
                    e.index,
                    e.data.len()
                )));
            }
        }
        self.guarded(|s| {
            for e in entries {
                s.append_one(e)?;
            }
            Ok(())
        })
    }

    fn append_one(&mut self, entry: &Entry) -> Result<()> {
        let len = record_len(entry);
        let needs_rollover = self
            .segments
            .back()
            .is_some_and(|s| s.index.count() > 0 && s.index.end + len > self.opts.segment_size);
        if needs_rollover {
            self.rollover()?;
        }
        encode_record(&mut self.buf, entry);
        if let Some(active) = self.segments.back_mut() {
            active.index.push(len);
        }
        self.unsynced = true;
        if self.buf.len() >= self.opts.write_buffer_size {
            self.flush_buffer()?;
        }
        Ok(())
    }

    /// Hands the buffered records to the OS (no sync).
    fn flush_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let active = self.segments.back_mut().ok_or_else(no_segment)?;
        active.file.write_at(&self.buf, active.written).map_err(|e| StorageError::io(&active.path, e))?;
        active.written += self.buf.len() as u64;
        self.buf.clear();
        segment::preallocate(active, &self.opts)
    }

    /// Seals the active segment (written and synced in full) and starts a new one.
    fn rollover(&mut self) -> Result<()> {
        self.flush_buffer()?;
        let next = self.last_index() + 1;
        if self.opts.sync {
            let active = self.segments.back_mut().ok_or_else(no_segment)?;
            active.file.sync().map_err(|e| StorageError::io(&active.path, e))?;
        }
        let seg = segment::create(&self.fs, &self.dir, next, &self.opts)?;
        self.segments.push_back(seg);
        self.handed_out = false;
        Ok(())
    }

    /// Makes everything appended so far durable: writes the buffer and issues one fdatasync of the
    /// active segment (none if nothing changed since the last sync, or if `sync` is off).
    pub fn sync(&mut self) -> Result<()> {
        self.guarded(|s| {
            s.flush_buffer()?;
            if (s.unsynced || s.handed_out) && s.opts.sync {
                let active = s.segments.back_mut().ok_or_else(no_segment)?;
                active.file.sync().map_err(|e| StorageError::io(&active.path, e))?;
            }
            s.unsynced = false;
            s.handed_out = false;
            Ok(())
        })
    }

    /// Like [`LogStore::sync`], but only writes the buffer: the fdatasync is returned, to be run by
    /// the caller, off its hot path (see the module docs). `None` if there is nothing to sync (or
    /// `sync` is off).
    pub fn start_sync(&mut self) -> Result<Option<LogSync<F>>> {
        self.guarded(|s| {
            s.flush_buffer()?;
            let pending = if s.unsynced && s.opts.sync {
                let active = s.segments.back().ok_or_else(no_segment)?;
                let handle = active.file.sync_handle().map_err(|e| StorageError::io(&active.path, e))?;
                s.handed_out = true;
                Some(PendingSync { handle, path: active.path.clone() })
            } else {
                None
            };
            s.unsynced = false;
            Ok(pending)
        })
    }

    /// Removes every entry with index `>= from` (a leader overwriting conflicting entries, §5.3).
    /// Durable on return (see the module docs for why this must not wait for the next sync).
    /// A no-op if `from > last_index()`; an invalid argument if `from < first_index()` (compacted
    /// entries are committed and can never conflict).
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        self.check()?;
        if from > self.last_index() {
            return Ok(());
        }
        if from < self.first_index() {
            return Err(StorageError::InvalidArgument(format!(
                "cannot truncate from index {from}: entries before {} are compacted",
                self.first_index()
            )));
        }
        self.guarded(|s| {
            // Only buffered records are affected: drop them from the buffer, no I/O needed.
            if let Some(active) = s.segments.back_mut() {
                if from >= active.index.base {
                    if let Some((offset, _)) = active.index.locate(from) {
                        if offset >= active.written {
                            active.index.truncate_from(from);
                            s.buf.truncate((offset - active.written) as usize);
                            return Ok(());
                        }
                    }
                }
            }
            s.buf.clear();
            while s.segments.len() > 1 && s.segments.back().is_some_and(|seg| seg.index.base > from) {
                if let Some(seg) = s.segments.pop_back() {
                    s.remove_segment_file(seg)?;
                }
            }
            let active = s.segments.back_mut().ok_or_else(no_segment)?;
            let cut = active.index.truncate_from(from);
            active.file.truncate(cut).map_err(|e| StorageError::io(&active.path, e))?;
            active.written = cut;
            if s.opts.sync {
                active.file.sync().map_err(|e| StorageError::io(&active.path, e))?;
            }
            s.unsynced = false;
            s.handed_out = false;
            Ok(())
        })
    }

    /// Allows dropping entries `<= upto` (they are in a snapshot): removes, oldest first, every
    /// segment whose entries are all `<= upto`, except the active one. Entries in a partly covered
    /// segment stay, so afterwards `first_index() <= upto + 1`. Durable on return.
    pub fn compact(&mut self, upto: u64) -> Result<()> {
        self.guarded(|s| {
            while s.segments.len() > 1
                && s.segments.get(1).is_some_and(|next| next.index.base <= upto.saturating_add(1))
            {
                if let Some(seg) = s.segments.pop_front() {
                    s.remove_segment_file(seg)?;
                }
            }
            Ok(())
        })
    }

    /// Discards the whole log and leaves an empty one whose next entry is `next_index` (after
    /// installing a snapshot the log does not continue). Durable on return: afterwards
    /// `first_index() == next_index` and `last_index() == next_index - 1`. Removes the segments
    /// newest first with a directory sync after each, then creates the new segment durably; see the
    /// module docs for what a crash in the middle leaves. The hard state is unchanged.
    pub fn reset(&mut self, next_index: u64) -> Result<()> {
        self.check()?;
        if next_index == 0 {
            return Err(StorageError::InvalidArgument("cannot reset the log to next index 0".into()));
        }
        self.guarded(|s| {
            s.buf.clear();
            s.unsynced = false;
            s.handed_out = false;
            while let Some(seg) = s.segments.pop_back() {
                s.remove_segment_file(seg)?;
            }
            let seg = segment::create(&s.fs, &s.dir, next_index, &s.opts)?;
            s.segments.push_back(seg);
            Ok(())
        })
    }

    /// Like [`LogStore::compact`], but leaves the files to the caller: the segments whose entries
    /// are all `<= upto` (except the active one) are dropped from the store and their paths
    /// returned, oldest first. Delete them whenever and wherever convenient (deleting a 64 MiB file
    /// frees its blocks: tens of milliseconds) and in any order, without syncing: a segment that
    /// survives a crash is recognised as covered by the snapshot and removed by
    /// [`LogStore::open_after`]. Only for entries covered by a durable snapshot (`upto` <= its index).
    pub fn compact_deferred(&mut self, upto: u64) -> Result<Vec<PathBuf>> {
        self.check()?;
        let mut paths = Vec::new();
        while self.segments.len() > 1
            && self.segments.get(1).is_some_and(|next| next.index.base <= upto.saturating_add(1))
        {
            if let Some(seg) = self.segments.pop_front() {
                paths.push(seg.path);
            }
        }
        Ok(paths)
    }

    /// Deletes a segment's file and (with `sync`) makes the removal durable before anything else.
    fn remove_segment_file(&self, seg: Segment<F::File>) -> Result<()> {
        let Segment { path, file, .. } = seg;
        drop(file);
        self.fs.remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        if self.opts.sync {
            self.fs.sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        }
        Ok(())
    }

    /// Replaces the hard state atomically; durable on return. A no-op if unchanged.
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.check()?;
        if hs == self.hard_state {
            return Ok(());
        }
        self.guarded(|s| {
            hard_state::write(&s.fs, &s.dir, &hs, s.opts.sync)?;
            s.hard_state = hs;
            Ok(())
        })
    }

    /// Reads entry `index` back (from the write buffer or with one positioned read), verifying its
    /// checksums. `None` if it is not in the log (compacted or past the end).
    pub fn entry(&self, index: u64) -> Result<Option<Entry>> {
        Ok(self.entries(index, index.saturating_add(1))?.pop())
    }

    /// Reads entries `lo .. hi` back (clamped to what the log holds), with one read per segment.
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        self.check()?;
        let lo = lo.max(self.first_index());
        let hi = hi.min(self.last_index() + 1);
        let mut out = Vec::with_capacity(hi.saturating_sub(lo) as usize);
        let mut next = lo;
        while next < hi {
            let pos = self.segments.partition_point(|s| s.index.base <= next).saturating_sub(1);
            let seg = self.segments.get(pos).ok_or_else(no_segment)?;
            let seg_hi = hi.min(seg.index.last_index() + 1);
            let (start, _) = seg.index.locate(next).ok_or_else(no_segment)?;
            let end = seg.index.locate(seg_hi - 1).map(|(o, l)| o + l).ok_or_else(no_segment)?;
            let is_active = pos + 1 == self.segments.len();
            let bytes = if is_active && start >= seg.written {
                let from = (start - seg.written) as usize;
                self.buf[from..(end - seg.written) as usize].to_vec()
            } else {
                // Records may straddle the file/buffer boundary only in the active segment.
                let file_end = end.min(seg.written);
                let mut bytes = vec![0u8; (file_end - start) as usize];
                seg.file.read_exact_at(&mut bytes, start).map_err(|e| StorageError::io(&seg.path, e))?;
                if end > file_end {
                    bytes.extend_from_slice(&self.buf[..(end - file_end) as usize]);
                }
                bytes
            };
            for index in next..seg_hi {
                let (offset, len) = seg.index.locate(index).ok_or_else(no_segment)?;
                let at = (offset - start) as usize;
                let record = &bytes[at..at + len as usize];
                out.push(segment::decode_in_place(&seg.path, record, index, offset)?);
            }
            next = seg_hi;
        }
        Ok(out)
    }
}

/// The "segments is never empty" invariant was broken: a bug, reported instead of panicking.
fn no_segment() -> StorageError {
    StorageError::io(PathBuf::new(), io::Error::other("internal error: log index inconsistent"))
}

impl LogStore<crate::MemFs> {
    /// True if entry `index` would survive a power failure right now, whatever the crash keeps:
    /// its segment's name is durable and the record decodes from the segment's synced bytes (the
    /// simulator checks with it that no acknowledgement claims more than the disk holds).
    pub fn record_durable(&self, index: u64) -> bool {
        if index < self.first_index() || index > self.last_index() {
            return false;
        }
        let Some(pos) = self.segments.partition_point(|s| s.index.base <= index).checked_sub(1) else {
            return false;
        };
        let Some(seg) = self.segments.get(pos) else { return false };
        let Some((offset, len)) = seg.index.locate(index) else { return false };
        match self.fs.durable_read(&seg.path, offset, offset + len) {
            Some(bytes) => segment::decode_in_place(&seg.path, &bytes, index, offset).is_ok(),
            None => false,
        }
    }
}
