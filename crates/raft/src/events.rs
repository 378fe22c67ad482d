//! What a node decided about elections, kept as data so that an observer (the simulator's trace,
//! a debugging session) can explain why a leader was or was not elected.
//!
//! The core stays pure: nothing here is printed, timed or sent anywhere. A node appends an
//! [`ElectionEvent`] when it starts a (pre-)campaign, when a (pre-)campaign ends, when it answers
//! or ignores a (pre-)vote request (with the reason of a refusal), when CheckQuorum makes it step
//! down, and when its election timer fires while it may not campaign. Role and term changes are
//! not recorded: [`crate::Node::role`] and [`crate::Node::term`] show them.
//!
//! Bound: the node keeps the last [`ElectionLog::CAPACITY`] events and forgets older ones (a host
//! that never reads them, like the server, pays a few hundred bytes). Each event has a sequence
//! number, so a reader that remembers the last one it saw takes only the new ones
//! ([`ElectionLog::since`]); a gap in the numbers shows what was forgotten.

use std::collections::VecDeque;

use crate::types::{Index, NodeId, Term};

/// Why a (pre-)vote was refused (or a request ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request's term is below this node's (`ours`), or, for a pre-vote, not above it.
    StaleTerm {
        /// This node's term.
        ours: Term,
    },
    /// The candidate's log is not as up to date as this node's (§5.4.1).
    LogBehind {
        /// This node's last log (index, term).
        ours: (Index, Term),
        /// The candidate's last log (index, term).
        theirs: (Index, Term),
    },
    /// This node already voted for another candidate in this term.
    AlreadyVoted {
        /// Whom it voted for.
        candidate: NodeId,
    },
    /// This node knows a leader of this term.
    HasLeader {
        /// The leader.
        leader: NodeId,
    },
    /// CheckQuorum: this node heard from a leader (or, in lease mode, started) less than an
    /// election timeout ago, so the request was ignored without an answer (thesis §4.2.3, §9.6,
    /// §6.4.1).
    Lease {
        /// The leader it follows (None: it heard from one before its term changed, or it just
        /// started, in lease mode).
        leader: Option<NodeId>,
        /// Ticks since it last heard from a leader (or started, if it never did).
        elapsed: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::StaleTerm { ours } => write!(f, "stale term (ours {ours})"),
            Refusal::LogBehind { ours, theirs } => {
                write!(f, "log behind (theirs {}@t{}, ours {}@t{})", theirs.0, theirs.1, ours.0, ours.1)
            }
            Refusal::AlreadyVoted { candidate } => write!(f, "already voted for {candidate}"),
            Refusal::HasLeader { leader } => write!(f, "has leader {leader}"),
            Refusal::Lease { leader: Some(l), elapsed } => {
                write!(f, "ignored: heard from leader {l} {elapsed} ticks ago")
            }
            Refusal::Lease { leader: None, elapsed } => {
                write!(f, "ignored: heard from a leader (or started) {elapsed} ticks ago")
            }
        }
    }
}

/// One election decision of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionEvent {
    /// The node started a pre-campaign (`pre_vote`) or a campaign for `term`, with a new election
    /// timeout of `timeout` ticks.
    Campaign {
        /// The term campaigned for (a pre-campaign's prospective term).
        term: Term,
        /// A pre-campaign.
        pre_vote: bool,
        /// Asked for by the leader (TimeoutNow).
        transfer: bool,
        /// The voters asked (the other voters of the node's latest configuration).
        asked: Vec<NodeId>,
        /// The new election timeout.
        timeout: u32,
    },
    /// A (pre-)campaign ended: won or lost, with the answers counted.
    Outcome {
        /// The term campaigned for.
        term: Term,
        /// A pre-campaign.
        pre_vote: bool,
        /// Won (a majority granted) or lost (a majority refused).
        won: bool,
        /// The answers counted: voter -> granted (this node included).
        votes: Vec<(NodeId, bool)>,
    },
    /// The node answered (or ignored) a (pre-)vote request of `from` for `term`.
    Vote {
        /// The candidate.
        from: NodeId,
        /// The term of the request (a pre-vote's prospective term).
        term: Term,
        /// A pre-vote.
        pre_vote: bool,
        /// None: granted; otherwise why not.
        refused: Option<Refusal>,
    },
    /// CheckQuorum: a leader of `term` stepped down, having heard from only `heard` of the voters
    /// within an election timeout.
    CheckQuorumStepDown {
        /// The term it led.
        term: Term,
        /// The voters it heard from (itself included if a voter).
        heard: Vec<NodeId>,
    },
    /// The election timer fired but the node may not campaign: it is not a voter of its latest
    /// configuration (a learner, a removed node, a node waiting to be added).
    NotAVoter {
        /// The node's term.
        term: Term,
        /// The index of the configuration it goes by.
        config_index: Index,
    },
}

impl std::fmt::Display for ElectionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = |pre: bool| if pre { "pre-vote" } else { "vote" };
        match self {
            ElectionEvent::Campaign { term, pre_vote, transfer, asked, timeout } => write!(
                f,
                "starts {}campaign for term {term}{} asking {asked:?}, next timeout {timeout} ticks",
                if *pre_vote { "pre-" } else { "" },
                if *transfer { " (transfer)" } else { "" }
            ),
            ElectionEvent::Outcome { term, pre_vote, won, votes } => write!(
                f,
                "{} {} for term {term}: {votes:?}",
                if *won { "wins" } else { "loses" },
                kind(*pre_vote)
            ),
            ElectionEvent::Vote { from, term, pre_vote, refused: None } => {
                write!(f, "grants {} to {from} for term {term}", kind(*pre_vote))
            }
            ElectionEvent::Vote { from, term, pre_vote, refused: Some(r) } => {
                write!(f, "refuses {} to {from} for term {term}: {r}", kind(*pre_vote))
            }
            ElectionEvent::CheckQuorumStepDown { term, heard } => {
                write!(f, "CheckQuorum: steps down as leader of term {term}, heard only from {heard:?}")
            }
            ElectionEvent::NotAVoter { term, config_index } => write!(
                f,
                "election timer fired in term {term} but not a voter of its configuration (at {config_index})"
            ),
        }
    }
}

/// The last [`ElectionLog::CAPACITY`] election events of a node, numbered.
#[derive(Clone, Debug, Default)]
pub struct ElectionLog {
    /// (sequence number, event), oldest first.
    events: VecDeque<(u64, ElectionEvent)>,
    /// The sequence number of the next event.
    next: u64,
}

impl ElectionLog {
    /// Most events kept.
    pub const CAPACITY: usize = 256;

    pub(crate) fn push(&mut self, event: ElectionEvent) {
        if self.events.len() == Self::CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back((self.next, event));
        self.next += 1;
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The events kept with sequence number `seq` or later, oldest first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &(u64, ElectionEvent)> {
        self.events.iter().filter(move |(s, _)| *s >= seq)
    }
}
