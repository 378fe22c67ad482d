//! raft-kv: a replicated, Redis-compatible key-value store built on its own Raft.
pub mod command;
pub mod console;
pub mod resp;
pub mod transport;
pub mod wire;
