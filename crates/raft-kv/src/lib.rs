//! raft-kv: a replicated, Redis-compatible key-value store built on its own Raft.
//!
//! Modules: [`cli`] (arguments, the seed's command line included), [`cluster`] (the group
//! configuration and member records), [`identity`] (which cluster and node a data directory
//! belongs to), [`app`] (what each command runs), [`node`] (the driver thread),
//! [`server`] (RESP connections), [`transport`] / [`wire`] (peer messages over TCP), [`resp`] and
//! [`command`] (the Redis protocol), [`admin`] (membership commands), [`console`] (the interactive client), [`status`], [`local`],
//! [`bench`] (the load generator).
pub mod admin;
pub mod app;
pub mod auth;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod command;
pub mod console;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod local;
pub mod member_cli;
pub mod metrics;
pub mod node;
pub mod peer_tls;
pub mod resp;
pub mod scan;
pub mod security;
pub mod server;
pub mod status;
pub mod tls;
pub mod transport;
pub mod wire;
