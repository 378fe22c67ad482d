//! The metrics endpoint of real `raft-kv server` processes on loopback: `/metrics` reflects what
//! the cluster did (requests by command and outcome, fsyncs, roles, replication, peer links, leader
//! changes), `/health` and `/ready` answer as documented, other paths are 404.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_ports, Cluster};
use raft_kv::resp::Frame;

/// `GET path` over HTTP/1.0: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The samples of an OpenMetrics text: `name{labels}` -> value. Checks the text's shape on the way.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics text ends with # EOF");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        assert!(key.starts_with("raftkv_"), "{key}");
        out.insert(key.to_string(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    out
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http_get(port, "/metrics").expect("metrics answered");
    assert_eq!(status, 200);
    samples(&body)
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no sample {key}; have {:?}", m.keys().collect::<Vec<_>>()))
}

/// Polls until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_health_and_ready_reflect_the_cluster() {
    // All ports picked in one go (held open together while picked, so they are distinct), before
    // any node starts: a port picked while the nodes are still binding theirs could collide.
    let ports = free_ports(9);
    let names: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
    let group = names
        .iter()
        .enumerate()
        .map(|(k, n)| format!("{n},127.0.0.1,{},{}", ports[k], ports[3 + k]))
        .collect();
    let mut c = Cluster {
        names,
        server_ports: ports[..3].to_vec(),
        group,
        dir: tempfile::tempdir().unwrap(),
        procs: (0..3).map(|_| None).collect(),
        extra_args: Vec::new(),
    };
    let mports = ports[6..].to_vec();
    for (k, &port) in mports.iter().enumerate() {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.dir.path().join(format!("{}.log", c.names[k])))
            .unwrap();
        let child = c
            .node_command(k)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        c.procs[k] = Some(child);
    }
    let leader = c.wait_leader(Duration::from_secs(20));
    for &p in &mports {
        assert_eq!(http_get(p, "/health").map(|r| r.0), Some(200));
        wait_for("ready", || http_get(p, "/ready").is_some_and(|r| r.0 == 200));
    }
    assert_eq!(http_get(mports[0], "/nope").map(|r| r.0), Some(404));

    // 20 writes and 10 reads through the leader, one INCRBY of a non-integer (an error reply).
    let mut conn = c.connect(leader).expect("connect");
    for i in 0..20 {
        assert_eq!(conn.request(&["SET", &format!("k{i}"), "v"]).unwrap(), Frame::Simple("OK".into()));
    }
    for i in 0..10 {
        assert_eq!(conn.request(&["GET", &format!("k{i}")]).unwrap(), Frame::Bulk("v".into()));
    }
    assert!(matches!(conn.request(&["INCRBY", "k0", "1"]).unwrap(), Frame::Error(_)));
    let m = scrape(mports[leader]);
    assert_eq!(value(&m, r#"raftkv_requests_total{command="set",outcome="ok"}"#), 20.0);
    assert_eq!(value(&m, r#"raftkv_requests_total{command="get",outcome="ok"}"#), 10.0);
    assert_eq!(value(&m, r#"raftkv_requests_total{command="incrby",outcome="error"}"#), 1.0);
    assert_eq!(value(&m, r#"raftkv_request_duration_seconds_count{command="set"}"#), 20.0);
    assert!(value(&m, r#"raftkv_request_duration_seconds_sum{command="set"}"#) > 0.0);
    // One client, one write at a time: each write was made durable on a majority (two nodes)
    // between its append and its answer, and those intervals do not overlap, so the cluster ran at
    // least two fsyncs per write. (The leader alone may run fewer: it answers once two followers
    // synced, and its sync thread folds the jobs that queued meanwhile into one.)
    let fsyncs: f64 = mports.iter().map(|&p| value(&scrape(p), "raftkv_fsync_duration_seconds_count")).sum();
    assert!(fsyncs >= 40.0, "each write was fsynced on a majority: {fsyncs} fsyncs");
    assert!(value(&m, "raftkv_node_batch_inputs_count") > 0.0);
    assert!(value(&m, "raftkv_apply_duration_seconds_count") >= 20.0, "every write was applied");
    assert_eq!(value(&m, "raftkv_proposals_retried_total"), 0.0, "no leader change, nothing routed again");
    assert_eq!(value(&m, r#"raftkv_raft_role{role="leader"}"#), 1.0);
    assert_eq!(value(&m, "raftkv_raft_has_leader"), 1.0);
    assert_eq!(value(&m, "raftkv_keys"), 20.0);
    assert_eq!(value(&m, "raftkv_client_connections"), 1.0);
    let commit = value(&m, "raftkv_raft_commit_index");
    assert!(commit >= 21.0, "20 writes and a no-op: {commit}");
    let followers: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
    for &f in &followers {
        let name = &c.names[f];
        assert_eq!(value(&m, &format!(r#"raftkv_peer_connected{{peer="{name}"}}"#)), 1.0);
        assert!(value(&m, &format!(r#"raftkv_peer_sent_messages_total{{peer="{name}"}}"#)) > 0.0);
        assert!(m.contains_key(&format!(r#"raftkv_raft_peer_lag_entries{{peer="{name}"}}"#)));
    }
    // The followers export no per-peer replication, and agree on the commit index eventually.
    let fm = scrape(mports[followers[0]]);
    assert_eq!(value(&fm, r#"raftkv_raft_role{role="follower"}"#), 1.0);
    assert!(!fm.keys().any(|k| k.starts_with("raftkv_raft_peer_match_index")));

    // A follower dies: the leader's link to it goes down and messages for it are dropped as away.
    let dead = followers[0];
    let dead_name = c.names[dead].clone();
    c.kill(dead);
    wait_for("the link to the dead follower down, messages dropped as away", || {
        let m = scrape(mports[leader]);
        value(&m, &format!(r#"raftkv_peer_connected{{peer="{dead_name}"}}"#)) == 0.0
            && value(
                &m,
                &format!(r#"raftkv_peer_dropped_messages_total{{peer="{dead_name}",reason="peer_away"}}"#),
            ) > 0.0
    });
    c.start_node(dead); // without metrics; it only restores the majority

    // The leader dies: the survivor with metrics sees a leader change and becomes ready again. A
    // write sent to it at once is forwarded to the dead leader (the survivor still follows it),
    // then routed again to the new one: counted as retried, and answered.
    let survivor = followers[1];
    let mut sconn = c.connect(survivor).expect("connect");
    c.kill(leader);
    assert_eq!(sconn.request(&["SET", "after-the-leader-died", "v"]).unwrap(), Frame::Simple("OK".into()));
    wait_for("a leader change seen by the survivor", || {
        let m = scrape(mports[survivor]);
        value(&m, "raftkv_raft_leader_changes_total") >= 1.0 && value(&m, "raftkv_raft_has_leader") == 1.0
    });
    assert!(value(&scrape(mports[survivor]), "raftkv_proposals_retried_total") >= 1.0);
    wait_for("the survivor ready again", || http_get(mports[survivor], "/ready").is_some_and(|r| r.0 == 200));
}
