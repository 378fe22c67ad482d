//! Compare-and-set on a real 3-node cluster, through followers: `SET ... IFEQ|IFNE|IFDEQ|IFDNE`,
//! `DELEX`, `DIGEST` (Redis 8.4) with their replies and errors, inside `MULTI` (with `TIME`, the
//! entry's log time) and inside scripts; and the lock recipe of docs/LOCKS.md: mutual exclusion
//! and strictly increasing fencing tokens under contention from clients on every node, a lock
//! that survives the loss of the leader, and a stale holder that can neither release nor extend
//! a lock taken by another after its own expired.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

fn int(f: Frame) -> i64 {
    match f {
        Frame::Integer(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const DIGEST_ERR: &str = "ERR must be exactly 16 hexadecimal characters";
const DELEX_TYPE_ERR: &str = "ERR Key should be of string type if conditions are specified";

#[test]
fn compare_and_set_through_a_follower() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let mut c = cluster.connect((leader + 1) % 3).expect("connect");

    // SET ... IFEQ / IFNE: OK when written, nil when not; GET answers the old value either way.
    assert_eq!(c.request(&["SET", "k", "old"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["SET", "k", "new", "IFEQ", "old"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["SET", "k", "x", "IFEQ", "old"]).unwrap(), Frame::Null);
    assert_eq!(c.request(&["SET", "k", "x", "IFNE", "new", "GET"]).unwrap(), bulk("new"));
    assert_eq!(c.request(&["SET", "k", "x", "IFNE", "other", "GET"]).unwrap(), bulk("new"));
    assert_eq!(c.request(&["GET", "k"]).unwrap(), bulk("x"));
    // A missing key: IFEQ does not create it, IFNE does.
    assert_eq!(c.request(&["SET", "m", "v", "IFEQ", "v"]).unwrap(), Frame::Null);
    assert_eq!(c.request(&["EXISTS", "m"]).unwrap(), Frame::Integer(0));
    assert_eq!(c.request(&["SET", "m", "v", "IFNE", "v", "PX", "60000"]).unwrap(), Frame::ok());
    assert!(int(c.request(&["PTTL", "m"]).unwrap()) > 50_000);

    // DIGEST: XXH3-64 as 16 lower-case hex digits; IFDEQ/IFDNE take it in either case.
    assert_eq!(c.request(&["SET", "d", "Hello world"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["DIGEST", "d"]).unwrap(), bulk("b6acb9d84a38ff74"));
    assert_eq!(c.request(&["DIGEST", "nokey"]).unwrap(), Frame::Null);
    assert_eq!(c.request(&["SET", "d", "v2", "IFDNE", "b6acb9d84a38ff74"]).unwrap(), Frame::Null);
    assert_eq!(c.request(&["SET", "d", "v2", "IFDEQ", "B6ACB9D84A38FF74"]).unwrap(), Frame::ok());
    let d = text(&c.request(&["DIGEST", "d"]).unwrap());
    assert_eq!(d, engine::kv::digest_hex(engine::kv::digest(b"v2")));
    assert_eq!(c.request(&["DELEX", "d", "IFDNE", &d]).unwrap(), Frame::Integer(0));
    assert_eq!(c.request(&["DELEX", "d", "IFDEQ", &d]).unwrap(), Frame::Integer(1));
    assert_eq!(c.request(&["DELEX", "d", "IFDEQ", &d]).unwrap(), Frame::Integer(0));
    // A digest's length is checked only against a string: "d" is gone, so this is nil.
    assert_eq!(c.request(&["SET", "d", "v", "IFDEQ", "abc"]).unwrap(), Frame::Null);
    assert_eq!(c.request(&["SET", "k", "v", "IFDEQ", "abc"]).unwrap(), Frame::error(DIGEST_ERR));
    assert_eq!(err(&c.request(&["SET", "d", "v", "NX", "IFEQ", "a"]).unwrap()), "ERR syntax error");
    assert_eq!(
        err(&c.request(&["DELEX", "d", "IFEQ"]).unwrap()),
        "ERR wrong number of arguments for 'delex' command"
    );

    // DELEX: conditional on the value; without a condition, a DEL of any type.
    assert_eq!(c.request(&["SET", "lock", "tok"]).unwrap(), Frame::ok());
    assert_eq!(c.request(&["DELEX", "lock", "IFEQ", "other"]).unwrap(), Frame::Integer(0));
    assert_eq!(c.request(&["DELEX", "lock", "IFNE", "tok"]).unwrap(), Frame::Integer(0));
    assert_eq!(c.request(&["DELEX", "lock", "IFEQ", "tok"]).unwrap(), Frame::Integer(1));
    assert_eq!(c.request(&["DELEX", "lock"]).unwrap(), Frame::Integer(0));
    assert_eq!(c.request(&["HSET", "h", "f", "v"]).unwrap(), Frame::Integer(1));
    assert_eq!(err(&c.request(&["SET", "h", "v", "IFEQ", "v"]).unwrap()), WRONGTYPE);
    assert_eq!(err(&c.request(&["SET", "h", "v", "IFNE", "v", "GET"]).unwrap()), WRONGTYPE);
    assert_eq!(err(&c.request(&["DELEX", "h", "IFNE", "x"]).unwrap()), DELEX_TYPE_ERR);
    assert_eq!(err(&c.request(&["DIGEST", "h"]).unwrap()), WRONGTYPE);
    assert_eq!(c.request(&["DELEX", "h"]).unwrap(), Frame::Integer(1));

    // Inside MULTI: one entry; TIME is the entry's log time (the leader's clock when it
    // stamped the entry), no longer refused.
    assert_eq!(c.request(&["SET", "t", "a"]).unwrap(), Frame::ok());
    for cmd in [
        &["MULTI"][..],
        &["SET", "t", "b", "IFEQ", "a"],
        &["DIGEST", "t"],
        &["TIME"],
        &["DELEX", "t", "IFEQ", "b"],
        &["EXEC"],
    ] {
        c.send(cmd).unwrap();
    }
    assert_eq!(c.receive().unwrap(), Frame::ok());
    for _ in 0..4 {
        assert_eq!(c.receive().unwrap(), Frame::simple("QUEUED"));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let Frame::Array(r) = c.receive().unwrap() else { panic!("EXEC must answer an array") };
    assert_eq!(r[0], Frame::ok());
    assert_eq!(r[1], Frame::bulk_from_slice(engine::kv::digest_hex(engine::kv::digest(b"b")).as_bytes()));
    let Frame::Array(time) = &r[2] else { panic!("TIME: {:?}", r[2]) };
    let secs: i64 = text(&time[0]).parse().unwrap();
    let micros: i64 = text(&time[1]).parse().unwrap();
    assert!((now - 5..=now).contains(&secs), "log time {secs} vs this host's {now}");
    assert!((0..1_000_000).contains(&micros) && micros % 1000 == 0, "{micros}");
    assert_eq!(r[3], Frame::Integer(1));

    // Inside a script (one entry on every replica).
    assert_eq!(c.request(&["SET", "s", "1"]).unwrap(), Frame::ok());
    let script = "local a = redis.call('SET', KEYS[1], ARGV[1], 'IFEQ', ARGV[2]) \
                  local d = redis.call('DIGEST', KEYS[1]) \
                  return {a, d, redis.call('DELEX', KEYS[1], 'IFDEQ', d)}";
    let r = c.request(&["EVAL", script, "1", "s", "2", "1"]).unwrap();
    let expected_digest = engine::kv::digest_hex(engine::kv::digest(b"2"));
    assert_eq!(r, Frame::Array(vec![Frame::ok(), bulk(&expected_digest), Frame::Integer(1)]));

    // Every node agrees (linearizable reads on each).
    for k in 0..3 {
        let mut n = cluster.connect(k).expect("connect");
        assert_eq!(n.request(&["GET", "k"]).unwrap(), bulk("x"), "node {k}");
        assert_eq!(n.request(&["EXISTS", "s", "t", "lock", "h"]).unwrap(), Frame::Integer(0), "node {k}");
    }

    // COMMAND GETKEYSANDFLAGS: a conditional SET reads the old value, a plain DELEX does not.
    let flags = |fs: &[&'static str]| Frame::Array(fs.iter().map(|f| Frame::simple(f)).collect());
    assert_eq!(
        c.request(&["COMMAND", "GETKEYSANDFLAGS", "SET", "k", "v", "IFEQ", "x"]).unwrap(),
        Frame::Array(vec![Frame::Array(vec![bulk("k"), flags(&["RW", "access", "update"])])])
    );
    assert_eq!(
        c.request(&["COMMAND", "GETKEYSANDFLAGS", "DELEX", "k"]).unwrap(),
        Frame::Array(vec![Frame::Array(vec![bulk("k"), flags(&["RM", "delete"])])])
    );

    // COMMAND INFO knows the new commands (arity, one key at position 1).
    let Frame::Array(info) = c.request(&["COMMAND", "INFO", "DELEX", "DIGEST"]).unwrap() else { panic!() };
    for (entry, (name, arity)) in info.iter().zip([("delex", -2), ("digest", 2)]) {
        let Frame::Array(f) = entry else { panic!("{entry:?}") };
        assert_eq!(
            (f[0].clone(), f[1].clone(), f[3].clone(), f[4].clone()),
            (bulk(name), Frame::Integer(arity), Frame::Integer(1), Frame::Integer(1))
        );
    }
}

/// Commands and the bytes Redis answered, in RESP2 and (where they differ) RESP3, recorded from
/// a Redis server built from source: 8.6.3 (Debian's upstream tarball redis_8.6.3.orig.tar.gz;
/// these commands' code is 8.4's, see docs/REDIS.md), with redis-server on loopback, the rows run
/// in this order after FLUSHALL (and HELLO 3 for RESP3). A row of several commands is a MULTI
/// block sent at once; its bytes are every reply in order.
#[rustfmt::skip]
const REDIS_8_4_REPLIES: &[Row] = &[
    (&[&["SET", "s", "old"]], b"+OK\r\n", None),
    (&[&["HSET", "h", "f", "v"]], b":1\r\n", None),
    (&[&["SET", "i", "123"]], b"+OK\r\n", None),
    (&[&["SET", "s", "new", "IFDEQ", "abc"]], b"-ERR must be exactly 16 hexadecimal characters\r\n", None),
    (&[&["SET", "m", "new", "IFDEQ", "abc"]], b"$-1\r\n", Some(b"_\r\n")),
    (&[&["SET", "m", "new", "IFDEQ", "abc", "GET"]], b"$-1\r\n", Some(b"_\r\n")),
    (&[&["SET", "m", "new", "IFDNE", "abc", "PX", "100000"]], b"+OK\r\n", None),
    (&[&["GET", "m"]], b"$3\r\nnew\r\n", None),
    (&[&["SET", "h", "new", "IFDEQ", "abc"]], b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", None),
    (&[&["SET", "h", "new", "IFDNE", "abc", "GET"]], b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", None),
    (&[&["SET", "s", "new", "IFDEQ", "zzzzzzzzzzzzzzzz"]], b"$-1\r\n", Some(b"_\r\n")),
    (&[&["SET", "s", "new", "IFDNE", "ZZZZZZZZZZZZZZZZ", "GET"]], b"$3\r\nold\r\n", None),
    (&[&["GET", "s"]], b"$3\r\nnew\r\n", None),
    (&[&["SET", "s", "v2", "IFEQ", "nope", "ifeq", "new"]], b"+OK\r\n", None),
    (&[&["SET", "s", "x", "IFEQ", "a", "IFNE", "b"]], b"-ERR syntax error\r\n", None),
    (&[&["SET", "s", "x", "IFDEQ", "abc", "EX", "0"]], b"-ERR invalid expire time in 'set' command\r\n", None),
    (&[&["SET", "h", "x", "IFDEQ", "abc", "EX", "abc"]], b"-ERR value is not an integer or out of range\r\n", None),
    (&[&["SET", "s", "x", "IFDEQ", "6c9a0f3ca07a8cc8", "KEEPTTL"]], b"$-1\r\n", Some(b"_\r\n")),
    (&[&["SET", "i", "124", "IFDEQ", "404A763B3F4C8C9A"]], b"+OK\r\n", None),
    (&[&["DIGEST", "i"]], b"$16\r\n8c9308c37dd84938\r\n", None),
    (&[&["DIGEST", "h"]], b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", None),
    (&[&["DIGEST", "nokey"]], b"$-1\r\n", Some(b"_\r\n")),
    (&[&["DIGEST", "s"]], b"$16\r\n2225df3932692638\r\n", None),
    (&[&["DELEX", "s", "IFEQ"]], b"-ERR wrong number of arguments for 'delex' command\r\n", None),
    (&[&["DELEX", "s", "IFEQ", "a", "b"]], b"-ERR wrong number of arguments for 'delex' command\r\n", None),
    (&[&["DELEX", "nokey", "FOO", "bar"]], b":0\r\n", None),
    (&[&["DELEX", "s", "FOO", "bar"]], b"-ERR Invalid condition. Use IFEQ, IFNE, IFDEQ, or IFDNE\r\n", None),
    (&[&["DELEX", "h", "FOO", "bar"]], b"-ERR Key should be of string type if conditions are specified\r\n", None),
    (&[&["DELEX", "h", "IFEQ", "v"]], b"-ERR Key should be of string type if conditions are specified\r\n", None),
    (&[&["DELEX", "h", "IFDEQ", "abc"]], b"-ERR Key should be of string type if conditions are specified\r\n", None),
    (&[&["DELEX", "nokey", "IFDEQ", "abc"]], b":0\r\n", None),
    (&[&["DELEX", "s", "IFDEQ", "abc"]], b"-ERR must be exactly 16 hexadecimal characters\r\n", None),
    (&[&["DELEX", "s", "IFDEQ", "ZZZZZZZZZZZZZZZZ"]], b":0\r\n", None),
    (&[&["DELEX", "s", "IFDNE", "zzzzzzzzzzzzzzzz"]], b":1\r\n", None),
    (&[&["EXISTS", "s"]], b":0\r\n", None),
    (&[&["SET", "s", "old"]], b"+OK\r\n", None),
    (&[&["MULTI"], &["DELEX", "s", "IFEQ"], &["DELEX", "s", "FOO", "bar"], &["SET", "s", "new", "IFDEQ", "abc"], &["DELEX", "s", "IFDEQ", "0f3ca07a8cc8bf40"], &["EXEC"]], b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n-ERR wrong number of arguments for 'delex' command\r\n-ERR Invalid condition. Use IFEQ, IFNE, IFDEQ, or IFDNE\r\n-ERR must be exactly 16 hexadecimal characters\r\n:1\r\n", None),
    (&[&["EVAL", "return redis.pcall('DELEX', KEYS[1], 'IFEQ')", "1", "s"]], b"-ERR wrong number of arguments for 'delex' command\r\n", None),
    (&[&["EVAL", "return redis.pcall('DELEX', KEYS[1], 'NOPE', 'x')", "1", "s"]], b":0\r\n", None),
    (&[&["EVAL", "return redis.pcall('SET', KEYS[1], 'v', 'IFDEQ', 'abc')", "1", "s"]], b"$-1\r\n", Some(b"_\r\n")),
];

/// The commands of a row, Redis's RESP2 bytes, and its RESP3 bytes if they differ.
type Row = (&'static [&'static [&'static str]], &'static [u8], Option<&'static [u8]>);

/// Sends a row's commands on a raw connection and reads exactly as many bytes as Redis sent.
fn raw_row(s: &mut std::net::TcpStream, cmds: &[&[&str]], len: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut out = Vec::new();
    for cmd in cmds {
        out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
        for a in *cmd {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    s.write_all(&out).unwrap();
    let mut got = vec![0; len];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn replies_are_redis_8_4_byte_for_byte_in_resp2_and_resp3() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let addr = cluster.addr((leader + 1) % 3);
    for resp3 in [false, true] {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(raw_row(&mut s, &[&["FLUSHALL"]], 5), b"+OK\r\n");
        if resp3 {
            // HELLO's map is long: read up to a marker.
            use std::io::{Read, Write};
            s.write_all(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$4\r\nECHO\r\n$4\r\nsync\r\n").unwrap();
            let mut seen = Vec::new();
            let mut byte = [0u8];
            while !seen.ends_with(b"$4\r\nsync\r\n") {
                s.read_exact(&mut byte).unwrap();
                seen.push(byte[0]);
            }
        }
        for (cmds, resp2_reply, resp3_reply) in REDIS_8_4_REPLIES {
            let expected = if resp3 { resp3_reply.unwrap_or(resp2_reply) } else { resp2_reply };
            let got = raw_row(&mut s, cmds, expected.len());
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "{cmds:?} (RESP{})",
                if resp3 { 3 } else { 2 }
            );
        }
        // Nothing more was sent than Redis sent.
        assert_eq!(raw_row(&mut s, &[&["PING"]], 7), b"+PONG\r\n");
    }
}

/// Where we answer differently from Redis 8.4 on purpose (docs/REDIS.md).
#[test]
fn deliberate_differences_from_redis_8_4() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let mut c = cluster.connect(leader).expect("connect");
    assert_eq!(c.request(&["SET", "s", "old"]).unwrap(), Frame::ok());
    // Redis 8.4 answers twice here (the old value, then the error), which leaves every later reply
    // on the connection one behind; we answer the error alone.
    assert_eq!(c.request(&["SET", "s", "new", "IFDEQ", "abc", "GET"]).unwrap(), Frame::error(DIGEST_ERR));
    assert_eq!(c.request(&["GET", "s"]).unwrap(), bulk("old"));
    // Redis 8.4 (through 8.6) takes NX/XX after a value condition (`IFEQ v NX` then never
    // writes, `IFNE v XX` needs the key) but refuses them before it; later releases refuse
    // both orders, as we do.
    for order in [["IFEQ", "old", "XX"], ["IFNE", "x", "NX"]] {
        let mut cmd = vec!["SET", "s", "new"];
        cmd.extend(order);
        assert_eq!(err(&c.request(&cmd).unwrap()), "ERR syntax error", "{cmd:?}");
    }
    assert_eq!(c.request(&["GET", "s"]).unwrap(), bulk("old"));
}

/// One lock holder's session: acquire with `SET NX PX`, read the fencing token, release with
/// `DELEX IFEQ` (docs/LOCKS.md).
struct Holder {
    c: Connection,
    token: String,
}

impl Holder {
    fn acquire(&mut self, ttl_ms: u64) -> bool {
        let ttl = ttl_ms.to_string();
        match self.c.request(&["SET", "lock", &self.token, "NX", "PX", &ttl]).unwrap() {
            Frame::Simple(_) => true,
            Frame::Null => false,
            other => panic!("acquire: {other:?}"),
        }
    }

    fn fence(&mut self) -> i64 {
        int(self.c.request(&["RAFT.VERSION", "lock"]).unwrap())
    }

    fn extend(&mut self, ttl_ms: u64) -> bool {
        let ttl = ttl_ms.to_string();
        match self.c.request(&["SET", "lock", &self.token, "IFEQ", &self.token, "PX", &ttl]).unwrap() {
            Frame::Simple(_) => true,
            Frame::Null => false,
            other => panic!("extend: {other:?}"),
        }
    }

    fn release(&mut self) -> i64 {
        int(self.c.request(&["DELEX", "lock", "IFEQ", &self.token]).unwrap())
    }
}

#[test]
fn lock_recipe_on_a_three_node_cluster() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let (fa, fb) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut a = Holder { c: cluster.connect(fa).expect("connect"), token: "token-a".into() };
    let mut b = Holder { c: cluster.connect(fb).expect("connect"), token: "token-b".into() };

    // Mutual exclusion; only the holder can release or extend.
    assert!(a.acquire(30_000));
    let fence_a = a.fence();
    assert!(!b.acquire(30_000));
    assert_eq!(b.release(), 0);
    assert!(!b.extend(30_000));
    assert!(a.extend(30_000));
    let fence_a2 = a.fence();
    assert!(fence_a2 > fence_a, "an extension is a write: {fence_a2} > {fence_a}");

    // The leader dies: the lock is still held by A (it was committed on a majority), B still
    // cannot take it, and A still can extend it.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    assert!(!b.acquire(30_000), "the lock survived the failover");
    assert_eq!(b.c.request(&["GET", "lock"]).unwrap(), bulk("token-a"));
    assert!(a.extend(500), "the holder extends after the failover");
    assert!(a.fence() > fence_a2);

    // A's lease runs out (A stalled): B takes the lock once the log time passes the deadline;
    // its fencing token is above every token A had; A can neither release nor extend it.
    let start = Instant::now();
    while !b.acquire(30_000) {
        assert!(start.elapsed() < Duration::from_secs(15), "the lock never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fence_b = b.fence();
    assert!(fence_b > fence_a2);
    assert_eq!(a.release(), 0, "a stale holder's release must not delete the new holder's lock");
    assert!(!a.extend(30_000), "a stale holder cannot extend the new holder's lock");
    assert_eq!(a.c.request(&["GET", "lock"]).unwrap(), bulk("token-b"));
    assert_eq!(b.release(), 1);
    cluster.start_node(leader);
    cluster.wait_leader(Duration::from_secs(20));

    // Contention from clients on every node: at most one holder at a time (a read-modify-write
    // of `resource` in the critical section loses no update), every release by the holder
    // succeeds, and the fencing tokens the holders pass on strictly increase.
    const CLIENTS: usize = 6;
    const EACH: usize = 4;
    let fences = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = cluster.addr(i % 3);
            let fences = Arc::clone(&fences);
            std::thread::spawn(move || {
                let c = Connection::connect(&addr, Duration::from_secs(2)).expect("connect");
                c.set_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut h = Holder { c, token: format!("client-{i}") };
                for _ in 0..EACH {
                    let start = Instant::now();
                    while !h.acquire(10_000) {
                        assert!(start.elapsed() < Duration::from_secs(60), "starved");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let fence = h.fence();
                    // The guarded resource: it refuses a token not above the last it saw.
                    fences.lock().unwrap().push(fence);
                    let n: i64 = match h.c.request(&["GET", "resource"]).unwrap() {
                        Frame::Bulk(b) => String::from_utf8_lossy(&b).parse().unwrap(),
                        _ => 0,
                    };
                    assert_eq!(h.c.request(&["SET", "resource", &(n + 1).to_string()]).unwrap(), Frame::ok());
                    assert_eq!(h.release(), 1, "the holder releases its own lock");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fences = fences.lock().unwrap();
    assert_eq!(fences.len(), CLIENTS * EACH);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fencing tokens must strictly increase: {fences:?}");
    for k in 0..3 {
        let mut n = cluster.connect(k).expect("connect");
        assert_eq!(n.request(&["GET", "resource"]).unwrap(), bulk(&(CLIENTS * EACH).to_string()), "node {k}");
    }
}
