//! The basic values of Raft (paper §5, Figure 2): terms, log indexes, node ids, log entries and the
//! durable "hard state".
//!
//! Invariants:
//! - `Term` and `Index` start at 0; index 0 / term 0 name the empty position before the first entry,
//!   so the first real entry has index 1.
//! - An [`Entry`] of kind [`EntryKind::Normal`] with empty `data` is a no-op (appended by every new
//!   leader at the start of its term); the state machine above never proposes an empty command.
//! - An [`Entry`] of kind [`EntryKind::Config`] carries a whole cluster membership
//!   ([`crate::membership::Membership::encode`]); it takes effect on a node as soon as the node's log
//!   holds it (see [`crate::membership`]), and the state machine above only records it.

use bytes::Bytes;

/// A Raft term: a logical clock that only ever grows on every node (§5.1).
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;
/// A cluster member's identity. 0 is never a valid id (it means "none").
pub type NodeId = u64;

/// What an entry carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// A command for the state machine (or, when empty, a new leader's no-op).
    #[default]
    Normal,
    /// A configuration entry: the whole membership of the cluster from this entry on.
    Config,
}

impl EntryKind {
    /// The kind's number in storage and wire formats (0 normal, 1 config).
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Config => 1,
        }
    }

    /// The kind with number `code`, if any.
    pub fn from_code(code: u64) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Entry {
    /// The term of the leader that created this entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What `data` is: a command, or a configuration.
    pub kind: EntryKind,
    /// The command for the state machine (empty for a leader's no-op), or the encoded membership of
    /// a configuration entry.
    pub data: Bytes,
}

impl Entry {
    /// Builds a normal entry (a command, or a no-op if `data` is empty).
    pub fn new(term: Term, index: Index, data: impl Into<Bytes>) -> Self {
        Entry { term, index, kind: EntryKind::Normal, data: data.into() }
    }

    /// Builds an entry of `kind`.
    pub fn with_kind(term: Term, index: Index, kind: EntryKind, data: impl Into<Bytes>) -> Self {
        Entry { term, index, kind, data: data.into() }
    }

    /// True for the no-op entry a new leader appends at the start of its term.
    pub fn is_noop(&self) -> bool {
        self.kind == EntryKind::Normal && self.data.is_empty()
    }

    /// True for a configuration entry.
    pub fn is_config(&self) -> bool {
        self.kind == EntryKind::Config
    }
}

/// The state that must be durable before any message that depends on it leaves the node (Figure 2,
/// "persistent state on all servers", minus the log, which is persisted entry by entry).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
}
