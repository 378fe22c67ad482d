//! The key-value state machine that committed Raft log entries are applied to.
//!
//! # Shape
//!
//! * Writes ([`Command`]) travel through the Raft log inside a [`Proposal`] envelope, encoded with
//!   [`encode_proposal`]. Every replica applies the committed entries in log order with
//!   [`KvStore::apply`] and so reaches the same state and computes the same [`Reply`].
//! * Reads ([`Query`]) never enter the log: the server confirms leadership with a ReadIndex round
//!   (Raft thesis §6.4), waits until [`KvStore::applied_index`] reaches the read index and then
//!   answers with [`KvStore::query`].
//! * [`KvStore::snapshot`] / [`KvStore::restore`] produce and read a self-checking image of the
//!   whole state (data, client sessions, applied index) for log compaction and InstallSnapshot.
//!   [`KvStore::snapshot_view`] freezes the state in O(1) (the key space is a persistent map)
//!   so that the image can be streamed by another thread with [`SnapshotView::write_to`] while
//!   writes go on.
//!
//! # Invariants
//!
//! 1. **Determinism.** `apply` is a pure function of (state, index, bytes): no clock, no
//!    randomness, no I/O, no iteration over hash maps. All maps are ordered (persistent
//!    `imbl::OrdMap`s), so the snapshot of two replicas that applied the same log prefix is
//!    byte-for-byte identical.
//! 2. **Monotonic application.** `apply(index, ..)` with `index <= applied_index()` is refused
//!    ([`KvError::IndexNotAfterApplied`]): it can only be a driver bug, and applying an entry twice
//!    would silently corrupt the state. Gaps are allowed (entries the driver consumes itself, such
//!    as membership changes, never reach the state machine; see [`KvStore::advance_to`]).
//! 3. **Corruption stops the node.** A non-empty entry that does not decode, or a snapshot that
//!    fails its checksum or structure checks, is an `Err`: the caller must stop rather than guess.
//!    Limits violations inside a well-formed command are *not* corruption: they are answered with a
//!    deterministic error [`Reply`] on every replica (see [`Command::validate`]).
//! 4. **Time only from the log.** Expiry is decided by the log time, the highest leader stamp
//!    among the applied entries ([`expiry`] explains why that is safe for reads too).
//! 5. **Exactly-once writes** (thesis §6.3): see [`session`] for the duplicate-detection protocol,
//!    its reasoning and its one remaining risk.
//! 6. **Scripts are deterministic.** A Lua script that may write is one entry run at apply on every
//!    replica, with no clock, no randomness, no state between runs and an instruction budget
//!    instead of a time limit; the script cache is replicated state; the caller's ACL, which
//!    every call inside the script is checked against, travels in the entry and is never looked
//!    up at apply (see [`script`]).
//!
//! # Limits
//!
//! The constants below are enforced by [`Command::validate`] (the server calls it before
//! proposing; `apply` calls it again so that a proposal from a careless proposer still has a
//! deterministic outcome on every replica).

pub mod cas;
mod codec;
mod command;
pub mod expiry;
pub mod glob;
pub mod hash;
pub mod keys;
pub mod ldouble;
pub mod script;
pub mod session;
mod snapshot;
mod store;
pub mod strings;
pub mod txn;

#[cfg(test)]
mod cas_tests;
#[cfg(test)]
mod expiry_tests;
#[cfg(test)]
mod hash_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod perf_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;

pub use cas::{
    digest, digest_hex, DigestArg, ValueCondition, DELEX_CONDITION_ERR, DELEX_TYPE_ERR, DIGEST_FORMAT_ERR,
};
pub use codec::{
    decode_entry, decode_proposal, encode_proposal, stamp_entries, stamp_entry, StampedEntries,
    PROPOSAL_FORMAT_VERSION, STAMPED_ENTRY, STAMP_LEN,
};
pub use command::{parse_i64, Command, Proposal, Query, Reply, ScriptCommand, ScriptQuery, SetCondition};
pub use expiry::{ExpireCondition, ExpiryOrigin, SetExpiry};
pub use glob::glob_match;
pub use hash::{HashOp, HashRead, WRONGTYPE_ERR};
pub use script::{install_command_parser, ScriptRef};
pub use session::{
    DUPLICATE_FORGOTTEN_ERR, FIRST_SEQ, MAX_REPLIES_PER_SESSION, MAX_SESSIONS, NO_SESSION,
    SESSION_EXPIRED_ERR, SESSION_OVERLOADED_ERR,
};
pub use snapshot::{SnapshotView, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC, WRITE_CHUNK};
pub use store::{Applied, KvStore};
pub use txn::{TxItem, Watch};

/// Largest accepted key, in bytes (64 KiB).
///
/// Redis accepts keys up to 512 MiB, but every key lives in memory on every replica, in every log
/// entry that writes it and in every snapshot; a key larger than 64 KiB is almost certainly a bug
/// in the client, and refusing it early keeps log entries and index structures small.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// Largest accepted value, in bytes (8 MiB), including the result of `APPEND`.
///
/// Redis' default `proto-max-bulk-len` is 512 MiB. A value is written to the log of every
/// replica and shipped in one replication message, so a replicated store wants a much smaller
/// ceiling; 8 MiB is generous for a KV store and keeps one entry well below a frame limit.
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;

/// Largest accepted command payload, in bytes (16 MiB): the sum over all keys and values of a
/// command, each counted with a fixed overhead of [`PER_ITEM_OVERHEAD`] bytes, so that a `DEL` or
/// `MSET` with millions of tiny keys is bounded too. An encoded proposal is never larger than
/// this plus a few dozen bytes of envelope.
pub const MAX_COMMAND_LEN: usize = 16 * 1024 * 1024;

/// Accounting overhead per key or value used by the [`MAX_COMMAND_LEN`] check (an upper bound
/// of the encoded length prefix).
pub const PER_ITEM_OVERHEAD: usize = 8;

/// Failures of the state machine that are *not* answers to a client: each one means the node
/// cannot continue safely (corrupt or incompatible log entry or snapshot, or a driver bug).
///
/// Deterministic, client-visible failures (wrong type of value, overflow, too-large key...) are
/// never `KvError`s: they are [`Reply::Error`] values produced identically on every replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A log entry's data is not a valid encoded [`Proposal`].
    #[error("undecodable proposal at byte {offset}: {reason}")]
    BadProposal {
        /// Byte offset in the entry data where decoding failed.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A log entry was written by a newer (or unknown) proposal format.
    #[error("proposal format version {found} is not supported (this build reads version {supported})")]
    ProposalVersion {
        /// Version byte found in the entry.
        found: u8,
        /// Version this build understands.
        supported: u8,
    },
    /// `apply` was called with an index that is not above the applied index (driver bug).
    #[error("entry index {index} is not above the applied index {applied}")]
    IndexNotAfterApplied {
        /// The index passed to `apply`/`advance_to`.
        index: u64,
        /// The state machine's applied index.
        applied: u64,
    },
    /// The image does not start with [`SNAPSHOT_MAGIC`]: it is not a KV snapshot at all.
    #[error("not a raft-kv snapshot (bad magic bytes)")]
    SnapshotMagic,
    /// The snapshot was written in a format this build does not read.
    #[error("snapshot format version {found} is not supported (this build reads version {supported})")]
    SnapshotVersion {
        /// Version found in the image.
        found: u16,
        /// Version this build understands.
        supported: u16,
    },
    /// The snapshot's CRC does not match its contents: it was damaged.
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    SnapshotChecksum {
        /// CRC-32 (IEEE) stored in the image trailer.
        stored: u32,
        /// CRC-32 (IEEE) computed over the image.
        computed: u32,
    },
    /// The snapshot passed its checksum but its contents are inconsistent (or truncated).
    #[error("malformed snapshot at byte {offset}: {reason}")]
    BadSnapshot {
        /// Byte offset in the image where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
}
