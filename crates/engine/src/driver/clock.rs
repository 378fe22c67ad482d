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
//!   this node applies it, the term changes, or a request timeout passes), the next follows as
//!   soon as it is applied. Followers never sweep.

use bytes::Bytes;
use raft::{Index, Node, Role, Term};

use crate::kv::{self, Command, KvStore, Proposal};

/// Most keys one sweep entry removes (about a millisecond of apply work on every replica).
pub const SWEEP_BATCH: u32 = 1000;

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// The host's wall clock at the start of the batch, ms since the Unix epoch.
    wall_ms: u64,
    /// The last stamp this node gave.
    last_stamp: u64,
    /// The sweep in flight: its index, the term it was proposed in, the tick it was proposed at.
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

    /// On the leader, proposes a sweep if keys are due and none is in flight.
    pub(super) fn maybe_sweep(&mut self, node: &mut Node, kv: &KvStore, now: u64, timeout: u64) {
        if node.role() != Role::Leader {
            self.sweep = None;
            return;
        }
        if let Some((index, term, at)) = self.sweep {
            let done =
                kv.applied_index() >= index || node.term() != term || now.saturating_sub(at) >= timeout;
            if !done {
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
