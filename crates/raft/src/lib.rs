//! raft: the Raft consensus algorithm (Ongaro & Ousterhout, "In Search of an Understandable Consensus
//! Algorithm", and Ongaro's thesis) as a pure, deterministic state machine.
//!
//! The crate performs no I/O, reads no clock and starts no thread; it depends on nothing but `bytes`.
//! A driver owns a [`Node`], feeds it ticks, messages, proposals and reads, and executes the
//! [`Ready`] batches it hands back in the documented order (persist, send, apply, answer reads).
//! Because the node's only randomness is its own seeded RNG, a simulator can run the real code over
//! a virtual network and reproduce any run from one seed.
//!
//! Modules: [`types`] (terms, indexes, entries), [`message`] (the RPCs), [`config`], [`node`] (roles,
//! term rules, the public API), [`election`], [`events`] (election decisions as data), [`replication`], [`read_index`], [`lease`] (lease reads), [`log`] (the in-memory
//! log), [`progress`] (per-follower replication state), [`ready`] (the driver contract),
//! [`membership`] (voters, learners, quorums, configuration entries), [`reconfig`] (configuration
//! changes on a node), [`transfer`] (leadership transfer), [`rng`].

pub mod config;
pub mod election;
pub mod events;
pub mod lease;
pub mod log;
pub mod membership;
pub mod message;
pub mod node;
pub mod progress;
pub mod read_index;
pub mod ready;
pub mod reconfig;
pub mod replication;
pub mod rng;
pub mod transfer;
pub mod types;

pub use config::{Config, ReadMode};
pub use events::{ElectionEvent, ElectionLog, Refusal};
pub use log::StorageAction;
pub use membership::{ConfChange, ConfChangeError, Member, Membership, Suffrage, VoteResult};
pub use message::{Message, MessageBody};
pub use node::{Node, Role};
pub use ready::{ProposeError, ReadError, ReadState, Ready};
pub use rng::Rng;
pub use transfer::TransferError;
pub use types::{Entry, EntryKind, HardState, Index, NodeId, Term};
