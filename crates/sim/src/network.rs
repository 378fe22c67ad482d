//! The simulated network: per-message delay, loss, duplication, and partitions (directed link cuts,
//! so one-way partitions are possible). Everything is drawn from the simulation's seeded RNG.
//!
//! Order: the real transport (`raft-kv/src/transport`) carries each ordered pair of nodes over one
//! TCP connection at a time, so messages arrive in send order, possibly with gaps, and only a
//! snapshot chunk may be overtaken (by other messages; chunks keep their order among themselves).
//! The simulator keeps that order per directed link while the link's connection lives: a message
//! is delivered no earlier than the one sent before it on the same link, so a varying delay makes
//! messages bunch up behind a slow one (as TCP's loss recovery does) instead of overtaking it.
//! Reordering happens where it really does:
//! - across a reconnection ([`Network::reconnect`]: a crash, a partition that heals, a thread stall
//!   or slow disk that silences a node for longer than the peers' idle timeout): messages still in
//!   flight on the old connection are lost or arrive whenever they arrive, and the new connection's
//!   messages do not wait for them;
//! - a duplicate (a stale copy) arrives after its own delay, whatever was sent since;
//! - in some runs ([`NetConfig::reorder`]) every message takes its own delay while the faults last,
//!   as on a network without ordering: the core must stay safe under any order.
//!
//! Why it matters: a follower rejects an AppendEntries that overtook an earlier one (a gap), and its
//! leader falls back to probing. Under the old model (every message reordered, also once the faults
//! had stopped) a leader that streams one entry per message to a lagging follower fell behind its
//! clients for over a second (seeds 303232 and 703472), which the real transport never causes.
//!
//! Invariant: a cut is checked when a message is *delivered*, so a partition that starts while a
//! message is in flight drops it, like a real network.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Maximum one-way delay; delays are uniform in between.
    pub max_delay: u64,
    /// Probability that a message takes a long detour (up to 10 x max_delay); on an ordered link
    /// the messages sent after it wait for it.
    pub spike: f64,
    /// Messages ignore the order of their link (each arrives after its own delay): a network
    /// without ordering. Turned off when the faults stop.
    pub reorder: bool,
}

/// Which stream of a link a message travels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Everything but snapshot chunks: strictly in send order.
    Ordered,
    /// Snapshot chunks: in order among themselves, never ahead of an earlier ordered message, but
    /// ordered messages sent later may overtake them (the transport holds chunks back).
    Chunk,
}

/// The ordering state of one directed link's current connection.
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    /// Delivery time of the last ordered message sent on this connection.
    ordered: u64,
    /// Delivery time of the last snapshot chunk sent on this connection.
    chunk: u64,
}

/// Link state of the network.
#[derive(Clone, Debug, Default)]
pub struct Network {
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Per directed link (from, to): the order of its current connection.
    links: BTreeMap<(NodeId, NodeId), Link>,
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

    /// The link `from -> to` gets a new connection: what is sent from now on no longer waits for
    /// what is still in flight on the old one (the caller decides what of that is lost).
    pub fn reconnect(&mut self, from: NodeId, to: NodeId) {
        self.links.remove(&(from, to));
    }

    /// Every link to or from `id` gets a new connection (see [`Network::reconnect`]).
    pub fn reconnect_node(&mut self, id: NodeId) {
        self.links.retain(|&(a, b), _| a != id && b != id);
    }

    /// The delivery times of a message sent at `now` on `from -> to` in `lane`: empty if lost, two
    /// if duplicated. The first copy keeps the link's order (unless `cfg.reorder`); a duplicate
    /// arrives after its own delay.
    pub fn send(
        &mut self,
        cfg: &NetConfig,
        rng: &mut Rng,
        now: u64,
        (from, to): (NodeId, NodeId),
        lane: Lane,
    ) -> Vec<u64> {
        let delays = Self::delays(cfg, rng);
        let Some(&first) = delays.first() else { return delays };
        let link = self.links.entry((from, to)).or_default();
        let mut at = now + first;
        if !cfg.reorder {
            at = match lane {
                Lane::Ordered => at.max(link.ordered),
                Lane::Chunk => at.max(link.ordered).max(link.chunk),
            };
        }
        match lane {
            Lane::Ordered => link.ordered = link.ordered.max(at),
            Lane::Chunk => link.chunk = link.chunk.max(at),
        }
        let mut times = vec![at];
        times.extend(delays[1..].iter().map(|d| now + d));
        times
    }

    /// The delivery delays of one message, each on its own: empty if lost, two if duplicated.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(reorder: bool) -> NetConfig {
        NetConfig { drop: 0.0, duplicate: 0.0, min_delay: 1, max_delay: 24, spike: 0.05, reorder }
    }

    /// Sends `n` messages on link 1 -> 2, one per ms, and returns their delivery times in send order.
    fn times(net: &mut Network, cfg: &NetConfig, rng: &mut Rng, start: u64, n: u64, lane: Lane) -> Vec<u64> {
        (0..n).map(|i| net.send(cfg, rng, start + i, (1, 2), lane)[0]).collect()
    }

    #[test]
    fn a_link_delivers_in_send_order() {
        let (mut net, mut rng, cfg) = (Network::default(), Rng::new(7), cfg(false));
        let t = times(&mut net, &cfg, &mut rng, 0, 500, Lane::Ordered);
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
        // Other links have their own order.
        let other = net.send(&cfg, &mut rng, 0, (2, 1), Lane::Ordered)[0];
        assert!(other < *t.last().unwrap());
    }

    #[test]
    fn without_order_messages_overtake_each_other() {
        let (mut net, mut rng, cfg) = (Network::default(), Rng::new(7), cfg(true));
        let t = times(&mut net, &cfg, &mut rng, 0, 500, Lane::Ordered);
        assert!(t.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn a_new_connection_does_not_wait_for_the_old_one() {
        // One slow message (a detour of 200 ms) on the old connection.
        let slow = NetConfig { min_delay: 200, max_delay: 200, spike: 0.0, ..cfg(false) };
        let fast = NetConfig { min_delay: 1, max_delay: 1, spike: 0.0, ..cfg(false) };
        let mut rng = Rng::new(7);
        let mut net = Network::default();
        assert_eq!(net.send(&slow, &mut rng, 0, (1, 2), Lane::Ordered), vec![200]);
        // On the same connection the next message waits for it ...
        assert_eq!(net.send(&fast, &mut rng, 10, (1, 2), Lane::Ordered), vec![200]);
        // ... but not on a new one, nor on another link.
        net.reconnect(1, 2);
        assert_eq!(net.send(&fast, &mut rng, 20, (1, 2), Lane::Ordered), vec![21]);
        assert_eq!(net.send(&slow, &mut rng, 30, (1, 2), Lane::Ordered), vec![230]);
        net.reconnect_node(2);
        assert_eq!(net.send(&fast, &mut rng, 40, (1, 2), Lane::Ordered), vec![41]);
        assert_eq!(net.send(&fast, &mut rng, 40, (2, 1), Lane::Ordered), vec![41]);
    }

    #[test]
    fn chunks_keep_their_order_and_may_be_overtaken() {
        let (mut net, mut rng, cfg) = (Network::default(), Rng::new(9), cfg(false));
        let mut chunks = Vec::new();
        let mut overtaken = false;
        for i in 0..300 {
            let before = net.links.get(&(1, 2)).map_or(0, |l| l.ordered);
            let c = net.send(&cfg, &mut rng, 2 * i, (1, 2), Lane::Chunk)[0];
            assert!(c >= before, "a chunk never overtakes an earlier ordered message");
            chunks.push(c);
            let m = net.send(&cfg, &mut rng, 2 * i + 1, (1, 2), Lane::Ordered)[0];
            overtaken |= m < c;
        }
        assert!(chunks.windows(2).all(|w| w[0] <= w[1]), "{chunks:?}");
        assert!(overtaken, "an ordered message sent after a chunk may arrive before it");
    }
}
