//! Configuration changes on a running node (thesis ch. 4; the rules are in [`crate::membership`]).
//!
//! - Leader: [`Node::propose_conf_change`] appends a configuration entry holding the whole new
//!   membership; it takes effect at once (for the commit rule too: the entry itself is committed
//!   by a majority of the new voters). Refused while a leadership transfer runs, before the leader
//!   has committed an entry of its term, while the previous change is uncommitted, and for a
//!   learner that is not caught up.
//! - Follower: every configuration entry appended takes effect; one cut off by a truncation is
//!   forgotten, which takes the node back to the configuration before it.
//! - Snapshot install: the snapshot's membership becomes the base
//!   ([`Node::restore_with_membership`]).
//! - A leader that is not a voter of a committed configuration (it removed itself) stops taking
//!   proposals and hands leadership to the most caught-up voter (TimeoutNow, [`crate::transfer`]);
//!   it steps down when that voter campaigns, or after an election timeout at the latest.
//!
//! Invariant: [`Node::peers`] and, on a leader, its progress map always cover exactly the other
//! members of the latest configuration and of the latest committed one ([`Node::membership_changed`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::log::StorageAction;
use crate::membership::{ConfChange, ConfChangeError, Membership};
use crate::node::{Node, Role};
use crate::progress::Progress;
use crate::types::{Entry, EntryKind, Index, NodeId, Term};

impl Node {
    /// The configuration in effect: the latest in the log (committed or not), or the snapshot's /
    /// bootstrap one if the log holds none.
    pub fn membership(&self) -> &Membership {
        &self.configs.latest().membership
    }

    /// The log index of the configuration in effect (its snapshot's or bootstrap point for a base).
    pub fn membership_index(&self) -> Index {
        self.configs.latest().index
    }

    /// The latest configuration at or below the commit index.
    pub fn committed_membership(&self) -> &Membership {
        &self.configs.committed(self.log.commit()).membership
    }

    /// True if this node is a voter of the configuration in effect (only voters campaign).
    pub fn is_voter(&self) -> bool {
        self.membership().is_voter(self.config.id)
    }

    /// The votes of the node's last (pre-)campaign in this term (node -> granted); on a leader,
    /// the votes it won with.
    pub fn votes(&self) -> &BTreeMap<NodeId, bool> {
        &self.votes
    }

    /// Leader: proposes a configuration change (see the module docs for when it is refused).
    /// Returns the index of the configuration entry; the change is done when that entry is
    /// committed (it shows up in `Ready::committed` with the same index and term).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader { leader: self.leader });
        }
        if let Some(t) = &self.transfer {
            return Err(ConfChangeError::TransferInProgress { to: t.target });
        }
        let commit = self.log.commit();
        if self.log.term(commit) != Some(self.term) {
            return Err(ConfChangeError::LeaderNotReady);
        }
        let latest = self.configs.latest();
        if latest.index > commit {
            return Err(ConfChangeError::ChangeInFlight { index: latest.index });
        }
        let next = latest.membership.apply(&change)?;
        if let ConfChange::Promote { id } = change {
            let match_index = self.progress.get(&id).map_or(0, |p| p.match_index);
            let last_index = self.log.last_index();
            if match_index.saturating_add(self.config.max_promote_lag) < last_index {
                return Err(ConfChangeError::LearnerBehind { id, match_index, last_index });
            }
        }
        let index = self.log.append_kind(self.term, EntryKind::Config, next.encode());
        self.configs.push(index, self.term, next);
        self.membership_changed();
        Ok(index)
    }

    /// Follower: the driver has made a snapshot ending at (`index`, `term`) whose membership is
    /// `membership` durable; see [`Node::restore`] for the rest. The snapshot's membership becomes
    /// the configuration as of `index`; configuration entries after it stay if the log keeps them.
    pub fn restore_with_membership(
        &mut self,
        index: Index,
        term: Term,
        membership: Membership,
        leader: NodeId,
    ) -> Option<StorageAction> {
        let saved = (self.configs.clone(), self.peers.clone());
        // Before `restore`, so that it may answer a leader the snapshot makes a member.
        self.configs.rebase(index, term, membership);
        self.peers = self.member_peers();
        let verdict = self.restore(index, term, leader);
        if verdict.is_none() {
            (self.configs, self.peers) = saved;
            return None;
        }
        self.forget_cut_configs();
        self.membership_changed();
        verdict
    }

    /// Follower: `entries` were merged into the log by AppendEntries (a conflicting suffix may have
    /// been cut first): forget cut configurations, take up new ones.
    pub(crate) fn configs_appended(&mut self, entries: &[Entry]) {
        let mut changed = self.forget_cut_configs();
        for e in entries.iter().filter(|e| e.is_config()) {
            if e.index <= self.configs.latest().index || self.log.term(e.index) != Some(e.term) {
                continue;
            }
            // An undecodable configuration cannot come from a correct leader of this version; the
            // node keeps its configuration, and the state machine stops at this entry when it
            // applies it (the driver decodes it again).
            if let Ok(m) = Membership::decode(&e.data) {
                self.configs.push(e.index, e.term, m);
                changed = true;
            }
        }
        changed |= self.configs.prune(self.log.commit());
        if changed {
            self.membership_changed();
        }
    }

    /// Forgets the configurations whose entries the log no longer holds (cut by a truncation or a
    /// snapshot install). Entries below the log's first index were compacted away, which only
    /// happens to committed ones: those are held. Returns true if any was forgotten.
    fn forget_cut_configs(&mut self) -> bool {
        let log = &self.log;
        let first = log.first_index();
        self.configs
            .retain_held(|i, t| i < first || log.entry(i).is_some_and(|e| e.term == t && e.is_config()))
    }

    /// Leader: the commit index moved. A committed configuration supersedes the ones before it
    /// (members removed by it are no longer replicated to); a leader that is not a voter of it
    /// hands over leadership.
    pub(crate) fn leader_committed(&mut self) {
        if self.configs.prune(self.log.commit()) {
            self.membership_changed();
        }
        let latest = self.configs.latest();
        if self.role == Role::Leader && latest.index <= self.log.commit() && !self.is_voter() {
            self.hand_over_after_removal();
        }
    }

    /// The other members of the latest and of the latest committed configuration, sorted.
    fn member_peers(&self) -> Vec<NodeId> {
        let latest = &self.configs.latest().membership;
        let committed = &self.configs.committed(self.log.commit()).membership;
        let ids: BTreeSet<NodeId> =
            latest.members().keys().chain(committed.members().keys()).copied().collect();
        ids.into_iter().filter(|&id| id != self.config.id).collect()
    }

    /// The configuration changed: recompute the peers; a leader starts or stops replicating to
    /// members that joined or left, and abandons a transfer to a node that is no longer a voter.
    pub(crate) fn membership_changed(&mut self) {
        self.peers = self.member_peers();
        if self.role != Role::Leader {
            return;
        }
        // Heartbeats answered under another configuration no longer make a lease.
        self.end_lease();
        let last = self.log.last_index();
        self.progress.retain(|id, _| self.peers.contains(id));
        for &id in &self.peers {
            // A new member's first probe carries the latest entry (the configuration entry that
            // added it), not nothing: a probe with entries is sent again whenever a heartbeat
            // answer shows the member reachable, so a first probe lost while the new node was
            // still starting (a standby being adopted) cannot leave it waiting for the next
            // proposal in an idle cluster.
            self.progress.entry(id).or_insert_with(|| Progress::new(last.saturating_sub(1)));
        }
        if self.transfer.as_ref().is_some_and(|t| !self.membership().is_voter(t.target)) {
            self.transfer = None;
        }
        // A change can lower the quorum (a voter left): entries may be committed now.
        self.maybe_commit();
    }
}
