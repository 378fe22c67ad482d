//! A real client library against a real 3-node cluster: redis-py (tests/redis_py/patterns.py)
//! runs what applications build on Redis, with its clients spread over every node (followers
//! forward): a WATCH/MULTI/EXEC retry loop incrementing one counter from 12 clients (the count is
//! exact and retries provably happened), SETEX/PSETEX caches read before and after expiry on every
//! node, and SCAN through `scan_iter` (MATCH, COUNT, TYPE) returning every stable key exactly
//! once while other keys churn. redis-py's `Lock` is exercised in tests/scripts.rs.
//!
//! Ignored by default (needs python3 with redis-py); `.ci/run` runs it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_to_end, Cluster};

const PATTERNS: &str = include_str!("redis_py/patterns.py");

#[test]
#[ignore = "needs python3 with redis-py"]
fn redis_py_watch_loop_setex_cache_and_scan_across_nodes() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20));
    let ports: Vec<String> = cluster.server_ports.iter().map(|p| p.to_string()).collect();
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PATTERNS).arg(ports.join(","));
    let start = Instant::now();
    // Bounded: the script's own waits are at most 30 s each; a hang fails here, not in CI's timeout.
    let (code, stdout, stderr) = run_to_end(cmd, "", Duration::from_secs(90));
    eprintln!("redis-py patterns took {:?}:\n{stdout}", start.elapsed());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    for line in ["ok watch counter=240 ", "ok setex ", "ok scan keys=603 ", "ok all"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no {line:?} in stdout: {stdout}\nstderr: {stderr}"
        );
    }
}
