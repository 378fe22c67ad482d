//! Static configuration of a Raft node.
//!
//! Time in the core is counted in ticks: the driver calls [`crate::Node::tick`] at a fixed interval,
//! so every timeout here is a number of ticks. Membership is not configuration: it is data in the
//! log and in snapshots ([`crate::membership`]); `voters` here only seeds a node that has no record
//! of it yet.

use crate::types::NodeId;

/// The configuration of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// The voters to start from when the node has no record of its membership
    /// ([`crate::Node::new`]: the membership as of the compaction point), without duplicates. Empty
    /// for a node that waits to be added to a cluster; it need not include this node (a learner).
    pub voters: Vec<NodeId>,
    /// The minimum election timeout in ticks; each term draws a timeout uniformly from
    /// `[election_ticks, 2 * election_ticks)` with the node's seeded RNG (§5.2).
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks` ticks; must be less than `election_ticks`.
    pub heartbeat_ticks: u32,
    /// The most entries one AppendEntries carries.
    pub max_entries_per_message: usize,
    /// The most payload bytes one AppendEntries carries (at least one entry is always sent).
    pub max_bytes_per_message: usize,
    /// The most AppendEntries messages in flight to one follower (pipelining).
    pub max_inflight_messages: usize,
    /// PreVote (thesis §9.6): campaign only after a majority says it would vote.
    pub pre_vote: bool,
    /// CheckQuorum: a leader steps down when it has not heard from a majority within an election
    /// timeout, and followers that hear from a leader ignore vote requests during that time.
    pub check_quorum: bool,
    /// A learner is promoted only if it holds the leader's log up to at most this many entries
    /// (otherwise commits could wait for it to catch up).
    pub max_promote_lag: u64,
    /// Seed of the node's RNG (election timeouts).
    pub seed: u64,
    /// How a leader confirms linearizable reads: a heartbeat round per batch of reads (ReadIndex,
    /// the default) or a lease (see [`crate::lease`]).
    pub read_mode: ReadMode,
    /// Lease reads: the most ticks by which the clocks of two nodes may disagree over one election
    /// timeout (clock drift, tick jitter). A lease lasts `election_ticks - lease_drift_ticks` ticks
    /// from when its heartbeats were sent; must be below `election_ticks`.
    pub lease_drift_ticks: u32,
}

/// How a leader confirms that it still leads before serving a linearizable read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// One heartbeat round for all reads queued since the last (thesis §6.4).
    #[default]
    ReadIndex,
    /// Locally while a lease holds (thesis §6.4.1), by a heartbeat round otherwise. Relies on
    /// bounded clock drift; see [`crate::lease`].
    Lease,
}

impl ReadMode {
    /// The mode's name, as on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReadMode::ReadIndex => "read-index",
            ReadMode::Lease => "lease",
        }
    }
}

impl std::str::FromStr for ReadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read-index" | "readindex" => Ok(ReadMode::ReadIndex),
            "lease" => Ok(ReadMode::Lease),
            _ => Err(format!("unknown read mode {s:?} (lease or read-index)")),
        }
    }
}

impl Config {
    /// A configuration with sensible defaults for a node `id` in a cluster of `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_entries_per_message: 1024,
            max_bytes_per_message: 1 << 20,
            max_inflight_messages: 64,
            pre_vote: true,
            check_quorum: true,
            max_promote_lag: 1024,
            seed: id,
            read_mode: ReadMode::ReadIndex,
            lease_drift_ticks: 2,
        }
    }

    /// Checks the configuration; returns a description of the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("node id 0 is reserved".into());
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err(format!("duplicate voters in {:?}", self.voters));
        }
        if sorted.contains(&0) {
            return Err("node id 0 is reserved".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "need 0 < heartbeat_ticks ({}) < election_ticks ({})",
                self.heartbeat_ticks, self.election_ticks
            ));
        }
        if self.read_mode == ReadMode::Lease {
            if !self.check_quorum {
                return Err(
                    "lease reads need check_quorum (followers must refuse votes within a lease)".into()
                );
            }
            if self.lease_drift_ticks >= self.election_ticks {
                return Err(format!(
                    "lease_drift_ticks ({}) must be below election_ticks ({})",
                    self.lease_drift_ticks, self.election_ticks
                ));
            }
        }
        if self.max_entries_per_message == 0 || self.max_inflight_messages == 0 {
            return Err("max_entries_per_message and max_inflight_messages must be positive".into());
        }
        Ok(())
    }
}
