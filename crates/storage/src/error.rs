//! The one error type of the storage crate.
//!
//! Every variant names the file (and, for corruption, the byte offset) it is about, so an operator
//! reading a refusal to start knows exactly what to look at. The store never "repairs" anything
//! except a torn tail (see [`crate::log`]); everything else surfaces here.
//!
//! Two classes matter to the caller:
//! - [`StorageError::InvalidArgument`] is a caller bug (e.g. a non-contiguous append); the store is
//!   unchanged and stays usable.
//! - Everything else means the disk or the files cannot be trusted; after an I/O error in a write or
//!   sync the store is poisoned ([`StorageError::Poisoned`] on every later call) because the kernel may
//!   already have dropped the dirty pages whose write failed ("fsyncgate"): the node must stop and
//!   recover from what is on disk.

use std::io;
use std::path::PathBuf;

/// Errors returned by the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system level I/O error on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the failed operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file's content is damaged or inconsistent (bad checksum, bad magic, gap in the log...).
    #[error("corrupt data in {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file (or the directory, for a missing file).
        path: PathBuf,
        /// Byte offset in `path` where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a different, incompatible format version.
    #[error("{path}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// Another process holds the lock on the data directory.
    #[error(
        "data directory {dir} is locked by another process{holder} \
         (is another raft-kv node running on this directory?)"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// A description of the holder (e.g. " (pid 1234)"), or empty if unknown.
        holder: String,
    },
    /// The caller asked for something the log cannot do (a bug in the caller); nothing changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier write or sync failed; the in-memory state may be ahead of the disk and the store
    /// refuses all further work. Reopen it to recover from what is durable.
    #[error("log store is unusable after an earlier I/O failure; restart to recover")]
    Poisoned,
}

impl StorageError {
    /// Builds an [`StorageError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io { path: path.into(), source }
    }

    /// Builds a [`StorageError::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
