//! Messages exchanged between Raft nodes (paper Figure 2, plus PreVote from thesis §9.6,
//! ReadIndex from thesis §6.4 and TimeoutNow for leadership transfer from thesis §3.10).
//!
//! Every message carries the sender's current term. A node that receives a message with a higher term
//! steps down to follower in that term (except PreVote traffic, which never changes anyone's term).
//! Messages are plain data: encoding them on the wire is the transport's business.

use crate::types::{Entry, Index, NodeId, Term};

/// A message from one node to another.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for a PreVote request, the term the sender would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MessageBody {
    /// "Would you vote for me if I campaigned in `term`?" (thesis §9.6). Never changes the receiver's
    /// state.
    PreVote {
        /// Index of the candidate's last log entry.
        last_log_index: Index,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
    },
    /// The answer to a PreVote.
    PreVoteResponse {
        /// True if the receiver would vote.
        granted: bool,
    },
    /// RequestVote RPC (§5.2).
    RequestVote {
        /// Index of the candidate's last log entry.
        last_log_index: Index,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The campaign was asked for by the leader ([`MessageBody::TimeoutNow`]): voters answer
        /// it even if they heard from that leader within the election timeout.
        transfer: bool,
    },
    /// The answer to RequestVote.
    RequestVoteResponse {
        /// True if the receiver voted for the candidate.
        granted: bool,
    },
    /// AppendEntries RPC (§5.3); with no entries it is a heartbeat.
    AppendEntries {
        /// Index of the entry immediately preceding `entries`.
        prev_log_index: Index,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// Entries to append (may be empty).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The answer to AppendEntries.
    AppendEntriesResponse {
        /// True if the follower's log matched at `prev_log_index` and it now holds the entries.
        success: bool,
        /// On success: the index of the last entry the follower now holds that matches the leader
        /// (prev_log_index + entries). On failure: the `prev_log_index` that was rejected.
        index: Index,
        /// On failure, a hint for fast backtracking: the term of the follower's conflicting entry at
        /// the rejected index (0 if its log is shorter).
        conflict_term: Term,
        /// On failure: the first index the follower holds of `conflict_term`, or its last index + 1 if
        /// its log is too short.
        conflict_index: Index,
    },
    /// A leader's heartbeat: asserts leadership, carries a commit index the follower is known to hold,
    /// and a read round. Unlike AppendEntries it has no log consistency check, so it can be sent at any
    /// time even while entries are in flight.
    Heartbeat {
        /// `min(leader commit, follower's match index)`: safe for the follower to commit.
        leader_commit: Index,
        /// The leader's heartbeat round (ReadIndex, thesis §6.4): the follower echoes it, which proves
        /// to the leader that it was still leader after the round began.
        read_round: u64,
    },
    /// The answer to a Heartbeat.
    HeartbeatResponse {
        /// The `read_round` of the heartbeat being answered.
        read_round: u64,
    },
    /// A follower asks the leader for a read index on behalf of its client (thesis §6.4).
    ReadIndex {
        /// The follower's id for the request, echoed in the response.
        request_id: u64,
    },
    /// The leader's answer to ReadIndex: once the follower has applied `index`, the read may be served.
    /// `index == None` means the leader could not serve it (it is no longer leader).
    ReadIndexResponse {
        /// The follower's id for the request.
        request_id: u64,
        /// The read index, or None if the request failed.
        index: Option<Index>,
    },
    /// A leader hands over leadership (thesis §3.10): the receiver, whose log holds everything the
    /// leader has, starts an election at once, without PreVote.
    TimeoutNow,
}

impl MessageBody {
    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
