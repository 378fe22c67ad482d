//! Snapshots and log compaction with real processes on loopback: a follower that missed more than
//! the leader's log still holds rejoins through InstallSnapshot; a restarted cluster recovers from
//! snapshot + log tail; `RAFT.SNAPSHOT` answers with the index its snapshot covers.
//!
//! Every wait polls observable state (INFO fields, replies, files) against a deadline; nothing
//! sleeps for synchronization.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Cluster;
use raft_kv::resp::Frame;

/// A value of about 100 bytes, unique to `key`.
fn value_of(key: &str) -> String {
    format!("{key}:{}", "v".repeat(96))
}

/// Writes `keys` through node `k`, pipelined 100 at a time; every write must be acknowledged.
fn write_keys(c: &Cluster, k: usize, keys: &[String]) {
    write_keys_pipelined(c, k, keys, 100);
}

/// Writes `keys` through node `k`, pipelined `depth` at a time.
fn write_keys_pipelined(c: &Cluster, k: usize, keys: &[String], depth: usize) {
    let mut conn = c.connect(k).expect("node answers");
    for batch in keys.chunks(depth) {
        for key in batch {
            conn.queue(&["SET", key.as_str(), value_of(key).as_str()]);
        }
        conn.flush().expect("send");
        for key in batch {
            let reply = conn.receive().expect("reply");
            assert_eq!(reply, Frame::ok(), "SET {key} via {}", c.names[k]);
        }
    }
}

/// Reads every key through node `k` (MGET, 500 at a time) and checks its value.
fn assert_all_present(c: &Cluster, k: usize, keys: &[String]) {
    let mut conn = c.connect(k).expect("node answers");
    for chunk in keys.chunks(500) {
        let mut args = vec!["MGET"];
        args.extend(chunk.iter().map(String::as_str));
        let Frame::Array(values) = conn.request(&args).expect("MGET answered") else {
            panic!("MGET via {} is not an array", c.names[k]);
        };
        for (key, v) in chunk.iter().zip(values) {
            assert_eq!(v, Frame::Bulk(value_of(key).into()), "key {key} on node {}", c.names[k]);
        }
    }
}

/// A numeric INFO raft field of node `k` (None if the node does not answer).
fn field(c: &Cluster, k: usize, name: &str) -> Option<u64> {
    let info = c.info(k)?;
    Cluster::field(&info, name)?.parse().ok()
}

/// True if node `k` has applied at least up to `index`.
fn applied(c: &Cluster, k: usize, index: u64) -> bool {
    field(c, k, "applied_index").is_some_and(|a| a >= index)
}

/// Polls until `cond` holds; at the deadline fails with `what`, every node's INFO and the end of
/// every node's log.
fn wait_until(c: &Cluster, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            let mut report = String::new();
            for k in 0..c.names.len() {
                let log = c.log(k);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(400)..].join("\n");
                let info = c.info(k).unwrap_or_else(|| "(no answer)".into());
                report.push_str(&format!("--- node {}: INFO\n{info}\n--- log tail\n{tail}\n", c.names[k]));
            }
            panic!("timed out after {limit:?} waiting for {what}\n{report}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number of keys node `k` reports in `INFO keyspace` (0 when the section is empty).
fn keyspace_keys(c: &Cluster, k: usize) -> u64 {
    let mut conn = c.connect(k).expect("node answers");
    let Frame::Bulk(text) = conn.request(&["INFO", "keyspace"]).expect("INFO answered") else {
        panic!("INFO is not a bulk string");
    };
    let text = String::from_utf8_lossy(&text).to_string();
    text.lines().find_map(|l| l.strip_prefix("db0:keys=")?.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// `RAFT.SNAPSHOT` through node `k`: the index the snapshot covers.
fn snapshot(c: &Cluster, k: usize) -> i64 {
    let mut conn = c.connect(k).expect("node answers");
    match conn.request(&["RAFT.SNAPSHOT"]).expect("RAFT.SNAPSHOT answered") {
        Frame::Integer(i) => i,
        other => panic!("RAFT.SNAPSHOT via {}: {other:?}", c.names[k]),
    }
}

/// First indexes of the WAL segment files in `dir` (named `<first index, 20 digits>.wal`).
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

#[test]
fn a_node_down_while_the_others_compact_rejoins_through_a_snapshot_and_converges() {
    let mut c = Cluster::start_with(
        3,
        &["--snapshot-entries", "200", "--snapshot-keep-entries", "20", "--snapshot-chunk-bytes", "4096"],
    );
    let leader = c.wait_leader(Duration::from_secs(15));
    let down = (leader + 1) % 3;
    let before = keys("before", 50);
    write_keys(&c, leader, &before);
    // The follower to stop has the first writes; note how far its log goes.
    let commit = field(&c, leader, "commit_index").expect("leader answers");
    wait_until(&c, Duration::from_secs(10), "the follower to apply the first writes", || {
        applied(&c, down, commit)
    });
    let down_last = field(&c, down, "last_log_index").expect("follower answers");
    c.kill(down);

    // In many small rounds: the leader keeps streaming appends to the dead follower until its window
    // (64 messages) is full, and those wait in the transport's queue and are delivered when the
    // follower comes back; the writes beyond them are only in the snapshot once compacted.
    let during = keys("during", 2000);
    write_keys_pipelined(&c, leader, &during, 4);
    // The leader compacted its log past everything the stopped follower holds: only a snapshot
    // can bring it back.
    wait_until(&c, Duration::from_secs(10), "the leader to compact past the stopped follower", || {
        field(&c, leader, "log_first_index").is_some_and(|first| first > down_last + 1)
            && field(&c, leader, "snapshots_taken").is_some_and(|n| n >= 1)
    });
    let commit = field(&c, leader, "commit_index").expect("leader answers");

    c.start_node(down);
    wait_until(
        &c,
        Duration::from_secs(20),
        "the restarted follower to install a snapshot and catch up",
        || field(&c, down, "snapshots_installed").is_some_and(|n| n >= 1) && applied(&c, down, commit),
    );
    let info = c.info(leader).expect("leader answers");
    let sent: u64 = Cluster::field(&info, "snapshots_sent").and_then(|v| v.parse().ok()).unwrap_or(0);
    let chunks: u64 = Cluster::field(&info, "snapshot_chunks_sent").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(sent >= 1, "the leader reports no snapshot sent:\n{info}");
    // The snapshot went in many chunks of 4096 bytes. Which snapshot depends on timing: the leader
    // may start sending one while the follower is still down (its chunks wait in the transport's
    // queue) and the follower then catches up from it through the log; the smallest the leader can
    // have once it compacted past the follower is its first (index ~200, about 24 KiB).
    assert!(chunks >= 6, "only {chunks} chunks sent:\n{info}");

    // Every key is there, read through the rejoined node (linearizable: ReadIndex via the leader),
    // and its own state machine holds exactly the keys written.
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    assert_all_present(&c, down, &all);
    assert_eq!(keyspace_keys(&c, down), all.len() as u64, "keys held by the rejoined node");
    assert_eq!(keyspace_keys(&c, leader), all.len() as u64, "keys held by the leader");
    // The rejoined node keeps replicating normally after the snapshot.
    let after = keys("after", 100);
    write_keys(&c, leader, &after);
    assert_all_present(&c, down, &after);
}

#[test]
fn a_restarted_cluster_recovers_from_its_snapshots_and_log_tails() {
    let mut c = Cluster::start_with(3, &["--snapshot-keep-entries", "10", "--log-segment-bytes", "16KiB"]);
    let leader = c.wait_leader(Duration::from_secs(15));
    let first = keys("first", 600);
    write_keys(&c, leader, &first);
    // A snapshot on every node (RAFT.SNAPSHOT acts on the node that receives it).
    let mut snapshot_index = Vec::new();
    for k in 0..3 {
        let commit = field(&c, leader, "commit_index").expect("leader answers");
        wait_until(&c, Duration::from_secs(10), "every node to apply the writes", || applied(&c, k, commit));
        let index = snapshot(&c, k);
        assert!(index >= 600, "node {}: snapshot at {index}", c.names[k]);
        snapshot_index.push(index as u64);
        // The snapshot file is there and the segments it covers are gone (all but the one holding
        // the kept tail and later entries).
        let dir = c.data_dir(k);
        assert!(dir.join("snapshot").is_file(), "no snapshot file in {}", dir.display());
        // (The node deletes covered segment files on a background thread after installing the
        // snapshot, so this is eventually true rather than at once.)
        wait_until(&c, Duration::from_secs(10), "the covered log segments to be deleted", || {
            let bases = segment_bases(&dir);
            !bases.is_empty() && bases[0] > 1
        });
        let bases = segment_bases(&dir);
        assert!(
            bases[0] <= index as u64 - 10 + 1,
            "node {}: the kept tail of 10 entries is gone: {bases:?}",
            c.names[k]
        );
        assert_eq!(field(&c, k, "log_first_index"), Some(index as u64 - 10 + 1));
    }
    let tail = keys("tail", 200);
    write_keys(&c, leader, &tail);

    for k in 0..3 {
        c.kill(k);
    }
    for k in 0..3 {
        c.start_node(k);
    }
    let leader = c.wait_leader(Duration::from_secs(15));
    let all: Vec<String> = first.iter().chain(&tail).cloned().collect();
    for (k, &index) in snapshot_index.iter().enumerate() {
        // Recovered from the snapshot taken before the restart (not replayed from index 1).
        assert_eq!(field(&c, k, "snapshot_index"), Some(index), "node {}", c.names[k]);
        let commit = field(&c, leader, "commit_index").expect("leader answers");
        wait_until(&c, Duration::from_secs(10), "every node to apply the log tail", || {
            applied(&c, k, commit)
        });
        assert_all_present(&c, k, &all);
        assert_eq!(keyspace_keys(&c, k), all.len() as u64, "node {}", c.names[k]);
    }
}

#[test]
fn raft_snapshot_answers_with_the_index_it_covers() {
    let c = Cluster::start(3);
    let leader = c.wait_leader(Duration::from_secs(15));
    let follower = (leader + 1) % 3;
    let written = keys("k", 120);
    write_keys(&c, leader, &written);
    // Through the leader: covers at least every write (one entry each, plus the leader's no-op).
    let first = snapshot(&c, leader);
    assert!(first >= 121, "snapshot index {first} < 120 writes + the no-op");
    assert_eq!(field(&c, leader, "snapshot_index"), Some(first as u64));
    assert_eq!(field(&c, leader, "snapshots_taken"), Some(1));
    // Nothing new: the same snapshot, no new one taken.
    assert_eq!(snapshot(&c, leader), first);
    assert_eq!(field(&c, leader, "snapshots_taken"), Some(1));

    // Pipelined after a write on the same connection, it covers that write (it waits for it), here
    // on a follower, which snapshots its own state.
    let mut conn = c.connect(follower).expect("follower answers");
    conn.queue(&["SET", "late", "1"]);
    conn.queue(&["RAFT.SNAPSHOT"]);
    conn.queue(&["raft.snapshot", "now"]);
    conn.flush().unwrap();
    assert_eq!(conn.receive().unwrap(), Frame::ok());
    let Frame::Integer(index) = conn.receive().unwrap() else { panic!("RAFT.SNAPSHOT is not an integer") };
    assert!(index > first, "the follower's snapshot {index} does not cover the write after {first}");
    assert_eq!(
        conn.receive().unwrap(),
        Frame::error("ERR wrong number of arguments for 'raft.snapshot' command")
    );
    let applied = field(&c, follower, "applied_index").expect("follower answers");
    assert!(index as u64 <= applied);
    assert_eq!(field(&c, follower, "snapshot_index"), Some(index as u64));
}
