//! Expiry on a real 3-node cluster: deadlines set through any node expire on every node (time
//! comes from the leader's stamps), expired keys are swept (DBSIZE drops to 0 everywhere), and
//! deadlines survive a restart of the whole cluster (log replay and snapshots).

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use raft_kv::resp::Frame;

fn int(f: Frame) -> i64 {
    match f {
        Frame::Integer(i) => i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn keys_expire_on_every_node_and_deadlines_survive_restarts() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let mut c = cluster.connect(follower).expect("connect");
    assert_eq!(c.request(&["SET", "short", "v", "PX", "400"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["SETEX", "long", "1000", "v"]).unwrap(), Frame::ok());
    assert_eq!(int(c.request(&["EXPIRE", "missing", "10"]).unwrap()), 0);
    assert_eq!(c.request(&["SET", "plain", "v"]).unwrap(), Frame::ok());
    for k in 0..3 {
        let mut n = cluster.connect(k).expect("connect");
        let pttl = int(n.request(&["PTTL", "short"]).unwrap());
        assert!((1..=400).contains(&pttl), "node {k}: PTTL {pttl}");
        assert_eq!(int(n.request(&["TTL", "plain"]).unwrap()), -1);
        assert_eq!(int(n.request(&["TTL", "missing"]).unwrap()), -2);
    }
    // Gone on every node, and swept (DBSIZE counts unswept keys) without any client write.
    for k in 0..3 {
        let mut n = cluster.connect(k).expect("connect");
        assert!(
            until(Duration::from_secs(10), || {
                n.request(&["GET", "short"]).unwrap() == Frame::Null
                    && int(n.request(&["DBSIZE"]).unwrap()) == 2
            }),
            "node {k} still has the expired key"
        );
    }
    // Restart everything: the deadline of `long` comes back with the log.
    for k in 0..3 {
        cluster.kill(k);
    }
    for k in 0..3 {
        cluster.start_node(k);
    }
    cluster.wait_leader(Duration::from_secs(20));
    for k in 0..3 {
        let mut n = cluster.connect(k).expect("connect");
        let ttl = int(n.request(&["TTL", "long"]).unwrap());
        assert!((900..=1000).contains(&ttl), "node {k}: TTL {ttl} after restart");
        assert_eq!(n.request(&["GET", "short"]).unwrap(), Frame::Null);
    }
    let mut n = cluster.connect(follower).expect("connect");
    assert_eq!(int(n.request(&["PERSIST", "long"]).unwrap()), 1);
    assert_eq!(int(n.request(&["TTL", "long"]).unwrap()), -1);
    let info = match n.request(&["INFO", "keyspace"]).unwrap() {
        Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    assert!(info.contains("db0:keys=2,expires=0"), "{info}");
}
