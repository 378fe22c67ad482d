//! The write window (back-pressure): a node keeps at most `write_window` writes in flight; the rest
//! wait, unsequenced, and are refused unexecuted if they wait longer than the request timeout.

mod common;

use std::path::Path;

use bytes::Bytes;
use engine::kv::{Command, Reply, SetCondition};
use engine::{Driver, DriverConfig, Input, Request, RequestError, SnapshotConfig};
use raft::{NodeId, Role};
use storage::{LogOptions, MemFs};

fn config(id: NodeId, voters: Vec<NodeId>) -> DriverConfig {
    let mut raft = raft::Config::new(id, voters);
    raft.election_ticks = 10;
    raft.heartbeat_ticks = 2;
    raft.seed = 7;
    DriverConfig {
        raft,
        session: 77,
        // Below the election timeout: a node that knows no leader for an election timeout answers
        // its requests "no leader" (tests/leaderless.rs); this file tests the request timeout.
        request_timeout_ticks: 8,
        forward_retry_ticks: 10_000,
        limbo_ticks: 10_000,
        write_window: 2,
        log: LogOptions::default(),
        snapshot: SnapshotConfig { entries: 0, ..SnapshotConfig::default() },
        deferred_sync: false,
        record_applies: true,
    }
}

fn incr() -> Request {
    Request::Write(Command::IncrBy { key: Bytes::from_static(b"n"), by: 1 })
}

fn set(v: &str) -> Request {
    Request::Write(Command::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from(v.to_owned()),
        condition: SetCondition::Always,
        get: false,
    })
}

/// A single-node cluster: it elects itself after some ticks.
fn single() -> Driver<MemFs> {
    let mut d = Driver::open(MemFs::new(), Path::new("/d"), config(1, vec![1])).expect("opens");
    for _ in 0..40 {
        common::run(&mut d, vec![Input::Tick]).0.expect("tick");
        if d.node().role() == Role::Leader {
            return d;
        }
    }
    panic!("no leader");
}

#[test]
fn writes_beyond_the_window_wait_and_all_complete_in_order() {
    let mut d = single();
    let inputs = (1..=7).map(|r| Input::Client(r, incr())).collect();
    let (result, rec) = common::run(&mut d, inputs);
    result.expect("batch");
    let answers: Vec<(u64, Reply)> =
        rec.answers.into_iter().map(|(r, a)| (r, a.expect("answered"))).collect();
    let want: Vec<(u64, Reply)> = (1..=7).map(|r| (r, Reply::Int(r as i64))).collect();
    assert_eq!(answers, want, "every write ran once, in submission order");
    let records = d.take_apply_records();
    assert_eq!(records.iter().filter(|r| r.executed).count(), 7);
    assert!(
        records.iter().all(|r| r.seq <= 7),
        "sequence numbers handed out only as writes entered the window"
    );
}

#[test]
fn writes_held_up_fill_the_window_and_the_rest_are_refused_unexecuted_after_the_timeout() {
    // Node 1 of three, never hearing from the others: no leader, so writes cannot be routed.
    let fs = MemFs::new();
    let mut d = Driver::open(fs, Path::new("/d"), config(1, vec![1, 2, 3])).expect("opens");
    // Submit four writes: no leader is known, two get sequence numbers, two wait.
    let inputs = vec![
        Input::Client(1, set("a")),
        Input::Client(2, set("b")),
        Input::Client(3, set("c")),
        Input::Client(4, set("d")),
    ];
    common::run(&mut d, inputs).0.expect("batch");
    assert_eq!(d.writes_in_flight(), (2, 2), "two in the window, two waiting");
    // After the request timeout every write fails: the two sequenced ones were never handed to a
    // leader (NoLeader), the two waiting ones never left the queue (Overloaded). Neither ran.
    let ticks = (0..8).map(|_| Input::Tick).collect();
    let (result, rec) = common::run(&mut d, ticks);
    result.expect("ticks");
    let mut answers = rec.answers;
    answers.sort_by_key(|(r, _)| *r);
    assert_eq!(
        answers,
        vec![
            (1, Err(RequestError::NoLeader)),
            (2, Err(RequestError::NoLeader)),
            (3, Err(RequestError::Overloaded)),
            (4, Err(RequestError::Overloaded)),
        ]
    );
    assert_eq!(d.writes_in_flight(), (0, 0));
}
