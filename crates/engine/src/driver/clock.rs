//! The leader's clock in the log: stamps on proposals and the sweeps that expire keys.
//!
//! The host tells the driver its wall clock at the start of every batch ([`Clock::set_wall`],
//! from [`crate::Io::clock_ms`]). The driver never lets that clock decide anything on its own:
//! - a leader stamps every entry it appends with [`Clock::stamp`] = the maximum of its wall clock,
//!   the last stamp it gave and the state machine's log time, so stamps never go back on a leader,
//!   and the log time (the state machine takes the maximum again at apply, see
//!   [`crate::kv::expiry`]) never goes back across leaders whose clocks disagree;
//! - when the earliest deadline of any key is behind that time, the leader proposes a
//!   [`Command::Sweep`] of at most [`SWEEP_BATCH`] keys; one sweep is in flight at a time (until
//!   this node applies it, the term changes, or a request timeout passes), and at most one is
//!   proposed per tick while the leader has requests waiting or entries not yet committed (its
//!   followers' forwarded writes among them); with neither, the next one
//!   may follow in the next batch (the first round of a batch only: never twice in one batch, so
//!   a single-node cluster, which commits and applies a sweep within the batch, cannot loop).
//!   Followers never sweep.
//!
//! # Why sweeps are small and paced
//!
//! A sweep holds the node thread of every replica while it applies (about 5 µs per key on a
//! 1M-key space: three ordered-map removals), and every write behind it waits. Measured with
//! `bench/expiry-stall.sh` (1M keys due within 5 s, 64 clients writing): sweeps of 1,000 keys
//! proposed back to back took 4-5 ms each (p99 12 ms) and kept the three node threads busy
//! enough to cut writes/s to a quarter and raise write p99.9 from 53 to 157 ms. 250 keys a tick
//! (10 ms) holds a replica for about a millisecond at a time and at most about a tenth of its
//! time, like Redis' active expiry, which bounds itself to a share of the CPU too; the cost is
//! reclaiming 25,000 keys per second while clients keep the leader busy. When nothing waits,
//! sweeps follow each other as fast as they commit (each still about a millisecond of apply
//! work, so a request arriving meanwhile waits for one sweep at most). Expired keys are invisible
//! from their deadline on whether swept or not (see [`crate::kv::expiry`]), so pacing delays only
//! the memory.

use bytes::Bytes;
use raft::{Index, Node, Role, Term};

use crate::kv::{self, Command, KvStore, Proposal};

/// Most keys one sweep entry removes (about a millisecond of apply work on every replica; see
/// the module docs).
pub const SWEEP_BATCH: u32 = 250;

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// The host's wall clock at the start of the batch, ms since the Unix epoch.
    wall_ms: u64,
    /// The last stamp this node gave.
    last_stamp: u64,
    /// The last sweep: its index, the term it was proposed in, the tick it was proposed at (kept
    /// until it is done and its tick has passed).
    sweep: Option<(Index, Term, u64)>,
}

impl Clock {
    /// Records the host's wall clock.
    pub(super) fn set_wall(&mut self, ms: u64) {
        self.wall_ms = ms;
    }

    /// The stamp for entries appended now (see the module docs).
    pub(super) fn stamp(&mut self, kv: &KvStore) -> u64 {
        self.last_stamp = self.wall_ms.max(self.last_stamp).max(kv.time());
        self.last_stamp
    }

    /// Wraps an encoded proposal in an entry stamped now.
    pub(super) fn stamped(&mut self, kv: &KvStore, proposal: &[u8]) -> Bytes {
        let stamp = self.stamp(kv);
        kv::stamp_entry(proposal, stamp)
    }

    /// Wraps encoded proposals appended together in entries stamped now, in one buffer (see
    /// [`kv::stamp_entries`]): the same bytes, and the same stamp, as [`Self::stamped`] of each
    /// in turn (nothing changes the stamp between them). No proposal: no stamp is taken.
    pub(super) fn stamped_batch<'a>(
        &mut self,
        kv: &KvStore,
        proposals: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> kv::StampedEntries {
        let stamp = if proposals.clone().next().is_some() { self.stamp(kv) } else { 0 };
        kv::stamp_entries(proposals, stamp)
    }

    /// On the leader, proposes a sweep if keys are due, none is in flight and either none was
    /// proposed at this tick (`now`, in ticks) or `idle_batch_start` (the first round of a batch
    /// while no request waits and every entry is committed).
    pub(super) fn maybe_sweep(
        &mut self,
        node: &mut Node,
        kv: &KvStore,
        now: u64,
        timeout: u64,
        idle_batch_start: bool,
    ) {
        if node.role() != Role::Leader {
            self.sweep = None;
            return;
        }
        if let Some((index, term, at)) = self.sweep {
            let done =
                kv.applied_index() >= index || node.term() != term || now.saturating_sub(at) >= timeout;
            if !done || (now <= at && !idle_batch_start) {
                return;
            }
            self.sweep = None;
        }
        let Some(deadline) = kv.next_deadline() else { return };
        let time = self.wall_ms.max(self.last_stamp).max(kv.time());
        if time <= deadline {
            return;
        }
        let proposal = Proposal {
            session: kv::NO_SESSION,
            seq: 0,
            ack_below: 0,
            command: Command::Sweep { max: SWEEP_BATCH },
        };
        let data = self.stamped(kv, &kv::encode_proposal(&proposal));
        if let Ok(index) = node.propose(data) {
            self.sweep = Some((index, node.term(), now));
        }
    }
}
