//! storage: the durable state of a raft-kv node.
//!
//! - [`LogStore`]: a segmented, checksummed, append-only write-ahead log of Raft entries with an
//!   in-memory index, group commit (one fdatasync per [`LogStore::sync`]), crash-safe suffix
//!   truncation, prefix compaction, and the atomically replaced hard state (term, vote). Recovery
//!   ([`LogStore::open`]) cuts a torn tail and refuses any other damage, naming file and offset.
//! - Snapshots ([`snapshot`]): the state machine image up to a log index, written
//!   ([`SnapshotWriter`]) or received ([`SnapshotReceiver`]) beside the log, verified end to end, and
//!   installed atomically ([`install_snapshot`]); then the log is compacted ([`LogStore::compact`]) or
//!   replaced ([`LogStore::reset`]), and reopened with [`LogStore::open_after`].
//! - [`DirLock`]: an exclusive lock on a data directory.
//! - [`FileSystem`]: the small interface all of the above is written against, with [`StdFs`] (real
//!   files) and [`MemFs`] (an in-memory disk that simulates power failures, for the simulator).
//!
//! Typical use by a node:
//! ```no_run
//! use storage::{DirLock, LogOptions, LogStore, StdFs};
//! # fn main() -> Result<(), storage::StorageError> {
//! let dir = std::path::Path::new("/var/lib/raft-kv/A");
//! let _lock = DirLock::acquire(dir)?; // held for the life of the node
//! let (mut log, recovered) = LogStore::open(StdFs, dir, LogOptions::default())?;
//! // hand recovered.hard_state / first_index / entries to the Raft core, then for every Ready:
//! // log.truncate_suffix(..)?; log.append(&entries)?; log.set_hard_state(hs)?; log.sync()?;
//! # let _ = (&mut log, recovered); Ok(()) }
//! ```
//!
//! The crate has no async runtime and no global state; everything the simulator runs is
//! deterministic (ordered maps, seeded [`SplitMix64`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod fs;
pub mod hard_state;
mod index;
pub mod lock;
pub mod log;
pub mod memfs;
pub mod record;
pub mod rng;
pub mod segment;
pub mod snapshot;

pub use error::StorageError;
pub use fs::{FileSystem, FsFile, StdFile, StdFs, StdSyncHandle, SyncHandle};
pub use lock::DirLock;
pub use log::{LogOptions, LogStore, LogSync, PendingSync, Recovered, TornTail};
pub use memfs::{FaultOp, MemFile, MemFs, MemFsStats, MemSyncHandle};
pub use rng::SplitMix64;
pub use snapshot::{
    install_snapshot, read_snapshot, read_snapshot_chunk, read_snapshot_file, read_snapshot_meta,
    remove_snapshot_temporaries, verify_snapshot_file, SnapshotMeta, SnapshotReceiver, SnapshotWriter,
    SNAPSHOT_FILE, SNAPSHOT_OLD, SNAPSHOT_RECV, SNAPSHOT_RESTORE, SNAPSHOT_TMP,
};
