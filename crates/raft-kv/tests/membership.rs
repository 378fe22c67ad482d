//! Real-process membership test: under concurrent clients, every node of a 3-node cluster is
//! replaced one by one (start the new node as a standby, `raft-kv member add --voter`, `raft-kv
//! member remove` the old one, stop it), then the cluster grows to 5 and, after a leadership
//! transfer, shrinks back to 3. The recorded history must be linearizable
//! (`sim::linearizability`), which includes the final reads: no acknowledged write is lost.
//!
//! Recording (as in `nemesis.rs`): a reply the model understands is a completed operation;
//! `TRYAGAIN` was not executed and is left out; a failed connect sent nothing and is left out;
//! anything else after sending started is indeterminate. Clients pick among the nodes that are
//! members at the moment; a node is taken out of their list before it is removed.
//!
//! It also prints the longest write latency seen while each kind of change was under way, and the
//! pause in completed writes around the planned leadership transfer.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_ports, run_to_end, BIN};
use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim::linearizability::{check, CheckResult, Op, OpOutput, Operation};

const CLIENTS: usize = 4;
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const CLIENT_TIMEOUT: Duration = Duration::from_millis(3000);
const CHECK_STEPS: u64 = 200_000_000;
/// Small snapshots, so new nodes catch up by InstallSnapshot and then by entries.
const FLAGS: &[&str] = &["--snapshot-entries", "500", "--snapshot-keep-entries", "50"];
/// Every node that ever runs: A, B, C bootstrap; D..H join.
const NAMES: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

struct Nodes {
    dir: tempfile::TempDir,
    entries: Vec<String>,
    procs: Vec<Option<Child>>,
}

impl Nodes {
    fn new() -> Nodes {
        let ports = free_ports(2 * NAMES.len());
        let entries = NAMES
            .iter()
            .enumerate()
            .map(|(k, n)| format!("{n},127.0.0.1,{},{}", ports[k], ports[NAMES.len() + k]))
            .collect();
        Nodes { dir: tempfile::tempdir().unwrap(), entries, procs: (0..NAMES.len()).map(|_| None).collect() }
    }

    fn addr(&self, k: usize) -> String {
        let parts: Vec<&str> = self.entries[k].split(',').collect();
        format!("127.0.0.1:{}", parts[2])
    }

    /// Starts node `k`: a bootstrap member (A, B, C) or a standby.
    fn start(&mut self, k: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", NAMES[k]))).unwrap();
        let mut cmd = Command::new(BIN);
        if k < 3 {
            cmd.arg("-gc").args(&self.entries[..3]).args(["-m", "group-member"]);
        } else {
            cmd.arg("-gc").arg(&self.entries[k]).args(["-m", "standby"]);
        }
        cmd.args(["-i", NAMES[k], "-d"]).arg(self.dir.path().join(NAMES[k])).args(FLAGS);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start node");
        self.procs[k] = Some(child);
    }

    fn stop(&mut self, k: usize) {
        if let Some(mut c) = self.procs[k].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `raft-kv <args> --group-config <members>` and returns its stdout; panics on failure.
    fn cli(&self, args: &[&str], members: &[usize]) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--group-config");
        for &k in members {
            cmd.arg(&self.entries[k]);
        }
        let (code, out, err) = run_to_end(cmd, "", Duration::from_secs(40));
        assert_eq!(code, 0, "raft-kv {args:?} failed: {out}{err}; logs in {}", self.dir.path().display());
        out
    }

    fn info(&self, k: usize) -> Option<String> {
        let mut c = Connection::connect(&self.addr(k), Duration::from_millis(300)).ok()?;
        c.set_timeout(Some(Duration::from_secs(2))).ok()?;
        match c.request(&["INFO", "raft"]).ok()? {
            Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).to_string()),
            _ => None,
        }
    }

    fn field(info: &str, key: &str) -> Option<String> {
        info.lines().find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
    }

    /// The member of `among` that leads.
    fn leader(&self, among: &[usize]) -> usize {
        let start = Instant::now();
        loop {
            for &k in among {
                if self.info(k).is_some_and(|i| Self::field(&i, "role").as_deref() == Some("leader")) {
                    return k;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no leader; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for k in 0..self.procs.len() {
            self.stop(k);
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("kept {} (nodes' logs and data)", self.dir.path().display());
        }
    }
}

#[derive(Default)]
struct Recorder {
    ops: Vec<Operation>,
    tryagain: u64,
    unexpected: Vec<String>,
}

fn classify(op: &Op, reply: Frame) -> Option<Option<OpOutput>> {
    if let Frame::Error(e) = &reply {
        if e.starts_with(b"TRYAGAIN") {
            return None;
        }
        return Some(None);
    }
    Some(match (op, reply) {
        (Op::Get, Frame::Bulk(b)) => Some(OpOutput::Value(Some(b.to_vec()))),
        (Op::Get, Frame::Null) => Some(OpOutput::Value(None)),
        (Op::Set(_), Frame::Simple(s)) if &s[..] == b"OK" => Some(OpOutput::Ok),
        (Op::Incr(_), Frame::Integer(n)) => Some(OpOutput::Int(n)),
        _ => None,
    })
}

fn client(
    id: u64,
    addrs: Arc<Mutex<Vec<String>>>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Recorder>>,
) {
    let mut rng = SmallRng::seed_from_u64(id + 7);
    let mut conn: Option<(String, Connection)> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let current = addrs.lock().unwrap().clone();
        if conn.as_ref().is_some_and(|(a, c)| c.is_closed_by_peer() || !current.contains(a)) {
            conn = None;
        }
        if conn.is_none() {
            let addr = current[rng.random_range(0..current.len())].clone();
            match Connection::connect(&addr, Duration::from_millis(300)) {
                Ok(c) if c.set_timeout(Some(CLIENT_TIMEOUT)).is_ok() => conn = Some((addr, c)),
                _ => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some((_, c)) = conn.as_mut() else { continue };
        seq += 1;
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let dice = rng.random_range(0..100);
        let (op, args): (Op, Vec<Vec<u8>>) = if dice < 40 {
            (Op::Get, vec![b"GET".to_vec(), key.into()])
        } else if dice < 75 {
            let v = ((id + 1) * 1_000_000_000 + seq * 1000).to_string().into_bytes();
            (Op::Set(v.clone()), vec![b"SET".to_vec(), key.into(), v])
        } else {
            let by = rng.random_range(1..=9i64);
            (Op::Incr(by), vec![b"INCRBY".to_vec(), key.into(), by.to_string().into_bytes()])
        };
        let call = micros(t0);
        let result = c.request(&args);
        let ret = micros(t0);
        let outcome = match result {
            Ok(reply) => classify(&op, reply.clone()).map(|o| (o, reply)),
            Err(_) => Some((None, Frame::Null)),
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
            None => {
                r.tryagain += 1;
                drop(r);
                conn = None;
                std::thread::sleep(Duration::from_millis(10));
            }
            Some((Some(out), _)) => r.ops.push(operation(Some(ret), Some(out))),
            Some((None, reply)) => {
                if !matches!(reply, Frame::Null | Frame::Error(_)) {
                    r.unexpected.push(format!("{op:?} answered {reply:?}"));
                }
                r.ops.push(operation(None, None));
                conn = None;
            }
        }
    }
}

/// A phase of the test: what happened between two times (µs).
struct Phase {
    what: String,
    from: u64,
    to: u64,
}

#[test]
fn replace_every_node_then_grow_and_shrink_under_load_stays_linearizable() {
    let t0 = Instant::now();
    let mut nodes = Nodes::new();
    for k in 0..3 {
        nodes.start(k);
    }
    nodes.leader(&[0, 1, 2]);
    let addrs = Arc::new(Mutex::new((0..3).map(|k| nodes.addr(k)).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|id| {
            let (addrs, stop, rec) = (addrs.clone(), stop.clone(), rec.clone());
            std::thread::spawn(move || client(id, addrs, t0, stop, rec))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    let mut members: Vec<usize> = vec![0, 1, 2];
    let mut phases: Vec<Phase> = Vec::new();
    let mut phase = |what: String, f: &mut dyn FnMut()| {
        let from = micros(t0);
        f();
        phases.push(Phase { what, from, to: micros(t0) });
    };

    // Replace A, B, C by D, E, F one by one.
    for (new, old) in [(3usize, 0usize), (4, 1), (5, 2)] {
        nodes.start(new);
        std::thread::sleep(Duration::from_millis(300));
        if new == 3 {
            // A standby serves INFO only.
            let mut c = Connection::connect(&nodes.addr(new), Duration::from_secs(2)).unwrap();
            c.set_timeout(Some(Duration::from_secs(2))).unwrap();
            let info = nodes.info(new).unwrap();
            assert_eq!(Nodes::field(&info, "role").as_deref(), Some("standby"), "{info}");
            match c.request(&["SET", "k0", "x"]).unwrap() {
                Frame::Error(e) => assert!(e.starts_with(b"STANDBY"), "{e:?}"),
                other => panic!("a standby answered SET with {other:?}"),
            }
        }
        phase(format!("add+promote {}", NAMES[new]), &mut || {
            nodes.cli(&["member", "add", &nodes.entries[new], "--voter"], &members);
        });
        members.push(new);
        addrs.lock().unwrap().push(nodes.addr(new));
        addrs.lock().unwrap().retain(|a| *a != nodes.addr(old));
        phase(format!("remove {}", NAMES[old]), &mut || {
            nodes.cli(&["member", "remove", NAMES[old]], &members);
        });
        members.retain(|&k| k != old);
        std::thread::sleep(Duration::from_millis(300));
        nodes.stop(old);
        std::thread::sleep(Duration::from_millis(500));
    }

    // Grow to 5.
    for new in [6usize, 7] {
        nodes.start(new);
        std::thread::sleep(Duration::from_millis(300));
        phase(format!("add+promote {}", NAMES[new]), &mut || {
            nodes.cli(&["member", "add", &nodes.entries[new], "--voter"], &members);
        });
        members.push(new);
        addrs.lock().unwrap().push(nodes.addr(new));
    }
    let list = nodes.cli(&["member", "list"], &members);
    eprintln!("{list}");
    assert_eq!(list.lines().filter(|l| l.contains(" voter ")).count(), 5, "{list}");

    // A planned leadership transfer to a voter that does not lead.
    std::thread::sleep(Duration::from_millis(500));
    let leader = nodes.leader(&members);
    let target = *members.iter().find(|&&k| k != leader).unwrap();
    let transfer_at = micros(t0);
    phase(format!("transfer {} -> {}", NAMES[leader], NAMES[target]), &mut || {
        nodes.cli(&["transfer-leader", "--to", NAMES[target]], &members);
    });
    assert_eq!(nodes.leader(&members), target);
    std::thread::sleep(Duration::from_millis(500));

    // Shrink back to 3: remove G and H (the current leader among them or not).
    for old in [6usize, 7] {
        addrs.lock().unwrap().retain(|a| *a != nodes.addr(old));
        phase(format!("remove {}", NAMES[old]), &mut || {
            nodes.cli(&["member", "remove", NAMES[old]], &members);
        });
        members.retain(|&k| k != old);
        std::thread::sleep(Duration::from_millis(300));
        nodes.stop(old);
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let list = nodes.cli(&["member", "list"], &members);
    eprintln!("{list}");
    for name in ["D", "E", "F"] {
        assert!(list.lines().any(|l| l.starts_with(name) && l.contains(" voter ")), "{list}");
    }
    assert_eq!(list.lines().count(), 4, "header and three members: {list}");

    // `raft-kv status` given one member finds the others through its membership.
    let status = nodes.cli(&["status"], &[3]);
    eprintln!("{status}");
    for k in [3usize, 4, 5] {
        assert!(
            status.lines().any(|l| l.starts_with(NAMES[k]) && l.contains(" voter ")),
            "{} missing from the status table:\n{status}",
            NAMES[k]
        );
    }

    // Final reads through every remaining member join the history.
    let mut rec = std::mem::take(&mut *rec.lock().unwrap());
    let mut finals = Vec::new();
    for (n, &k) in members.iter().enumerate() {
        let mut c = Connection::connect(&nodes.addr(k), Duration::from_secs(1)).unwrap();
        c.set_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut values = Vec::new();
        for key in KEYS {
            let call = micros(t0);
            let value = match c.request(&["GET", key]).unwrap() {
                Frame::Bulk(b) => Some(b.to_vec()),
                Frame::Null => None,
                other => panic!("final GET {key} via {}: {other:?}", NAMES[k]),
            };
            let ret = micros(t0);
            rec.ops.push(Operation {
                client: 1000 + n as u64,
                key: key.as_bytes().to_vec(),
                op: Op::Get,
                call,
                ret: Some(ret),
                output: Some(OpOutput::Value(value.clone())),
            });
            values.push(value);
        }
        finals.push(values);
    }
    for f in &finals[1..] {
        assert_eq!(f, &finals[0], "final values differ between members");
    }

    let is_write = |o: &Operation| !matches!(o.op, Op::Get);
    let writes: Vec<&Operation> = rec.ops.iter().filter(|o| is_write(o) && o.ret.is_some()).collect();
    for p in &phases {
        let worst = writes
            .iter()
            .filter(|o| o.call < p.to && o.ret.unwrap_or(0) > p.from)
            .map(|o| o.ret.unwrap_or(0) - o.call)
            .max()
            .unwrap_or(0);
        eprintln!(
            "{:<24} took {:>6} ms; longest write meanwhile {:>5} ms",
            p.what,
            (p.to - p.from) / 1000,
            worst / 1000
        );
    }
    // The pause around the transfer: the longest gap between completed writes near it.
    let mut rets: Vec<u64> = writes
        .iter()
        .filter_map(|o| o.ret)
        .filter(|&r| r + 2_000_000 > transfer_at && r < transfer_at + 3_000_000)
        .collect();
    rets.sort_unstable();
    let gap = rets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    eprintln!("longest gap between completed writes around the transfer: {} ms", gap / 1000);
    let unknown = rec.ops.iter().filter(|o| o.ret.is_none()).count();
    eprintln!(
        "ops {} (completed writes {}, indeterminate {unknown}, TRYAGAIN {}) in {:.1}s",
        rec.ops.len(),
        writes.len(),
        rec.tryagain,
        t0.elapsed().as_secs_f64()
    );
    assert!(rec.unexpected.is_empty(), "unexpected replies: {:?}", rec.unexpected);
    assert!(writes.len() >= 200, "too few completed writes: {}", writes.len());
    let longest_write = writes.iter().map(|o| o.ret.unwrap_or(0) - o.call).max().unwrap_or(0);
    assert!(
        longest_write < 3_000_000,
        "a write waited {} ms (more than the client timeout allows)",
        longest_write / 1000
    );

    let started = Instant::now();
    match check(&rec.ops, CHECK_STEPS).expect("well-formed history") {
        CheckResult::Linearizable => {
            eprintln!("linearizable ({} ops checked in {:?})", rec.ops.len(), started.elapsed())
        }
        CheckResult::NotLinearizable { key, explanation } => panic!(
            "history not linearizable on key {}: {explanation}; logs in {}",
            String::from_utf8_lossy(&key),
            nodes.dir.path().display()
        ),
        other => panic!("linearizability check inconclusive: {other:?}"),
    }
}

/// SIGTERM on the leader hands leadership over before the process stops: writes pause for less
/// than an election timeout and the new leader's term is the next one (one campaign, started by
/// TimeoutNow, not by an election timeout).
#[test]
fn sigterm_on_the_leader_hands_over_first() {
    let mut nodes = Nodes::new();
    for k in 0..3 {
        nodes.start(k);
    }
    let leader = nodes.leader(&[0, 1, 2]);
    let term: u64 = Nodes::field(&nodes.info(leader).unwrap(), "term").unwrap().parse().unwrap();
    let others: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writer = {
        let (stop, done) = (stop.clone(), done.clone());
        let addr = nodes.addr(others[0]);
        std::thread::spawn(move || {
            let mut c = Connection::connect(&addr, Duration::from_secs(1)).unwrap();
            c.set_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if let Ok(Frame::Simple(_)) = c.request(&["SET", "k", &n.to_string()]) {
                    done.lock().unwrap().push(micros(t0));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let child = nodes.procs[leader].take().unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let sent = micros(t0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut child = child;
    let status = child.wait().unwrap();
    let exited = micros(t0);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let log = std::fs::read_to_string(nodes.dir.path().join(format!("{}.log", NAMES[leader]))).unwrap();
    assert!(status.success(), "the leader did not stop cleanly: {status:?}\n{log}");
    assert!(log.contains("handed leadership to"), "no handover logged:\n{log}");
    let next = nodes.leader(&others);
    let new_term: u64 = Nodes::field(&nodes.info(next).unwrap(), "term").unwrap().parse().unwrap();
    let done = done.lock().unwrap();
    let gap = done.windows(2).filter(|w| w[1] > sent).map(|w| w[1] - w[0]).max().unwrap_or(u64::MAX);
    eprintln!(
        "SIGTERM to {}: exited after {} ms; {} leads in term {new_term} (was {term}); longest gap between completed writes {} ms",
        NAMES[leader],
        (exited - sent) / 1000,
        NAMES[next],
        gap / 1000
    );
    assert_eq!(new_term, term + 1, "more than one campaign after the handover");
    assert!(gap < 1_000_000, "writes paused for {} ms", gap / 1000);
}
