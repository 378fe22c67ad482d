//! raft: the Raft consensus algorithm as a pure state machine.
pub mod message;
pub mod types;

pub use message::{Message, MessageBody};
pub use types::{Entry, HardState, Index, NodeId, Term};
