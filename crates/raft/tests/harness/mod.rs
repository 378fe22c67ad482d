//! A scripted cluster for scenario tests: real `Node`s, a message queue the test controls, "storage"
//! that records exactly what each Ready asked to persist, and crash/restart from that storage.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft::{
    ConfChange, Config, Entry, HardState, Membership, Message, MessageBody, Node, NodeId, ReadState, Role,
    StorageAction, Term,
};

/// What a node has made durable.
#[derive(Clone, Default, Debug)]
pub struct Stored {
    pub hard_state: HardState,
    /// The durable snapshot (last included index and term; 0/0 if none).
    pub snapshot: (u64, Term),
    /// The entries after `snapshot.0`.
    pub entries: Vec<Entry>,
    /// The membership as of `snapshot.0` (the bootstrap membership while there is no snapshot;
    /// empty for a node added later).
    pub membership: Membership,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub stored: BTreeMap<NodeId, Stored>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub queue: VecDeque<Message>,
    /// Links (from, to) that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub down: BTreeSet<NodeId>,
    pub trace: Vec<String>,
    pub configs: BTreeMap<NodeId, Config>,
    /// Snapshot requests from Ready::snapshots: (leader, follower).
    pub snapshot_requests: Vec<(NodeId, NodeId)>,
    /// Messages of these kinds (`MessageBody::name`) are dropped.
    pub drop_kinds: BTreeSet<&'static str>,
}

pub fn config(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.seed = id * 7919;
    c
}

impl Cluster {
    pub fn new(n: u64) -> Self {
        Self::with_config(n, |_| {})
    }

    pub fn with_config(n: u64, tweak: impl Fn(&mut Config)) -> Self {
        let logs = (1..=n).map(|_| (0, vec![])).collect();
        Self::with_logs(n, logs, tweak)
    }

    /// Nodes start with the given (term, log terms).
    pub fn with_logs(n: u64, logs: Vec<(Term, Vec<Term>)>, tweak: impl Fn(&mut Config)) -> Self {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            stored: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            trace: Vec::new(),
            configs: BTreeMap::new(),
            snapshot_requests: Vec::new(),
            drop_kinds: BTreeSet::new(),
        };
        for (i, (term, terms)) in logs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let mut cfg = config(id, n);
            tweak(&mut cfg);
            let entries: Vec<Entry> = terms
                .iter()
                .enumerate()
                .map(|(k, t)| Entry::new(*t, k as u64 + 1, format!("{id}:{k}")))
                .collect();
            let hs = HardState { term, voted_for: None };
            let membership = Membership::from_voters(&cfg.voters);
            c.stored.insert(id, Stored { hard_state: hs, snapshot: (0, 0), entries, membership });
            c.configs.insert(id, cfg);
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: NodeId) {
        let s = self.stored[&id].clone();
        let (offset, offset_term) = s.snapshot;
        let node = Node::with_membership(
            self.configs[&id].clone(),
            s.membership,
            s.hard_state,
            offset,
            offset_term,
            s.entries,
            offset,
        )
        .unwrap();
        self.nodes.insert(id, node);
        // The "state machine" after a restart is the snapshot: the applied prefix up to its index.
        let kept: Vec<Entry> = self
            .applied
            .get(&id)
            .map(|a| a.iter().filter(|e| e.index <= offset).cloned().collect())
            .unwrap_or_default();
        self.applied.insert(id, kept);
        self.down.remove(&id);
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Executes every node's Ready: persist, then queue the messages, then apply.
    pub fn flush(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.down.contains(&id) {
                continue;
            }
            let rd = self.nodes.get_mut(&id).unwrap().ready();
            let s = self.stored.get_mut(&id).unwrap();
            if let Some(hs) = rd.hard_state {
                s.hard_state = hs;
            }
            if let Some(from) = rd.truncate_from {
                s.entries.retain(|e| e.index < from);
            }
            let offset = s.snapshot.0;
            for m in rd.early_messages {
                self.queue.push_back(m);
            }
            let last = rd.entries.last().map(|e| e.index);
            for e in rd.entries {
                assert_eq!(e.index, offset + s.entries.len() as u64 + 1, "node {id} appended out of order");
                s.entries.push(e);
            }
            if let Some(last) = last {
                self.nodes.get_mut(&id).unwrap().on_persisted(last);
            }
            for m in rd.messages.into_iter().chain(rd.log_acks) {
                self.queue.push_back(m);
            }
            self.applied.get_mut(&id).unwrap().extend(rd.committed);
            self.reads.entry(id).or_default().extend(rd.reads);
            self.snapshot_requests.extend(rd.snapshots.into_iter().map(|peer| (id, peer)));
        }
    }

    /// `id` takes a snapshot of its state machine at its applied index and compacts its log up to
    /// `upto` (at most the applied index).
    pub fn compact(&mut self, id: NodeId, upto: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let upto = upto.min(node.applied());
        let term = node.entry_term(upto).unwrap();
        node.compact(upto);
        let membership = self.membership_at(id, upto);
        let s = self.stored.get_mut(&id).unwrap();
        s.entries.retain(|e| e.index > upto);
        s.snapshot = (upto, term);
        s.membership = membership;
    }

    /// The membership of `id`'s state machine as of `index` (at most its applied index): the last
    /// configuration entry it applied up to there, or its stored base.
    pub fn membership_at(&self, id: NodeId, index: u64) -> Membership {
        self.applied[&id]
            .iter()
            .rfind(|e| e.index <= index && e.is_config())
            .map(|e| Membership::decode(&e.data).unwrap())
            .unwrap_or_else(|| self.stored[&id].membership.clone())
    }

    /// Adds node `id`, empty, waiting to be added to the cluster (it knows no membership).
    pub fn add_node(&mut self, id: NodeId) {
        let mut cfg = Config::new(id, vec![]);
        cfg.seed = id * 7919;
        self.configs.insert(id, cfg);
        self.stored.insert(id, Stored::default());
        self.start(id);
    }

    /// Proposes a configuration change on `leader`; returns its entry's index.
    pub fn change(&mut self, leader: NodeId, change: ConfChange) -> Result<u64, raft::ConfChangeError> {
        self.node_mut(leader).propose_conf_change(change)
    }

    /// `leader` sends its snapshot (its state machine at its applied index) to `peer`, which installs
    /// it. Returns the node's verdict (see `Node::restore`).
    pub fn install_snapshot(&mut self, leader: NodeId, peer: NodeId) -> Option<StorageAction> {
        self.install_snapshot_with(leader, peer, true)
    }

    /// Like `install_snapshot`; with `report` false the leader's driver never reports the outcome.
    pub fn install_snapshot_with(
        &mut self,
        leader: NodeId,
        peer: NodeId,
        report: bool,
    ) -> Option<StorageAction> {
        let l = &self.nodes[&leader];
        let index = l.applied();
        let term = l.entry_term(index).unwrap();
        let image: Vec<Entry> = self.applied[&leader].iter().filter(|e| e.index <= index).cloned().collect();
        let membership = self.membership_at(leader, index);
        let verdict = self.nodes.get_mut(&peer).unwrap().restore_with_membership(
            index,
            term,
            membership.clone(),
            leader,
        );
        if let Some(action) = verdict {
            let s = self.stored.get_mut(&peer).unwrap();
            s.snapshot = (index, term);
            s.membership = membership;
            if action == StorageAction::DropPrefix {
                s.entries.retain(|e| e.index > index);
            } else {
                s.entries.clear();
            }
            self.applied.insert(peer, image);
            if report {
                self.nodes.get_mut(&leader).unwrap().snapshot_sent(peer, index);
            }
        }
        verdict
    }

    /// Delivers one queued message (dropped if its link is cut or an end is down). Returns false when
    /// the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else { return false };
        if self.cut.contains(&(m.from, m.to))
            || self.down.contains(&m.to)
            || self.down.contains(&m.from)
            || self.drop_kinds.contains(m.body.name())
        {
            self.trace.push(format!("drop {}", describe(&m)));
            return true;
        }
        self.trace.push(describe(&m));
        self.nodes.get_mut(&m.to).unwrap().step(m);
        true
    }

    /// Flushes and delivers until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            self.flush();
            if self.queue.is_empty() {
                return;
            }
            while self.deliver_one() {}
        }
        panic!("cluster did not settle");
    }

    /// Like `settle`, but gives up quietly after `rounds` rounds.
    pub fn settle_bounded(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.flush();
            if self.queue.is_empty() {
                return;
            }
            while self.deliver_one() {}
        }
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
    }

    pub fn tick_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().filter(|id| !self.down.contains(id)).collect();
        for id in ids {
            self.tick(id);
        }
    }

    /// Ticks `id` alone until it starts a (pre-)campaign, then lets the cluster settle; repeats a few
    /// times (a refused pre-campaign can teach it a newer term) until it leads.
    pub fn elect(&mut self, id: NodeId) {
        for _ in 0..5 {
            for _ in 0..1000 {
                self.tick(id);
                if self.node(id).role() != Role::Follower {
                    break;
                }
            }
            self.settle();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
    }

    /// Ticks `id` until it campaigns, then delivers message by message and stops the moment it becomes
    /// leader (before it sends anything as leader). Returns false if the campaign fails.
    pub fn win(&mut self, id: NodeId) -> bool {
        for _ in 0..1000 {
            self.tick(id);
            if self.node(id).role() != Role::Follower {
                break;
            }
        }
        while self.node(id).role() != Role::Leader {
            self.flush();
            if !self.deliver_one() {
                return false;
            }
        }
        true
    }

    /// Ticks everyone until one of `side` leads a newer term than the current leaders'; returns it.
    pub fn elect_in_majority(&mut self, side: &[NodeId]) -> NodeId {
        let old = self.nodes.values().map(|n| n.term()).max().unwrap_or(0);
        for _ in 0..500 {
            self.tick_all();
            self.settle();
            for &id in side {
                if self.node(id).role() == Role::Leader && self.node(id).term() > old {
                    return id;
                }
            }
        }
        panic!("no leader elected among {side:?}");
    }

    /// Ticks everyone `n` times, settling after each tick.
    pub fn run_ticks(&mut self, n: usize) {
        for _ in 0..n {
            self.tick_all();
            self.settle();
        }
    }

    pub fn propose(&mut self, id: NodeId, data: &str) -> u64 {
        self.node_mut(id).propose(Bytes::from(data.to_string())).unwrap()
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Splits the cluster into two sides that cannot talk.
    pub fn partition(&mut self, side: &[NodeId]) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &a in side {
            for &b in &ids {
                if !side.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes `id`: it loses everything not in its storage.
    pub fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
    }

    pub fn restart(&mut self, id: NodeId) {
        self.start(id);
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, n)| !self.down.contains(id) && n.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn log_terms(&self, id: NodeId) -> Vec<Term> {
        let n = self.node(id);
        (n.first_index()..=n.last_index()).map(|i| n.entry_term(i).unwrap()).collect()
    }

    pub fn stored_terms(&self, id: NodeId) -> Vec<Term> {
        self.stored[&id].entries.iter().map(|e| e.term).collect()
    }
}

pub fn describe(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::PreVote { last_log_index, last_log_term } => {
            format!("PreVote last={last_log_index}/{last_log_term}")
        }
        MessageBody::PreVoteResponse { granted } => format!("PreVoteResponse granted={granted}"),
        MessageBody::RequestVote { last_log_index, last_log_term, transfer } => {
            let t = if *transfer { " transfer" } else { "" };
            format!("RequestVote last={last_log_index}/{last_log_term}{t}")
        }
        MessageBody::RequestVoteResponse { granted } => format!("RequestVoteResponse granted={granted}"),
        MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => format!(
            "AppendEntries prev={prev_log_index}/{prev_log_term} entries=[{}] commit={leader_commit}",
            entries.iter().map(|e| format!("{}/{}", e.index, e.term)).collect::<Vec<_>>().join(",")
        ),
        MessageBody::AppendEntriesResponse { success, index, conflict_term, conflict_index } => {
            if *success {
                format!("AppendEntriesResponse ok index={index}")
            } else {
                format!("AppendEntriesResponse reject index={index} hint={conflict_index}/{conflict_term}")
            }
        }
        MessageBody::Heartbeat { leader_commit, read_round } => {
            format!("Heartbeat commit={leader_commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => format!("HeartbeatResponse round={read_round}"),
        MessageBody::ReadIndex { request_id } => format!("ReadIndex id={request_id}"),
        MessageBody::ReadIndexResponse { request_id, index } => {
            format!("ReadIndexResponse id={request_id} index={index:?}")
        }
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
    };
    format!("{}->{} t{} {}", m.from, m.to, m.term, body)
}
