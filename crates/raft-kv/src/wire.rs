//! The peer protocol's wire format: protobuf messages (hand-written `prost` derives, no `protoc`),
//! their conversions to and from [`engine::PeerMessage`], the connection handshake and the framing.
//!
//! # Framing
//! A connection is a stream of frames. A frame is a 4-byte big-endian length `n` followed by `n`
//! bytes of protobuf. The first frame in each direction is a [`Handshake`] (at most
//! [`MAX_HANDSHAKE_FRAME`] bytes); every later frame is one [`Envelope`] (at most the configured
//! `max_frame` bytes, [`DEFAULT_MAX_FRAME`] by default). A length above the limit is an error and
//! the connection is closed: the reader never buffers more than `4 + max` bytes for a frame.
//!
//! # Schema (the `.proto` equivalent of the structs below)
//! ```text
//! syntax = "proto3";
//! package raftkv.peer.v1;
//!
//! // First frame in each direction.
//! message Handshake {
//!   fixed32 magic      = 1;  // MAGIC: 0x524B5650 ("RKVP")
//!   uint32  version    = 2;  // PROTOCOL_VERSION; bumped only on incompatible changes
//!   uint64  cluster_id = 3;
//!   uint64  node_id    = 4;  // the sender's id (never 0)
//!   uint32  keepalive_ms = 5;  // added without a version bump: see Keepalives; 0 = none
//!   bytes   nonce      = 6;  // cluster token (see crate::auth::token)
//!   bytes   proof      = 7;
//!   uint64  peer_id    = 8;  // added: the node id the dialer means to reach (0 = not said); a
//!                            // standby learns its id from it (transport::standby)
//!   string  core_addr  = 9;  // added: the sender's advertised core address (host:port; "" = not
//!                            // said); a node that joined and knows no membership yet learns it
//! }
//!
//! // Every later frame.
//! message Envelope {
//!   oneof kind {
//!     RaftMessage   raft           = 1;
//!     Forward       forward        = 2;
//!     SnapshotChunk snapshot_chunk = 3;  // added without a version bump (see Evolution)
//!     SnapshotAck   snapshot_ack   = 4;
//!   }
//! }
//!
//! message RaftMessage {
//!   uint64 from = 1;
//!   uint64 to   = 2;
//!   uint64 term = 3;
//!   oneof body {
//!     VoteRequest           pre_vote                = 4;
//!     VoteResponse          pre_vote_response       = 5;
//!     VoteRequest           request_vote            = 6;
//!     VoteResponse          request_vote_response   = 7;
//!     AppendEntries         append_entries          = 8;
//!     AppendEntriesResponse append_entries_response = 9;
//!     Heartbeat             heartbeat               = 10;
//!     HeartbeatResponse     heartbeat_response      = 11;
//!     ReadIndex             read_index              = 12;
//!     ReadIndexResponse     read_index_response     = 13;
//!     TimeoutNow            timeout_now             = 14;  // leadership transfer (added)
//!   }
//! }
//! message VoteRequest           { uint64 last_log_index = 1; uint64 last_log_term = 2;
//!                                 bool transfer = 3; }  // RequestVote only (added)
//! message VoteResponse          { bool granted = 1; }
//! message Entry                 { uint64 term = 1; uint64 index = 2; bytes data = 3;
//!                                 uint32 kind = 4; }    // raft::EntryKind::code: 0 normal (the
//!                                                       // default), 1 configuration (added)
//! message TimeoutNow            { }
//! message AppendEntries         { uint64 prev_log_index = 1; uint64 prev_log_term = 2;
//!                                 repeated Entry entries = 3; uint64 leader_commit = 4; }
//! message AppendEntriesResponse { bool success = 1; uint64 index = 2;
//!                                 uint64 conflict_term = 3; uint64 conflict_index = 4; }
//! message Heartbeat             { uint64 leader_commit = 1; uint64 read_round = 2; }
//! message HeartbeatResponse     { uint64 read_round = 1; }
//! message ReadIndex             { uint64 request_id = 1; }
//! message ReadIndexResponse     { uint64 request_id = 1; optional uint64 index = 2; }
//! message Forward               { uint64 from = 1; uint64 to = 2; repeated bytes proposals = 3; }
//!
//! // InstallSnapshot (paper §7), sent in chunks of the leader's snapshot file; see engine::snapshots.
//! message SnapshotChunk { uint64 from = 1; uint64 to = 2;
//!                         uint64 term = 3;       // the leader's current term
//!                         uint64 index = 4;      // the snapshot's last included index
//!                         uint64 snap_term = 5;  // the snapshot's last included term
//!                         uint64 offset = 6;     // of `data` in the snapshot file
//!                         uint64 len = 7;        // of the whole snapshot file
//!                         bytes  data = 8; }
//! message SnapshotAck   { uint64 from = 1; uint64 to = 2; uint64 index = 3; uint64 snap_term = 4;
//!                         uint64 received = 5;   // bytes held = the next offset expected
//!                         ChunkStatus status = 6; }
//! enum ChunkStatus {
//!   CHUNK_STATUS_UNSPECIFIED = 0;  // never sent: a missing status is refused, not read as PROGRESS
//!   CHUNK_STATUS_PROGRESS    = 1;
//!   CHUNK_STATUS_GAP         = 2;
//!   CHUNK_STATUS_INSTALLED   = 3;
//!   CHUNK_STATUS_REJECTED    = 4;
//! }
//! ```
//!
//! # Keepalives
//! A frame with an empty body (the four bytes `00 00 00 00`, [`KEEPALIVE_FRAME`]) is a keepalive:
//! it carries nothing and only proves that the link is alive. A node that sends a non-zero
//! `keepalive_ms` in its handshake understands keepalives and sends one at least that often on the
//! connection (in whichever direction it writes), so that its peer can close a connection that has
//! been silent for much longer (a partition that drops packets silently would otherwise leave the
//! connection waiting out TCP's retransmission backoff). Keepalives are sent only to a peer whose
//! handshake announced them: an older node (`keepalive_ms` absent, i.e. 0) never receives one (it
//! would read the empty envelope as an unknown kind) and is never timed out for silence.
//!
//! # Evolution
//! - A new kind of message is a new `oneof` variant with a fresh tag (in [`Envelope`] for a new
//!   peer-level message such as a snapshot transfer, in [`RaftMessage`] for a new Raft RPC). It does not
//!   change [`PROTOCOL_VERSION`]. Protobuf skips unknown fields, so an older node decodes such a frame
//!   with an empty `oneof` and [`TryFrom<Envelope>`](PeerMessage) reports
//!   [`WireError::UnknownKind`]: the transport drops that one message with a warning and keeps the
//!   connection (Raft tolerates lost messages).
//! - New fields in existing messages get fresh tags and must have a harmless zero default.
//! - A new value of an enum (e.g. a new `ChunkStatus`) is, to an older node, an unknown value: it
//!   refuses that one message ([`WireError::UnknownEnumValue`]) the same way, and keeps the
//!   connection. Enum value 0 is reserved for "unspecified" and is refused too, so that a missing
//!   field is never mistaken for a meaningful answer.
//! - Anything else is an incompatible change: bump [`PROTOCOL_VERSION`]; the handshake then refuses
//!   peers of the other version with a clear log line instead of misreading their frames.
//!
//! # Invariants
//! - The frames on every write's path (AppendEntries and their responses, heartbeats and their
//!   responses, forwarded proposals) are decoded by hand (`wire/decode.rs`), every other frame by
//!   `prost`; the two agree on every input (the hand decoder declines whatever it does not take
//!   exactly as `prost` would, and `prost` decides), so errors are always `prost`'s.
//! - Decoding never panics and never allocates more than the frame it was handed: entry data,
//!   forwarded proposals and snapshot chunks are slices of the frame's buffer (`Bytes`), not copies. A consequence: a
//!   decoded entry keeps the read buffer it arrived in alive for as long as the entry lives.
//! - A decoded [`PeerMessage`] always has non-zero `from` and `to`; protobuf cannot tell a missing
//!   scalar from a zero one, so 0 (never a valid [`NodeId`]) is rejected as "missing".

use bytes::{Buf, BufMut, Bytes, BytesMut};
use engine::{ChunkStatus, PeerMessage};
use prost::Message as _;
use raft::{Message, MessageBody, NodeId};

mod append;
mod decode;
pub use append::EntriesCache;

/// First field of every [`Handshake`]: "RKVP" in ASCII. Tells a raft-kv peer from anything else that
/// connects to the core port.
pub const MAGIC: u32 = 0x524B_5650;
/// The version of this protocol; peers must agree exactly (see "Evolution" above).
pub const PROTOCOL_VERSION: u32 = 1;
/// The length of a frame header (a big-endian u32 body length).
pub const FRAME_HEADER_LEN: usize = 4;
/// The default maximum body length of a frame: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
/// An upper bound on the bytes a [`SnapshotChunk`] frame body adds to its data: the envelope's key
/// and length (6 bytes), seven `uint64` fields of at most 11 bytes each, the data's key and length
/// (6 bytes): 89, rounded up. A frame limit of at least `chunk_size + SNAPSHOT_CHUNK_OVERHEAD`
/// carries every chunk (see [`max_frame_for_chunks`]).
pub const SNAPSHOT_CHUNK_OVERHEAD: usize = 128;

/// The frame limit to use when snapshot chunks are up to `chunk_size` bytes: the default limit, or
/// more if a chunk and its overhead would not fit in it.
pub fn max_frame_for_chunks(chunk_size: usize) -> usize {
    DEFAULT_MAX_FRAME.max(chunk_size.saturating_add(SNAPSHOT_CHUNK_OVERHEAD))
}
/// Most bytes [`decode_frame`] reserves ahead of a frame's bytes arriving; a larger frame grows
/// the buffer as it arrives.
pub const MAX_FRAME_RESERVE: usize = 1 << 20;
/// A keepalive: a frame with an empty body (see the module docs).
pub const KEEPALIVE_FRAME: [u8; FRAME_HEADER_LEN] = [0; FRAME_HEADER_LEN];
/// The maximum body length of a handshake frame. Small, so that a stranger's bytes on the core port
/// are rejected at once (e.g. a Redis client's `PING\r\n` reads as a length of 1 346 981 447).
pub const MAX_HANDSHAKE_FRAME: usize = 1024;

/// Why bytes could not be turned into a frame or a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame header announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced (or, when encoding, actual) body length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The frame body is not valid protobuf for the expected message.
    #[error("malformed protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A `oneof` had no variant this node knows: sent by a newer version, or malformed.
    #[error("{message} has no kind known to this version (sent by a newer peer?)")]
    UnknownKind {
        /// The protobuf message whose `oneof` was empty.
        message: &'static str,
    },
    /// An enum field holds a value this version does not know (a newer peer), or 0 ("unspecified",
    /// i.e. missing).
    #[error("{field} has the value {value}, unknown to this version (sent by a newer peer?) or missing")]
    UnknownEnumValue {
        /// The field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A node id field was 0 (missing).
    #[error("{field} is missing (node id 0)")]
    MissingNodeId {
        /// The field.
        field: &'static str,
    },
    /// The handshake did not start with [`MAGIC`]: not a raft-kv peer.
    #[error("bad magic {got:#010x} (expected {MAGIC:#010x}): not a raft-kv peer")]
    BadMagic {
        /// The magic received.
        got: u32,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs} is not supported (this node speaks {ours})")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The peer belongs to another cluster.
    #[error("peer belongs to cluster {theirs:#x}, this node to cluster {ours:#x}")]
    ClusterMismatch {
        /// Our cluster id.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The first frame in each direction of a connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Handshake {
    /// Always [`MAGIC`].
    #[prost(fixed32, tag = "1")]
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`].
    #[prost(uint32, tag = "2")]
    pub version: u32,
    /// The sender's cluster id.
    #[prost(uint64, tag = "3")]
    pub cluster_id: u64,
    /// The sender's node id.
    #[prost(uint64, tag = "4")]
    pub node_id: u64,
    /// The interval at which the sender sends keepalives on this connection, in milliseconds;
    /// 0 (an older node): it neither sends nor understands them (see the module docs).
    #[prost(uint32, tag = "5")]
    pub keepalive_ms: u32,
    /// Cluster-token authentication ([`crate::auth::token`]): the sender's fresh nonce; empty (an
    /// older node, or one without a token): the sender does not authenticate.
    #[prost(bytes = "vec", tag = "6")]
    pub nonce: Vec<u8>,
    /// Cluster-token authentication: the sender's proof. Set in the listener's answer, and in the
    /// proof frame the dialer sends after it (a handshake message with only `magic` and `proof`).
    #[prost(bytes = "vec", tag = "7")]
    pub proof: Vec<u8>,
    /// The node id the dialer means to reach; 0 in an answer, or from an older node. A standby
    /// waiting to be added learns its node id from it ([`crate::transport::standby`]).
    #[prost(uint64, tag = "8")]
    pub peer_id: u64,
    /// The sender's advertised core address (`host:port`); empty from older nodes. A node that
    /// just joined and knows no membership yet learns its peers' addresses from it.
    #[prost(string, tag = "9")]
    pub core_addr: String,
}

impl Handshake {
    /// The handshake this node sends.
    pub fn new(cluster_id: u64, node_id: NodeId) -> Self {
        Handshake {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster_id,
            node_id,
            keepalive_ms: 0,
            nonce: Vec::new(),
            proof: Vec::new(),
            peer_id: 0,
            core_addr: String::new(),
        }
    }

    /// The dialer's proof frame (cluster-token authentication).
    pub fn proof_frame(proof: Vec<u8>) -> Self {
        Handshake { magic: MAGIC, proof, ..Handshake::default() }
    }

    /// The same handshake announcing keepalives every `interval` (rounded up to whole
    /// milliseconds, at least 1).
    pub fn with_keepalive(self, interval: std::time::Duration) -> Self {
        let ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        let ms = if std::time::Duration::from_millis(u64::from(ms)) < interval {
            ms.saturating_add(1)
        } else {
            ms
        };
        Handshake { keepalive_ms: ms.max(1), ..self }
    }

    /// Checks magic, version and cluster id and returns the sender's node id. Whether that node is
    /// one we expect is the caller's business.
    pub fn validate(&self, cluster_id: u64) -> Result<NodeId, WireError> {
        if self.magic != MAGIC {
            return Err(WireError::BadMagic { got: self.magic });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(WireError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: self.version });
        }
        if self.cluster_id != cluster_id {
            return Err(WireError::ClusterMismatch { ours: cluster_id, theirs: self.cluster_id });
        }
        if self.node_id == 0 {
            return Err(WireError::MissingNodeId { field: "Handshake.node_id" });
        }
        Ok(self.node_id)
    }
}

/// One frame after the handshake: one [`PeerMessage`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// What the frame carries; `None` if empty or of a kind this version does not know.
    #[prost(oneof = "EnvelopeKind", tags = "1, 2, 3, 4")]
    pub kind: Option<EnvelopeKind>,
}

/// The kinds of [`Envelope`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EnvelopeKind {
    /// A Raft message.
    #[prost(message, tag = "1")]
    Raft(RaftMessage),
    /// Proposals forwarded to the leader.
    #[prost(message, tag = "2")]
    Forward(Forward),
    /// A piece of the leader's snapshot file.
    #[prost(message, tag = "3")]
    SnapshotChunk(SnapshotChunk),
    /// A follower's answer to a snapshot chunk.
    #[prost(message, tag = "4")]
    SnapshotAck(SnapshotAck),
}

/// A [`raft::Message`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftMessage {
    /// The sender.
    #[prost(uint64, tag = "1")]
    pub from: u64,
    /// The receiver.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// The sender's term.
    #[prost(uint64, tag = "3")]
    pub term: u64,
    /// The RPC; `None` if empty or of a kind this version does not know.
    #[prost(oneof = "RaftBody", tags = "4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14")]
    pub body: Option<RaftBody>,
}

/// The kinds of [`RaftMessage`] (one per [`MessageBody`] variant).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RaftBody {
    /// [`MessageBody::PreVote`].
    #[prost(message, tag = "4")]
    PreVote(VoteRequest),
    /// [`MessageBody::PreVoteResponse`].
    #[prost(message, tag = "5")]
    PreVoteResponse(VoteResponse),
    /// [`MessageBody::RequestVote`].
    #[prost(message, tag = "6")]
    RequestVote(VoteRequest),
    /// [`MessageBody::RequestVoteResponse`].
    #[prost(message, tag = "7")]
    RequestVoteResponse(VoteResponse),
    /// [`MessageBody::AppendEntries`].
    #[prost(message, tag = "8")]
    AppendEntries(AppendEntries),
    /// [`MessageBody::AppendEntriesResponse`].
    #[prost(message, tag = "9")]
    AppendEntriesResponse(AppendEntriesResponse),
    /// [`MessageBody::Heartbeat`].
    #[prost(message, tag = "10")]
    Heartbeat(Heartbeat),
    /// [`MessageBody::HeartbeatResponse`].
    #[prost(message, tag = "11")]
    HeartbeatResponse(HeartbeatResponse),
    /// [`MessageBody::ReadIndex`].
    #[prost(message, tag = "12")]
    ReadIndex(ReadIndex),
    /// [`MessageBody::ReadIndexResponse`].
    #[prost(message, tag = "13")]
    ReadIndexResponse(ReadIndexResponse),
    /// [`MessageBody::TimeoutNow`].
    #[prost(message, tag = "14")]
    TimeoutNow(TimeoutNow),
}

/// [`MessageBody::TimeoutNow`]: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeoutNow {}

/// PreVote and RequestVote arguments.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoteRequest {
    /// Index of the candidate's last log entry.
    #[prost(uint64, tag = "1")]
    pub last_log_index: u64,
    /// Term of the candidate's last log entry.
    #[prost(uint64, tag = "2")]
    pub last_log_term: u64,
    /// RequestVote only: the campaign is a leadership transfer (false from older peers).
    #[prost(bool, tag = "3")]
    pub transfer: bool,
}

/// PreVote and RequestVote answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoteResponse {
    /// True if the vote is (or would be) granted.
    #[prost(bool, tag = "1")]
    pub granted: bool,
}

/// A [`raft::Entry`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The term of the leader that created the entry.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// The entry's log index.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// The command (empty for a no-op); decoded as a slice of the frame, without copying.
    #[prost(bytes = "bytes", tag = "3")]
    pub data: Bytes,
    /// [`raft::EntryKind::code`]: 0 normal (also what older peers send), 1 configuration.
    #[prost(uint32, tag = "4")]
    pub kind: u32,
}

/// AppendEntries arguments.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendEntries {
    /// Index of the entry preceding `entries`.
    #[prost(uint64, tag = "1")]
    pub prev_log_index: u64,
    /// Term of that entry.
    #[prost(uint64, tag = "2")]
    pub prev_log_term: u64,
    /// The entries.
    #[prost(message, repeated, tag = "3")]
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    #[prost(uint64, tag = "4")]
    pub leader_commit: u64,
}

/// AppendEntries answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendEntriesResponse {
    /// True if the follower's log matched.
    #[prost(bool, tag = "1")]
    pub success: bool,
    /// Last matching index on success, the rejected `prev_log_index` on failure.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// Term of the follower's conflicting entry (failure only).
    #[prost(uint64, tag = "3")]
    pub conflict_term: u64,
    /// First index of `conflict_term` on the follower (failure only).
    #[prost(uint64, tag = "4")]
    pub conflict_index: u64,
}

/// A leader's heartbeat.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Heartbeat {
    /// Commit index safe for the follower.
    #[prost(uint64, tag = "1")]
    pub leader_commit: u64,
    /// The ReadIndex round.
    #[prost(uint64, tag = "2")]
    pub read_round: u64,
}

/// Heartbeat answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeartbeatResponse {
    /// The round being answered.
    #[prost(uint64, tag = "1")]
    pub read_round: u64,
}

/// A follower's read-index request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadIndex {
    /// The follower's request id.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
}

/// The leader's read-index answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadIndexResponse {
    /// The follower's request id.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    /// The read index; absent if the leader could not serve the read.
    #[prost(uint64, optional, tag = "2")]
    pub index: Option<u64>,
}

/// Proposals forwarded to the leader.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Forward {
    /// The forwarding node.
    #[prost(uint64, tag = "1")]
    pub from: u64,
    /// The destination.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// Encoded proposals; decoded as slices of the frame, without copying.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub proposals: Vec<Bytes>,
}

/// A piece of the leader's snapshot file ([`PeerMessage::SnapshotChunk`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotChunk {
    /// The leader.
    #[prost(uint64, tag = "1")]
    pub from: u64,
    /// The follower.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// The leader's current term.
    #[prost(uint64, tag = "3")]
    pub term: u64,
    /// The snapshot's last included index.
    #[prost(uint64, tag = "4")]
    pub index: u64,
    /// The snapshot's last included term.
    #[prost(uint64, tag = "5")]
    pub snap_term: u64,
    /// Offset of `data` in the snapshot file.
    #[prost(uint64, tag = "6")]
    pub offset: u64,
    /// Length of the whole snapshot file.
    #[prost(uint64, tag = "7")]
    pub len: u64,
    /// The bytes; decoded as a slice of the frame, without copying.
    #[prost(bytes = "bytes", tag = "8")]
    pub data: Bytes,
}

/// A follower's answer to a chunk ([`PeerMessage::SnapshotAck`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotAck {
    /// The follower.
    #[prost(uint64, tag = "1")]
    pub from: u64,
    /// The leader.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// The snapshot's last included index.
    #[prost(uint64, tag = "3")]
    pub index: u64,
    /// The snapshot's last included term.
    #[prost(uint64, tag = "4")]
    pub snap_term: u64,
    /// Bytes of the snapshot the follower holds (the next offset it expects).
    #[prost(uint64, tag = "5")]
    pub received: u64,
    /// A [`WireChunkStatus`] value.
    #[prost(enumeration = "WireChunkStatus", tag = "6")]
    pub status: i32,
}

/// [`ChunkStatus`] on the wire. 0 is "unspecified" and never sent (see "Evolution").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WireChunkStatus {
    /// Missing: refused when decoded.
    Unspecified = 0,
    /// [`ChunkStatus::Progress`].
    Progress = 1,
    /// [`ChunkStatus::Gap`].
    Gap = 2,
    /// [`ChunkStatus::Installed`].
    Installed = 3,
    /// [`ChunkStatus::Rejected`].
    Rejected = 4,
}

impl From<ChunkStatus> for WireChunkStatus {
    fn from(s: ChunkStatus) -> Self {
        match s {
            ChunkStatus::Progress => WireChunkStatus::Progress,
            ChunkStatus::Gap => WireChunkStatus::Gap,
            ChunkStatus::Installed => WireChunkStatus::Installed,
            ChunkStatus::Rejected => WireChunkStatus::Rejected,
        }
    }
}

/// Decodes a `ChunkStatus` field; unknown values and 0 are refused.
fn chunk_status(value: i32, field: &'static str) -> Result<ChunkStatus, WireError> {
    match WireChunkStatus::try_from(value) {
        Ok(WireChunkStatus::Progress) => Ok(ChunkStatus::Progress),
        Ok(WireChunkStatus::Gap) => Ok(ChunkStatus::Gap),
        Ok(WireChunkStatus::Installed) => Ok(ChunkStatus::Installed),
        Ok(WireChunkStatus::Rejected) => Ok(ChunkStatus::Rejected),
        Ok(WireChunkStatus::Unspecified) | Err(_) => Err(WireError::UnknownEnumValue { field, value }),
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

impl From<PeerMessage> for Envelope {
    fn from(msg: PeerMessage) -> Self {
        let kind = match msg {
            PeerMessage::Raft(m) => EnvelopeKind::Raft(m.into()),
            PeerMessage::Forward { from, to, proposals } => {
                EnvelopeKind::Forward(Forward { from, to, proposals })
            }
            PeerMessage::SnapshotChunk { from, to, term, index, snap_term, offset, len, data } => {
                EnvelopeKind::SnapshotChunk(SnapshotChunk {
                    from,
                    to,
                    term,
                    index,
                    snap_term,
                    offset,
                    len,
                    data,
                })
            }
            PeerMessage::SnapshotAck { from, to, index, snap_term, received, status } => {
                EnvelopeKind::SnapshotAck(SnapshotAck {
                    from,
                    to,
                    index,
                    snap_term,
                    received,
                    status: WireChunkStatus::from(status).into(),
                })
            }
        };
        Envelope { kind: Some(kind) }
    }
}

impl TryFrom<Envelope> for PeerMessage {
    type Error = WireError;

    fn try_from(env: Envelope) -> Result<Self, WireError> {
        match env.kind {
            Some(EnvelopeKind::Raft(m)) => Ok(PeerMessage::Raft(m.try_into()?)),
            Some(EnvelopeKind::Forward(f)) => Ok(PeerMessage::Forward {
                from: node_id(f.from, "Forward.from")?,
                to: node_id(f.to, "Forward.to")?,
                proposals: f.proposals,
            }),
            Some(EnvelopeKind::SnapshotChunk(c)) => Ok(PeerMessage::SnapshotChunk {
                from: node_id(c.from, "SnapshotChunk.from")?,
                to: node_id(c.to, "SnapshotChunk.to")?,
                term: c.term,
                index: c.index,
                snap_term: c.snap_term,
                offset: c.offset,
                len: c.len,
                data: c.data,
            }),
            Some(EnvelopeKind::SnapshotAck(a)) => Ok(PeerMessage::SnapshotAck {
                from: node_id(a.from, "SnapshotAck.from")?,
                to: node_id(a.to, "SnapshotAck.to")?,
                index: a.index,
                snap_term: a.snap_term,
                received: a.received,
                status: chunk_status(a.status, "SnapshotAck.status")?,
            }),
            None => Err(WireError::UnknownKind { message: "Envelope" }),
        }
    }
}

impl From<Message> for RaftMessage {
    fn from(m: Message) -> Self {
        let body = match m.body {
            MessageBody::PreVote { last_log_index, last_log_term } => {
                RaftBody::PreVote(VoteRequest { last_log_index, last_log_term, transfer: false })
            }
            MessageBody::PreVoteResponse { granted } => RaftBody::PreVoteResponse(VoteResponse { granted }),
            MessageBody::RequestVote { last_log_index, last_log_term, transfer } => {
                RaftBody::RequestVote(VoteRequest { last_log_index, last_log_term, transfer })
            }
            MessageBody::RequestVoteResponse { granted } => {
                RaftBody::RequestVoteResponse(VoteResponse { granted })
            }
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                RaftBody::AppendEntries(AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries: entries
                        .into_iter()
                        .map(|e| Entry {
                            term: e.term,
                            index: e.index,
                            data: e.data,
                            kind: u32::from(e.kind.code()),
                        })
                        .collect(),
                    leader_commit,
                })
            }
            MessageBody::AppendEntriesResponse { success, index, conflict_term, conflict_index } => {
                RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                    success,
                    index,
                    conflict_term,
                    conflict_index,
                })
            }
            MessageBody::Heartbeat { leader_commit, read_round } => {
                RaftBody::Heartbeat(Heartbeat { leader_commit, read_round })
            }
            MessageBody::HeartbeatResponse { read_round } => {
                RaftBody::HeartbeatResponse(HeartbeatResponse { read_round })
            }
            MessageBody::ReadIndex { request_id } => RaftBody::ReadIndex(ReadIndex { request_id }),
            MessageBody::ReadIndexResponse { request_id, index } => {
                RaftBody::ReadIndexResponse(ReadIndexResponse { request_id, index })
            }
            MessageBody::TimeoutNow => RaftBody::TimeoutNow(TimeoutNow {}),
        };
        RaftMessage { from: m.from, to: m.to, term: m.term, body: Some(body) }
    }
}

impl TryFrom<RaftMessage> for Message {
    type Error = WireError;

    fn try_from(m: RaftMessage) -> Result<Self, WireError> {
        let body = match m.body {
            Some(RaftBody::PreVote(v)) => {
                MessageBody::PreVote { last_log_index: v.last_log_index, last_log_term: v.last_log_term }
            }
            Some(RaftBody::PreVoteResponse(v)) => MessageBody::PreVoteResponse { granted: v.granted },
            Some(RaftBody::RequestVote(v)) => MessageBody::RequestVote {
                last_log_index: v.last_log_index,
                last_log_term: v.last_log_term,
                transfer: v.transfer,
            },
            Some(RaftBody::RequestVoteResponse(v)) => MessageBody::RequestVoteResponse { granted: v.granted },
            Some(RaftBody::AppendEntries(a)) => MessageBody::AppendEntries {
                prev_log_index: a.prev_log_index,
                prev_log_term: a.prev_log_term,
                entries: a
                    .entries
                    .into_iter()
                    .map(|e| {
                        let kind = raft::EntryKind::from_code(u64::from(e.kind)).ok_or(
                            WireError::UnknownEnumValue { field: "Entry.kind", value: e.kind as i32 },
                        )?;
                        Ok(raft::Entry { term: e.term, index: e.index, kind, data: e.data })
                    })
                    .collect::<Result<_, WireError>>()?,
                leader_commit: a.leader_commit,
            },
            Some(RaftBody::AppendEntriesResponse(a)) => MessageBody::AppendEntriesResponse {
                success: a.success,
                index: a.index,
                conflict_term: a.conflict_term,
                conflict_index: a.conflict_index,
            },
            Some(RaftBody::Heartbeat(h)) => {
                MessageBody::Heartbeat { leader_commit: h.leader_commit, read_round: h.read_round }
            }
            Some(RaftBody::HeartbeatResponse(h)) => {
                MessageBody::HeartbeatResponse { read_round: h.read_round }
            }
            Some(RaftBody::ReadIndex(r)) => MessageBody::ReadIndex { request_id: r.request_id },
            Some(RaftBody::ReadIndexResponse(r)) => {
                MessageBody::ReadIndexResponse { request_id: r.request_id, index: r.index }
            }
            Some(RaftBody::TimeoutNow(_)) => MessageBody::TimeoutNow,
            None => return Err(WireError::UnknownKind { message: "RaftMessage" }),
        };
        Ok(Message {
            from: node_id(m.from, "RaftMessage.from")?,
            to: node_id(m.to, "RaftMessage.to")?,
            term: m.term,
            body,
        })
    }
}

/// Rejects the "missing" node id 0.
fn node_id(id: u64, field: &'static str) -> Result<NodeId, WireError> {
    if id == 0 {
        Err(WireError::MissingNodeId { field })
    } else {
        Ok(id)
    }
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// Appends one frame holding `msg` to `dst`. Fails (appending nothing) if the body would exceed
/// `max_frame` bytes.
pub fn encode_frame(
    msg: &impl prost::Message,
    max_frame: usize,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    let len = msg.encoded_len();
    let header = u32::try_from(len).ok().filter(|_| len <= max_frame);
    let Some(header) = header else {
        return Err(WireError::FrameTooLarge { len: len as u64, max: max_frame });
    };
    dst.reserve(FRAME_HEADER_LEN + len);
    dst.put_u32(header);
    // Cannot fail: `reserve` made room and `BytesMut` grows on demand anyway.
    msg.encode(dst).map_err(|_| WireError::FrameTooLarge { len: len as u64, max: max_frame })?;
    Ok(())
}

/// Appends one frame holding `msg` to `dst` (see [`encode_frame`]).
pub fn encode_message(msg: PeerMessage, max_frame: usize, dst: &mut BytesMut) -> Result<(), WireError> {
    encode_message_with(msg, &mut EntriesCache::default(), max_frame, dst)
}

/// [`encode_message`], for one of several messages: an AppendEntries carrying the same entries as
/// the last one encoded with `cache` reuses their encoding (see `append`: the leader sends the same
/// entries to every follower). The bytes are the same as [`encode_frame`] of the [`Envelope`].
pub fn encode_message_with(
    msg: PeerMessage,
    cache: &mut EntriesCache,
    max_frame: usize,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    match msg {
        PeerMessage::Raft(Message {
            from,
            to,
            term,
            body: MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit },
        }) => {
            let m = append::Append {
                from,
                to,
                term,
                prev_log_index,
                prev_log_term,
                entries: &entries,
                leader_commit,
            };
            append::encode_append(&m, cache, max_frame, dst)
        }
        msg => encode_frame(&Envelope::from(msg), max_frame, dst),
    }
}

/// Splits the next complete frame body off the front of `src`.
///
/// Returns `Ok(None)` if `src` does not hold a complete frame yet (having reserved room for the
/// announced frame, so the caller's next read can fill it in one go), and an error if the header
/// announces more than `max_frame` bytes. The returned body shares `src`'s allocation (no copy).
pub fn decode_frame(src: &mut BytesMut, max_frame: usize) -> Result<Option<Bytes>, WireError> {
    if src.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    header.copy_from_slice(&src[..FRAME_HEADER_LEN]);
    let len = u32::from_be_bytes(header) as usize;
    if len > max_frame {
        return Err(WireError::FrameTooLarge { len: len as u64, max: max_frame });
    }
    let total = FRAME_HEADER_LEN + len;
    if src.len() < total {
        // Room for the announced frame, but at most MAX_FRAME_RESERVE ahead of the bytes that
        // arrived: a header alone (a peer's or a stranger's) must not make us allocate up to
        // `max_frame` (found by tests/fuzz.rs: 11 bytes made a 64 MiB reservation).
        src.reserve((total - src.len()).min(MAX_FRAME_RESERVE));
        return Ok(None);
    }
    src.advance(FRAME_HEADER_LEN);
    Ok(Some(src.split_to(len).freeze()))
}

/// Decodes a handshake frame body.
pub fn decode_handshake(body: Bytes) -> Result<Handshake, WireError> {
    Ok(Handshake::decode(body)?)
}

/// Decodes a message frame body. Entry data and proposals are slices of `body`.
///
/// The kinds on every write's path, in the shape encoders write, are decoded by hand (`decode`);
/// anything else, or anything odd, by `prost`. The result is the same either way.
pub fn decode_message(body: Bytes) -> Result<PeerMessage, WireError> {
    if let Some(msg) = decode::decode_by_hand(&body) {
        return Ok(msg);
    }
    decode_message_with_prost(body)
}

/// [`decode_message`] through `prost` alone: the reference the hand decoder is checked against
/// (by its tests and by the `peer_frames` fuzz target).
pub fn decode_message_with_prost(body: Bytes) -> Result<PeerMessage, WireError> {
    Envelope::decode(body)?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = raft::Entry> {
        (any::<u64>(), any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(term, index, config, data)| {
                let kind = if config { raft::EntryKind::Config } else { raft::EntryKind::Normal };
                raft::Entry::with_kind(term, index, kind, data)
            },
        )
    }

    fn arb_body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(last_log_index, last_log_term)| MessageBody::PreVote {
                last_log_index,
                last_log_term
            }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(last_log_index, last_log_term, transfer)| {
                    MessageBody::RequestVote { last_log_index, last_log_term, transfer }
                }
            ),
            any::<bool>().prop_map(|granted| MessageBody::RequestVoteResponse { granted }),
            (any::<u64>(), any::<u64>(), proptest::collection::vec(arb_entry(), 0..8), any::<u64>())
                .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit)| {
                    MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit }
                }),
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(success, index, conflict_term, conflict_index)| MessageBody::AppendEntriesResponse {
                    success,
                    index,
                    conflict_term,
                    conflict_index
                }
            ),
            (any::<u64>(), any::<u64>())
                .prop_map(|(leader_commit, read_round)| MessageBody::Heartbeat { leader_commit, read_round }),
            any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
            any::<u64>().prop_map(|request_id| MessageBody::ReadIndex { request_id }),
            (any::<u64>(), any::<Option<u64>>())
                .prop_map(|(request_id, index)| MessageBody::ReadIndexResponse { request_id, index }),
            Just(MessageBody::TimeoutNow),
        ]
    }

    /// Every kind of [`PeerMessage`], with arbitrary field values (node ids are never 0).
    fn arb_message() -> impl Strategy<Value = PeerMessage> {
        prop_oneof![
            (1..=u64::MAX, 1..=u64::MAX, any::<u64>(), arb_body())
                .prop_map(|(from, to, term, body)| PeerMessage::Raft(Message { from, to, term, body })),
            (
                1..=u64::MAX,
                1..=u64::MAX,
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 0..6)
            )
                .prop_map(|(from, to, proposals)| PeerMessage::Forward {
                    from,
                    to,
                    proposals: proposals.into_iter().map(Bytes::from).collect()
                }),
            (
                (1..=u64::MAX, 1..=u64::MAX, any::<u64>(), any::<u64>()),
                (any::<u64>(), any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64))
            )
                .prop_map(|((from, to, term, index), (snap_term, offset, len, data))| {
                    PeerMessage::SnapshotChunk {
                        from,
                        to,
                        term,
                        index,
                        snap_term,
                        offset,
                        len,
                        data: Bytes::from(data),
                    }
                }),
            (1..=u64::MAX, 1..=u64::MAX, any::<u64>(), any::<u64>(), any::<u64>(), arb_chunk_status())
                .prop_map(|(from, to, index, snap_term, received, status)| PeerMessage::SnapshotAck {
                    from,
                    to,
                    index,
                    snap_term,
                    received,
                    status
                }),
        ]
    }

    fn arb_chunk_status() -> impl Strategy<Value = ChunkStatus> {
        prop_oneof![
            Just(ChunkStatus::Progress),
            Just(ChunkStatus::Gap),
            Just(ChunkStatus::Installed),
            Just(ChunkStatus::Rejected),
        ]
    }

    fn roundtrip_all(msgs: &[PeerMessage]) -> Vec<PeerMessage> {
        let mut buf = BytesMut::new();
        for m in msgs {
            encode_message(m.clone(), DEFAULT_MAX_FRAME, &mut buf).unwrap();
        }
        let mut out = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
            out.push(decode_message(frame).unwrap());
        }
        assert!(buf.is_empty(), "leftover bytes after the last frame");
        out
    }

    proptest! {
        #[test]
        fn messages_roundtrip(msgs in proptest::collection::vec(arb_message(), 0..16)) {
            prop_assert_eq!(roundtrip_all(&msgs), msgs);
        }

        /// A stream split at any point decodes to the same frames once the rest arrives.
        #[test]
        fn frames_survive_any_split(msgs in proptest::collection::vec(arb_message(), 1..6), cut in any::<prop::sample::Index>()) {
            let mut whole = BytesMut::new();
            for m in &msgs {
                encode_message(m.clone(), DEFAULT_MAX_FRAME, &mut whole).unwrap();
            }
            let cut = cut.index(whole.len() + 1);
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut out = Vec::new();
            while let Some(f) = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                out.push(decode_message(f).unwrap());
            }
            buf.extend_from_slice(&whole[cut..]);
            while let Some(f) = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                out.push(decode_message(f).unwrap());
            }
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn handshake_roundtrip(cluster in any::<u64>(), node in 1..=u64::MAX) {
            let mut buf = BytesMut::new();
            encode_frame(&Handshake::new(cluster, node), MAX_HANDSHAKE_FRAME, &mut buf).unwrap();
            let frame = decode_frame(&mut buf, MAX_HANDSHAKE_FRAME).unwrap().unwrap();
            let hs = decode_handshake(frame).unwrap();
            prop_assert_eq!(hs.validate(cluster), Ok(node));
        }

        /// Random bytes never panic: they decode to frames and messages, or to errors.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..600) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode_frame(&mut buf, max) {
                let _ = decode_message(frame.clone());
                let _ = decode_handshake(frame).map(|h| h.validate(7));
            }
            let _ = decode_message(Bytes::from(bytes.clone()));
            let _ = decode_handshake(Bytes::from(bytes)).map(|h| h.validate(7));
        }

        /// Corrupting one byte of a valid frame never panics.
        #[test]
        fn corrupted_frames_never_panic(msg in arb_message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut whole = BytesMut::new();
            encode_message(msg, DEFAULT_MAX_FRAME, &mut whole).unwrap();
            let at = at.index(whole.len());
            whole[at] = byte;
            if let Ok(Some(frame)) = decode_frame(&mut whole, DEFAULT_MAX_FRAME) {
                let _ = decode_message(frame);
            }
        }
    }

    /// Zero (omitted on the wire), small and any values.
    fn arb_u64() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 1u64..300, any::<u64>()]
    }

    fn arb_append() -> impl Strategy<Value = PeerMessage> {
        let entry = (arb_u64(), arb_u64(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(term, index, config, data)| {
                let kind = if config { raft::EntryKind::Config } else { raft::EntryKind::Normal };
                raft::Entry::with_kind(term, index, kind, data)
            });
        (
            arb_u64(),
            arb_u64(),
            arb_u64(),
            arb_u64(),
            arb_u64(),
            proptest::collection::vec(entry, 0..40),
            arb_u64(),
        )
            .prop_map(|(from, to, term, prev_log_index, prev_log_term, entries, leader_commit)| {
                let body =
                    MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit };
                PeerMessage::Raft(Message { from, to, term, body })
            })
    }

    proptest! {
        /// The hand-written AppendEntries encoding (`append`) is byte for byte prost's, for the
        /// first message and for a copy to another follower that reuses the cached entries.
        #[test]
        fn append_entries_are_encoded_as_prost_does(msgs in proptest::collection::vec(prop_oneof![arb_append(), arb_message()], 1..6)) {
            let mut cache = EntriesCache::default();
            for m in msgs {
                let mut copy = m.clone();
                if let PeerMessage::Raft(r) = &mut copy {
                    r.to = r.to.wrapping_add(1);
                }
                for m in [m, copy] {
                    let mut ours = BytesMut::new();
                    encode_message_with(m.clone(), &mut cache, DEFAULT_MAX_FRAME, &mut ours).unwrap();
                    let mut prosts = BytesMut::new();
                    encode_frame(&Envelope::from(m), DEFAULT_MAX_FRAME, &mut prosts).unwrap();
                    prop_assert_eq!(&ours[..], &prosts[..]);
                }
            }
        }
    }

    #[test]
    fn oversize_append_entries_are_refused_like_any_message() {
        let entries = vec![raft::Entry::new(1, 1, vec![7u8; 1000])];
        let body =
            MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, entries, leader_commit: 0 };
        let msg = PeerMessage::Raft(Message { from: 1, to: 2, term: 1, body });
        let mut prost_len = BytesMut::new();
        encode_frame(&Envelope::from(msg.clone()), DEFAULT_MAX_FRAME, &mut prost_len).unwrap();
        let len = prost_len.len() - FRAME_HEADER_LEN;
        let mut buf = BytesMut::new();
        let err = encode_message(msg.clone(), len - 1, &mut buf).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { max, .. } if max == len - 1), "{err}");
        assert!(buf.is_empty(), "nothing written for a refused frame");
        encode_message(msg, len, &mut buf).unwrap();
        assert_eq!(buf, prost_len);
    }

    #[test]
    fn oversize_frames_are_rejected_on_both_sides() {
        let msg = PeerMessage::Forward { from: 1, to: 2, proposals: vec![Bytes::from(vec![7u8; 1000])] };
        let mut buf = BytesMut::new();
        let err = encode_message(msg.clone(), 999, &mut buf).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { max: 999, .. }), "{err}");
        assert!(buf.is_empty(), "a refused frame must append nothing");

        encode_message(msg, DEFAULT_MAX_FRAME, &mut buf).unwrap();
        let body_len = buf.len() - FRAME_HEADER_LEN;
        let mut small = buf.clone();
        assert_eq!(
            decode_frame(&mut small, body_len - 1),
            Err(WireError::FrameTooLarge { len: body_len as u64, max: body_len - 1 })
        );
        assert!(decode_frame(&mut buf, body_len).unwrap().is_some());

        // Only the header matters: a huge announced length is refused before any body arrives.
        let mut header_only = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode_frame(&mut header_only, DEFAULT_MAX_FRAME),
            Err(WireError::FrameTooLarge { len, .. }) if len == u64::from(u32::MAX)
        ));
    }

    #[test]
    fn redis_ping_is_not_a_handshake() {
        let mut buf = BytesMut::from(&b"PING\r\n"[..]);
        assert!(matches!(decode_frame(&mut buf, MAX_HANDSHAKE_FRAME), Err(WireError::FrameTooLarge { .. })));
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert!(matches!(decode_frame(&mut buf, MAX_HANDSHAKE_FRAME), Err(WireError::FrameTooLarge { .. })));
    }

    #[test]
    fn handshake_validation() {
        let ok = Handshake::new(42, 3);
        assert_eq!(ok.validate(42), Ok(3));
        assert_eq!(ok.validate(43), Err(WireError::ClusterMismatch { ours: 43, theirs: 42 }));
        let v2 = Handshake { version: PROTOCOL_VERSION + 1, ..ok.clone() };
        assert!(matches!(v2.validate(42), Err(WireError::VersionMismatch { .. })));
        let bad = Handshake { magic: 0x5049_4E47, ..ok.clone() };
        assert_eq!(bad.validate(42), Err(WireError::BadMagic { got: 0x5049_4E47 }));
        let anon = Handshake { node_id: 0, ..ok };
        assert!(matches!(anon.validate(42), Err(WireError::MissingNodeId { .. })));
        // An empty body decodes to all zeros: magic 0 is refused.
        assert!(matches!(
            decode_handshake(Bytes::new()).unwrap().validate(42),
            Err(WireError::BadMagic { got: 0 })
        ));
    }

    #[test]
    fn keepalive_handshake_and_frame() {
        use std::time::Duration;
        let hs = Handshake::new(42, 3).with_keepalive(Duration::from_micros(100_500));
        assert_eq!(hs.keepalive_ms, 101, "rounded up");
        assert_eq!(Handshake::new(1, 2).with_keepalive(Duration::ZERO).keepalive_ms, 1);
        let mut buf = BytesMut::new();
        encode_frame(&hs, MAX_HANDSHAKE_FRAME, &mut buf).unwrap();
        let body = decode_frame(&mut buf, MAX_HANDSHAKE_FRAME).unwrap().unwrap();
        assert_eq!(decode_handshake(body).unwrap(), hs);
        // An older node's handshake (no field 5) reads as "no keepalives"; an older node reading
        // ours skips the unknown field.
        let old = Handshake::new(42, 3);
        let mut buf = BytesMut::new();
        encode_frame(&old, MAX_HANDSHAKE_FRAME, &mut buf).unwrap();
        let body = decode_frame(&mut buf, MAX_HANDSHAKE_FRAME).unwrap().unwrap();
        assert_eq!(decode_handshake(body).unwrap().keepalive_ms, 0);
        // A keepalive is an empty frame, split off like any other.
        let mut buf = BytesMut::from(&KEEPALIVE_FRAME[..]);
        buf.extend_from_slice(&KEEPALIVE_FRAME);
        assert_eq!(decode_frame(&mut buf, 16).unwrap(), Some(Bytes::new()));
        assert_eq!(decode_frame(&mut buf, 16).unwrap(), Some(Bytes::new()));
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_and_missing_kinds_are_errors() {
        // An empty envelope (or one whose only field is a tag from a newer version).
        assert_eq!(decode_message(Bytes::new()), Err(WireError::UnknownKind { message: "Envelope" }));
        let mut newer = BytesMut::new();
        // Field 15, wire type 2 (length-delimited), 3 bytes: an unknown future kind.
        newer.put_slice(&[15 << 3 | 2, 3, 1, 2, 3]);
        assert_eq!(decode_message(newer.freeze()), Err(WireError::UnknownKind { message: "Envelope" }));

        let raft_without_body =
            Envelope { kind: Some(EnvelopeKind::Raft(RaftMessage { from: 1, to: 2, term: 3, body: None })) };
        assert_eq!(
            PeerMessage::try_from(raft_without_body),
            Err(WireError::UnknownKind { message: "RaftMessage" })
        );
        let no_from =
            Envelope { kind: Some(EnvelopeKind::Forward(Forward { from: 0, to: 2, proposals: vec![] })) };
        assert_eq!(PeerMessage::try_from(no_from), Err(WireError::MissingNodeId { field: "Forward.from" }));
    }

    #[test]
    fn decoding_does_not_copy_payloads() {
        let data = Bytes::from(vec![9u8; 300]);
        let msg = PeerMessage::Raft(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![raft::Entry::new(1, 1, data)],
                leader_commit: 0,
            },
        });
        let mut buf = BytesMut::new();
        encode_message(msg, DEFAULT_MAX_FRAME, &mut buf).unwrap();
        let frame = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        let range = frame.as_ptr_range();
        let PeerMessage::Raft(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) =
            decode_message(frame).unwrap()
        else {
            panic!("wrong kind");
        };
        let p = entries[0].data.as_ptr();
        assert!(range.contains(&p), "entry data was copied out of the frame buffer");
    }

    #[test]
    fn unknown_or_missing_chunk_statuses_are_refused() {
        let ack = |status: i32| Envelope {
            kind: Some(EnvelopeKind::SnapshotAck(SnapshotAck {
                from: 2,
                to: 1,
                index: 10,
                snap_term: 3,
                received: 4096,
                status,
            })),
        };
        for value in [0, 5, 99, -1, i32::MAX] {
            let mut buf = BytesMut::new();
            encode_frame(&ack(value), DEFAULT_MAX_FRAME, &mut buf).unwrap();
            let frame = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
            let err = decode_message(frame).unwrap_err();
            assert_eq!(err, WireError::UnknownEnumValue { field: "SnapshotAck.status", value });
            assert!(err.to_string().contains("SnapshotAck.status has the value"), "{err}");
        }
        // The known values, by number (the numbering is part of the protocol).
        for (value, status) in [
            (1, ChunkStatus::Progress),
            (2, ChunkStatus::Gap),
            (3, ChunkStatus::Installed),
            (4, ChunkStatus::Rejected),
        ] {
            let PeerMessage::SnapshotAck { status: got, .. } = PeerMessage::try_from(ack(value)).unwrap()
            else {
                panic!("wrong kind");
            };
            assert_eq!(got, status);
        }
        let no_to = Envelope {
            kind: Some(EnvelopeKind::SnapshotChunk(SnapshotChunk { from: 1, ..SnapshotChunk::default() })),
        };
        assert_eq!(PeerMessage::try_from(no_to), Err(WireError::MissingNodeId { field: "SnapshotChunk.to" }));
    }

    #[test]
    fn a_full_chunk_fits_the_frame_limit_with_its_overhead() {
        for chunk_size in [1usize, 4096, 1 << 20, 16 << 20] {
            // Every scalar at its largest (varints of 10 bytes).
            let msg = PeerMessage::SnapshotChunk {
                from: u64::MAX,
                to: u64::MAX,
                term: u64::MAX,
                index: u64::MAX,
                snap_term: u64::MAX,
                offset: u64::MAX,
                len: u64::MAX,
                data: Bytes::from(vec![0xA5; chunk_size]),
            };
            let body = Envelope::from(msg.clone()).encoded_len();
            assert!(body <= chunk_size + SNAPSHOT_CHUNK_OVERHEAD, "{chunk_size}: body {body}");
            let max = max_frame_for_chunks(chunk_size);
            assert!(max >= DEFAULT_MAX_FRAME);
            let mut buf = BytesMut::new();
            encode_message(msg.clone(), max, &mut buf).unwrap();
            let frame = decode_frame(&mut buf, max).unwrap().unwrap();
            assert_eq!(decode_message(frame).unwrap(), msg);
        }
        assert_eq!(max_frame_for_chunks(100 << 20), (100 << 20) + SNAPSHOT_CHUNK_OVERHEAD);
        // The default chunk size (1 MiB) is far below the default limit.
        assert_eq!(max_frame_for_chunks(engine::SnapshotConfig::default().chunk_size), DEFAULT_MAX_FRAME);
    }

    #[test]
    fn decoding_does_not_copy_snapshot_chunks() {
        let msg = PeerMessage::SnapshotChunk {
            from: 1,
            to: 2,
            term: 3,
            index: 4,
            snap_term: 2,
            offset: 0,
            len: 300,
            data: Bytes::from(vec![7u8; 300]),
        };
        let mut buf = BytesMut::new();
        encode_message(msg, DEFAULT_MAX_FRAME, &mut buf).unwrap();
        let frame = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        let range = frame.as_ptr_range();
        let PeerMessage::SnapshotChunk { data, .. } = decode_message(frame).unwrap() else {
            panic!("wrong kind");
        };
        assert!(range.contains(&data.as_ptr()), "chunk data was copied out of the frame buffer");
    }
}
