//! engine: one raft-kv replica without I/O of its own — the key-value state machine ([`kv`]), the
//! [`driver`] that runs a Raft node, its durable log and the state machine in the order Raft
//! demands, and the [`host`] loop that feeds it batches of inputs and carries out its output. The
//! server runs the host loop on its node thread; the simulator runs it for each simulated node over
//! a virtual network and disk.

pub mod driver;
pub mod host;
pub mod kv;
pub mod snapshots;

pub use driver::{
    member_name, ApplyRecord, Driver, DriverConfig, Early, FatalError, MemberChange, PeerMessage, Request,
    RequestError, RequestId, Response, SyncJob, DEFAULT_WRITE_WINDOW, MAX_READY_ROUNDS, SWEEP_BATCH,
};
pub use host::{run_batch, take_batch, work, Input, Io, MAX_BATCH_WORK};
pub use snapshots::{
    ChunkStatus, RestoreJob, Restored, SnapshotConfig, SnapshotDone, SnapshotJob, SnapshotStats,
};
