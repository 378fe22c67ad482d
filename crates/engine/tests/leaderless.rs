//! A node that knows no leader answers its waiting requests after an election timeout instead of
//! holding them until the request timeout: a write it never handed to a leader and every read
//! with "no leader" (they did not happen), a write it handed to a leader with "timeout" (it may
//! still apply). Its clients can then go to a node that works (see `driver::requests`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use engine::kv::{Command, Query, Reply, SetCondition};
use engine::{Driver, DriverConfig, Input, Request, RequestError, RequestId, Response, SnapshotConfig};
use raft::{NodeId, Role};
use storage::{LogOptions, MemFs};

const ELECTION: u64 = 10;
const REQUEST_TIMEOUT: u64 = 500;

fn config(id: NodeId, voters: Vec<NodeId>) -> DriverConfig {
    let mut raft = raft::Config::new(id, voters);
    raft.election_ticks = ELECTION as u32;
    raft.heartbeat_ticks = 2;
    raft.seed = 7 + id;
    DriverConfig {
        raft,
        session: 70 + id,
        request_timeout_ticks: REQUEST_TIMEOUT,
        forward_retry_ticks: 10_000,
        limbo_ticks: 10_000,
        write_window: 2,
        log: LogOptions::default(),
        snapshot: SnapshotConfig { entries: 0, ..SnapshotConfig::default() },
        deferred_sync: false,
        record_applies: true,
    }
}

fn set(v: &str) -> Request {
    Request::Write(Command::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from(v.to_owned()),
        condition: SetCondition::Always,
        get: false,
    })
}

fn get() -> Request {
    Request::Read(Query::Get { key: Bytes::from_static(b"k") })
}

/// Ticks `d` once at a time up to `n` times; returns the answers and after how many ticks the
/// first one came.
fn tick_until_answered(d: &mut Driver<MemFs>, n: u64) -> (Vec<(RequestId, Response)>, u64) {
    for t in 1..=n {
        let (result, rec) = common::run(d, vec![Input::Tick]);
        result.expect("tick");
        if !rec.answers.is_empty() {
            return (rec.answers, t);
        }
    }
    (Vec::new(), n)
}

#[test]
fn a_node_that_never_knew_a_leader_answers_no_leader_after_an_election_timeout() {
    // Node 1 of three, never hearing from the others: no leader ever.
    let mut d = Driver::open(MemFs::new(), Path::new("/d"), config(1, vec![1, 2, 3])).expect("opens");
    let inputs = vec![
        Input::Client(1, set("a")),
        Input::Client(2, set("b")),
        Input::Client(3, set("c")), // beyond the window of 2: waits unsequenced
        Input::Client(4, get()),
    ];
    let (result, rec) = common::run(&mut d, inputs);
    result.expect("batch");
    assert!(rec.answers.is_empty());
    let (mut answers, after) = tick_until_answered(&mut d, REQUEST_TIMEOUT);
    assert!(
        (ELECTION..=ELECTION + 1).contains(&after),
        "answered after {after} ticks: an election timeout ({ELECTION}) of knowing no leader, not the request timeout"
    );
    answers.sort_by_key(|(r, _)| *r);
    let want: Vec<(RequestId, Response)> = (1..=4).map(|r| (r, Err(RequestError::NoLeader))).collect();
    assert_eq!(answers, want, "none of them ran: all are 'no leader'");
    assert_eq!(d.writes_in_flight(), (0, 0));

    // A request arriving while the node has known no leader for long still gets an election
    // timeout to see one (a node rejoining after a heal hears the leader within a heartbeat).
    common::run(&mut d, vec![Input::Client(5, set("e"))]).0.expect("batch");
    let (answers, after) = tick_until_answered(&mut d, REQUEST_TIMEOUT);
    assert!((ELECTION..=ELECTION + 1).contains(&after), "answered after {after} ticks");
    assert_eq!(answers, vec![(5, Err(RequestError::NoLeader))]);
}

/// Three drivers connected by a lossless network that can cut node 3 off (silence both ways).
struct Cluster {
    nodes: BTreeMap<NodeId, Driver<MemFs>>,
    cut: Option<NodeId>,
    answers: Vec<(NodeId, RequestId, Response)>,
}

impl Cluster {
    fn new() -> Self {
        let nodes = (1..=3)
            .map(|id| {
                let d =
                    Driver::open(MemFs::new(), Path::new("/d"), config(id, vec![1, 2, 3])).expect("opens");
                (id, d)
            })
            .collect();
        Cluster { nodes, cut: None, answers: Vec::new() }
    }

    /// Runs one batch on every node (`inputs` to `at`, a tick to all), delivering messages until
    /// the network is quiet.
    fn step(&mut self, at: Option<(NodeId, Vec<Input>)>) {
        let mut inboxes: BTreeMap<NodeId, Vec<Input>> =
            self.nodes.keys().map(|&id| (id, vec![Input::Tick])).collect();
        if let Some((id, inputs)) = at {
            inboxes.get_mut(&id).expect("node").extend(inputs);
        }
        for _ in 0..100 {
            let mut next: BTreeMap<NodeId, Vec<Input>> = BTreeMap::new();
            for (id, inputs) in std::mem::take(&mut inboxes) {
                if inputs.is_empty() {
                    continue;
                }
                let d = self.nodes.get_mut(&id).expect("node");
                let (result, rec) = common::run(d, inputs);
                result.expect("batch");
                self.answers.extend(rec.answers.into_iter().map(|(r, a)| (id, r, a)));
                for m in rec.messages {
                    let to = m.to();
                    if self.cut.is_some_and(|c| c == id || c == to) {
                        continue; // Silence: dropped where it arrives.
                    }
                    next.entry(to).or_default().push(Input::Peer(m));
                }
            }
            if next.is_empty() {
                return;
            }
            inboxes = next;
        }
        panic!("the network did not settle");
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes.iter().find(|(_, d)| d.node().role() == Role::Leader).map(|(&id, _)| id)
    }
}

#[test]
fn a_cut_node_answers_its_routed_write_with_timeout_and_reads_with_no_leader_soon_after_losing_the_leader() {
    let mut c = Cluster::new();
    for _ in 0..200 {
        c.step(None);
        if c.leader().is_some() {
            break;
        }
    }
    let leader = c.leader().expect("a leader");
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    // A write through the follower completes (forwarded to the leader).
    c.step(Some((follower, vec![Input::Client(1, set("a"))])));
    for _ in 0..5 {
        c.step(None);
    }
    assert_eq!(c.answers, vec![(follower, 1, Ok(Reply::Ok))]);
    c.answers.clear();

    // Cut the follower off, then hand it a write (forwarded into the void) and a read.
    c.cut = Some(follower);
    c.step(Some((follower, vec![Input::Client(2, set("b")), Input::Client(3, get())])));
    let mut ticks = 1;
    while c.answers.len() < 2 && ticks < REQUEST_TIMEOUT {
        c.step(None);
        ticks += 1;
    }
    // It suspects the leader after its election timeout ([10, 20) ticks), then waits one more.
    assert!(
        ticks <= 3 * ELECTION + 2,
        "answered after {ticks} ticks, want about two election timeouts ({ELECTION} ticks each), far below the request timeout"
    );
    c.answers.sort_by_key(|(_, r, _)| *r);
    assert_eq!(
        c.answers,
        vec![
            (follower, 2, Err(RequestError::Timeout)), // forwarded: it may still apply
            (follower, 3, Err(RequestError::NoLeader)),
        ]
    );
    // The rest of the cluster serves meanwhile.
    let other =
        (1..=3).find(|&id| id != follower && Some(id) == c.leader()).expect("the majority keeps a leader");
    c.answers.clear();
    c.step(Some((other, vec![Input::Client(4, set("c"))])));
    c.step(None);
    assert_eq!(c.answers, vec![(other, 4, Ok(Reply::Ok))]);
}

#[test]
fn a_leader_cut_off_answers_its_waiting_requests_as_soon_as_checkquorum_steps_it_down() {
    let mut c = Cluster::new();
    for _ in 0..200 {
        c.step(None);
        if c.leader().is_some() {
            break;
        }
    }
    let leader = c.leader().expect("a leader");
    c.cut = Some(leader);
    // Proposed (so it may apply if the leader recovers): TIMEOUT; the read never gets its round.
    c.step(Some((leader, vec![Input::Client(1, set("a")), Input::Client(2, get())])));
    let mut ticks = 1;
    let mut stepped_down = None;
    while c.answers.len() < 2 && ticks < REQUEST_TIMEOUT {
        c.step(None);
        ticks += 1;
        if stepped_down.is_none() && c.nodes[&leader].node().role() != Role::Leader {
            stepped_down = Some(ticks);
        }
    }
    let stepped_down = stepped_down.expect("CheckQuorum stepped the cut leader down");
    assert!(stepped_down <= 2 * ELECTION + 1, "stepped down after {stepped_down} ticks");
    assert!(
        ticks <= stepped_down + 1,
        "answered {} ticks after stepping down: it had heard from no majority for an election timeout already",
        ticks - stepped_down
    );
    c.answers.sort_by_key(|(_, r, _)| *r);
    assert_eq!(
        c.answers,
        vec![(leader, 1, Err(RequestError::Timeout)), (leader, 2, Err(RequestError::NoLeader))]
    );
}
