//! engine: one raft-kv replica without I/O of its own — the key-value state machine ([`kv`]) and the
//! [`driver`] that runs a Raft node, its durable log and the state machine in the order Raft demands.
//! The server runs it on a thread; the simulator runs several over a virtual network and disk.

pub mod driver;
pub mod kv;
pub mod snapshots;

pub use driver::{
    Driver, DriverConfig, Early, FatalError, PeerMessage, Request, RequestError, RequestId, Response, SyncJob,
};
pub use snapshots::{ChunkStatus, SnapshotConfig, SnapshotDone, SnapshotJob, SnapshotStats};
