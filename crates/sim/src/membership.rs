//! Membership changes in the simulator: an operator that changes the cluster in every run, through
//! the same admin requests the server submits ([`engine::Request::Member`],
//! [`engine::Request::TransferLeader`]), under all the other faults; and the checks that go with
//! it.
//!
//! Each run draws one plan: replace one to all of the original nodes one by one (add a new node as
//! a learner, promote it, remove an old one, the leader included), grow 3 -> 5 and shrink back (or
//! 5 -> 3 -> 5), keep a learner (and sometimes remove it again), or remove the leader and replace
//! it; leadership transfers are mixed in. A step whose request fails (no leader, one change at a
//! time, learner not caught up, timeout, the node holding it crashed) is retried later; a step
//! whose effect is already in the leader's membership (a timed-out request that committed after
//! all) counts as done. Removed nodes keep running (a removed node must not disrupt) but clients
//! no longer use them.
//!
//! Checks ([`MembershipChecks::check`], after every event, beside [`crate::invariants`]):
//! - every new leader won with votes of a majority of the voters of its configuration, and is a
//!   voter of it (learners never vote, strangers never count);
//! - when a leader's commit index moves, it does not exceed the highest index a majority of its
//!   voters hold (its own log counted as its last index): learners never count;
//! - two consecutive committed configurations never have majorities that can be disjoint;
//! - one change at a time: no log holds more than one configuration entry above the highest
//!   index known committed (a leader appends a change only once the previous one is committed);
//! - a node that a committed configuration removed never becomes leader again, in any term from
//!   the one in which the removal was seen committed (a node may still win an older term with votes
//!   granted before the removal committed and delivered after it: a stale leader, harmless as any
//!   other, since a majority has a newer term; found by the simulator, seed 700860).
//!
//! One term never has two leaders across all configurations: [`crate::invariants`] checks that
//! per term, whatever configuration each node is in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use engine::kv::Reply;
use engine::{Driver, MemberChange, Request, Response};
use raft::{Index, Membership, NodeId, Rng, Role, Suffrage, Term};
use storage::MemFs;

/// A node within this many entries of the leader's last index is caught up (clients may use it;
/// the simulated nodes' `max_promote_lag`, so promotions wait for it too).
pub const CAUGHT_UP: u64 = 10;

/// The record (context) the simulator gives member `id`: a name, as raft-kv's starts.
pub fn record(id: NodeId) -> Bytes {
    Bytes::from(format!("n{id},sim"))
}

/// The bootstrap membership of a simulated cluster of `n` nodes.
pub fn bootstrap(n: u64) -> Membership {
    let mut m = Membership::new();
    for id in 1..=n {
        m.insert(id, Suffrage::Voter, record(id));
    }
    m
}

/// Who a removal or transfer targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Node(NodeId),
    /// Whoever leads when the step runs.
    Leader,
}

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Add(NodeId),
    Promote(NodeId),
    Remove(Target),
    /// A removal of `0`, which led when the step first ran (kept so a retry removes the same node).
    RemoveLeader(NodeId),
    /// Hand leadership to another voter.
    Transfer,
}

/// What the operator did (reported with the run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatorStats {
    /// Learners added (committed).
    pub added: u64,
    /// Learners promoted.
    pub promoted: u64,
    /// Members removed.
    pub removed: u64,
    /// Removals of the node that led when the step ran.
    pub leaders_removed: u64,
    /// Completed leadership transfers.
    pub transfers: u64,
    /// Requests that failed and were retried.
    pub retries: u64,
}

/// What the operator wants the world to do now.
#[derive(Debug)]
pub enum Action {
    /// Start a new, empty node with this id (it knows no membership).
    StartNode(NodeId),
    /// Submit this admin request, with this request id, to this node.
    Submit(NodeId, u64, Request),
    /// This node was found removed (by a request whose answer was lost).
    Removed(NodeId),
}

/// The operator. See the module docs.
#[derive(Debug)]
pub struct Operator {
    plan: VecDeque<Step>,
    /// The requests in flight: (request id, node it went to, step, the node the step concerns).
    pending: Vec<(u64, NodeId, Step, NodeId)>,
    /// Submits two steps at once now and then (the leader must refuse the second).
    impatient: bool,
    /// Nodes removed by a completed step: clients leave them alone.
    removed: BTreeSet<NodeId>,
    /// Nodes that exist (started).
    started: BTreeSet<NodeId>,
    /// Nodes clients may use: the original ones, and added ones once they caught up (a new node
    /// far behind would answer late; that is not what the liveness check is about), as long as
    /// the leader's membership holds them.
    serving: BTreeSet<NodeId>,
    /// The original nodes are 1..=original.
    original: NodeId,
    /// Done.
    pub stats: OperatorStats,
}

impl Operator {
    /// Draws the plan for a cluster of `n` nodes.
    pub fn new(rng: &mut Rng, n: u64) -> Operator {
        let mut next = n + 1;
        let mut fresh = || {
            let id = next;
            next += 1;
            id
        };
        let mut plan = VecDeque::new();
        let original: Vec<NodeId> = (1..=n).collect();
        match rng.range(0, 4) {
            0 => {
                // Replace some or all of the original nodes, one by one, in a random order; the
                // first removal sometimes targets whoever leads.
                let count = rng.range(1, n + 1);
                let mut order = original.clone();
                for k in (1..order.len()).rev() {
                    order.swap(k, rng.range(0, k as u64 + 1) as usize);
                }
                for (k, &old) in order.iter().take(count as usize).enumerate() {
                    let new = fresh();
                    plan.extend([Step::Add(new), Step::Promote(new)]);
                    let target = if k == 0 && rng.chance(0.5) { Target::Leader } else { Target::Node(old) };
                    plan.push_back(Step::Remove(target));
                }
            }
            1 if n == 3 => {
                // 3 -> 5 -> 3, with a transfer in between; the leader is sometimes among the removed.
                let (a, b) = (fresh(), fresh());
                plan.extend([Step::Add(a), Step::Promote(a), Step::Add(b), Step::Promote(b), Step::Transfer]);
                let first = if rng.chance(0.5) { Target::Leader } else { Target::Node(1) };
                plan.extend([Step::Remove(first), Step::Remove(Target::Node(2))]);
            }
            1 => {
                // 5 -> 3 -> 5.
                plan.extend([Step::Remove(Target::Leader), Step::Remove(Target::Node(2)), Step::Transfer]);
                let (a, b) = (fresh(), fresh());
                plan.extend([Step::Add(a), Step::Promote(a), Step::Add(b), Step::Promote(b)]);
            }
            2 => {
                // A learner that stays a learner (clients use it), sometimes removed again.
                let l = fresh();
                plan.extend([Step::Add(l), Step::Transfer]);
                if rng.chance(0.5) {
                    plan.push_back(Step::Remove(Target::Node(l)));
                }
            }
            _ => {
                // The leader removes itself; a new node takes its place.
                let new = fresh();
                plan.extend([Step::Remove(Target::Leader), Step::Add(new), Step::Promote(new)]);
            }
        }
        if rng.chance(0.5) {
            let at = rng.range(0, plan.len() as u64 + 1) as usize;
            plan.insert(at, Step::Transfer);
        }
        Operator {
            plan,
            pending: Vec::new(),
            impatient: rng.chance(0.3),
            removed: BTreeSet::new(),
            serving: original.iter().copied().collect(),
            original: n,
            started: original.into_iter().collect(),
            stats: OperatorStats::default(),
        }
    }

    /// True if clients may use node `id` (it was not removed by the operator).
    pub fn serves(&self, id: NodeId) -> bool {
        self.serving.contains(&id) && !self.removed.contains(&id)
    }

    /// True once the plan is done.
    pub fn done(&self) -> bool {
        self.plan.is_empty() && self.pending.is_empty()
    }

    /// True if `request` is the operator's.
    pub fn owns(&self, request: u64) -> bool {
        self.pending.iter().any(|p| p.0 == request)
    }

    /// The operator acts: returns what the world must do (nothing if a request is in flight, the
    /// plan is done, or no leader is known). `leader` is the live node that leads the newest term,
    /// with its driver; request ids are taken from `next_request`. An impatient operator submits
    /// the step after the next one at once too (two changes in flight: the leader must refuse one).
    pub fn act(
        &mut self,
        leader: Option<(NodeId, &Driver<MemFs>)>,
        next_request: &mut u64,
        rng: &mut Rng,
    ) -> Vec<Action> {
        let Some((lid, d)) = leader else { return Vec::new() };
        let m = d.node().membership();
        let mut actions = Vec::new();
        let last = d.node().last_index();
        // Clients use the members the leader knows, once they caught up (the original nodes from
        // the start), never a node that is not a member (any more, or yet).
        let original = self.original;
        self.serving.retain(|&id| m.contains(id));
        for &id in m.members().keys() {
            let caught_up = d.node().progress(id).is_some_and(|p| p.match_index + CAUGHT_UP >= last);
            if id <= original || id == lid || caught_up {
                self.serving.insert(id);
            }
        }
        if !self.pending.is_empty() {
            return actions;
        }
        while let Some(&step) = self.plan.front() {
            // Already done (a request that timed out and committed after all)?
            if let Step::Promote(id) = step {
                if id > m.max_id() {
                    // Its addition was cut from the log by a leader change: add it again first.
                    self.plan.push_front(Step::Add(id));
                    continue;
                }
            }
            let done = match step {
                Step::Add(id) => id <= m.max_id(),
                Step::Promote(id) => m.is_voter(id) || !m.contains(id),
                Step::Remove(Target::Node(id)) | Step::RemoveLeader(id) => !m.contains(id),
                Step::Remove(Target::Leader) | Step::Transfer => false,
            };
            if !done {
                break;
            }
            if let Step::Remove(Target::Node(id)) | Step::RemoveLeader(id) = step {
                // Removed by a request whose answer was lost: clients must leave it alone too.
                if self.removed.insert(id) {
                    actions.push(Action::Removed(id));
                }
            }
            self.plan.pop_front();
        }
        let count = if self.impatient && rng.chance(0.5) { 2 } else { 1 };
        for at in 0..count.min(self.plan.len()) {
            self.submit(at, lid, m, next_request, rng, &mut actions);
        }
        actions
    }

    /// Submits step `plan[at]` to leader `lid` (whose membership is `m`).
    fn submit(
        &mut self,
        at: usize,
        lid: NodeId,
        m: &Membership,
        next_request: &mut u64,
        rng: &mut Rng,
        actions: &mut Vec<Action>,
    ) {
        let step = self.plan[at];
        let (req, node) = match step {
            Step::Add(id) => {
                if self.started.insert(id) {
                    actions.push(Action::StartNode(id));
                }
                (Request::Member(MemberChange::Add { id, context: record(id) }), id)
            }
            Step::Promote(id) => (Request::Member(MemberChange::Promote(id)), id),
            Step::Remove(Target::Node(id)) | Step::RemoveLeader(id) => {
                (Request::Member(MemberChange::Remove(id)), id)
            }
            Step::Remove(Target::Leader) => {
                // From now on this step removes this node (a retry must not remove a later leader).
                self.plan[at] = Step::RemoveLeader(lid);
                (Request::Member(MemberChange::Remove(lid)), lid)
            }
            Step::Transfer => {
                let voters: Vec<NodeId> = m.voters().into_iter().filter(|&v| v != lid).collect();
                if voters.is_empty() {
                    return;
                }
                let t = voters[rng.range(0, voters.len() as u64) as usize];
                (Request::TransferLeader(t), t)
            }
        };
        let request = *next_request;
        *next_request += 1;
        self.pending.push((request, lid, self.plan[at], node));
        actions.push(Action::Submit(lid, request, req));
    }

    /// The answer to the operator's request. Returns the removed node if the step removed one.
    pub fn answered(&mut self, request: u64, response: &Response) -> Option<NodeId> {
        let at = self.pending.iter().position(|p| p.0 == request)?;
        let (_, _, step, node) = self.pending.remove(at);
        let ok = matches!(response, Ok(Reply::Int(_)) | Ok(Reply::Ok));
        if !ok {
            self.stats.retries += 1;
            return None;
        }
        if let Some(i) = self.plan.iter().position(|s| *s == step) {
            self.plan.remove(i);
        }
        match step {
            Step::Add(_) => self.stats.added += 1,
            Step::Promote(_) => self.stats.promoted += 1,
            Step::Remove(_) | Step::RemoveLeader(_) => {
                self.stats.removed += 1;
                if matches!(step, Step::RemoveLeader(_)) {
                    self.stats.leaders_removed += 1;
                }
                self.removed.insert(node);
                return Some(node);
            }
            Step::Transfer => self.stats.transfers += 1,
        }
        None
    }

    /// Node `id` crashed: a request it held will never be answered.
    pub fn crashed(&mut self, id: NodeId) {
        let before = self.pending.len();
        self.pending.retain(|p| p.1 != id);
        self.stats.retries += (before - self.pending.len()) as u64;
    }
}

/// True if a majority of `a`'s voters and a majority of `b`'s voters can be disjoint.
pub fn disjoint_majorities(a: &Membership, b: &Membership) -> bool {
    let (va, vb) = (a.voters(), b.voters());
    let shared = va.iter().filter(|id| vb.contains(id)).count();
    let (only_a, only_b) = (va.len() - shared, vb.len() - shared);
    a.quorum().saturating_sub(only_a) + b.quorum().saturating_sub(only_b) <= shared
}

/// The membership checks (see the module docs).
#[derive(Debug)]
pub struct MembershipChecks {
    /// Committed configurations by index (the bootstrap one at 0).
    configs: BTreeMap<Index, Membership>,
    /// Per node: committed prefix already scanned for configuration entries.
    scanned: BTreeMap<NodeId, Index>,
    /// Terms whose leader was checked.
    leaders: BTreeSet<Term>,
    /// Nodes a committed configuration removed, with the term of the node on which that
    /// configuration was first seen committed (after every event, so normally the leader that
    /// committed it).
    removed: BTreeMap<NodeId, Term>,
    /// Per leader (node, term): its commit index and membership at the last check.
    last_commit: BTreeMap<NodeId, (Term, Index, Membership)>,
    /// The highest commit index seen on any node.
    max_commit: Index,
}

impl MembershipChecks {
    /// Checks for a cluster bootstrapped with `bootstrap`.
    pub fn new(bootstrap: Membership) -> Self {
        MembershipChecks {
            configs: BTreeMap::from([(0, bootstrap)]),
            scanned: BTreeMap::new(),
            leaders: BTreeSet::new(),
            removed: BTreeMap::new(),
            last_commit: BTreeMap::new(),
            max_commit: 0,
        }
    }

    /// A node restarted: its committed prefix is scanned again.
    pub fn restarted(&mut self, id: NodeId) {
        self.scanned.remove(&id);
        self.last_commit.remove(&id);
    }

    /// Committed configuration changes seen so far (not counting the bootstrap one).
    pub fn committed_changes(&self) -> usize {
        self.configs.len() - 1
    }

    /// Runs every check on the live nodes.
    pub fn check(&mut self, nodes: &[(NodeId, &Driver<MemFs>)]) -> Result<(), String> {
        self.max_commit = nodes.iter().map(|(_, d)| d.node().commit()).fold(self.max_commit, Index::max);
        for &(id, d) in nodes {
            let n = d.node();
            let from = (self.max_commit + 1).max(n.first_index());
            let uncommitted: Vec<Index> =
                (from..=n.last_index()).filter(|&i| n.entry(i).is_some_and(|e| e.is_config())).collect();
            if uncommitted.len() > 1 {
                return Err(format!(
                    "node {id} holds configuration entries {uncommitted:?}, all above the highest committed index {}: two changes in flight",
                    self.max_commit
                ));
            }
        }
        for &(id, d) in nodes {
            let n = d.node();
            // Committed configurations.
            let from = self.scanned.get(&id).map_or(0, |&s| s + 1).max(n.first_index());
            for index in from..=n.commit() {
                let Some(e) = n.entry(index) else { break };
                if e.is_config() && !self.configs.contains_key(&index) {
                    let m = Membership::decode(&e.data).map_err(|e| format!("node {id}: {e}"))?;
                    self.configs.insert(index, m);
                    self.check_configs(n.term())?;
                }
            }
            self.scanned.insert(id, n.commit());
            if n.role() != Role::Leader {
                self.last_commit.remove(&id);
                continue;
            }
            let m = n.membership();
            if self.leaders.insert(n.term()) {
                // A new leader: elected by a majority of its voters, and a voter itself.
                if let Some(&since) = self.removed.get(&id).filter(|&&t| n.term() >= t) {
                    return Err(format!(
                        "node {id}, removed by a configuration committed in term {since}, leads term {}",
                        n.term()
                    ));
                }
                let granted: Vec<NodeId> =
                    n.votes().iter().filter(|(v, g)| **g && m.is_voter(**v)).map(|(v, _)| *v).collect();
                if !m.is_voter(id) || granted.len() < m.quorum() {
                    return Err(format!(
                        "node {id} leads term {} with votes from {granted:?}, not a majority of the voters of {m}",
                        n.term()
                    ));
                }
            }
            // Commit moves only as far as a majority of voters holds (under the configuration
            // before or after this step: a change may have been appended in the same batch).
            let quorum_index = |m: &Membership| {
                m.committed_index(|v| {
                    if v == id {
                        n.last_index()
                    } else {
                        n.progress(v).map_or(0, |p| p.match_index)
                    }
                })
            };
            if let Some((term, commit, before)) = self.last_commit.get(&id) {
                if *term == n.term() && n.commit() > *commit {
                    let allowed = quorum_index(before).max(quorum_index(m));
                    if n.commit() > allowed {
                        return Err(format!(
                            "leader {id} (term {}) committed up to {} but a majority of the voters of {m} holds only up to {allowed}",
                            n.term(),
                            n.commit()
                        ));
                    }
                }
            }
            self.last_commit.insert(id, (n.term(), n.commit(), m.clone()));
        }
        Ok(())
    }

    /// Checks the committed configurations; `term` is that of the node that showed the newest.
    fn check_configs(&mut self, term: Term) -> Result<(), String> {
        let list: Vec<(&Index, &Membership)> = self.configs.iter().collect();
        for w in list.windows(2) {
            if disjoint_majorities(w[0].1, w[1].1) {
                return Err(format!(
                    "committed configurations at {} ({}) and {} ({}) have majorities that can be disjoint",
                    w[0].0, w[0].1, w[1].0, w[1].1
                ));
            }
        }
        let latest = self.configs.values().next_back().cloned().unwrap_or_default();
        for m in self.configs.values() {
            for &id in m.members().keys() {
                if !latest.contains(id) {
                    self.removed.entry(id).or_insert(term);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_majorities_are_detected() {
        let m = |v: &[NodeId]| Membership::from_voters(v);
        assert!(!disjoint_majorities(&m(&[1, 2, 3]), &m(&[1, 2, 3, 4])));
        assert!(!disjoint_majorities(&m(&[1, 2, 3, 4]), &m(&[2, 3, 4])));
        assert!(disjoint_majorities(&m(&[1, 2, 3]), &m(&[1, 4, 5])), "two voters swapped at once");
        assert!(disjoint_majorities(&m(&[1, 2, 3]), &m(&[3, 4, 5, 6, 7])));
        assert!(!disjoint_majorities(&m(&[1, 2, 3, 4, 5]), &m(&[1, 2, 3, 4])));
    }

    #[test]
    fn every_plan_changes_the_membership() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let op = Operator::new(&mut rng, [3, 5][seed as usize % 2]);
            assert!(op.plan.iter().any(|s| matches!(s, Step::Add(_) | Step::Remove(_))), "seed {seed}");
        }
    }
}
