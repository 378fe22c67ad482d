//! Membership changes and leadership transfer through real drivers over the simulated disk: the
//! admin requests, their answers, the membership a snapshot records and a restart reads back, and a
//! new node that starts knowing nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use engine::kv::{Command, Query, Reply, SetCondition};
use engine::{
    Driver, DriverConfig, Input, MemberChange, PeerMessage, Request, RequestError, Response, SnapshotConfig,
};
use raft::{Membership, NodeId, Role, Suffrage};
use storage::{LogOptions, MemFs};

const DIR: &str = "/data";

fn config(id: NodeId, session: u64, snapshot_entries: u64) -> DriverConfig {
    let mut raft = raft::Config::new(id, vec![]);
    raft.election_ticks = 10;
    raft.heartbeat_ticks = 2;
    raft.seed = id * 7919;
    DriverConfig {
        raft,
        session,
        request_timeout_ticks: 500,
        forward_retry_ticks: 50,
        limbo_ticks: 10_000,
        log: LogOptions { segment_size: 4096, ..LogOptions::default() },
        write_window: engine::DEFAULT_WRITE_WINDOW,
        snapshot: SnapshotConfig { entries: snapshot_entries, keep_entries: 0, ..SnapshotConfig::default() },
        deferred_sync: false,
        record_applies: false,
    }
}

fn record(id: NodeId) -> Bytes {
    let name = (b'A' + (id - 1) as u8) as char;
    Bytes::from(format!("{name},host{id},{},{}", 10_000 + id, 20_000 + id))
}

fn bootstrap(n: u64) -> Membership {
    let mut m = Membership::new();
    for id in 1..=n {
        m.insert(id, Suffrage::Voter, record(id));
    }
    m
}

fn set(key: &str, value: &str) -> Request {
    Request::Write(Command::Set {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        condition: SetCondition::Always,
        get: false,
    })
}

struct Cluster {
    disks: BTreeMap<NodeId, MemFs>,
    drivers: BTreeMap<NodeId, Driver<MemFs>>,
    /// The bootstrap membership each node starts from.
    boot: BTreeMap<NodeId, Membership>,
    queue: Vec<PeerMessage>,
    inbox: BTreeMap<NodeId, Vec<Input>>,
    answers: BTreeMap<u64, Response>,
    next_request: u64,
    snapshot_entries: u64,
    isolated: BTreeSet<NodeId>,
    /// Starts so far (each start is a new session).
    starts: u64,
}

impl Cluster {
    fn new(n: u64, snapshot_entries: u64) -> Cluster {
        let mut c = Cluster {
            disks: BTreeMap::new(),
            drivers: BTreeMap::new(),
            boot: BTreeMap::new(),
            queue: Vec::new(),
            inbox: BTreeMap::new(),
            answers: BTreeMap::new(),
            next_request: 1,
            snapshot_entries,
            isolated: BTreeSet::new(),
            starts: 0,
        };
        for id in 1..=n {
            c.boot.insert(id, bootstrap(n));
            c.disks.insert(id, MemFs::new());
            c.start(id);
        }
        c
    }

    /// A node that joins later: it knows no membership.
    fn add_empty_node(&mut self, id: NodeId) {
        self.boot.insert(id, Membership::new());
        self.disks.insert(id, MemFs::new());
        self.start(id);
    }

    fn start(&mut self, id: NodeId) {
        self.starts += 1;
        let d = Driver::open_with(
            self.disks[&id].clone(),
            Path::new(DIR),
            config(id, 1000 * id + self.starts, self.snapshot_entries),
            self.boot[&id].clone(),
        )
        .expect("node starts");
        self.drivers.insert(id, d);
    }

    fn restart(&mut self, id: NodeId) {
        self.drivers.remove(&id);
        self.queue.retain(|m| m.to() != id && m.from() != id);
        self.inbox.remove(&id);
        self.disks[&id].crash(id);
        self.start(id);
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<NodeId> = self.drivers.keys().copied().collect();
            for id in ids {
                let inputs = self.inbox.remove(&id).unwrap_or_default();
                let Some(d) = self.drivers.get_mut(&id) else { continue };
                let (result, rec) = common::run(d, inputs);
                result.expect("no node fails");
                for job in rec.snapshots {
                    self.inbox.entry(id).or_default().push(Input::SnapshotDone(job.run()));
                }
                for job in rec.restores {
                    self.inbox.entry(id).or_default().push(Input::Restored(job.run()));
                }
                self.answers.extend(rec.answers);
                self.queue.extend(rec.messages);
            }
            if self.queue.is_empty() && self.inbox.values().all(Vec::is_empty) {
                return;
            }
            for m in std::mem::take(&mut self.queue) {
                if self.isolated.contains(&m.from()) || self.isolated.contains(&m.to()) {
                    continue;
                }
                if self.drivers.contains_key(&m.to()) {
                    self.inbox.entry(m.to()).or_default().push(Input::Peer(m));
                }
            }
        }
        panic!("cluster did not settle");
    }

    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.drivers.keys().copied().collect();
            for id in ids {
                self.inbox.entry(id).or_default().push(Input::Tick);
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.drivers.iter().find(|(_, d)| d.node().role() == Role::Leader).map(|(id, _)| *id)
    }

    fn elect(&mut self) -> NodeId {
        for _ in 0..500 {
            self.tick(1);
            if let Some(l) = self.leader() {
                self.tick(3);
                return l;
            }
        }
        panic!("no leader");
    }

    fn submit(&mut self, id: NodeId, req: Request) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        self.inbox.entry(id).or_default().push(Input::Client(r, req));
        r
    }

    /// Submits `req` to `id` and ticks until it is answered.
    fn ask(&mut self, id: NodeId, req: Request) -> Response {
        let r = self.submit(id, req);
        for _ in 0..600 {
            self.settle();
            if let Some(resp) = self.answers.remove(&r) {
                return resp;
            }
            self.tick(1);
        }
        panic!("request {r} never answered");
    }

    fn write_some(&mut self, leader: NodeId, prefix: &str, n: usize) {
        for k in 0..n {
            let resp = self.ask(leader, set(&format!("{prefix}{k}"), "v"));
            assert_eq!(resp, Ok(Reply::Ok));
        }
    }

    fn get(&mut self, id: NodeId, key: &str) -> Response {
        self.ask(id, Request::Read(Query::Get { key: Bytes::from(key.to_owned()) }))
    }
}

#[test]
fn a_new_node_is_added_promoted_and_an_old_one_removed_with_answers_on_commit() {
    let mut c = Cluster::new(3, 0);
    let leader = c.elect();
    c.write_some(leader, "a", 5);
    c.add_empty_node(4);
    let r = c.ask(leader, Request::Member(MemberChange::Add { id: 4, context: record(4) }));
    assert_eq!(r, Ok(Reply::Int(4)));
    c.tick(3);
    let d4 = &c.drivers[&4];
    assert_eq!(d4.node().membership().learners(), vec![4]);
    assert_eq!(d4.node().membership().get(1).map(|m| m.context.clone()), Some(record(1)));
    assert_eq!(d4.kv().applied_index(), c.drivers[&leader].kv().applied_index(), "the learner caught up");
    assert_eq!(c.ask(leader, Request::Member(MemberChange::Promote(4))), Ok(Reply::Int(4)));
    let old = if leader == 1 { 2 } else { 1 };
    assert_eq!(c.ask(leader, Request::Member(MemberChange::Remove(old))), Ok(Reply::Int(old as i64)));
    c.tick(3);
    for (&id, d) in &c.drivers {
        if id != old {
            assert_eq!(d.node().membership().voters().len(), 3, "node {id}");
            assert!(!d.node().membership().contains(old));
            assert_eq!(d.applied_membership().0, d.node().membership(), "node {id} applied it");
        }
    }
    c.write_some(leader, "b", 3);
    assert_eq!(c.get(4, "b2"), Ok(Reply::Bulk(Bytes::from_static(b"v"))));
}

#[test]
fn refusals_are_answered_at_once_with_their_reason() {
    let mut c = Cluster::new(3, 0);
    let leader = c.elect();
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(
        c.ask(follower, Request::Member(MemberChange::Promote(3))),
        Err(RequestError::NotLeader { leader: Some(leader) })
    );
    assert_eq!(
        c.ask(follower, Request::TransferLeader(3)),
        Err(RequestError::NotLeader { leader: Some(leader) })
    );
    let err = |r: Response| match r {
        Ok(Reply::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    let e = err(c.ask(leader, Request::Member(MemberChange::Add { id: 4, context: record(2) })));
    assert!(e.contains("named 'B' exists"), "{e}");
    let e = err(c.ask(leader, Request::Member(MemberChange::Add { id: 2, context: record(7) })));
    assert!(e.contains("already a member"), "{e}");
    let e = err(c.ask(leader, Request::Member(MemberChange::Promote(2))));
    assert!(e.contains("already a voter"), "{e}");
    let e = err(c.ask(leader, Request::Member(MemberChange::Remove(9))));
    assert!(e.contains("not a member"), "{e}");
    // Two changes at once: the second is refused while the first is not committed.
    c.isolated.extend([1, 2, 3].into_iter().filter(|&id| id != leader));
    let first = c.submit(leader, Request::Member(MemberChange::Add { id: 4, context: record(4) }));
    let e = err(c.ask(leader, Request::Member(MemberChange::Add { id: 5, context: record(5) })));
    assert!(e.contains("one change at a time"), "{e}");
    c.isolated.clear();
    c.tick(15);
    assert_eq!(c.answers.remove(&first), Some(Ok(Reply::Int(4))));
    assert_eq!(c.ask(leader, Request::Member(MemberChange::Remove(4))), Ok(Reply::Int(4)));
    let e = err(c.ask(leader, Request::Member(MemberChange::Add { id: 4, context: record(6) })));
    assert!(e.contains("used before"), "{e}");
}

#[test]
fn snapshots_record_the_membership_and_restarts_read_it_back() {
    let mut c = Cluster::new(3, 6);
    let leader = c.elect();
    c.add_empty_node(4);
    assert_eq!(
        c.ask(leader, Request::Member(MemberChange::Add { id: 4, context: record(4) })),
        Ok(Reply::Int(4))
    );
    c.write_some(leader, "a", 20);
    c.tick(3);
    for id in [1, 2, 3, 4] {
        let snap = c.drivers[&id].snapshot().map(|(m, _)| m.clone()).expect("a snapshot was taken");
        assert_eq!(snap.membership.learners(), vec![4], "node {id}");
        assert_eq!(snap.membership.get(4).map(|m| m.context.clone()), Some(record(4)));
    }
    for id in [1, 2, 3, 4] {
        c.restart(id);
        let d = &c.drivers[&id];
        assert_eq!(d.node().membership().voters(), vec![1, 2, 3], "node {id} after restart");
        assert_eq!(d.node().membership().learners(), vec![4]);
        assert_eq!(d.applied_membership().0.learners(), vec![4]);
    }
    // A node added after everything was compacted gets the membership from the snapshot.
    let leader = c.elect();
    c.add_empty_node(5);
    assert_eq!(
        c.ask(leader, Request::Member(MemberChange::Add { id: 5, context: record(5) })),
        Ok(Reply::Int(5))
    );
    c.write_some(leader, "b", 8);
    c.tick(20);
    let d5 = &c.drivers[&5];
    assert!(d5.snapshot_stats().installed > 0, "node 5 was sent a snapshot");
    assert_eq!(d5.node().membership().learners(), vec![4, 5]);
    assert_eq!(d5.applied_membership().0.voters(), vec![1, 2, 3]);
    assert_eq!(c.get(5, "b7"), Ok(Reply::Bulk(Bytes::from_static(b"v"))));
}

#[test]
fn leadership_transfer_is_answered_once_the_target_leads() {
    let mut c = Cluster::new(3, 0);
    let leader = c.elect();
    let target = if leader == 3 { 2 } else { 3 };
    let term = c.drivers[&leader].node().term();
    assert_eq!(c.ask(leader, Request::TransferLeader(leader)), Ok(Reply::Ok));
    let r = c.submit(leader, Request::TransferLeader(target));
    // Within a heartbeat or two, far less than an election timeout (10 ticks).
    c.tick(3);
    assert_eq!(c.answers.remove(&r), Some(Ok(Reply::Ok)));
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.drivers[&target].node().term(), term + 1);
    // Writes go on at the new leader, also those submitted to the old one.
    assert_eq!(c.ask(leader, set("after", "x")), Ok(Reply::Ok));
    // A transfer that cannot complete (the target is cut off) is reported as such.
    let other = [1, 2, 3].into_iter().find(|&id| id != target && id != leader).unwrap_or(leader);
    c.isolated.insert(other);
    let r = c.submit(target, Request::TransferLeader(other));
    c.tick(12);
    match c.answers.remove(&r) {
        Some(Ok(Reply::Error(e))) => assert!(e.contains("did not take over"), "{e}"),
        x => panic!("unexpected {x:?}"),
    }
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.ask(target, set("resumed", "y")), Ok(Reply::Ok));
}
