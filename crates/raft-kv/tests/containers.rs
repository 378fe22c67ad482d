//! The multi-host fault test: a 3-node cluster, each node its own container and address on a
//! private Docker network made by the test, under concurrent clients on hot keys, through
//! - silent partitions of one node (iptables DROP where packets arrive, in the nodes' network
//!   namespaces) of 2, 8, 15 and 30 s, then four back-to-back ones of 5-15 s;
//! - `docker kill` of the leader, `docker stop` (graceful: exit code 0) of a follower, `docker
//!   restart` of the leader, and `docker network disconnect` of the leader, reconnected with a new
//!   address that its peers must find by name.
//!
//! It prints, per fault, the failover time (a fault of the leader: until another node leads in a
//! higher term; and until the first write issued after the fault completed) and the heal-to-rejoin
//! time (until the node follows the current leader and has applied what that leader had committed
//! at the heal), and the longest window without a completed write during the back-to-back
//! partitions. It asserts issue 15's targets: rejoin < 2 s, failover after a kill < 1 s, no window
//! without a completed write > 1 s under back-to-back partitions. The last one depends on the cut
//! node letting its clients go: clients stay on a node until an error, so after cuts of other nodes
//! they gather on the one never cut, and when it is cut they must learn it soon. A node that knows
//! no leader for an election timeout answers its waiting requests (`driver::requests`); before that
//! (until 6 Dec 2026) they waited out their 2.5 s client timeout and windows of 2.5-2.7 s happened
//! in 2 of 5 runs. Answering after an election timeout without a leader gave 0.51-0.80 s in 5 of 6
//! runs and 1.05 s once (load 10-15: the cut leader stepped down 0.7 s after the cut, then waited an
//! election timeout more); a leader stepped down by CheckQuorum now answers at once, and 5 runs in a
//! row had 0.48-0.70 s (load 9-15). It asserts that the hot-key history is linearizable
//! (`sim::linearizability`,
//! final reads of every node included) and that every acknowledged write of a unique key is present
//! on every node at the end.
//!
//! Needs Docker, `nsenter`, `iptables`, `strip`, root, and the base image `debian:bookworm-slim`
//! (`deploy/make-base-image.sh` makes it offline); `.ci/run` provides them and runs this test with
//! `--include-ignored`. Bounded: about 3 minutes. Leaves nothing behind (see `docker.rs`).

#[path = "containers/docker.rs"]
mod docker;
#[path = "containers/history.rs"]
mod history;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use docker::Run;
use history::{longest_write_gap, micros, Recorder, KEYS};
use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim::linearizability::{check, CheckResult, Op, OpOutput, Operation};

const IDS: [&str; 3] = ["A", "B", "C"];
const CLIENTS: u64 = 8;
/// Issue 15's targets.
const REJOIN_TARGET: Duration = Duration::from_secs(2);
const FAILOVER_TARGET: Duration = Duration::from_secs(1);
const WRITE_GAP_TARGET: Duration = Duration::from_secs(1);

/// What `INFO raft` says of a node.
#[derive(Debug, Clone)]
struct View {
    role: String,
    term: u64,
    leader: String,
    commit: u64,
    applied: u64,
}

fn view(addr: &str) -> Option<View> {
    let mut c = Connection::connect(addr, Duration::from_millis(300)).ok()?;
    c.set_timeout(Some(Duration::from_millis(500))).ok()?;
    let Frame::Bulk(b) = c.request(&["INFO", "raft"]).ok()? else { return None };
    let text = String::from_utf8_lossy(&b).to_string();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(|v| v.trim().to_string())
    };
    Some(View {
        role: field("role")?,
        term: field("term")?.parse().ok()?,
        leader: field("leader").unwrap_or_default(),
        commit: field("commit_index")?.parse().ok()?,
        applied: field("applied_index")?.parse().ok()?,
    })
}

/// The node that leads in the highest term, with its view.
fn find_leader(run: &Run) -> Option<(usize, View)> {
    (0..run.nodes.len())
        .filter_map(|k| view(&run.addr(k)).filter(|v| v.role == "leader").map(|v| (k, v)))
        .max_by_key(|(_, v)| v.term)
}

fn wait_leader(run: &Run, limit: Duration) -> (usize, View) {
    let start = Instant::now();
    loop {
        if let Some(l) = find_leader(run) {
            return l;
        }
        assert!(start.elapsed() < limit, "no leader within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Time from `since` until a node other than `old` leads in a term above `old_term`.
fn wait_new_leader(run: &Run, old: usize, old_term: u64, since: Instant, limit: Duration) -> Duration {
    loop {
        let found = (0..run.nodes.len())
            .filter(|&k| k != old)
            .filter_map(|k| view(&run.addr(k)))
            .any(|v| v.role == "leader" && v.term > old_term);
        if found {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "no new leader within {limit:?} after a fault of the leader");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Time from `since` (the heal, or the start of a restarted node) until node `k` follows the
/// current leader in its term and has applied everything that leader had committed just after
/// `since`. Also returns how far behind the node was when it first answered (entries).
fn wait_rejoin(run: &Run, k: usize, since: Instant, limit: Duration) -> (Duration, u64) {
    let (leader, lv) = wait_leader(run, limit);
    let target = lv.commit;
    let mut behind = None;
    loop {
        if let Some(v) = view(&run.addr(k)) {
            behind.get_or_insert(target.saturating_sub(v.applied));
            let current = find_leader(run);
            let follows = current.as_ref().is_some_and(|(l, cv)| {
                (*l == k && v.role == "leader") || (v.leader == run.nodes[*l].id && v.term == cv.term)
            });
            if follows && v.applied >= target {
                return (since.elapsed(), behind.unwrap_or(0));
            }
        }
        assert!(
            since.elapsed() < limit,
            "{} did not rejoin within {limit:?} (leader was {})",
            run.nodes[k].id,
            run.nodes[leader].id
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads every hot key through node `k` (recorded as client `client`) and returns the values.
fn final_reads(run: &Run, k: usize, client: u64, t0: Instant) -> Vec<(Operation, Option<Vec<u8>>)> {
    let mut conn =
        Connection::connect(&run.addr(k), Duration::from_secs(1)).expect("node accepts connections");
    conn.set_timeout(Some(Duration::from_secs(5))).expect("set timeout");
    KEYS.iter()
        .map(|key| {
            let deadline = Instant::now() + Duration::from_secs(10);
            let (call, reply, ret) = loop {
                let call = micros(t0);
                let reply = conn.request(&["GET", key]).expect("final GET answered");
                let ret = micros(t0);
                match reply {
                    Frame::Error(e) if e.starts_with(b"TRYAGAIN") && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    reply => break (call, reply, ret),
                }
            };
            let value = match reply {
                Frame::Bulk(b) => Some(b.to_vec()),
                Frame::Null => None,
                other => panic!("final GET {key} via {}: {other:?}", run.nodes[k].id),
            };
            let op = Operation {
                client,
                key: key.as_bytes().to_vec(),
                op: Op::Get,
                call,
                ret: Some(ret),
                output: Some(OpOutput::Value(value.clone())),
            };
            (op, value)
        })
        .collect()
}

/// Checks that every acknowledged unique-key write is present, with its value, through node `k`.
fn check_acked(run: &Run, k: usize, acked: &[(String, String, u64)]) {
    let mut conn =
        Connection::connect(&run.addr(k), Duration::from_secs(1)).expect("node accepts connections");
    conn.set_timeout(Some(Duration::from_secs(10))).expect("set timeout");
    for chunk in acked.chunks(200) {
        let mut args: Vec<&str> = vec!["MGET"];
        args.extend(chunk.iter().map(|(key, _, _)| key.as_str()));
        let reply = conn.request(&args).expect("MGET answered");
        let Frame::Array(values) = reply else { panic!("MGET via {}: {reply:?}", run.nodes[k].id) };
        for ((key, value, _), got) in chunk.iter().zip(values) {
            assert!(
                matches!(&got, Frame::Bulk(b) if b[..] == *value.as_bytes()),
                "acknowledged write {key}={value} missing via {}: {got:?}",
                run.nodes[k].id
            );
        }
    }
}

/// One line of the report.
struct Measure {
    fault: String,
    failover: Option<Duration>,
    first_write: Option<Duration>,
    rejoin: Option<(Duration, u64)>,
}

/// The first write issued at or after `t` (µs) that completed: its delay after `t`.
fn first_write_after(rec: &Recorder, t: u64) -> Option<Duration> {
    let hot = rec.ops.iter().filter(|o| !matches!(o.op, Op::Get) && o.call >= t).filter_map(|o| o.ret);
    hot.min().map(|r| Duration::from_micros(r - t))
}

#[test]
#[ignore = "needs docker"]
fn containers_survive_partitions_kills_restarts_and_address_changes() {
    let seed = std::env::var("CONTAINER_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("container test seed {seed} (CONTAINER_TEST_SEED={seed} replays the partition lengths)");
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile");
    let mut run = Run::start(env!("CARGO_BIN_EXE_raft-kv"), dockerfile, &IDS);
    let t0 = Instant::now();
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = epoch.as_secs() % 86_400;
    eprintln!(
        "test clock 0 s = {:02}:{:02}:{:02}.{:03} UTC (the time in the nodes' logs)",
        s / 3600,
        s / 60 % 60,
        s % 60,
        epoch.subsec_millis()
    );
    wait_leader(&run, Duration::from_secs(30));

    let addrs = Arc::new(RwLock::new((0..IDS.len()).map(|k| run.addr(k)).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (addrs, stop, rec) = (addrs.clone(), stop.clone(), rec.clone());
            std::thread::spawn(move || history::client(id, seed, addrs, t0, stop, rec))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut report: Vec<Measure> = Vec::new();
    let limit = Duration::from_secs(20);

    // 1. Silent partitions of one node, of growing length; alternately a follower and the leader.
    for (secs, of_leader) in [(2u64, false), (8, true), (15, false), (30, true)] {
        let (leader, lv) = wait_leader(&run, limit);
        let k = if of_leader { leader } else { (leader + 1) % IDS.len() };
        run.isolate(k);
        let cut = Instant::now();
        let failover = of_leader.then(|| wait_new_leader(&run, leader, lv.term, cut, limit));
        std::thread::sleep(Duration::from_secs(secs).saturating_sub(cut.elapsed()));
        run.heal();
        let healed = Instant::now();
        let rejoin = wait_rejoin(&run, k, healed, limit);
        let who = if of_leader { "leader" } else { "follower" };
        report.push(Measure {
            fault: format!("{secs:>2} s silent partition of {who} {}", IDS[k]),
            failover,
            first_write: None,
            rejoin: Some(rejoin),
        });
    }

    // 2. Back-to-back silent partitions of 5-15 s (one node at a time, the next cut right after
    //    the heal): availability is the longest window without a completed write.
    let mut rng = SmallRng::seed_from_u64(seed);
    let b2b_start = micros(t0);
    let mut b2b = Vec::new();
    for i in 0..4 {
        let (leader, _) = wait_leader(&run, limit);
        let k = if i % 2 == 0 { leader } else { rng.random_range(0..IDS.len()) };
        let secs = rng.random_range(5..=15u64);
        let cut_at = micros(t0);
        run.isolate(k);
        std::thread::sleep(Duration::from_secs(secs));
        run.heal();
        let (cut_s, heal_s) = ((cut_at - b2b_start) as f64 / 1e6, (micros(t0) - b2b_start) as f64 / 1e6);
        let leader = if k == leader { " (leader)" } else { "" };
        b2b.push(format!("{}{leader} {secs} s [{cut_s:.2}-{heal_s:.2}]", IDS[k]));
    }
    let b2b_end = micros(t0);

    // 3. docker kill of the leader, then start it again.
    let (leader, lv) = wait_leader(&run, limit);
    let killed = Instant::now();
    run.kill(leader);
    // Writes issued once `docker kill` returned (the process is dead) need the next leader.
    let kill_at = micros(t0);
    let failover = wait_new_leader(&run, leader, lv.term, killed, limit);
    std::thread::sleep(Duration::from_secs(2));
    run.start_node(leader);
    let started = Instant::now();
    let rejoin = wait_rejoin(&run, leader, started, limit);
    report.push(Measure {
        fault: format!("docker kill leader {} (start after 2 s)", IDS[leader]),
        failover: Some(failover),
        first_write: Some(Duration::from_micros(kill_at)), // resolved below from the history
        rejoin: Some(rejoin),
    });

    // 4. docker stop of a follower: graceful (exit 0), then start.
    let (leader, _) = wait_leader(&run, limit);
    let k = (leader + 1) % IDS.len();
    let (code, took) = run.stop(k);
    assert_eq!(code, 0, "docker stop: {} exited with {code}\n{}", IDS[k], run.logs(k));
    std::thread::sleep(Duration::from_secs(1));
    run.start_node(k);
    let started = Instant::now();
    let rejoin = wait_rejoin(&run, k, started, limit);
    report.push(Measure {
        fault: format!("docker stop follower {} (exit 0 in {:.2} s), start", IDS[k], took.as_secs_f64()),
        failover: None,
        first_write: None,
        rejoin: Some(rejoin),
    });

    // 5. docker restart of the leader.
    let (leader, lv) = wait_leader(&run, limit);
    let restarted = Instant::now();
    run.restart(leader);
    // `docker restart` returns once the container runs again; the graceful stop before it lets
    // the node finish its in-flight requests first (up to 2 s), while it still leads.
    let running = Instant::now();
    let failover = wait_new_leader(&run, leader, lv.term, restarted, limit);
    let rejoin = wait_rejoin(&run, leader, running, limit);
    report.push(Measure {
        fault: format!(
            "docker restart leader {} (took {:.2} s)",
            IDS[leader],
            (running - restarted).as_secs_f64()
        ),
        failover: Some(failover),
        first_write: None,
        rejoin: Some(rejoin),
    });

    // 6. The leader loses its network, and comes back with another address.
    let (leader, lv) = wait_leader(&run, limit);
    let cut = Instant::now();
    run.disconnect(leader);
    let failover = wait_new_leader(&run, leader, lv.term, cut, limit);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(cut.elapsed()));
    let old_ip = run.nodes[leader].ip.clone();
    run.connect_new_address(leader);
    addrs.write().expect("addrs")[leader] = run.addr(leader);
    let connected = Instant::now();
    let rejoin = wait_rejoin(&run, leader, connected, limit);
    report.push(Measure {
        fault: format!(
            "network disconnect leader {} 3 s, connect with a new address ({old_ip} -> {})",
            IDS[leader], run.nodes[leader].ip
        ),
        failover: Some(failover),
        first_write: None,
        rejoin: Some(rejoin),
    });

    // Tail: the whole cluster serves for a while, then the clients stop.
    wait_leader(&run, limit);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let mut rec = std::mem::take(&mut *rec.lock().expect("rec"));
    let mut finals = Vec::new();
    for k in 0..IDS.len() {
        let reads = final_reads(&run, k, 1000 + k as u64, t0);
        finals.push(reads.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
        rec.ops.extend(reads.into_iter().map(|(op, _)| op));
    }
    for m in &mut report {
        if let Some(at) = m.first_write {
            m.first_write = first_write_after(&rec, at.as_micros() as u64);
        }
    }
    rec.write_returns.sort_unstable();
    let (gap, gap_at) = longest_write_gap(&rec.write_returns, b2b_start, b2b_end);
    let gap = Duration::from_micros(gap);

    // Report.
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{} ms", d.as_millis()));
    eprintln!("{:<78} {:>10} {:>12} {:>10} {:>8}", "fault", "failover", "first write", "rejoin", "behind");
    for m in &report {
        eprintln!(
            "{:<78} {:>10} {:>12} {:>10} {:>8}",
            m.fault,
            ms(m.failover),
            ms(m.first_write),
            ms(m.rejoin.map(|r| r.0)),
            m.rejoin.map_or("-".into(), |r| r.1.to_string())
        );
    }
    eprintln!(
        "back-to-back partitions (from {:.2} s on the test clock) {} in {:.1} s: longest window without a \
         completed write {} ms, from {:.2} s",
        b2b_start as f64 / 1e6,
        b2b.join(", "),
        (b2b_end - b2b_start) as f64 / 1e6,
        gap.as_millis(),
        (gap_at - b2b_start) as f64 / 1e6
    );
    let completed_writes = rec.ops.iter().filter(|o| !matches!(o.op, Op::Get) && o.ret.is_some()).count();
    eprintln!(
        "history: {} hot-key ops ({completed_writes} completed writes), {} acknowledged unique writes, \
         TRYAGAIN {}, connect failures {}, in {:.1} s",
        rec.ops.len(),
        rec.acked.len(),
        rec.tryagain,
        rec.connect_failures,
        t0.elapsed().as_secs_f64()
    );

    // Every acknowledged write is on every node; all nodes agree; the history is linearizable.
    for k in 0..IDS.len() {
        check_acked(&run, k, &rec.acked);
    }
    for k in 1..IDS.len() {
        assert_eq!(finals[k], finals[0], "final values via {} and {} differ", IDS[k], IDS[0]);
    }
    assert!(rec.unexpected.is_empty(), "replies the commands cannot produce: {:?}", rec.unexpected);
    assert!(completed_writes >= 500 && rec.acked.len() >= 200, "too little load got through");
    let started = Instant::now();
    match check(&rec.ops, 200_000_000).expect("well-formed history") {
        CheckResult::Linearizable => eprintln!("linearizable ({:?} to check)", started.elapsed()),
        CheckResult::NotLinearizable { key, explanation } => {
            for (k, id) in IDS.iter().enumerate() {
                eprintln!("---- log of {id}:\n{}", run.logs(k));
            }
            panic!("history not linearizable on key {}:\n{explanation}", String::from_utf8_lossy(&key))
        }
        CheckResult::Inconclusive { key } => {
            panic!("check inconclusive on key {}", String::from_utf8_lossy(&key))
        }
    }

    // Issue 15's targets. A miss prints the nodes' logs first (UTC timestamps; the schedule above
    // is relative to the test clock, whose start is printed at the top).
    let mut missed = Vec::new();
    for m in &report {
        if let Some((rejoin, _)) = m.rejoin {
            if rejoin >= REJOIN_TARGET {
                missed.push(format!("{}: rejoin took {rejoin:?}", m.fault));
            }
        }
    }
    let kill = &report[4];
    if kill.failover.is_none_or(|f| f >= FAILOVER_TARGET) {
        missed.push(format!("{}: failover {:?}", kill.fault, kill.failover));
    }
    if gap >= WRITE_GAP_TARGET {
        missed.push(format!("back-to-back partitions: {gap:?} without a completed write"));
    }
    if !missed.is_empty() {
        for (k, id) in IDS.iter().enumerate() {
            eprintln!("---- log of {id}:\n{}", run.logs(k));
        }
    }
    assert!(missed.is_empty(), "targets missed:\n{}", missed.join("\n"));
}
