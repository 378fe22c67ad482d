//! Cluster membership as data: voters and learners, configuration entries, quorums (thesis ch. 4).
//!
//! # The choice: single-server changes, effective when appended
//! A configuration change adds a learner, promotes a learner to voter, or removes one member: at
//! most one *voter* enters or leaves per change, so any majority of the old voters and any majority
//! of the new voters share a node (thesis §4.1), and no joint configuration is needed. Every node
//! uses the latest configuration entry in its log, committed or not (§4.1); a truncated
//! configuration entry takes the node back to the one before it. One change at a time: a leader
//! proposes a change only when the previous one is committed (§4.1), and only once it has
//! committed an entry of its own term (the fix to the single-server algorithm described on the
//! raft-dev list in 2015: without it, a leader could append a change on top of an uncommitted
//! change of an earlier term and form two disjoint majorities).
//!
//! Joint consensus (§4.3, etcd's `ConfChangeV2`) would let one change swap several voters at once.
//! Every operation raft-kv offers (add, promote, remove, replace, grow, shrink) is a sequence of
//! single-server changes, and new nodes always enter as learners first (catch-up, §4.2.1), so a
//! promotion never stalls commits; the single-server rule keeps one configuration state and one
//! quorum rule in every code path, which is the simpler thing to get right and to test.
//!
//! # What a membership holds
//! [`Membership`]: every member with its [`Suffrage`] (voter or learner) and an opaque `context`
//! the layer above uses for the member's name and addresses, plus `max_id`, the highest node id
//! the cluster has ever admitted: ids are never reused, so a removed node that comes back with its
//! old data can never be mistaken for a newer member. A configuration entry
//! ([`crate::EntryKind::Config`]) carries a whole membership ([`Membership::encode`]), so the
//! latest one in a log is self-contained; a snapshot records the membership as of its index.
//!
//! # Invariants (checked by the property tests and the simulator)
//! - Learners receive the log and snapshots, never campaign, and are never counted: not in the
//!   commit index, not in elections, not in CheckQuorum, not in ReadIndex confirmation.
//! - Two consecutive configurations differ by at most one voter ([`Membership::voter_change_from`]).
//! - A leader that is not a voter of its latest configuration manages the cluster without counting
//!   itself, and steps down once that configuration is committed (§4.2.2).
//! - Decoding never panics: a damaged or foreign configuration is an error, never a guess.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{Index, NodeId, Term};

/// Whether a member votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suffrage {
    /// Votes in elections and counts towards every majority.
    Voter,
    /// Receives the log, never votes and never counts (catching up, or a read replica).
    Learner,
}

impl Suffrage {
    /// `voter` or `learner`, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Suffrage::Voter => "voter",
            Suffrage::Learner => "learner",
        }
    }
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Voter or learner.
    pub suffrage: Suffrage,
    /// Opaque to the core: what the layer above records about the member (name, addresses).
    pub context: Bytes,
}

/// A cluster configuration: voters and learners (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Membership {
    /// Every member by id.
    members: BTreeMap<NodeId, Member>,
    /// The highest node id ever admitted (ids are never reused).
    max_id: NodeId,
}

/// One change to a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Admit node `id` (never a member before: `id > max_id`) as a learner.
    AddLearner {
        /// The new node's id.
        id: NodeId,
        /// What the layer above records about it.
        context: Bytes,
    },
    /// Make learner `id` a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove member `id` (voter or learner).
    Remove {
        /// The member.
        id: NodeId,
    },
}

impl ConfChange {
    /// The node the change concerns.
    pub fn node(&self) -> NodeId {
        match self {
            ConfChange::AddLearner { id, .. } | ConfChange::Promote { id } | ConfChange::Remove { id } => *id,
        }
    }
}

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority of the voters granted.
    Won,
    /// So many voters refused that a majority can no longer grant.
    Lost,
    /// Neither yet.
    Pending,
}

/// Why a configuration change was refused. Every refusal leaves the log unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// Only the leader changes the configuration; `leader` is the one this node knows of.
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is under way; proposals resume when it ends.
    TransferInProgress {
        /// The transfer's target.
        to: NodeId,
    },
    /// The leader has not committed an entry of its own term yet (it will shortly).
    LeaderNotReady,
    /// The previous configuration change (at `index`) is not committed yet: one change at a time.
    ChangeInFlight {
        /// The index of the uncommitted configuration entry.
        index: Index,
    },
    /// Node id 0 is reserved.
    InvalidId,
    /// The change would exceed a limit ([`MAX_CONTEXT_LEN`], [`MAX_MEMBERS`]).
    TooLarge {
        /// What would be too large.
        what: &'static str,
    },
    /// `id` is already a member.
    AlreadyMember {
        /// The node.
        id: NodeId,
    },
    /// `id` was used by an earlier member (ids are never reused); the next free id is `max_id + 1`.
    IdReused {
        /// The node.
        id: NodeId,
        /// The highest id ever admitted.
        max_id: NodeId,
    },
    /// `id` is not a member.
    NotAMember {
        /// The node.
        id: NodeId,
    },
    /// `id` is a voter already (only learners are promoted).
    AlreadyVoter {
        /// The node.
        id: NodeId,
    },
    /// Removing `id` would leave no voter.
    LastVoter {
        /// The node.
        id: NodeId,
    },
    /// Learner `id` holds entries only up to `match_index` of the leader's `last_index`: promoting
    /// it now could stall commits until it catches up.
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// What it holds.
        match_index: Index,
        /// The leader's last index.
        last_index: Index,
    },
}

impl fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfChangeError::NotLeader { leader: Some(l) } => write!(f, "not the leader (node {l} is)"),
            ConfChangeError::NotLeader { leader: None } => write!(f, "not the leader (no leader known)"),
            ConfChangeError::TransferInProgress { to } => {
                write!(f, "a leadership transfer to node {to} is in progress")
            }
            ConfChangeError::LeaderNotReady => {
                write!(f, "the leader has not committed an entry of its term yet; retry shortly")
            }
            ConfChangeError::ChangeInFlight { index } => write!(
                f,
                "another membership change (log index {index}) is not committed yet: one change at a time"
            ),
            ConfChangeError::InvalidId => write!(f, "node id 0 is reserved"),
            ConfChangeError::TooLarge { what } => write!(f, "{what} would be too large"),
            ConfChangeError::AlreadyMember { id } => write!(f, "node {id} is already a member"),
            ConfChangeError::IdReused { id, max_id } => write!(
                f,
                "node id {id} was used before (ids are never reused; the next free id is {})",
                max_id + 1
            ),
            ConfChangeError::NotAMember { id } => write!(f, "node {id} is not a member"),
            ConfChangeError::AlreadyVoter { id } => write!(f, "node {id} is already a voter"),
            ConfChangeError::LastVoter { id } => {
                write!(f, "node {id} is the last voter: removing it would leave the cluster without one")
            }
            ConfChangeError::LearnerBehind { id, match_index, last_index } => write!(
                f,
                "learner {id} is not caught up (holds up to index {match_index} of {last_index}); promote it once it is"
            ),
        }
    }
}

impl std::error::Error for ConfChangeError {}

/// A configuration entry or snapshot membership that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad membership encoding: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The encoding's version byte.
const ENCODING_VERSION: u8 = 1;
/// The most members a membership may hold.
pub const MAX_MEMBERS: usize = 1024;
/// The largest context of one member.
pub const MAX_CONTEXT_LEN: usize = 1024;

impl Membership {
    /// An empty membership (a node that has not been told its cluster's configuration yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// A membership of `voters` with empty contexts (duplicates and 0 are ignored).
    pub fn from_voters(voters: &[NodeId]) -> Self {
        let mut m = Membership::new();
        for &id in voters.iter().filter(|&&id| id != 0) {
            m.members.insert(id, Member { suffrage: Suffrage::Voter, context: Bytes::new() });
            m.max_id = m.max_id.max(id);
        }
        m
    }

    /// Adds or replaces member `id` (building a configuration from outside, e.g. at bootstrap).
    /// Changes of a running cluster go through [`Membership::apply`].
    pub fn insert(&mut self, id: NodeId, suffrage: Suffrage, context: Bytes) {
        if id == 0 {
            return;
        }
        self.members.insert(id, Member { suffrage, context });
        self.max_id = self.max_id.max(id);
    }

    /// True if there is no member at all.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member by id.
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    /// Member `id`, if any.
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// True if `id` is a member (voter or learner).
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// True if `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.suffrage == Suffrage::Voter)
    }

    /// True if `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.suffrage == Suffrage::Learner)
    }

    /// The voters, sorted.
    pub fn voters(&self) -> Vec<NodeId> {
        self.ids(Suffrage::Voter)
    }

    /// The learners, sorted.
    pub fn learners(&self) -> Vec<NodeId> {
        self.ids(Suffrage::Learner)
    }

    fn ids(&self, suffrage: Suffrage) -> Vec<NodeId> {
        self.members.iter().filter(|(_, m)| m.suffrage == suffrage).map(|(&id, _)| id).collect()
    }

    /// The number of voters.
    pub fn voter_count(&self) -> usize {
        self.members.values().filter(|m| m.suffrage == Suffrage::Voter).count()
    }

    /// The highest node id ever admitted.
    pub fn max_id(&self) -> NodeId {
        self.max_id
    }

    /// The id the next new member gets.
    pub fn next_id(&self) -> NodeId {
        self.max_id + 1
    }

    /// How many voters make a majority (`voters / 2 + 1`; 1 for an empty configuration, which no
    /// count can reach since there is no voter).
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    /// True if the voters for which `yes` holds form a majority.
    pub fn has_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        let voters = self.voters();
        !voters.is_empty() && voters.iter().filter(|&&id| yes(id)).count() >= self.quorum()
    }

    /// The highest index that a majority of the voters hold, given each voter's acknowledged index
    /// (`acked`); 0 if there is no voter. Learners are never asked.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Index) -> Index {
        let voters = self.members.iter().filter(|(_, m)| m.suffrage == Suffrage::Voter);
        let mut acks = voters.map(|(&id, _)| acked(id));
        // On the stack for up to 16 voters (the leader asks after every acknowledgement).
        let mut small = [0; 16];
        let mut large;
        let matched: &mut [Index] = if self.voter_count() <= small.len() {
            let mut n = 0;
            for (slot, ack) in small.iter_mut().zip(&mut acks) {
                *slot = ack;
                n += 1;
            }
            &mut small[..n]
        } else {
            large = acks.collect::<Vec<_>>();
            &mut large
        };
        if matched.is_empty() {
            return 0;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.quorum() - 1]
    }

    /// Counts `votes` (node -> granted); answers from non-voters are ignored.
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let voters = self.voters();
        if voters.is_empty() {
            return VoteResult::Lost;
        }
        let granted = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
        let refused = voters.iter().filter(|id| votes.get(id) == Some(&false)).count();
        if granted >= self.quorum() {
            VoteResult::Won
        } else if voters.len() - refused < self.quorum() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// The configuration after `change`, or why it is not allowed. Only the rules of the
    /// configuration itself are checked here; the leader's own rules (one change at a time,
    /// catch-up) are in [`crate::Node::propose_conf_change`].
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner { id, context } => {
                if *id == 0 {
                    return Err(ConfChangeError::InvalidId);
                }
                if self.contains(*id) {
                    return Err(ConfChangeError::AlreadyMember { id: *id });
                }
                if *id <= self.max_id {
                    return Err(ConfChangeError::IdReused { id: *id, max_id: self.max_id });
                }
                if context.len() > MAX_CONTEXT_LEN {
                    return Err(ConfChangeError::TooLarge { what: "the member's context" });
                }
                if self.members.len() >= MAX_MEMBERS {
                    return Err(ConfChangeError::TooLarge { what: "the membership" });
                }
                next.insert(*id, Suffrage::Learner, context.clone());
            }
            ConfChange::Promote { id } => match self.members.get(id) {
                None => return Err(ConfChangeError::NotAMember { id: *id }),
                Some(m) if m.suffrage == Suffrage::Voter => {
                    return Err(ConfChangeError::AlreadyVoter { id: *id })
                }
                Some(_) => {
                    if let Some(m) = next.members.get_mut(id) {
                        m.suffrage = Suffrage::Voter;
                    }
                }
            },
            ConfChange::Remove { id } => {
                if !self.contains(*id) {
                    return Err(ConfChangeError::NotAMember { id: *id });
                }
                if self.is_voter(*id) && self.voter_count() == 1 {
                    return Err(ConfChangeError::LastVoter { id: *id });
                }
                next.members.remove(id);
            }
        }
        Ok(next)
    }

    /// The number of voters that differ between `prev` and `self` (joined or left). Single-server
    /// changes keep this at most 1, which makes every majority of one overlap every majority of
    /// the other.
    pub fn voter_change_from(&self, prev: &Membership) -> usize {
        let (a, b) = (prev.voters(), self.voters());
        a.iter().filter(|id| !b.contains(id)).count() + b.iter().filter(|id| !a.contains(id)).count()
    }

    /// Encodes the membership (the data of a configuration entry, and the membership part of a
    /// snapshot header):
    /// ```text
    /// u8  version = 1
    /// u64 max_id
    /// u32 member count n (<= MAX_MEMBERS)
    /// n x { u64 id (increasing, 1..=max_id); u8 suffrage (1 voter, 2 learner);
    ///       u32 context length (<= MAX_CONTEXT_LEN); context bytes }
    /// ```
    /// All integers little endian.
    pub fn encode(&self) -> Bytes {
        let len: usize = 13 + self.members.values().map(|m| 13 + m.context.len()).sum::<usize>();
        let mut b = BytesMut::with_capacity(len);
        b.put_u8(ENCODING_VERSION);
        b.put_u64_le(self.max_id);
        b.put_u32_le(self.members.len() as u32);
        for (&id, m) in &self.members {
            b.put_u64_le(id);
            b.put_u8(match m.suffrage {
                Suffrage::Voter => 1,
                Suffrage::Learner => 2,
            });
            b.put_u32_le(m.context.len() as u32);
            b.put_slice(&m.context);
        }
        b.freeze()
    }

    /// Decodes [`Membership::encode`]'s output; anything else is an error (never a panic).
    pub fn decode(data: &[u8]) -> Result<Membership, DecodeError> {
        let mut r = Reader { data, at: 0 };
        let version = r.u8()?;
        if version != ENCODING_VERSION {
            return Err(DecodeError(format!("version {version}, this build reads {ENCODING_VERSION}")));
        }
        let max_id = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_MEMBERS {
            return Err(DecodeError(format!("{count} members, more than the maximum {MAX_MEMBERS}")));
        }
        let mut m = Membership { members: BTreeMap::new(), max_id };
        let mut prev = 0;
        for _ in 0..count {
            let id = r.u64()?;
            if id <= prev || id > max_id {
                return Err(DecodeError(format!("member id {id} out of order or above max id {max_id}")));
            }
            prev = id;
            let suffrage = match r.u8()? {
                1 => Suffrage::Voter,
                2 => Suffrage::Learner,
                s => return Err(DecodeError(format!("unknown suffrage {s} of member {id}"))),
            };
            let len = r.u32()? as usize;
            if len > MAX_CONTEXT_LEN {
                return Err(DecodeError(format!("context of member {id} is {len} bytes")));
            }
            let context = Bytes::copy_from_slice(r.take(len)?);
            m.members.insert(id, Member { suffrage, context });
        }
        if r.at != data.len() {
            return Err(DecodeError(format!("{} trailing bytes", data.len() - r.at)));
        }
        Ok(m)
    }
}

impl fmt::Display for Membership {
    /// `voters [1, 2, 3] learners [4]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters {:?} learners {:?}", self.voters(), self.learners())
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(DecodeError(format!("truncated at byte {} (needs {n} more)", self.at)));
        };
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// A configuration and where it comes from: the entry at (`index`, `term`), or for the base (the
/// first of a [`Configs`]) the snapshot or bootstrap point it was given at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigAt {
    /// Log index of the configuration entry (or of the snapshot / 0 for the base).
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// The configuration.
    pub membership: Membership,
}

/// The configurations a node must know: the base (as of its snapshot or bootstrap) and every
/// configuration entry of its log after it, by increasing index. Entries at or below the commit
/// index are pruned but for the latest of them (see [`Configs::prune`]).
///
/// Invariants: never empty; indexes strictly increase; every element but the base is a
/// configuration entry the node's log holds with that term.
#[derive(Clone, Debug)]
pub(crate) struct Configs {
    list: Vec<ConfigAt>,
}

impl Configs {
    /// A history holding only `base` at (`index`, `term`).
    pub(crate) fn new(index: Index, term: Term, base: Membership) -> Self {
        Configs { list: vec![ConfigAt { index, term, membership: base }] }
    }

    /// The latest configuration: the one in effect.
    pub(crate) fn latest(&self) -> &ConfigAt {
        // Never empty (see the invariants).
        &self.list[self.list.len() - 1]
    }

    /// The latest configuration at or below `commit`.
    pub(crate) fn committed(&self, commit: Index) -> &ConfigAt {
        self.list.iter().rev().find(|c| c.index <= commit).unwrap_or(&self.list[0])
    }

    /// Every known configuration, oldest first.
    #[cfg(test)]
    pub(crate) fn all(&self) -> &[ConfigAt] {
        &self.list
    }

    /// Records a configuration entry the log now holds (ignored if not above the latest).
    pub(crate) fn push(&mut self, index: Index, term: Term, membership: Membership) {
        if index > self.latest().index {
            self.list.push(ConfigAt { index, term, membership });
        }
    }

    /// Drops configurations (but the base) that the log no longer holds: `holds(index, term)`
    /// says whether the log still has that configuration entry. Returns true if any was dropped.
    pub(crate) fn retain_held(&mut self, holds: impl Fn(Index, Term) -> bool) -> bool {
        let before = self.list.len();
        let base = self.list[0].index;
        self.list.retain(|c| c.index == base || holds(c.index, c.term));
        self.list.len() != before
    }

    /// Forgets configurations superseded by a committed one: keeps the latest at or below
    /// `commit` and everything after it. Returns true if any was dropped.
    pub(crate) fn prune(&mut self, commit: Index) -> bool {
        let keep_from = self.list.iter().rposition(|c| c.index <= commit).unwrap_or(0);
        if keep_from == 0 {
            return false;
        }
        self.list.drain(..keep_from);
        true
    }

    /// Replaces the base with a snapshot's membership at (`index`, `term`), keeping the later
    /// configurations the log still holds.
    pub(crate) fn rebase(&mut self, index: Index, term: Term, membership: Membership) {
        self.list.retain(|c| c.index > index);
        self.list.insert(0, ConfigAt { index, term, membership });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let mut m = Membership::from_voters(voters);
        for &l in learners {
            m.insert(l, Suffrage::Learner, Bytes::new());
        }
        m
    }

    #[test]
    fn quorum_counts_voters_only() {
        let c = m(&[1, 2, 3], &[4, 5]);
        assert_eq!(c.quorum(), 2);
        assert!(!c.has_quorum(|id| id == 1 || id >= 4), "learners never count");
        assert!(c.has_quorum(|id| id <= 2));
        let acked = |id: NodeId| [0, 10, 3, 7, 100, 100][id as usize];
        assert_eq!(c.committed_index(acked), 7, "learners at 100 do not raise the commit index");
        assert_eq!(Membership::new().committed_index(acked), 0);
    }

    proptest::proptest! {
        /// The quorum index is the quorum-th highest acknowledgement of the voters, with up to 16
        /// voters (on the stack) and more.
        #[test]
        fn committed_index_is_the_quorum_th_highest_ack(
            acks in proptest::collection::vec((0u64..50, proptest::bool::ANY), 0..40),
        ) {
            let mut c = Membership::new();
            for (i, &(_, voter)) in acks.iter().enumerate() {
                let suffrage = if voter { Suffrage::Voter } else { Suffrage::Learner };
                c.insert(i as NodeId + 1, suffrage, Bytes::new());
            }
            let acked = |id: NodeId| acks[id as usize - 1].0;
            let mut voters: Vec<Index> = acks.iter().filter(|a| a.1).map(|a| a.0).collect();
            voters.sort_unstable_by(|a, b| b.cmp(a));
            let expected = if voters.is_empty() { 0 } else { voters[voters.len() / 2] };
            proptest::prop_assert_eq!(c.committed_index(acked), expected);
        }
    }

    #[test]
    fn votes_of_learners_and_strangers_are_ignored() {
        let c = m(&[1, 2, 3, 4], &[5]);
        let votes = BTreeMap::from([(1, true), (5, true), (9, true)]);
        assert_eq!(c.vote_result(&votes), VoteResult::Pending);
        let votes = BTreeMap::from([(1, true), (2, true), (3, true)]);
        assert_eq!(c.vote_result(&votes), VoteResult::Won);
        let votes = BTreeMap::from([(1, true), (2, false), (3, false)]);
        assert_eq!(c.vote_result(&votes), VoteResult::Lost, "4 voters, 2 refusals: 3 grants impossible");
        assert_eq!(Membership::new().vote_result(&BTreeMap::new()), VoteResult::Lost);
    }

    #[test]
    fn changes_follow_the_rules() {
        let c = m(&[1, 2, 3], &[]);
        let add = |id| ConfChange::AddLearner { id, context: Bytes::from_static(b"D") };
        let c4 = c.apply(&add(4)).unwrap();
        assert!(c4.is_learner(4) && c4.max_id() == 4 && c4.next_id() == 5);
        assert_eq!(c4.voter_change_from(&c), 0);
        assert_eq!(c4.apply(&add(4)), Err(ConfChangeError::AlreadyMember { id: 4 }));
        assert_eq!(c4.apply(&add(0)), Err(ConfChangeError::InvalidId));
        let p = c4.apply(&ConfChange::Promote { id: 4 }).unwrap();
        assert_eq!(p.voters(), vec![1, 2, 3, 4]);
        assert_eq!(p.voter_change_from(&c4), 1);
        assert_eq!(p.apply(&ConfChange::Promote { id: 4 }), Err(ConfChangeError::AlreadyVoter { id: 4 }));
        let r = p.apply(&ConfChange::Remove { id: 1 }).unwrap();
        assert_eq!(r.voters(), vec![2, 3, 4]);
        assert_eq!(r.apply(&add(1)), Err(ConfChangeError::IdReused { id: 1, max_id: 4 }));
        assert_eq!(r.apply(&ConfChange::Remove { id: 1 }), Err(ConfChangeError::NotAMember { id: 1 }));
        let one = m(&[7], &[8]);
        assert_eq!(one.apply(&ConfChange::Remove { id: 7 }), Err(ConfChangeError::LastVoter { id: 7 }));
        assert_eq!(one.apply(&ConfChange::Remove { id: 8 }).unwrap().voters(), vec![7]);
    }

    #[test]
    fn encoding_roundtrips_and_rejects_damage() {
        let mut c = m(&[1, 3], &[4]);
        c.insert(9, Suffrage::Learner, Bytes::from_static(b"D,host,1,2"));
        let b = c.encode();
        assert_eq!(Membership::decode(&b), Ok(c.clone()));
        assert_eq!(Membership::decode(&Membership::new().encode()), Ok(Membership::new()));
        for cut in 0..b.len() {
            assert!(Membership::decode(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = b.to_vec();
        longer.push(0);
        assert!(Membership::decode(&longer).is_err());
        let mut bad = b.to_vec();
        bad[0] = 2;
        assert!(Membership::decode(&bad).unwrap_err().0.contains("version 2"));
    }

    #[test]
    fn configs_track_append_truncate_commit_and_rebase() {
        let mut cs = Configs::new(0, 0, m(&[1, 2, 3], &[]));
        cs.push(5, 1, m(&[1, 2, 3], &[4]));
        cs.push(8, 2, m(&[1, 2, 3, 4], &[]));
        assert_eq!(cs.latest().index, 8);
        assert_eq!(cs.committed(6).index, 5);
        assert_eq!(cs.committed(4).index, 0);
        // The entry at 8 was truncated (the log holds another term there).
        assert!(cs.retain_held(|i, t| i != 8 || t == 3));
        assert_eq!(cs.latest().index, 5);
        assert!(cs.prune(7));
        assert_eq!(cs.all().len(), 1);
        assert!(!cs.prune(9));
        cs.push(9, 3, m(&[1, 2, 3], &[]));
        cs.rebase(7, 2, m(&[1, 2, 3], &[4]));
        assert_eq!(cs.all().iter().map(|c| c.index).collect::<Vec<_>>(), vec![7, 9]);
        cs.rebase(12, 3, m(&[2, 3], &[]));
        assert_eq!(cs.all().iter().map(|c| c.index).collect::<Vec<_>>(), vec![12]);
    }
}
