//! Transactions on a real 3-node cluster: MULTI/EXEC/DISCARD with Redis' replies and error
//! semantics, a WATCH retry loop incrementing one counter from clients on every node (the final
//! count is exact), and RAFT.VERSION.

mod common;

use std::time::Duration;

use common::Cluster;
use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;

fn bulk(s: &str) -> Frame {
    Frame::bulk_from_slice(s.as_bytes())
}

fn err(f: &Frame) -> String {
    match f {
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn multi_exec_watch_and_versions() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let mut c = cluster.connect((leader + 1) % 3).expect("connect");

    // A transaction, pipelined: QUEUED for each command, one array at EXEC; the failing INCR
    // answers its error and does not stop the rest.
    for cmd in
        [&["MULTI"][..], &["SET", "a", "x"], &["INCR", "a"], &["SET", "b", "2"], &["GET", "b"], &["EXEC"]]
    {
        c.send(cmd).unwrap();
    }
    assert_eq!(c.receive().unwrap(), Frame::ok());
    for _ in 0..4 {
        assert_eq!(c.receive().unwrap(), Frame::simple("QUEUED"));
    }
    let Frame::Array(replies) = c.receive().unwrap() else { panic!("EXEC must answer an array") };
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[0], Frame::ok());
    assert_eq!(err(&replies[1]), "ERR value is not an integer or out of range");
    assert_eq!(replies[3], bulk("2"));

    // A command refused while queueing aborts the EXEC; nothing runs (the old bug: the queued
    // commands used to run one by one).
    assert_eq!(c.request(&["MULTI"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["SET", "c", "1"]).unwrap(), Frame::simple("QUEUED"));
    assert!(err(&c.request(&["NOSUCHCOMMAND"]).unwrap()).starts_with("ERR unknown command"));
    assert!(err(&c.request(&["GET"]).unwrap()).starts_with("ERR wrong number of arguments"));
    assert_eq!(
        err(&c.request(&["EXEC"]).unwrap()),
        "EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(c.request(&["GET", "c"]).unwrap(), Frame::Null);
    assert_eq!(err(&c.request(&["EXEC"]).unwrap()), "ERR EXEC without MULTI");
    assert_eq!(err(&c.request(&["DISCARD"]).unwrap()), "ERR DISCARD without MULTI");
    assert_eq!(c.request(&["MULTI"]).unwrap(), Frame::ok());
    assert_eq!(err(&c.request(&["MULTI"]).unwrap()), "ERR MULTI calls can not be nested");
    assert_eq!(err(&c.request(&["WATCH", "a"]).unwrap()), "ERR WATCH inside MULTI is not allowed");
    assert_eq!(c.request(&["SET", "c", "1"]).unwrap(), Frame::simple("QUEUED"));
    assert_eq!(c.request(&["DISCARD"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["GET", "c"]).unwrap(), Frame::Null);

    // An odd number of arguments after the key of MSET / MSETNX / HSET / HMSET passes the table's
    // arity check and is found by the command itself (Redis 7.0, checked on redis-server 7.0.15):
    // QUEUED, its error inside EXEC's array, the rest runs.
    assert_eq!(c.request(&["MULTI"]).unwrap(), Frame::ok());
    for cmd in [&["MSET", "o", "1", "p"][..], &["MSETNX", "o", "1", "p"], &["HSET", "oh", "f", "v", "g"]] {
        assert_eq!(c.request(cmd).unwrap(), Frame::simple("QUEUED"), "{cmd:?}");
    }
    assert_eq!(c.request(&["HMSET", "oh", "f", "v", "g"]).unwrap(), Frame::simple("QUEUED"));
    assert_eq!(c.request(&["SET", "o2", "1"]).unwrap(), Frame::simple("QUEUED"));
    let Frame::Array(replies) = c.request(&["EXEC"]).unwrap() else { panic!("EXEC must answer an array") };
    let texts: Vec<String> = replies[..4].iter().map(|r| err(r).to_owned()).collect();
    assert_eq!(
        texts,
        ["mset", "msetnx", "hset", "hmset"]
            .map(|n| format!("ERR wrong number of arguments for '{n}' command"))
            .to_vec()
    );
    assert_eq!(replies[4], Frame::ok());
    assert_eq!(c.request(&["GET", "o"]).unwrap(), Frame::Null);
    assert_eq!(c.request(&["GET", "o2"]).unwrap(), bulk("1"));
    // In a script, the command's own text (not "Wrong number of args calling Redis command").
    assert_eq!(
        err(&c.request(&["EVAL", "return redis.pcall('mset','o','1','p')", "0"]).unwrap()),
        "ERR wrong number of arguments for 'mset' command"
    );

    // A syntax or integer error is found when the transaction runs (as Redis does): QUEUED, then
    // its error inside EXEC's array, and the rest runs.
    assert_eq!(c.request(&["MULTI"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["INCRBY", "d", "x"]).unwrap(), Frame::simple("QUEUED"));
    assert_eq!(c.request(&["SET", "d", "1"]).unwrap(), Frame::simple("QUEUED"));
    let Frame::Array(r) = c.request(&["EXEC"]).unwrap() else { panic!("EXEC must answer an array") };
    assert_eq!(err(&r[0]), "ERR value is not an integer or out of range");
    assert_eq!(r[1], Frame::ok());

    // WATCH: a change through another node between WATCH and EXEC makes EXEC answer nil.
    let mut other = cluster.connect((leader + 2) % 3).expect("connect");
    assert_eq!(c.request(&["WATCH", "b"]).unwrap(), Frame::ok());
    assert_eq!(other.request(&["SET", "b", "3"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["MULTI"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["SET", "b", "mine"]).unwrap(), Frame::simple("QUEUED"));
    assert_eq!(c.request(&["EXEC"]).unwrap(), Frame::NullArray);
    assert_eq!(c.request(&["GET", "b"]).unwrap(), bulk("3"));

    // RAFT.VERSION: the index of the last change, a fencing token that only grows.
    let v1 = match c.request(&["RAFT.VERSION", "b"]).unwrap() {
        Frame::Integer(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(other.request(&["SET", "b", "4"]).unwrap(), Frame::ok());
    let Frame::Integer(v2) = c.request(&["RAFT.VERSION", "b"]).unwrap() else { panic!() };
    assert!(v2 > v1, "{v2} > {v1}");
    assert_eq!(c.request(&["RAFT.VERSION", "nokey"]).unwrap(), Frame::Null);

    // The WATCH retry loop, from clients on every node: the count is exact.
    const CLIENTS: usize = 6;
    const EACH: usize = 15;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = cluster.addr(i % 3);
            std::thread::spawn(move || {
                let mut c = Connection::connect(&addr, Duration::from_secs(2)).expect("connect");
                c.set_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut retries = 0;
                for _ in 0..EACH {
                    loop {
                        assert_eq!(c.request(&["WATCH", "counter"]).unwrap(), Frame::ok());
                        let n: i64 = match c.request(&["GET", "counter"]).unwrap() {
                            Frame::Bulk(b) => String::from_utf8_lossy(&b).parse().unwrap(),
                            _ => 0,
                        };
                        c.send(&["MULTI"]).unwrap();
                        c.send(&["SET", "counter", &(n + 1).to_string()]).unwrap();
                        c.send(&["EXEC"]).unwrap();
                        assert_eq!(c.receive().unwrap(), Frame::ok());
                        assert_eq!(c.receive().unwrap(), Frame::simple("QUEUED"));
                        match c.receive().unwrap() {
                            Frame::Array(r) if r == vec![Frame::ok()] => break,
                            Frame::NullArray => retries += 1,
                            other => panic!("EXEC: {other:?}"),
                        }
                    }
                }
                retries
            })
        })
        .collect();
    let retries: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let total = (CLIENTS * EACH).to_string();
    for k in 0..3 {
        let mut n = cluster.connect(k).expect("connect");
        assert_eq!(n.request(&["GET", "counter"]).unwrap(), bulk(&total), "node {k}");
    }
    eprintln!("{CLIENTS} clients x {EACH} increments: exact, after {retries} retries");
}
