//! The order of a driver's work around its fsync, step by step on three hand-driven drivers over
//! the simulated disk. Deferred syncs ([`DriverConfig::deferred_sync`]): an acknowledgement leaves
//! only once the sync job covering its entries is reported, a leader counts itself towards a
//! majority only then, and reports of tickets unknown or already reported change nothing. Inline
//! syncs: answers to committed writes leave before the fsync of the batch's new entries. (The
//! simulator runs the random schedules, truncations of logs with syncs in flight among them; this
//! pins the protocol down.)

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use engine::kv::{Command, Reply, SetCondition};
use engine::{Driver, DriverConfig, Input, PeerMessage, Request, SnapshotConfig, SyncJob};
use raft::{MessageBody, NodeId, Role};
use storage::{FaultOp, LogOptions, MemFs};

fn config(id: NodeId, deferred_sync: bool) -> DriverConfig {
    let mut raft = raft::Config::new(id, vec![1, 2, 3]);
    raft.election_ticks = 10;
    raft.heartbeat_ticks = 2;
    raft.seed = id * 7919;
    DriverConfig {
        raft,
        session: 100 + id,
        request_timeout_ticks: 10_000,
        forward_retry_ticks: 10_000,
        limbo_ticks: 10_000,
        write_window: engine::DEFAULT_WRITE_WINDOW,
        log: LogOptions::default(),
        snapshot: SnapshotConfig { entries: 0, ..SnapshotConfig::default() },
        deferred_sync,
        record_applies: false,
    }
}

fn set(key: &str) -> Request {
    Request::Write(Command::Set {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from_static(b"v"),
        condition: SetCondition::Always,
        get: false,
    })
}

fn is_ack(m: &PeerMessage) -> bool {
    matches!(m, PeerMessage::Raft(r) if matches!(r.body, MessageBody::AppendEntriesResponse { .. }))
}

struct Nodes {
    drivers: BTreeMap<NodeId, Driver<MemFs>>,
    disks: BTreeMap<NodeId, MemFs>,
    /// Inputs for each node's next batch.
    inbox: BTreeMap<NodeId, Vec<Input>>,
    /// Sync jobs taken and not yet run, per node.
    jobs: BTreeMap<NodeId, Vec<SyncJob<MemFs>>>,
    answers: BTreeMap<u64, Reply>,
}

impl Nodes {
    fn new() -> Nodes {
        Self::with(true)
    }

    fn with(deferred_sync: bool) -> Nodes {
        let (mut drivers, mut disks) = (BTreeMap::new(), BTreeMap::new());
        for id in 1..=3 {
            let fs = MemFs::new();
            let d = Driver::open(fs.clone(), Path::new("/d"), config(id, deferred_sync)).expect("opens");
            drivers.insert(id, d);
            disks.insert(id, fs);
        }
        Nodes { drivers, disks, inbox: BTreeMap::new(), jobs: BTreeMap::new(), answers: BTreeMap::new() }
    }

    fn input(&mut self, id: NodeId, input: Input) {
        self.inbox.entry(id).or_default().push(input);
    }

    fn submit(&mut self, id: NodeId, request: u64, req: Request) {
        self.input(id, Input::Client(request, req));
    }

    /// Runs `id`'s batch and returns what it sends; its sync job (if any) is kept, not run.
    fn process(&mut self, id: NodeId) -> Vec<PeerMessage> {
        let inputs = self.inbox.remove(&id).unwrap_or_default();
        let d = self.drivers.get_mut(&id).expect("node");
        let (result, rec) = common::run(d, inputs);
        result.expect("process");
        self.jobs.entry(id).or_default().extend(rec.syncs);
        for (req, resp) in rec.answers {
            self.answers.insert(req, resp.expect("answered"));
        }
        rec.messages
    }

    /// Runs `id`'s newest sync job; its report is an input of `id`'s next batch.
    fn run_sync(&mut self, id: NodeId) {
        let job = self.jobs.get_mut(&id).and_then(Vec::pop).expect("a sync job");
        let result = job.run();
        self.input(id, Input::Synced(job.ticket(), result));
    }

    fn deliver(&mut self, msgs: Vec<PeerMessage>) {
        for m in msgs {
            self.input(m.to(), Input::Peer(m));
        }
    }

    /// Runs everything, syncs included, until quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for id in 1..=3 {
                msgs.extend(self.process(id));
                while self.jobs.get(&id).is_some_and(|j| !j.is_empty()) {
                    self.run_sync(id);
                    msgs.extend(self.process(id));
                }
            }
            if msgs.is_empty() {
                return;
            }
            self.deliver(msgs);
        }
        panic!("did not settle");
    }

    fn elect(&mut self) -> NodeId {
        for _ in 0..200 {
            for id in 1..=3 {
                self.input(id, Input::Tick);
            }
            self.settle();
            if let Some((&id, _)) = self.drivers.iter().find(|(_, d)| d.node().role() == Role::Leader) {
                return id;
            }
        }
        panic!("no leader");
    }
}

#[test]
fn acknowledgements_wait_for_the_sync_job_and_the_leader_counts_itself_only_after_its_own() {
    let mut n = Nodes::new();
    let leader = n.elect();
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    n.submit(leader, 1, set("a"));
    let appends = n.process(leader);
    assert!(n.jobs.get(&leader).is_some_and(|j| j.len() == 1), "the leader's write waits for its job");
    n.deliver(appends);
    // Both followers append; their acknowledgements are held until their syncs are reported.
    for &f in &followers {
        let out = n.process(f);
        assert!(!out.iter().any(is_ack), "follower {f} acknowledged before its sync: {out:?}");
    }
    n.run_sync(followers[0]);
    let acks = n.process(followers[0]);
    assert!(acks.iter().any(is_ack), "the acknowledgement leaves once the sync is reported");
    n.deliver(acks);
    // One follower alone is not a majority of three while the leader's own sync is pending.
    n.process(leader);
    assert!(!n.answers.contains_key(&1), "committed without the leader's own log being durable");
    n.run_sync(leader);
    n.process(leader);
    assert_eq!(n.answers.get(&1), Some(&Reply::Ok), "answered once the leader's log is durable too");
}

#[test]
fn a_second_acknowledgement_commits_without_the_leaders_sync() {
    let mut n = Nodes::new();
    let leader = n.elect();
    n.submit(leader, 1, set("a"));
    let appends = n.process(leader);
    n.deliver(appends);
    let mut acks = Vec::new();
    for f in (1..=3).filter(|&id| id != leader) {
        n.process(f);
        n.run_sync(f);
        acks.extend(n.process(f));
    }
    n.deliver(acks);
    n.process(leader);
    assert_eq!(n.answers.get(&1), Some(&Reply::Ok), "two durable followers are a majority");
}

#[test]
fn unknown_and_repeated_reports_are_ignored() {
    let mut n = Nodes::new();
    let leader = n.elect();
    let f = (1..=3).find(|&id| id != leader).unwrap();
    // The follower appends an entry and has its sync pending.
    n.submit(leader, 1, set("a"));
    let appends = n.process(leader);
    n.deliver(appends.into_iter().filter(|m| m.to() == f).collect());
    n.process(f);
    let stale = n.jobs.get_mut(&f).and_then(Vec::pop).expect("a pending sync");
    // A report of a ticket the driver never issued changes nothing.
    n.input(f, Input::Synced(stale.ticket() + 100, Ok(())));
    assert!(!n.process(f).iter().any(is_ack), "an unknown ticket is ignored");
    n.input(f, Input::Synced(stale.ticket(), stale.run()));
    assert!(n.process(f).iter().any(is_ack), "the real report releases the acknowledgement");
    n.input(f, Input::Synced(stale.ticket(), Ok(())));
    assert!(n.process(f).is_empty(), "a repeated report is not an error and releases nothing");
}

#[test]
fn inline_sync_answers_committed_writes_before_the_fsync_of_new_entries() {
    let mut n = Nodes::with(false);
    let leader = n.elect();
    // W1 is appended and replicated; the followers' acknowledgements are not delivered yet.
    n.submit(leader, 1, set("w1"));
    let appends = n.process(leader);
    n.deliver(appends);
    let mut acks = Vec::new();
    for f in (1..=3).filter(|&id| id != leader) {
        acks.extend(n.process(f));
    }
    assert!(acks.iter().any(is_ack));
    // W2 arrives with them: the leader's next batch commits W1 and appends W2.
    n.submit(leader, 2, set("w2"));
    n.deliver(acks);
    // That batch's fsync fails (the node would stop): W1's answer must already be out.
    n.disks[&leader].fail_next(FaultOp::Sync, 1);
    let inputs = n.inbox.remove(&leader).unwrap_or_default();
    let (result, rec) = common::run(n.drivers.get_mut(&leader).unwrap(), inputs);
    assert!(result.is_err(), "the injected fsync failure stops the batch");
    let answered: Vec<u64> = rec.answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(answered, vec![1], "W1 (committed) answered before the fsync, W2 not");
    assert_eq!(rec.answers[0].1, Ok(Reply::Ok));
}

#[test]
fn a_heartbeat_response_does_not_wait_for_a_pending_sync() {
    let mut n = Nodes::new();
    let leader = n.elect();
    let f = (1..=3).find(|&id| id != leader).unwrap();
    n.submit(leader, 1, set("a"));
    let appends = n.process(leader);
    n.deliver(appends.into_iter().filter(|m| m.to() == f).collect());
    n.process(f);
    assert!(n.jobs.get(&f).is_some_and(|j| !j.is_empty()), "the follower's sync is pending");
    // The leader's next heartbeat reaches the follower while its sync is still pending.
    let mut heartbeats = Vec::new();
    for _ in 0..10 {
        n.input(leader, Input::Tick);
        heartbeats.extend(n.process(leader).into_iter().filter(|m| {
            m.to() == f
                && matches!(m, PeerMessage::Raft(r) if matches!(r.body, MessageBody::Heartbeat { .. }))
        }));
        if !heartbeats.is_empty() {
            break;
        }
    }
    assert!(!heartbeats.is_empty(), "the leader sends a heartbeat");
    n.deliver(heartbeats);
    let out = n.process(f);
    assert!(
        out.iter().any(
            |m| matches!(m, PeerMessage::Raft(r) if matches!(r.body, MessageBody::HeartbeatResponse { .. }))
        ),
        "a heartbeat response depends on no log entry and must not wait for the sync: {out:?}"
    );
    assert!(!out.iter().any(is_ack), "the acknowledgement still waits");
}

fn append(from: NodeId, term: u64, prev: (u64, u64), entries: &[(u64, u64)]) -> PeerMessage {
    PeerMessage::Raft(raft::Message {
        from,
        to: 2,
        term,
        body: MessageBody::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries.iter().map(|&(i, t)| raft::Entry::new(t, i, "x")).collect(),
            leader_commit: 0,
        },
    })
}

fn acks(out: &[PeerMessage]) -> Vec<(NodeId, u64, u64)> {
    out.iter()
        .filter_map(|m| match m {
            PeerMessage::Raft(r) => match r.body {
                MessageBody::AppendEntriesResponse { success: true, index, .. } => {
                    Some((r.to, r.term, index))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Found by the batching simulator: a sync report releases an acknowledgement, and a later input
/// of the same batch (a newer leader's conflicting entries) truncates what it acknowledged. The
/// acknowledgement must not leave: the node no longer holds those entries.
#[test]
fn an_acknowledgement_released_by_a_sync_report_never_covers_entries_truncated_in_the_same_batch() {
    let mut n = Nodes::new();
    let f = 2;
    // Leader 1 of term 1 sends entries 1..=3; the follower writes them, its sync is pending and
    // the acknowledgement of 3 is held.
    n.input(f, Input::Peer(append(1, 1, (0, 0), &[(1, 1), (2, 1), (3, 1)])));
    assert!(acks(&n.process(f)).is_empty(), "held for the sync");
    let job = n.jobs.get_mut(&f).and_then(Vec::pop).expect("a pending sync");
    // One batch: the sync's report, then leader 3 of term 2 whose entry 2 conflicts.
    n.input(f, Input::Synced(job.ticket(), job.run()));
    n.input(f, Input::Peer(append(3, 2, (1, 1), &[(2, 2)])));
    let out = n.process(f);
    let sent = acks(&out);
    assert!(
        !sent.contains(&(1, 1, 3)),
        "acknowledged entries 2..=3 of term 1 after truncating them: {out:?}"
    );
    assert_eq!(n.drivers[&f].node().last_index(), 2);
    // The new leader's entry is acknowledged once durable.
    if sent.is_empty() {
        n.run_sync(f);
        assert_eq!(acks(&n.process(f)), vec![(3, 2, 2)]);
    } else {
        assert_eq!(sent, vec![(3, 2, 2)]);
    }
}
