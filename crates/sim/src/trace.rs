//! The election trace: what a human needs to see why a leader was, or was not, elected.
//!
//! Recorded, in virtual time, by the world as it runs:
//! - per node, observed after every batch through the driver's public accessors: role changes
//!   with term and known leader (and the node's log end, commit, voters and election timer at that
//!   moment), configuration changes, and the node's own election decisions from the core
//!   ([`raft::ElectionLog`]: (pre-)campaigns with their timeout, outcomes with the answers
//!   counted, every (pre-)vote granted or refused with the reason, CheckQuorum step-downs, timers
//!   that fired on a node that may not campaign);
//! - vote traffic (PreVote, RequestVote, their answers, TimeoutNow) that never arrives: lost by
//!   the network, cut by a partition, or sent to a node that is down;
//! - the faults: crashes and restarts (with the recovered term, vote and log, and the node's tick
//!   period, i.e. its clock drift), injected fsync failures, stalled threads and slow disks,
//!   partitions and heals (the set of cut links after each change), the calm;
//! - the membership operator's and the nemesis's admin requests and their answers.
//!
//! Heartbeats and appends are not recorded (a follower's election timer restarts on each; the
//! timer shown with every role change says where it stands).
//!
//! Bound: the last [`CAPACITY`] entries are kept (older ones are forgotten and counted); a
//! failure prints those of its last [`FAILURE_WINDOW_MS`] of virtual time. `RAFT_SIM_TRACE=1`
//! keeps every entry and prints the whole trace at the end of the run, failed or not (for
//! replaying one seed). Recording never draws from the world's RNG, so it does not change a run.
//!
//! Replication is not in the election trace; [`LinkTrace`] (`RAFT_SIM_LINK=a-b`) prints it for one
//! pair of nodes as the run goes: every message between them (sent, delivered, lost, cut, to a node
//! that is down) and, after each batch of a leader that is one of them, its progress for every
//! follower.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use engine::PeerMessage;
use raft::{Index, MessageBody, Node, NodeId, Role, Term};

/// Most entries kept (unless `RAFT_SIM_TRACE` is set).
pub const CAPACITY: usize = 4096;

/// A failure prints the entries of this much virtual time before it.
pub const FAILURE_WINDOW_MS: u64 = 2500;

/// What was last seen of a node.
#[derive(Debug)]
struct View {
    incarnation: u64,
    role: Role,
    term: Term,
    leader: Option<NodeId>,
    config_index: Index,
    /// The next election event to take from the core.
    seq: u64,
}

/// The trace (see the module docs).
#[derive(Debug)]
pub(crate) struct Trace {
    /// (virtual ms, node or 0 for the world, text), oldest first.
    entries: VecDeque<(u64, NodeId, String)>,
    /// Most entries kept.
    capacity: usize,
    /// Entries forgotten.
    forgotten: u64,
    /// Print the whole trace at the end of the run.
    pub(crate) verbose: bool,
    views: BTreeMap<NodeId, View>,
}

impl Trace {
    /// A trace; `RAFT_SIM_TRACE` (any value but 0) keeps everything and prints it at the end.
    pub(crate) fn new() -> Trace {
        let verbose = std::env::var("RAFT_SIM_TRACE").is_ok_and(|v| !v.is_empty() && v != "0");
        Trace {
            entries: VecDeque::new(),
            capacity: if verbose { usize::MAX } else { CAPACITY },
            forgotten: 0,
            verbose,
            views: BTreeMap::new(),
        }
    }

    /// Records `text` about node `id` (0: the world) at `now`.
    pub(crate) fn note(&mut self, now: u64, id: NodeId, text: impl Into<String>) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.forgotten += 1;
        }
        self.entries.push_back((now, id, text.into()));
    }

    /// A node (re)started: a fresh view of it.
    pub(crate) fn started(&mut self, now: u64, id: NodeId, incarnation: u64, tick_ms: u64, node: &Node) {
        self.note(
            now,
            id,
            format!(
                "starts (incarnation {incarnation}, tick {tick_ms} ms): term {} voted for {:?}, {}",
                node.term(),
                node.voted_for(),
                state(node)
            ),
        );
        self.views.insert(
            id,
            View {
                incarnation,
                role: node.role(),
                term: node.term(),
                leader: node.leader(),
                config_index: node.membership_index(),
                seq: node.election_log().next_seq(),
            },
        );
    }

    /// After a batch of node `id`: its election decisions and what changed.
    pub(crate) fn observe(&mut self, now: u64, id: NodeId, incarnation: u64, node: &Node) {
        let Some(view) = self.views.get_mut(&id).filter(|v| v.incarnation == incarnation) else {
            return;
        };
        let mut lines = Vec::new();
        let log = node.election_log();
        let mut seq = view.seq;
        for (s, event) in log.since(view.seq) {
            if *s > seq {
                lines.push(format!("({} election events forgotten)", s - seq));
            }
            lines.push(event.to_string());
            seq = s + 1;
        }
        view.seq = log.next_seq();
        if node.role() != view.role || node.term() != view.term || node.leader() != view.leader {
            lines.push(format!(
                "{} t{} (leader {:?}) -> {} t{} (leader {:?}); {}",
                view.role.as_str(),
                view.term,
                view.leader,
                node.role().as_str(),
                node.term(),
                node.leader(),
                state(node)
            ));
            view.role = node.role();
            view.term = node.term();
            view.leader = node.leader();
        }
        if node.membership_index() != view.config_index {
            lines.push(format!("configuration now {} (at {})", node.membership(), node.membership_index()));
            view.config_index = node.membership_index();
        }
        for line in lines {
            self.note(now, id, line);
        }
    }

    /// Vote traffic that will not arrive: `why` (lost, cut, receiver down).
    pub(crate) fn undelivered(&mut self, now: u64, m: &PeerMessage, why: &str) {
        if let PeerMessage::Raft(r) = m {
            let what = match &r.body {
                MessageBody::PreVote { .. } | MessageBody::RequestVote { .. } | MessageBody::TimeoutNow => {
                    r.body.name().to_string()
                }
                MessageBody::PreVoteResponse { granted } | MessageBody::RequestVoteResponse { granted } => {
                    format!("{} granted={granted}", r.body.name())
                }
                _ => return,
            };
            self.note(now, r.from, format!("{what} t{} to {} {why}", r.term, r.to));
        }
    }

    /// The network's cut links changed.
    pub(crate) fn cuts(&mut self, now: u64, what: &str, cut: &BTreeSet<(NodeId, NodeId)>) {
        self.note(now, 0, format!("{what}; cut links now: {}", describe_cuts(cut)));
    }

    /// The entries from `from` ms on, one per line.
    pub(crate) fn render(&self, from: u64) -> String {
        let mut out = String::new();
        let shown = self.entries.iter().filter(|(t, _, _)| *t >= from).count();
        let _ = writeln!(
            out,
            "  election trace ({shown} entries from {from} ms{}):",
            if self.forgotten > 0 {
                format!("; {} older entries forgotten", self.forgotten)
            } else {
                String::new()
            }
        );
        for (t, id, text) in self.entries.iter().filter(|(t, _, _)| *t >= from) {
            if *id == 0 {
                let _ = writeln!(out, "  {t:>5} ms  world   {text}");
            } else {
                let _ = writeln!(out, "  {t:>5} ms  node {id:<2} {text}");
            }
        }
        out
    }
}

/// A node's log end, commit, voters and election timer, for a trace line.
fn state(node: &Node) -> String {
    format!(
        "last {}@t{} commit {} voters {:?} (config at {}), timer {}/{}",
        node.last_index(),
        node.last_term(),
        node.commit(),
        node.membership().voters(),
        node.membership_index(),
        node.election_elapsed(),
        node.election_timeout()
    )
}

/// Cut links, symmetric pairs shown once as `a<->b`, one-way ones as `a->b`.
fn describe_cuts(cut: &BTreeSet<(NodeId, NodeId)>) -> String {
    if cut.is_empty() {
        return "none".into();
    }
    let mut parts = Vec::new();
    for &(a, b) in cut {
        if cut.contains(&(b, a)) {
            if a < b {
                parts.push(format!("{a}<->{b}"));
            }
        } else {
            parts.push(format!("{a}->{b}"));
        }
    }
    parts.join(" ")
}

/// `RAFT_SIM_LINK=a-b`: the replication between nodes `a` and `b`, printed to stderr as it happens
/// (see the module docs). Off unless the variable names two nodes.
#[derive(Debug, Default)]
pub(crate) struct LinkTrace {
    /// The two nodes, if on.
    link: Option<(NodeId, NodeId)>,
}

impl LinkTrace {
    /// From `RAFT_SIM_LINK`.
    pub(crate) fn from_env() -> LinkTrace {
        let link = std::env::var("RAFT_SIM_LINK").ok().and_then(|v| {
            let (a, b) = v.split_once('-')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        });
        LinkTrace { link }
    }

    fn on_link(&self, from: NodeId, to: NodeId) -> bool {
        self.link.is_some_and(|(a, b)| (from, to) == (a, b) || (from, to) == (b, a))
    }

    /// A message between the two nodes: `what` happened to it at `now`.
    pub(crate) fn message(&self, now: u64, what: &str, m: &PeerMessage) {
        if !self.on_link(m.from(), m.to()) {
            return;
        }
        let body = match m {
            PeerMessage::Raft(r) => {
                let body = match &r.body {
                    MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                        format!(
                            "AppendEntries prev {prev_log_index}@t{prev_log_term} entries {} commit {leader_commit}",
                            entries.len()
                        )
                    }
                    MessageBody::AppendEntriesResponse { success, index, conflict_term, conflict_index } => {
                        format!(
                            "AppendEntriesResponse success {success} index {index} conflict {conflict_index}@t{conflict_term}"
                        )
                    }
                    MessageBody::Heartbeat { leader_commit, read_round } => {
                        format!("Heartbeat commit {leader_commit} round {read_round}")
                    }
                    other => other.name().to_string(),
                };
                format!("t{} {body}", r.term)
            }
            PeerMessage::Forward { proposals, .. } => format!("Forward {} proposals", proposals.len()),
            PeerMessage::SnapshotChunk { index, offset, data, len, .. } => {
                format!("SnapshotChunk of {index} bytes {offset}+{} of {len}", data.len())
            }
            other => format!("{other:?}").chars().take(120).collect(),
        };
        eprintln!("link {now:>5} ms  {}->{} {what}: {body}", m.from(), m.to());
    }

    /// After a batch of node `id`: if it leads and is one of the two nodes, its progress.
    pub(crate) fn leader(&self, now: u64, id: NodeId, node: &Node) {
        if node.role() != Role::Leader || !self.link.is_some_and(|(a, b)| id == a || id == b) {
            return;
        }
        let progress: Vec<String> = node
            .peers()
            .iter()
            .filter_map(|&p| {
                node.progress(p).map(|pr| {
                    format!(
                        "{p}: {:?} match {} next {} inflight {}{}",
                        pr.state,
                        pr.match_index,
                        pr.next_index,
                        pr.inflight.len(),
                        if pr.probe_sent { " probe sent" } else { "" }
                    )
                })
            })
            .collect();
        eprintln!(
            "link {now:>5} ms  leader {id} t{} last {} commit {}; {}",
            node.term(),
            node.last_index(),
            node.commit(),
            progress.join("; ")
        );
    }
}
