//! sim: a deterministic simulator that runs the real raft-kv replicas (real Raft core, real storage
//! over an in-memory disk that loses unsynced bytes on a crash, real KV state machine) over a
//! seeded, faulty network, with a nemesis (crashes, restarts, partitions symmetric and one-way) and
//! clients whose history is checked for linearizability.
//!
//! One u64 seed determines the whole run, event for event. Run seeds with `cargo test -p sim`;
//! `RAFT_SIM_SEEDS=N` sets how many, `RAFT_SIM_SEED=S` replays one.

mod config;
pub mod invariants;
mod io;
pub mod linearizability;
pub mod membership;
pub mod network;
mod trace;
pub mod workload;
pub mod world;

pub use world::{Failure, Report, SimConfig, World};

/// Runs one seed.
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    World::new(seed).run()
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("RAFT_SIM_SEED={seed} cargo test --release -p sim --test simulate -- --nocapture")
}
