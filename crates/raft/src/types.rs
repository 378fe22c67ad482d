//! The basic values of Raft (paper §5, Figure 2): terms, log indexes, node ids, log entries and the
//! durable "hard state".
//!
//! Invariants:
//! - `Term` and `Index` start at 0; index 0 / term 0 name the empty position before the first entry,
//!   so the first real entry has index 1.
//! - An [`Entry`] with empty `data` is a no-op (appended by every new leader at the start of its term);
//!   the state machine above never proposes an empty command.

use bytes::Bytes;

/// A Raft term: a logical clock that only ever grows on every node (§5.1).
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type Index = u64;
/// A cluster member's identity. 0 is never a valid id (it means "none").
pub type NodeId = u64;

/// One entry of the replicated log.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Entry {
    /// The term of the leader that created this entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// The command for the state machine; empty for a leader's no-op.
    pub data: Bytes,
}

impl Entry {
    /// Builds an entry.
    pub fn new(term: Term, index: Index, data: impl Into<Bytes>) -> Self {
        Entry { term, index, data: data.into() }
    }

    /// True for the no-op entry a new leader appends at the start of its term.
    pub fn is_noop(&self) -> bool {
        self.data.is_empty()
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
