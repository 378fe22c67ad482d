//! The simulated network: per-message delay (hence reordering), loss, duplication, and partitions
//! (directed link cuts, so one-way partitions are possible). Everything is drawn from the
//! simulation's seeded RNG.
//!
//! Invariant: a cut is checked when a message is *delivered*, so a partition that starts while a
//! message is in flight drops it, like a real network.

use std::collections::BTreeSet;

use raft::{NodeId, Rng};

/// Fault settings of the network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Minimum one-way delay (ms of virtual time).
    pub min_delay: u64,
    /// Maximum one-way delay; delays are uniform in between, so messages reorder.
    pub max_delay: u64,
    /// Probability that a message takes a long detour (up to 10 x max_delay).
    pub spike: f64,
}

/// Link state of the network.
#[derive(Clone, Debug, Default)]
pub struct Network {
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// True if `from` can currently reach `to`.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts both directions between the two sides.
    pub fn partition(&mut self, side: &[NodeId], all: &[NodeId]) {
        for &a in side {
            for &b in all {
                if !side.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The delivery delays of one message: empty if lost, two if duplicated.
    pub fn delays(cfg: &NetConfig, rng: &mut Rng) -> Vec<u64> {
        if rng.chance(cfg.drop) {
            return vec![];
        }
        let one = |rng: &mut Rng| {
            let base = rng.range(cfg.min_delay, cfg.max_delay + 1);
            if rng.chance(cfg.spike) {
                base + rng.range(0, 10 * cfg.max_delay + 1)
            } else {
                base
            }
        };
        let first = one(rng);
        if rng.chance(cfg.duplicate) {
            vec![first, one(rng)]
        } else {
            vec![first]
        }
    }
}
