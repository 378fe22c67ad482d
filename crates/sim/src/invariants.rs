//! Safety properties checked after every simulation step (paper Figure 3), on the real state of the
//! real nodes:
//! - Election Safety: at most one leader per term.
//! - Log Matching: if two logs hold an entry with the same index and term, they are identical up to
//!   that index.
//! - Leader Completeness / State Machine Safety: once an entry is committed at an index (on any node),
//!   no node ever commits a different entry at that index; a committed entry never changes or
//!   disappears from a node's log below its commit index.
//! - Monotonicity: a node's term never decreases (its persisted term survives restarts), and its
//!   commit and applied indexes never decrease within one incarnation.
//! - Applied <= commit; at the end, nodes that applied the same index hold identical state machines.
//! - Leader Completeness, directly: a new leader holds every entry committed in an earlier term
//!   (§5.4: an entry committed in term T is in the log of every leader of a term above T; a leader
//!   of an older term, elected late, need not hold it and can never commit over it); and ahead of
//!   time: a live node that lacks a committed entry has a log less up to date than a majority of
//!   the live logs, so no election can ever choose it.
//! - Durable promises (checked on the messages and at every restart): a node grants at most one vote
//!   per term, and once a vote or a term has left a node, the node recovers from a crash with at
//!   least that term and, in the same term, the same vote. (The world checks the other durable
//!   promise, that an acknowledgement of log entries is covered by the node's disk, as it leaves.)
//! - A node's commit index never exceeds its last log index.
//! - Exactly once: a proposal, identified by (session, seq), runs at one log index at most,
//!   whichever nodes apply it (duplicates of it are recognised and not run again).

use std::collections::BTreeMap;

use engine::{ApplyRecord, Driver};
use raft::{HardState, Index, Message, MessageBody, NodeId, Role, Term};
use storage::MemFs;

/// A digest of an entry: (term, hash of data).
type Digest = (Term, u64);

fn digest(term: Term, data: &[u8]) -> Digest {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (term, h)
}

/// What the checker remembers between steps.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Term -> its leader.
    leaders: BTreeMap<Term, NodeId>,
    /// Index -> the committed entry.
    committed: BTreeMap<Index, Digest>,
    /// Index -> the term in which its commit was first seen (the term of the node that had it
    /// committed; at least the term of the leader that committed it).
    commit_terms: BTreeMap<Index, Term>,
    /// Per node: (term, commit, applied) last seen in this incarnation.
    last: BTreeMap<NodeId, (Term, Index, Index)>,
    /// Per node: committed prefix already verified against `committed`.
    verified: BTreeMap<NodeId, Index>,
    /// Per node: the last vote it sent, (term, candidate).
    votes: BTreeMap<NodeId, (Term, NodeId)>,
    /// Per node: the highest term it sent in a message (PreVote terms excepted).
    terms_sent: BTreeMap<NodeId, Term>,
    /// (session, seq) -> the log index at which the proposal ran.
    executed: BTreeMap<(u64, u64), Index>,
}

impl Invariants {
    /// A node restarted: its volatile indexes start over (its term must not go back).
    pub fn restarted(&mut self, id: NodeId) {
        if let Some(l) = self.last.get_mut(&id) {
            l.1 = 0;
            l.2 = 0;
        }
        self.verified.insert(id, 0);
    }

    /// A message left node `msg.from`: records the term and the vote it promises.
    pub fn sent(&mut self, msg: &Message) -> Result<(), String> {
        let id = msg.from;
        match msg.body {
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => return Ok(()),
            MessageBody::RequestVoteResponse { granted: true } => {
                if let Some(&(term, other)) = self.votes.get(&id) {
                    if term == msg.term && other != msg.to {
                        return Err(format!("node {id} voted for {other} and {} in term {term}", msg.to));
                    }
                }
                self.votes.insert(id, (msg.term, msg.to));
            }
            _ => {}
        }
        let t = self.terms_sent.entry(id).or_insert(0);
        *t = (*t).max(msg.term);
        Ok(())
    }

    /// Node `id` applied these proposals: each (session, seq) may run at one log index only.
    pub fn applied(&mut self, id: NodeId, records: &[ApplyRecord]) -> Result<(), String> {
        for r in records.iter().filter(|r| r.executed && r.session != 0) {
            match self.executed.insert((r.session, r.seq), r.index) {
                Some(other) if other != r.index => {
                    return Err(format!(
                        "exactly once: node {id} ran proposal (session {}, seq {}) at index {} but it ran at index {other} before",
                        r.session, r.seq, r.index
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Node `id` recovered from a crash with hard state `hs`: what it promised must have survived.
    pub fn check_recovered(&self, id: NodeId, hs: HardState) -> Result<(), String> {
        let sent = self.terms_sent.get(&id).copied().unwrap_or(0);
        if hs.term < sent {
            return Err(format!("node {id} recovered term {} after sending term {sent}", hs.term));
        }
        if let Some(&(term, candidate)) = self.votes.get(&id) {
            if hs.term == term && hs.voted_for != Some(candidate) {
                return Err(format!(
                    "node {id} voted for {candidate} in term {term} but recovered with vote {:?}",
                    hs.voted_for
                ));
            }
        }
        Ok(())
    }

    /// Highest committed index seen.
    pub fn max_commit(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }

    /// Checks every property on the live nodes.
    pub fn check(&mut self, nodes: &[(NodeId, &Driver<MemFs>)]) -> Result<(), String> {
        for &(id, d) in nodes {
            let n = d.node();
            // Election Safety.
            if n.role() == Role::Leader {
                if let Some(&other) = self.leaders.get(&n.term()) {
                    if other != id {
                        return Err(format!("two leaders in term {}: {other} and {id}", n.term()));
                    }
                } else {
                    // Leader Completeness: a new leader holds every entry committed in an earlier term.
                    for (&index, &c) in self.committed.range(n.first_index()..) {
                        if self.commit_terms.get(&index).is_some_and(|&t| t >= n.term()) {
                            continue;
                        }
                        let held = n.entry(index).map(|e| digest(e.term, &e.data));
                        if held != Some(c) {
                            return Err(format!(
                                "leader completeness: node {id}, leader of term {}, lacks committed entry {index} (term {})",
                                n.term(),
                                c.0
                            ));
                        }
                    }
                }
                self.leaders.insert(n.term(), id);
            }
            // Monotonicity.
            let (term, commit, applied) = (n.term(), n.commit(), d.kv().applied_index());
            let durable_term = d.store().hard_state().term;
            let last = self.last.entry(id).or_insert((0, 0, 0));
            if durable_term < last.0.min(term) && term < last.0 {
                return Err(format!("node {id}: term went back from {} to {term}", last.0));
            }
            if commit < last.1 {
                return Err(format!("node {id}: commit went back from {} to {commit}", last.1));
            }
            if applied < last.2 {
                return Err(format!("node {id}: applied went back from {} to {applied}", last.2));
            }
            if applied > commit {
                return Err(format!("node {id}: applied {applied} is above commit {commit}"));
            }
            if commit > n.last_index() {
                return Err(format!("node {id}: commit {commit} is above its last index {}", n.last_index()));
            }
            *last = (term.max(last.0), commit, applied);
            // Committed entries never change.
            let from = self.verified.get(&id).copied().unwrap_or(0) + 1;
            for index in from.max(n.first_index())..=commit {
                let Some(e) = n.entry(index) else {
                    return Err(format!("node {id}: committed entry {index} is missing from its log"));
                };
                let dg = digest(e.term, &e.data);
                match self.committed.get(&index) {
                    Some(&c) if c != dg => {
                        return Err(format!(
                            "node {id}: committed entry {index} has term {} but term {} was committed there before",
                            dg.0, c.0
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(index, dg);
                        self.commit_terms.insert(index, term);
                    }
                }
            }
            self.verified.insert(id, commit.max(from - 1));
        }
        self.check_electable(nodes)?;
        // Log Matching on the uncommitted tails (the committed prefixes were compared above).
        for (i, &(a, da)) in nodes.iter().enumerate() {
            for &(b, db) in &nodes[i + 1..] {
                let (na, nb) = (da.node(), db.node());
                let low = na.commit().min(nb.commit()).max(na.first_index()).max(nb.first_index());
                let high = na.last_index().min(nb.last_index());
                let mut matched = false;
                let mut index = high;
                while index >= low && index > 0 {
                    let (ea, eb) = (na.entry(index), nb.entry(index));
                    if let (Some(ea), Some(eb)) = (ea, eb) {
                        if ea.term == eb.term {
                            matched = true;
                        }
                        if matched && (ea.term != eb.term || ea.data != eb.data) {
                            return Err(format!(
                                "log matching: nodes {a} and {b} agree at a later index but differ at {index}"
                            ));
                        }
                    }
                    index -= 1;
                }
            }
        }
        Ok(())
    }

    /// Committed entries are safe from the next election: a live voter that lacks a committed entry
    /// must have a log less up to date than those of a majority of the voters of its configuration
    /// (so it can never collect a majority of votes). This catches a wrongly committed entry as soon as it is at risk, before some
    /// election actually overwrites it (Figure 8).
    fn check_electable(&self, nodes: &[(NodeId, &Driver<MemFs>)]) -> Result<(), String> {
        let Some(&max_committed) = self.committed.keys().next_back() else { return Ok(()) };
        for &(id, d) in nodes {
            let n = d.node();
            // The node campaigns in its own latest configuration: only its voters' votes count.
            let m = n.membership();
            if !m.is_voter(id) {
                continue; // Learners and removed nodes never campaign.
            }
            let from = (n.commit() + 1).max(n.first_index());
            if from > max_committed {
                continue;
            }
            let lacking = self
                .committed
                .range(from..=max_committed)
                .find(|&(&index, &c)| n.entry(index).map(|e| digest(e.term, &e.data)) != Some(c));
            let Some((&index, _)) = lacking else { continue };
            let mine = (n.last_term(), n.last_index());
            let behind = nodes
                .iter()
                .filter(|(o, od)| m.is_voter(*o) && (od.node().last_term(), od.node().last_index()) <= mine)
                .count();
            if behind >= m.quorum() {
                return Err(format!(
                    "node {id} lacks committed entry {index} but its log (last term {}, index {}) is as up to date as {behind} logs: it could be elected",
                    mine.0, mine.1
                ));
            }
        }
        Ok(())
    }

    /// End-of-run checks: nodes at the same applied index have identical state machines.
    pub fn check_final(&mut self, nodes: &[(NodeId, &Driver<MemFs>)]) -> Result<(), String> {
        self.check(nodes)?;
        let mut by_applied: BTreeMap<Index, (NodeId, bytes::Bytes)> = BTreeMap::new();
        for &(id, d) in nodes {
            let applied = d.kv().applied_index();
            let snap = d.kv().snapshot();
            if let Some((other, s)) = by_applied.get(&applied) {
                if *s != snap {
                    return Err(format!(
                        "nodes {other} and {id} applied up to {applied} but their states differ"
                    ));
                }
            } else {
                by_applied.insert(applied, (id, snap));
            }
        }
        Ok(())
    }
}
