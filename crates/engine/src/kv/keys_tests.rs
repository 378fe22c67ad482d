//! Key-space and string commands (Redis 7's semantics): RENAME/RENAMENX/COPY with deadlines,
//! FLUSHALL, MSETNX, SETRANGE/GETRANGE, INCRBYFLOAT, KEYS, SCAN (exactly once under concurrent
//! writes), TYPE, RANDOMKEY, and snapshots of what they leave.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(b(s))
}

fn err(s: &str) -> Reply {
    Reply::Error(s.to_owned())
}

/// A store fed with entries stamped at explicit times.
struct Clocked {
    store: KvStore,
    index: u64,
}

impl Clocked {
    fn new() -> Self {
        Clocked { store: KvStore::new(), index: 0 }
    }

    fn at(&mut self, at: u64, command: Command) -> Reply {
        let p = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command });
        self.index += 1;
        self.store.apply(self.index, &stamp_entry(&p, at)).expect("valid").expect("outcome").reply
    }

    fn run(&mut self, command: Command) -> Reply {
        self.at(1000, command)
    }

    fn q(&self, q: Query) -> Reply {
        self.store.query(&q)
    }

    fn get(&self, k: &str) -> Reply {
        self.q(Query::Get { key: b(k) })
    }

    fn pttl(&self, k: &str) -> Reply {
        self.q(Query::Ttl { key: b(k), millis: true, absolute: false })
    }
}

fn set(k: &str, v: &str) -> Command {
    Command::Set { key: b(k), value: b(v), condition: SetCondition::Always, get: false }
}

fn setpx(k: &str, v: &str, ms: i64) -> Command {
    Command::SetEx {
        key: b(k),
        value: b(v),
        condition: SetCondition::Always,
        get: false,
        expiry: SetExpiry::In(ms),
        origin: ExpiryOrigin::Set,
    }
}

fn rename(src: &str, dst: &str, nx: bool) -> Command {
    Command::Rename { src: b(src), dst: b(dst), nx }
}

fn copy(src: &str, dst: &str, replace: bool) -> Command {
    Command::Copy { src: b(src), dst: b(dst), replace }
}

fn scan(after: Option<&Bytes>, pattern: Option<&str>, count: u64) -> Query {
    Query::Scan { after: after.cloned(), pattern: pattern.map(b), count, kind: None }
}

/// Splits a SCAN step's reply into (position, keys).
fn step(reply: Reply) -> (Option<Bytes>, Vec<Bytes>) {
    let Reply::Array(mut items) = reply else { panic!("not an array: {reply:?}") };
    let Some(Reply::Array(keys)) = items.pop() else { panic!("no keys") };
    let position = match items.pop() {
        Some(Reply::Bulk(k)) => Some(k),
        Some(Reply::Nil) => None,
        other => panic!("bad position {other:?}"),
    };
    let keys = keys
        .into_iter()
        .map(|k| match k {
            Reply::Bulk(k) => k,
            other => panic!("bad key {other:?}"),
        })
        .collect();
    (position, keys)
}

#[test]
fn rename_moves_value_and_deadline() {
    let mut c = Clocked::new();
    assert_eq!(c.run(rename("a", "b", false)), err("ERR no such key"));
    assert_eq!(c.run(rename("a", "b", true)), err("ERR no such key"));
    c.at(1000, setpx("a", "1", 5000));
    c.at(1000, setpx("b", "old", 100_000));
    assert_eq!(c.at(2000, rename("a", "b", false)), Reply::Ok);
    assert_eq!(c.get("a"), Reply::Nil);
    assert_eq!(c.get("b"), bulk("1"));
    assert_eq!(c.pttl("b"), Reply::Int(4000));
    // A destination without the source's deadline loses its own.
    c.run(set("x", "no ttl"));
    c.at(2000, setpx("y", "ttl", 100_000));
    assert_eq!(c.at(2000, rename("x", "y", false)), Reply::Ok);
    assert_eq!(c.pttl("y"), Reply::Int(-1));
    // Same name: OK for RENAME, 0 for RENAMENX; nothing changes.
    assert_eq!(c.at(2000, rename("y", "y", false)), Reply::Ok);
    assert_eq!(c.at(2000, rename("y", "y", true)), Reply::Int(0));
    assert_eq!(c.get("y"), bulk("no ttl"));
    // RENAMENX refuses an existing destination.
    c.run(set("z", "z"));
    assert_eq!(c.at(2000, rename("y", "z", true)), Reply::Int(0));
    assert_eq!(c.at(2000, rename("y", "w", true)), Reply::Int(1));
    assert_eq!(c.get("w"), bulk("no ttl"));
    // An expired source does not exist.
    assert_eq!(c.at(7000, rename("b", "q", false)), err("ERR no such key"));
    assert_eq!(c.store.expires_count(), 0);
    // The destination's version is the renaming entry.
    let idx = c.index + 1;
    c.run(rename("w", "v", false));
    assert_eq!(c.q(Query::Version { key: b("v") }), Reply::Int(idx as i64));
}

#[test]
fn copy_copies_value_and_deadline() {
    let mut c = Clocked::new();
    assert_eq!(c.run(copy("a", "b", false)), Reply::Int(0));
    assert_eq!(c.run(copy("a", "a", false)), err("ERR source and destination objects are the same"));
    c.at(1000, setpx("a", "1", 5000));
    assert_eq!(c.at(1000, copy("a", "b", false)), Reply::Int(1));
    assert_eq!(c.get("b"), bulk("1"));
    assert_eq!(c.pttl("b"), Reply::Int(5000));
    assert_eq!(c.get("a"), bulk("1"));
    c.run(set("c", "2"));
    assert_eq!(c.at(1000, copy("c", "b", false)), Reply::Int(0));
    assert_eq!(c.at(1000, copy("c", "b", true)), Reply::Int(1));
    assert_eq!(c.get("b"), bulk("2"));
    assert_eq!(c.pttl("b"), Reply::Int(-1));
    assert_eq!(c.store.expires_count(), 1);
}

#[test]
fn flush_msetnx_and_snapshot() {
    let mut c = Clocked::new();
    c.at(1000, setpx("a", "1", 5000));
    c.run(set("b", "2"));
    assert_eq!(c.run(Command::Flush), Reply::Ok);
    assert_eq!(c.store.len(), 0);
    assert_eq!(c.store.expires_count(), 0);
    let pairs =
        |ps: &[(&str, &str)]| Command::MSetNx { pairs: ps.iter().map(|(k, v)| (b(k), b(v))).collect() };
    assert_eq!(c.run(pairs(&[("a", "1"), ("b", "2")])), Reply::Int(1));
    assert_eq!(c.run(pairs(&[("c", "3"), ("b", "x")])), Reply::Int(0));
    assert_eq!(c.get("c"), Reply::Nil);
    assert_eq!(c.get("b"), bulk("2"));
    assert_eq!(
        c.run(Command::MSetNx { pairs: vec![] }),
        err("ERR wrong number of arguments for 'msetnx' command")
    );
    let restored = KvStore::restore(&c.store.snapshot()).expect("restore");
    assert_eq!(restored, c.store);
}

#[test]
fn setrange_and_getrange_follow_redis() {
    let mut c = Clocked::new();
    let setrange = |k: &str, o: u64, v: &str| Command::SetRange { key: b(k), offset: o, value: b(v) };
    let getrange = |k: &str, s: i64, e: i64| Query::GetRange { key: b(k), start: s, end: e };
    assert_eq!(c.run(setrange("k", 0, "")), Reply::Int(0));
    assert_eq!(c.get("k"), Reply::Nil);
    assert_eq!(c.run(setrange("k", 3, "ab")), Reply::Int(5));
    assert_eq!(c.get("k"), Reply::Bulk(Bytes::from_static(b"\0\0\0ab")));
    assert_eq!(c.run(setrange("k", 1, "XYZW")), Reply::Int(5));
    assert_eq!(c.get("k"), Reply::Bulk(Bytes::from_static(b"\0XYZW")));
    assert_eq!(c.run(setrange("k", 0, "")), Reply::Int(5));
    c.at(1000, setpx("t", "Hello World", 5000));
    assert_eq!(c.run(setrange("t", 6, "Redis")), Reply::Int(11));
    assert_eq!(c.get("t"), bulk("Hello Redis"));
    assert_eq!(c.pttl("t"), Reply::Int(5000), "SETRANGE keeps the deadline");
    let too_far = setrange("k", MAX_VALUE_LEN as u64, "x");
    assert_eq!(
        c.run(too_far),
        err(&format!("ERR string exceeds maximum allowed size ({MAX_VALUE_LEN} bytes)"))
    );
    c.run(set("s", "This is a string"));
    for (s, e, want) in [
        (0, 3, "This"),
        (-3, -1, "ing"),
        (0, -1, "This is a string"),
        (10, 100, "string"),
        (-1, -5, ""),
        (5, 3, ""),
        (-100, 3, "This"),
        (i64::MIN, i64::MAX, "This is a string"),
        (20, 30, ""),
    ] {
        assert_eq!(c.q(getrange("s", s, e)), bulk(want), "GETRANGE s {s} {e}");
    }
    assert_eq!(c.q(getrange("nokey", 0, -1)), bulk(""));
}

#[test]
fn incrbyfloat_formats_like_redis() {
    let mut c = Clocked::new();
    let incr = |k: &str, by: &str| Command::IncrByFloat { key: b(k), by: b(by) };
    c.run(set("k", "10.50"));
    assert_eq!(c.run(incr("k", "0.1")), bulk("10.6"));
    assert_eq!(c.run(incr("k", "-5.0e3")), bulk("-4989.39999999999999991")); // as redis-server 7.0 on x86-64
    assert_eq!(c.run(incr("new", "3")), bulk("3"));
    assert_eq!(c.run(incr("new", "x")), err("ERR value is not a valid float"));
    c.run(set("text", "abc"));
    assert_eq!(c.run(incr("text", "1")), err("ERR value is not a valid float"));
    assert_eq!(c.run(incr("new", "inf")), err("ERR increment would produce NaN or Infinity"));
    assert_eq!(c.get("new"), bulk("3"));
    c.at(1000, setpx("t", "1", 5000));
    assert_eq!(c.run(incr("t", "1.5")), bulk("2.5"));
    assert_eq!(c.pttl("t"), Reply::Int(5000), "INCRBYFLOAT keeps the deadline");
}

#[test]
fn keys_type_and_randomkey() {
    let mut c = Clocked::new();
    for k in ["user:1", "user:2", "user:10", "other", "u"] {
        c.run(set(k, "v"));
    }
    c.at(1000, setpx("user:3", "v", 10));
    let keys = |c: &Clocked, p: &str| c.q(Query::Keys { pattern: b(p) });
    assert_eq!(
        keys(&c, "user:*"),
        Reply::Array(vec![bulk("user:1"), bulk("user:10"), bulk("user:2"), bulk("user:3")])
    );
    assert_eq!(keys(&c, "user:?"), Reply::Array(vec![bulk("user:1"), bulk("user:2"), bulk("user:3")]));
    assert_eq!(
        keys(&c, "*"),
        Reply::Array(["other", "u", "user:1", "user:10", "user:2", "user:3"].map(bulk).to_vec())
    );
    assert_eq!(keys(&c, "x*"), Reply::Array(vec![]));
    // After the deadline (a later entry advances the log time) the key is not listed.
    c.at(2000, set("zz", "v"));
    assert_eq!(keys(&c, "user:[23]"), Reply::Array(vec![bulk("user:2")]));
    let status = |s: &str| Reply::Status(s.to_owned());
    assert_eq!(c.q(Query::Type { key: b("u") }), status("string"));
    assert_eq!(c.q(Query::Type { key: b("user:3") }), status("none"));
    assert_eq!(c.q(Query::Type { key: b("nope") }), status("none"));
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let Reply::Bulk(k) = c.q(Query::RandomKey { seed }) else { panic!("no key") };
        assert_ne!(k, b("user:3"), "an expired key is never chosen");
        seen.insert(k);
        assert_eq!(c.q(Query::RandomKey { seed }), c.q(Query::RandomKey { seed }));
    }
    assert!(seen.len() >= 4, "RANDOMKEY reaches most keys: {seen:?}");
    assert_eq!(Clocked::new().q(Query::RandomKey { seed: 1 }), Reply::Nil);
}

#[test]
fn scan_steps_cover_everything_once() {
    let mut c = Clocked::new();
    for i in 0..25 {
        c.run(set(&format!("k{i:02}"), "v"));
    }
    c.run(set("other", "v"));
    let mut after: Option<Bytes> = None;
    let mut all = Vec::new();
    let mut steps = 0;
    loop {
        let (pos, keys) = step(c.q(scan(after.as_ref(), Some("k*"), 4)));
        all.extend(keys);
        steps += 1;
        match pos {
            Some(p) => after = Some(p),
            None => break,
        }
    }
    assert_eq!(all.len(), 25);
    assert_eq!(steps, 7, "25 keys 4 at a time: the last step ends the scan");
    // TYPE filters: strings only, nothing of another type.
    let typed = Query::Scan { after: None, pattern: None, count: 100, kind: Some(b("STRING")) };
    assert_eq!(step(c.q(typed)).1.len(), 26);
    let typed = Query::Scan { after: None, pattern: None, count: 100, kind: Some(b("hash")) };
    assert_eq!(step(c.q(typed)), (None, vec![]));
}

proptest! {
    /// The SCAN guarantee: while writes create and delete other keys between the steps, every
    /// key present for the whole scan is returned exactly once, and nothing is returned twice.
    #[test]
    fn scan_returns_stable_keys_exactly_once(
        initial in prop::collection::btree_set(0u16..400, 0..120),
        writes in prop::collection::vec((any::<bool>(), 0u16..400), 0..200),
        count in 1u64..12,
    ) {
        let mut c = Clocked::new();
        let name = |i: u16| format!("key:{i:03}");
        for i in &initial {
            c.run(set(&name(*i), "v"));
        }
        let mut present: BTreeMap<u16, bool> = initial.iter().map(|i| (*i, true)).collect();
        let mut touched = BTreeSet::new();
        let mut writes = writes.into_iter();
        let mut after: Option<Bytes> = None;
        let mut returned: Vec<Bytes> = Vec::new();
        loop {
            let (pos, keys) = step(c.q(scan(after.as_ref(), None, count)));
            returned.extend(keys);
            // Concurrent writes between steps.
            for (create, i) in writes.by_ref().take(3) {
                touched.insert(i);
                if create {
                    c.run(set(&name(i), "w"));
                    present.insert(i, true);
                } else {
                    c.run(Command::Del { keys: vec![b(&name(i))] });
                    present.insert(i, false);
                }
            }
            match pos {
                Some(p) => after = Some(p),
                None => break,
            }
        }
        let unique: BTreeSet<&Bytes> = returned.iter().collect();
        prop_assert_eq!(unique.len(), returned.len(), "a key was returned twice");
        for i in &initial {
            if !touched.contains(i) {
                prop_assert!(unique.contains(&b(&name(*i))), "stable key {} missed", name(*i));
            }
        }
    }
}
