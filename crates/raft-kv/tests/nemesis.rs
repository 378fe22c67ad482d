//! Real-process fault test ("nemesis"): a 3-node cluster of `raft-kv` processes on loopback serves
//! concurrent clients on a few hot keys while a nemesis kills (-9) the leader, pauses nodes
//! (SIGSTOP/SIGCONT) and kills random nodes; the recorded history must be linearizable
//! (`sim::linearizability`) and every node must answer the same final values. It runs twice: with
//! ReadIndex reads (the default) and with lease reads (`--read-mode lease`), one after the other.
//!
//! How replies are recorded (the invariant the checker relies on):
//! - a reply the model understands is a completed operation with its call/return times;
//! - `-TRYAGAIN` means raft-kv did not execute the request: the operation is left out;
//! - a failure to connect happens before anything is sent: the operation is left out;
//! - anything else once sending has started (an I/O error, a timeout, the connection closed, any
//!   other error reply) is *indeterminate*: it may take effect at any later time or never.
//!
//! Times are microseconds since the test started (one `Instant` shared by every thread).
//! The nemesis draws its schedule from a seed printed at the start (`NEMESIS_SEED` replays it);
//! the clients' interleaving is, of course, not reproducible.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use raft_kv::resp::client::{ClientError, Connection};
use raft_kv::resp::Frame;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim::linearizability::{check, CheckResult, Op, OpOutput, Operation};

/// Number of nodes.
/// Server flags for this test: snapshot every 300 entries, keep 50, send in 4 KiB chunks.
const SNAPSHOT_FLAGS: &[&str] =
    &["--snapshot-entries", "300", "--snapshot-keep-entries", "50", "--snapshot-chunk-bytes", "4096"];
const NODES: usize = 3;
/// Number of client threads (each with one request outstanding).
const CLIENTS: usize = 6;
/// The hot keys.
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// How long the nemesis runs at least.
const NEMESIS_FOR: Duration = Duration::from_secs(16);
/// The nemesis keeps going after `NEMESIS_FOR` until it has killed this many leaders...
const MIN_LEADER_KILLS: usize = 3;
/// ...but never longer than this (then the test fails on too few leader kills).
const NEMESIS_MAX: Duration = Duration::from_secs(25);
/// How long clients keep running after the cluster is whole again.
const TAIL: Duration = Duration::from_secs(2);
/// Client socket timeout: a request unanswered this long is indeterminate.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(2500);
/// Step budget per key for the checker (generous; the verdict must not be inconclusive).
const CHECK_STEPS: u64 = 200_000_000;

/// Microseconds since `t0`.
fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// The history shared by the clients, and counters of what they saw.
#[derive(Default)]
struct Recorder {
    /// Every recorded operation (completed or indeterminate).
    ops: Vec<Operation>,
    /// Requests answered `TRYAGAIN` (left out of the history).
    tryagain: u64,
    /// Failed connection attempts (nothing was sent).
    connect_failures: u64,
    /// Replies of a shape the command cannot produce (must stay zero).
    unexpected: Vec<String>,
}

/// What became of one request.
enum Outcome {
    /// A reply the model understands.
    Done(OpOutput),
    /// Not executed (`TRYAGAIN`).
    NotExecuted,
    /// Unknown (I/O error, timeout, other error reply).
    Unknown,
    /// A reply the command cannot produce.
    Unexpected(String),
}

/// Maps a reply to an outcome for the given request.
fn classify(op: &Op, reply: Frame) -> Outcome {
    if let Frame::Error(e) = &reply {
        if e.starts_with(b"TRYAGAIN") {
            return Outcome::NotExecuted;
        }
        if matches!(op, Op::Incr(_)) && e.starts_with(b"ERR value is not an integer") {
            return Outcome::Done(OpOutput::Error);
        }
        return Outcome::Unknown;
    }
    match (op, reply) {
        (Op::Get, Frame::Bulk(b)) => Outcome::Done(OpOutput::Value(Some(b.to_vec()))),
        (Op::Get, Frame::Null) => Outcome::Done(OpOutput::Value(None)),
        (Op::Set(_), Frame::Simple(s)) if &s[..] == b"OK" => Outcome::Done(OpOutput::Ok),
        (Op::Incr(_), Frame::Integer(n)) => Outcome::Done(OpOutput::Int(n)),
        (op, reply) => Outcome::Unexpected(format!("{op:?} answered {reply:?}")),
    }
}

/// One client: random requests on the hot keys through random nodes until `stop`.
fn client(
    id: u64,
    seed: u64,
    addrs: Vec<String>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Recorder>>,
) {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(id + 1));
    let mut conn: Option<Connection> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_some_and(Connection::is_closed_by_peer) {
            conn = None;
        }
        if conn.is_none() {
            let addr = &addrs[rng.random_range(0..addrs.len())];
            match Connection::connect(addr, Duration::from_millis(300)) {
                Ok(c) if c.set_timeout(Some(CLIENT_TIMEOUT)).is_ok() => conn = Some(c),
                _ => {
                    rec.lock().unwrap().connect_failures += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        seq += 1;
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let dice = rng.random_range(0..100);
        let (op, args): (Op, Vec<Vec<u8>>) = if dice < 45 {
            (Op::Get, vec![b"GET".to_vec(), key.into()])
        } else if dice < 75 {
            // Unique integers, so INCRBY applies to them and every value tells its writer.
            let v = ((id + 1) * 1_000_000_000 + seq * 1000).to_string().into_bytes();
            (Op::Set(v.clone()), vec![b"SET".to_vec(), key.into(), v])
        } else {
            let by = rng.random_range(1..=9i64);
            (Op::Incr(by), vec![b"INCRBY".to_vec(), key.into(), by.to_string().into_bytes()])
        };
        let call = micros(t0);
        let result: Result<Frame, ClientError> = c.request(&args);
        let ret = micros(t0);
        let outcome = match result {
            Ok(reply) => classify(&op, reply),
            Err(_) => Outcome::Unknown,
        };
        let mut r = rec.lock().unwrap();
        let operation = |ret: Option<u64>, output: Option<OpOutput>| Operation {
            client: id,
            key: key.as_bytes().to_vec(),
            op: op.clone(),
            call,
            ret,
            output,
        };
        match outcome {
            Outcome::Done(out) => r.ops.push(operation(Some(ret), Some(out))),
            Outcome::NotExecuted => {
                r.tryagain += 1;
                drop(r);
                conn = None;
                std::thread::sleep(Duration::from_millis(10));
            }
            Outcome::Unknown => {
                r.ops.push(operation(None, None));
                conn = None;
            }
            Outcome::Unexpected(what) => {
                r.unexpected.push(what);
                r.ops.push(operation(None, None));
                conn = None;
            }
        }
    }
}

/// `INFO raft` of node `k` with short timeouts (a paused node must not stall the nemesis).
fn info(c: &Cluster, k: usize) -> Option<String> {
    c.procs[k].as_ref()?;
    let mut conn = Connection::connect(&c.addr(k), Duration::from_millis(300)).ok()?;
    conn.set_timeout(Some(Duration::from_millis(500))).ok()?;
    match conn.request(&["INFO", "raft"]).ok()? {
        Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).to_string()),
        _ => None,
    }
}

/// The live node that says it is leader with the highest term, if any.
fn find_leader(c: &Cluster) -> Option<usize> {
    (0..NODES)
        .filter_map(|k| {
            let i = info(c, k)?;
            let leader = Cluster::field(&i, "role").as_deref() == Some("leader");
            let term: u64 = Cluster::field(&i, "term")?.parse().ok()?;
            leader.then_some((term, k))
        })
        .max()
        .map(|(_, k)| k)
}

/// Polls for a leader for at most `limit`.
fn wait_for_leader(c: &Cluster, limit: Duration) -> Option<usize> {
    let start = Instant::now();
    loop {
        if let Some(k) = find_leader(c) {
            return Some(k);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal to node `k`'s process.
fn signal(c: &Cluster, k: usize, sig: rustix::process::Signal) {
    let child = c.procs[k].as_ref().expect("node is running");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid is positive");
    rustix::process::kill_process(pid, sig).expect("signal delivered");
}

/// What the nemesis did, for the report and the leader-kill availability measure.
struct NemesisLog {
    /// `(time in µs, description)` of every fault.
    events: Vec<(u64, String)>,
    /// Times (µs) at which the node that was leader got killed.
    leader_kills: Vec<u64>,
}

/// Runs faults for `NEMESIS_FOR`, then leaves every node running. With `pause_leader`, every pause
/// hits the leader (the case lease reads must survive); otherwise half of them do.
fn nemesis(c: &mut Cluster, t0: Instant, seed: u64, pause_leader: bool) -> NemesisLog {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut log = NemesisLog { events: Vec::new(), leader_kills: Vec::new() };
    let start = Instant::now();
    let mut step = 0u64;
    while (start.elapsed() < NEMESIS_FOR || log.leader_kills.len() < MIN_LEADER_KILLS)
        && start.elapsed() < NEMESIS_MAX
    {
        let ms = |rng: &mut SmallRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
        match step % 3 {
            0 => match wait_for_leader(c, Duration::from_secs(3)) {
                Some(k) => {
                    c.kill(k);
                    let t = micros(t0);
                    log.leader_kills.push(t);
                    log.events.push((t, format!("kill -9 leader {}", c.names[k])));
                    std::thread::sleep(ms(&mut rng, 300, 1000));
                    c.start_node(k);
                    log.events.push((micros(t0), format!("restart {}", c.names[k])));
                }
                None => log.events.push((micros(t0), "no leader found to kill".into())),
            },
            1 => {
                // Half the time the leader: resumed after a successor was elected, it must not
                // answer a read or a write from its stale view (the classic stale-leader risk).
                let leader = if rng.random_bool(0.5) || pause_leader { find_leader(c) } else { None };
                let k = leader.unwrap_or_else(|| rng.random_range(0..NODES));
                // A leader paused for lease reads' sake stays paused past the election timeout
                // (250-500 ms), so a successor is elected and writes meanwhile.
                let pause = ms(&mut rng, if pause_leader { 600 } else { 300 }, 1500);
                signal(c, k, rustix::process::Signal::STOP);
                let what = if leader.is_some() { "leader " } else { "" };
                log.events.push((micros(t0), format!("SIGSTOP {what}{} for {pause:?}", c.names[k])));
                std::thread::sleep(pause);
                signal(c, k, rustix::process::Signal::CONT);
                log.events.push((micros(t0), format!("SIGCONT {}", c.names[k])));
            }
            _ => {
                let k = rng.random_range(0..NODES);
                let was_leader = find_leader(c) == Some(k);
                c.kill(k);
                let t = micros(t0);
                if was_leader {
                    log.leader_kills.push(t);
                }
                log.events.push((t, format!("kill -9 {} (leader: {was_leader})", c.names[k])));
                std::thread::sleep(ms(&mut rng, 200, 1000));
                c.start_node(k);
                log.events.push((micros(t0), format!("restart {}", c.names[k])));
            }
        }
        step += 1;
        std::thread::sleep(Duration::from_millis(rng.random_range(500..=1200)));
    }
    log
}

/// GET of every hot key through node `k`, recorded as operations of client `client`.
fn final_reads(c: &Cluster, k: usize, client: u64, t0: Instant) -> Vec<(Operation, Option<Vec<u8>>)> {
    let mut conn = Connection::connect(&c.addr(k), Duration::from_secs(1)).expect("node accepts connections");
    conn.set_timeout(Some(Duration::from_secs(5))).expect("set timeout");
    KEYS.iter()
        .map(|key| {
            // TRYAGAIN (not executed) is retried for a while: the cluster may still be settling.
            let deadline = Instant::now() + Duration::from_secs(5);
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
                other => panic!("final GET {key} via {}: {other:?}", c.names[k]),
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

/// The two fault tests share the machine's CPUs with their nine processes: one at a time, so that
/// neither's timing (elections, leases, client timeouts) depends on the other running.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn faults_under_concurrent_load_keep_the_history_linearizable() {
    faults_under_concurrent_load("read-index");
}

/// The same faults with lease reads (`--read-mode lease`), every pause hitting the leader: a leader
/// paused (SIGSTOP) past its lease while a successor takes writes must not answer a read from its
/// stale state when it resumes; and a voter restarted after kill -9 must not help elect a new
/// leader while the old one's lease may still hold (a node that just started refuses votes for an
/// election timeout in lease mode, see `raft::lease`). Checked against a mutant: a node thread
/// that advances the clock by one tick after a pause instead of by every tick that passed (so a
/// resumed leader trusts an expired lease) fails this test (3 runs of 3 with these pauses; 1 of 3
/// when pauses could be shorter than the election timeout).
#[test]
fn faults_with_lease_reads_keep_the_history_linearizable() {
    faults_under_concurrent_load("lease");
}

/// Runs the fault test with the servers' `--read-mode` set to `read_mode`.
fn faults_under_concurrent_load(read_mode: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("NEMESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "nemesis seed: {seed} (replay the fault schedule with NEMESIS_SEED={seed}), --read-mode {read_mode}"
    );
    let t0 = Instant::now();
    // Small snapshot thresholds: snapshots, log compaction and InstallSnapshot (a node killed or
    // paused while the others write past the threshold) all happen under the faults.
    let flags: Vec<&str> = SNAPSHOT_FLAGS.iter().copied().chain(["--read-mode", read_mode]).collect();
    let mut c = Cluster::start_with(NODES, &flags);
    c.wait_leader(Duration::from_secs(15));
    let addrs: Vec<String> = (0..NODES).map(|k| c.addr(k)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|id| {
            let (addrs, stop, rec) = (addrs.clone(), stop.clone(), rec.clone());
            std::thread::spawn(move || client(id, seed, addrs, t0, stop, rec))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let log = nemesis(&mut c, t0, seed, read_mode == "lease");
    // Every node runs again (the nemesis restarted each one it killed and resumed each one it paused).
    assert!(c.procs.iter().all(Option::is_some));
    let healed = micros(t0);
    let leader = wait_for_leader(&c, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no leader after healing; logs in {}", c.dir.path().display()));
    eprintln!("healed at {:.3}s, leader {}", healed as f64 / 1e6, c.names[leader]);
    std::thread::sleep(TAIL);
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        h.join().expect("client thread");
    }
    let stopped = micros(t0);

    // Final reads from every node agree, and join the history.
    let mut rec = std::mem::take(&mut *rec.lock().expect("lock"));
    let mut finals = Vec::new();
    for k in 0..NODES {
        let reads = final_reads(&c, k, 1000 + k as u64, t0);
        finals.push(reads.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
        rec.ops.extend(reads.into_iter().map(|(op, _)| op));
    }

    for (t, e) in &log.events {
        eprintln!("  {:>8.3}s  {e}", *t as f64 / 1e6);
    }
    let is_write = |o: &Operation| !matches!(o.op, Op::Get);
    let completed_writes = rec.ops.iter().filter(|o| is_write(o) && o.ret.is_some()).count();
    let completed_reads = rec.ops.iter().filter(|o| !is_write(o) && o.ret.is_some()).count();
    let unknown = rec.ops.iter().filter(|o| o.ret.is_none()).count();
    let unknown_writes = rec.ops.iter().filter(|o| o.ret.is_none() && is_write(o)).count();
    let recovered_writes =
        rec.ops.iter().filter(|o| is_write(o) && o.ret.is_some_and(|r| r > healed)).count();
    eprintln!(
        "ops recorded {} in {:.1}s: completed writes {completed_writes}, completed reads {completed_reads}, \
         indeterminate {unknown} ({unknown_writes} writes), TRYAGAIN (dropped) {}, connect failures {}, \
         writes completed after healing {recovered_writes}",
        rec.ops.len(),
        stopped as f64 / 1e6,
        rec.tryagain,
        rec.connect_failures,
    );
    // Unavailability after each leader kill: from the kill to the first completed write issued
    // after it (a reply already in flight when the leader died says nothing about failover).
    let mut worst = 0u64;
    for &kill in &log.leader_kills {
        let next = rec.ops.iter().filter(|o| is_write(o) && o.call >= kill).filter_map(|o| o.ret).min();
        match next {
            Some(r) => {
                worst = worst.max(r - kill);
                eprintln!(
                    "leader kill at {:.3}s: next write completed after {} ms",
                    kill as f64 / 1e6,
                    (r - kill) / 1000
                );
            }
            None => panic!("no write completed after the leader kill at {kill} µs"),
        }
    }
    eprintln!(
        "longest unavailability after a leader kill: {} ms ({} leader kills)",
        worst / 1000,
        log.leader_kills.len()
    );

    // Snapshot activity of the final incarnations (counters restart with each process); the
    // durable snapshot index survives restarts.
    for k in 0..NODES {
        let info = c.info(k).unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        eprintln!(
            "{}: snapshot_index {}, log_first_index {}, snapshots taken {}, installed {}, sent {}, chunks sent {}",
            c.names[k],
            field("snapshot_index"),
            field("log_first_index"),
            field("snapshots_taken"),
            field("snapshots_installed"),
            field("snapshots_sent"),
            field("snapshot_chunks_sent"),
        );
        assert!(field("snapshot_index") > 0, "{} never took or installed a snapshot", c.names[k]);
    }

    assert!(rec.unexpected.is_empty(), "replies the commands cannot produce: {:?}", rec.unexpected);
    assert!(log.leader_kills.len() >= MIN_LEADER_KILLS, "too few leader kills: {:?}", log.events);
    assert!(completed_writes >= 300, "too few completed writes: {completed_writes}");
    assert!(completed_reads >= 300, "too few completed reads: {completed_reads}");
    assert!(recovered_writes >= 20, "too few writes after healing: {recovered_writes}");
    for k in 1..NODES {
        assert_eq!(finals[k], finals[0], "final values via {} and {} differ", c.names[k], c.names[0]);
    }

    let started = Instant::now();
    let verdict = check(&rec.ops, CHECK_STEPS).expect("well-formed history");
    eprintln!(
        "linearizability check of {} ops: {:?} in {:?}",
        rec.ops.len(),
        verdict_name(&verdict),
        started.elapsed()
    );
    match verdict {
        CheckResult::Linearizable => {}
        CheckResult::NotLinearizable { key, explanation } => {
            let kept = keep_evidence(&c, &rec.ops, &log, seed);
            panic!(
                "history not linearizable on key {} (--read-mode {read_mode}, seed {seed}; node logs and history in {kept}):\n{explanation}",
                String::from_utf8_lossy(&key),
            )
        }
        CheckResult::Inconclusive { key } => {
            panic!("linearizability check inconclusive on key {}", String::from_utf8_lossy(&key))
        }
    }
    assert_corruption_is_caught(&rec.ops);
}

/// Checks that the checker can refute this very history: the same history with one final read
/// changed to a value nobody wrote must be found not linearizable (so a pass is not vacuous).
fn assert_corruption_is_caught(ops: &[Operation]) {
    let mut corrupted = ops.to_vec();
    let last_read = corrupted
        .iter()
        .rposition(|o| o.client >= 1000 && o.op == Op::Get)
        .expect("the final reads are in the history");
    corrupted[last_read].output = Some(OpOutput::Value(Some(b"never written".to_vec())));
    let started = Instant::now();
    let verdict = check(&corrupted, CHECK_STEPS).expect("well-formed history");
    eprintln!("corrupted history: {} in {:?}", verdict_name(&verdict), started.elapsed());
    assert!(
        matches!(verdict, CheckResult::NotLinearizable { .. }),
        "a read of a value nobody wrote was not caught: {verdict:?}"
    );
}

/// A short name of a verdict for the report.
fn verdict_name(v: &CheckResult) -> &'static str {
    match v {
        CheckResult::Linearizable => "linearizable",
        CheckResult::NotLinearizable { .. } => "NOT linearizable",
        CheckResult::Inconclusive { .. } => "inconclusive",
    }
}

/// Copies the node logs, the fault schedule and the history out of the cluster's temporary
/// directory (which is deleted on drop) so that a violation can be investigated; returns where.
fn keep_evidence(c: &Cluster, ops: &[Operation], log: &NemesisLog, seed: u64) -> String {
    let dir = std::env::temp_dir().join(format!("raft-kv-nemesis-{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    for k in 0..NODES {
        let _ = std::fs::write(dir.join(format!("{}.log", c.names[k])), c.log(k));
    }
    let events: String = log.events.iter().map(|(t, e)| format!("{t} {e}\n")).collect();
    let _ = std::fs::write(dir.join("faults.txt"), events);
    let mut sorted: Vec<&Operation> = ops.iter().collect();
    sorted.sort_by_key(|o| (o.key.clone(), o.call));
    let history: String = sorted.iter().map(|o| format!("{o:?}\n")).collect();
    let _ = std::fs::write(dir.join("history.txt"), history);
    dir.display().to_string()
}
