//! Leader election (paper §5.2, §5.4.1) with PreVote (thesis §9.6).
//!
//! - A follower whose election timer fires first asks for pre-votes for `term + 1` without changing
//!   its own term; only if a majority would vote does it become a candidate, raise its term, vote for
//!   itself and ask for real votes. A node cut off from the cluster therefore never inflates its term
//!   and cannot depose a healthy leader when it comes back.
//! - A vote (or pre-vote) is granted only to a candidate whose log is at least as up to date as the
//!   voter's (last term, then last index): the election restriction that gives Leader Completeness.
//! - A node votes at most once per term; the vote is part of the hard state and is persisted before
//!   the answer leaves the node (the driver's Ready order guarantees that).
//! - A new leader appends a no-op entry of its term at once, so that entries of earlier terms get
//!   committed through it (Figure 8) and ReadIndex can start.
//! - Only voters of the node's latest configuration campaign, votes are asked of its voters and
//!   counted only from them ([`crate::membership::Membership::vote_result`]): a learner's or a
//!   stranger's answer never counts. Any node answers a vote request whatever its own
//!   configuration (thesis §4.1: the candidate may know a configuration the voter has not seen).
//! - A campaign started by [`MessageBody::TimeoutNow`] (leadership transfer) skips PreVote and
//!   marks its requests, so voters answer it despite having heard from the leader recently.

use std::collections::BTreeMap;

use crate::events::{ElectionEvent, Refusal};
use crate::membership::VoteResult;
use crate::message::{Message, MessageBody};
use crate::node::{Node, Role};
use crate::progress::Progress;
use crate::types::{Index, NodeId, Term};

impl Node {
    /// The election timer fired: start a pre-campaign (or a campaign when PreVote is off).
    pub(crate) fn campaign(&mut self) {
        if !self.is_voter() {
            return;
        }
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// The voters of the latest configuration other than this node.
    fn other_voters(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.membership().voters().into_iter().filter(|&v| v != me).collect()
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.config.id, true)]);
        self.reset_election_timer();
        self.record_campaign(self.term + 1, true, false);
        if self.has_won() {
            self.become_candidate(false);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.other_voters() {
            self.send_with_term(peer, self.term + 1, MessageBody::PreVote { last_log_index, last_log_term });
        }
    }

    /// Starts a real campaign in the next term; `transfer` if the leader asked for it.
    pub(crate) fn become_candidate(&mut self, transfer: bool) {
        self.term += 1;
        self.voted_for = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.config.id, true)]);
        self.reset_election_timer();
        self.reads.fail_forwarded(&mut self.read_states);
        self.record_campaign(self.term, false, transfer);
        if self.has_won() {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.other_voters() {
            self.send(peer, MessageBody::RequestVote { last_log_index, last_log_term, transfer });
        }
    }

    pub(crate) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        // `votes` keeps the votes this leadership was won with (see `Node::votes`).
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let last = self.log.last_index();
        self.progress = self.peers.iter().map(|&p| (p, Progress::new(last))).collect();
        self.reads.reset();
        self.lease.reset(self.reads.round);
        // The no-op of the new term (§8, Figure 8).
        self.log.append(self.term, bytes::Bytes::new());
        self.commit_dirty = true;
    }

    fn has_won(&self) -> bool {
        self.membership().vote_result(&self.votes) == VoteResult::Won
    }

    fn has_lost(&self) -> bool {
        self.membership().vote_result(&self.votes) == VoteResult::Lost
    }

    pub(crate) fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_index: Index, last_term: Term) {
        // `term` is the candidate's prospective term (already known to be >= ours).
        let refused = if term <= self.term {
            Some(Refusal::StaleTerm { ours: self.term })
        } else {
            self.log_behind(last_index, last_term)
        };
        self.election_log.push(ElectionEvent::Vote { from, term, pre_vote: true, refused });
        let granted = refused.is_none();
        let reply_term = if granted { term } else { self.term };
        self.send_with_term(from, reply_term, MessageBody::PreVoteResponse { granted });
    }

    pub(crate) fn handle_request_vote(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let refused = match (self.voted_for, self.leader) {
            (Some(v), _) if v != from => Some(Refusal::AlreadyVoted { candidate: v }),
            (None, Some(leader)) => Some(Refusal::HasLeader { leader }),
            _ => self.log_behind(last_index, last_term),
        };
        let term = self.term;
        self.election_log.push(ElectionEvent::Vote { from, term, pre_vote: false, refused });
        let granted = refused.is_none();
        if granted {
            self.voted_for = Some(from);
            self.reset_election_timer();
        }
        self.send(from, MessageBody::RequestVoteResponse { granted });
    }

    pub(crate) fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        // Granted answers carry our prospective term, refusals our current one.
        let expected = if granted { self.term + 1 } else { self.term };
        if self.role != Role::PreCandidate || term != expected {
            return;
        }
        self.votes.insert(from, granted);
        if self.has_won() {
            self.record_outcome(self.term + 1, true, true);
            self.become_candidate(false);
        } else if self.has_lost() {
            self.record_outcome(self.term + 1, true, false);
            self.become_follower(self.term, None);
        }
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        if self.has_won() {
            self.record_outcome(self.term, false, true);
            self.become_leader();
        } else if self.has_lost() {
            self.record_outcome(self.term, false, false);
            self.become_follower(self.term, None);
        }
    }

    /// Why a candidate's log (`last_index`, `last_term`) does not earn this node's vote, if so.
    fn log_behind(&self, last_index: Index, last_term: Term) -> Option<Refusal> {
        (!self.log.is_up_to_date(last_index, last_term)).then(|| Refusal::LogBehind {
            ours: (self.log.last_index(), self.log.last_term()),
            theirs: (last_index, last_term),
        })
    }

    /// Records the answer to a (pre-)vote request decided before its handler (see `Node::step`).
    pub(crate) fn record_vote(&mut self, msg: &Message, refused: Option<Refusal>) {
        let pre_vote = matches!(msg.body, MessageBody::PreVote { .. });
        self.election_log.push(ElectionEvent::Vote { from: msg.from, term: msg.term, pre_vote, refused });
    }

    fn record_campaign(&mut self, term: Term, pre_vote: bool, transfer: bool) {
        let (asked, timeout) = (self.other_voters(), self.election_timeout);
        self.election_log.push(ElectionEvent::Campaign { term, pre_vote, transfer, asked, timeout });
    }

    fn record_outcome(&mut self, term: Term, pre_vote: bool, won: bool) {
        let votes = self.votes.iter().map(|(&id, &granted)| (id, granted)).collect();
        self.election_log.push(ElectionEvent::Outcome { term, pre_vote, won, votes });
    }
}
