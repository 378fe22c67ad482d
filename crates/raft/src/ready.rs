//! What the core asks its driver to do.
//!
//! The core never performs I/O. Every call to [`crate::Node`] may accumulate work, and
//! [`crate::Node::ready`] hands it over as one [`Ready`] batch. The driver MUST execute a batch in
//! this order, completing each step before the next:
//!
//! 0. send `early_messages` (a leader's AppendEntries and heartbeats: they depend only on entries
//!    held in memory, so the leader's disk write overlaps the followers' — thesis §10.2.1);
//! 1. persist: write `hard_state` (if any); remove stored entries from `truncate_from` on (if any);
//!    append `entries`; then make all of it durable (one fsync for the whole batch: group commit),
//!    and report it with [`crate::Node::on_persisted`] (a leader counts its own log towards a
//!    majority only up to what it has persisted);
//! 2. send `messages` (they depend at most on the hard state of step 1: votes, heartbeat
//!    responses, ReadIndex traffic) and `log_acks` (AppendEntriesResponses: they acknowledge log
//!    entries, so they may leave only once every entry of this batch and of every earlier batch is
//!    durable). With the fsync of step 1 inline both leave together; a driver that runs the log's
//!    fsync elsewhere may send `messages` once the hard state is written and must hold `log_acks`
//!    until that fsync completes. The core labels the messages; no layer above it needs to know
//!    which kind of message depends on what;
//! 3. apply `committed` entries to the state machine, in order;
//! 4. answer `reads`: a read may be served once the state machine has applied its index;
//!
//! Steps 3 and 4 may also run *before* step 1 (the driver does so, to answer clients without
//! waiting for the fsync of the batch's new entries): a committed entry is already durable on a
//! majority, whatever this node's disk holds, and a read index depends only on the commit index.
//! 5. start sending a snapshot to each follower in `snapshots` (in the background: the outcome is
//!    reported later with [`crate::Node::snapshot_sent`] / [`crate::Node::snapshot_failed`]).
//!
//! Batches must be executed in the order they were produced. A crash anywhere is fine: the core
//! restarts from whatever step 1 made durable.
//!
//! Invariants the core keeps for every batch: `commit <= last_index`; an acknowledgement in
//! `log_acks` never claims an entry that this node's log (after this batch's step 1) or its
//! snapshot does not hold (entries a snapshot install or a conflict removed before they were
//! stored are never acknowledged).

use crate::message::Message;
use crate::types::{Entry, HardState, Index, NodeId};

/// One batch of work for the driver.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// New hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// If set, stored entries with index >= this must be removed before appending.
    pub truncate_from: Option<Index>,
    /// Entries to append to storage.
    pub entries: Vec<Entry>,
    /// Messages that may be sent before persisting (a leader's AppendEntries and heartbeats).
    pub early_messages: Vec<Message>,
    /// Messages to send once the hard state of this batch is durable (see step 2).
    pub messages: Vec<Message>,
    /// Acknowledgements of log entries: to send once every entry of this and earlier batches is
    /// durable (see step 2).
    pub log_acks: Vec<Message>,
    /// Committed entries to apply, in order (before or after persisting: see the module docs).
    pub committed: Vec<Entry>,
    /// Reads whose fate is decided.
    pub reads: Vec<ReadState>,
    /// Leader: followers that need entries compacted away. Send each the latest snapshot, then report
    /// the outcome with [`crate::Node::snapshot_sent`] or [`crate::Node::snapshot_failed`].
    pub snapshots: Vec<NodeId>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.log_acks.is_empty()
            && self.early_messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.snapshots.is_empty()
    }

    /// True if step 1 (persist) has work.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.truncate_from.is_some() || !self.entries.is_empty()
    }
}

/// The outcome of a read request made with [`crate::Node::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The id the driver gave the read.
    pub id: u64,
    /// `Ok(index)`: serve the read once the state machine has applied `index`.
    /// `Err(_)`: the read could not be confirmed here; the driver may retry it.
    pub result: Result<Index, ReadError>,
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known right now.
    NoLeader,
    /// Leadership changed (or was lost) before the read was confirmed.
    LeadershipChanged,
    /// The leader did not answer in time (a forwarded read).
    TimedOut,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows of, if any.
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// This node leads but is handing leadership to `to` (thesis §3.10); proposals resume when the
    /// transfer ends: the target leads, or the transfer times out.
    TransferInProgress {
        /// The transfer's target.
        to: NodeId,
    },
}
