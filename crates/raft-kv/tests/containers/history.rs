//! The clients of the container test and what they record: concurrent clients on a few hot keys
//! (GET / SET / INCRBY) whose history goes to the linearizability checker, plus writes of unique
//! keys whose acknowledgement is remembered, to check at the end that every acknowledged write is
//! present on every node.
//!
//! How replies are recorded (the invariant the checker relies on, as in the nemesis test):
//! - a reply the model understands is a completed operation with its call/return times;
//! - `-TRYAGAIN` means raft-kv did not execute the request: the operation is left out;
//! - a failure to connect happens before anything is sent: the operation is left out;
//! - anything else once sending has started (I/O error, timeout, closed connection, other error
//!   reply) is indeterminate: it may take effect at any later time or never.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim::linearizability::{Op, OpOutput, Operation};

/// The hot keys.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// A request unanswered this long is indeterminate.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(2500);

/// Microseconds since `t0`.
pub fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Everything the clients saw.
#[derive(Default)]
pub struct Recorder {
    /// Hot-key operations (completed or indeterminate).
    pub ops: Vec<Operation>,
    /// Unique-key writes acknowledged with OK: (key, value, return time in µs).
    pub acked: Vec<(String, String, u64)>,
    /// Return times (µs) of every completed write (hot or unique key), for availability windows.
    pub write_returns: Vec<u64>,
    /// Requests answered TRYAGAIN (left out).
    pub tryagain: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Replies a command cannot produce (must stay empty).
    pub unexpected: Vec<String>,
}

enum Outcome {
    Done(OpOutput),
    NotExecuted,
    Unknown,
    Unexpected(String),
}

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

/// One client: random requests through random nodes (addresses read from `addrs` at every
/// connect, as they change) until `stop`.
pub fn client(
    id: u64,
    seed: u64,
    addrs: Arc<RwLock<Vec<String>>>,
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
            let addr = {
                let a = addrs.read().expect("addrs");
                a[rng.random_range(0..a.len())].clone()
            };
            match Connection::connect(&addr, Duration::from_millis(300)) {
                Ok(c) if c.set_timeout(Some(CLIENT_TIMEOUT)).is_ok() => conn = Some(c),
                _ => {
                    rec.lock().expect("rec").connect_failures += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        seq += 1;
        let dice = rng.random_range(0..100);
        if dice < 20 {
            // A unique key: acknowledged means it must be on every node at the end.
            let (key, value) = (format!("u:{id}:{seq}"), format!("{id}.{seq}"));
            match c.request(&["SET", key.as_str(), value.as_str()]) {
                Ok(Frame::Simple(s)) if &s[..] == b"OK" => {
                    let ret = micros(t0);
                    let mut r = rec.lock().expect("rec");
                    r.acked.push((key, value, ret));
                    r.write_returns.push(ret);
                }
                Ok(Frame::Error(e)) if e.starts_with(b"TRYAGAIN") => {
                    rec.lock().expect("rec").tryagain += 1;
                    conn = None;
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => conn = None,
            }
            continue;
        }
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let (op, args): (Op, Vec<Vec<u8>>) = if dice < 55 {
            (Op::Get, vec![b"GET".to_vec(), key.into()])
        } else if dice < 80 {
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
            Ok(reply) => classify(&op, reply),
            Err(_) => Outcome::Unknown,
        };
        let mut r = rec.lock().expect("rec");
        let operation = |ret: Option<u64>, output: Option<OpOutput>| Operation {
            client: id,
            key: key.as_bytes().to_vec(),
            op: op.clone(),
            call,
            ret,
            output,
        };
        match outcome {
            Outcome::Done(out) => {
                if !matches!(op, Op::Get) {
                    r.write_returns.push(ret);
                }
                r.ops.push(operation(Some(ret), Some(out)));
            }
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

/// The longest time in `[from, to]` (µs) without a completed write, given sorted return times:
/// (its length, when it began).
pub fn longest_write_gap(sorted_returns: &[u64], from: u64, to: u64) -> (u64, u64) {
    let mut last = from;
    let mut worst = (0, from);
    for &r in sorted_returns.iter().filter(|&&r| r >= from && r <= to) {
        if r - last > worst.0 {
            worst = (r - last, last);
        }
        last = r;
    }
    if to.saturating_sub(last) > worst.0 {
        worst = (to - last, last);
    }
    worst
}
