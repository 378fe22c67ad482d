//! Expiry semantics (Redis 7's, with time from the log): each test applies stamped entries at
//! chosen log times and checks replies, reads and snapshots.

use bytes::Bytes;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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

    /// Applies `command` in an entry stamped `at` (ms) and returns the reply.
    fn at(&mut self, at: u64, command: Command) -> Reply {
        let p = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command });
        self.index += 1;
        self.store.apply(self.index, &stamp_entry(&p, at)).expect("valid").expect("outcome").reply
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

fn setex(k: &str, v: &str, expiry: SetExpiry) -> Command {
    Command::SetEx {
        key: b(k),
        value: b(v),
        condition: SetCondition::Always,
        get: false,
        expiry,
        origin: ExpiryOrigin::Set,
    }
}

fn expire(k: &str, when: i64, seconds: bool, absolute: bool, condition: ExpireCondition) -> Command {
    Command::Expire { key: b(k), when, seconds, absolute, condition }
}

#[test]
fn set_px_expires_by_log_time_only() {
    let mut s = Clocked::new();
    assert_eq!(s.at(1000, setex("k", "v", SetExpiry::In(500))), Reply::Ok);
    assert_eq!(s.pttl("k"), Reply::Int(500));
    assert_eq!(s.q(Query::Ttl { key: b("k"), millis: false, absolute: false }), Reply::Int(1));
    assert_eq!(s.q(Query::Ttl { key: b("k"), millis: true, absolute: true }), Reply::Int(1500));
    assert_eq!(s.q(Query::Ttl { key: b("k"), millis: false, absolute: true }), Reply::Int(2));
    // Time moves only with entries: at exactly the deadline the key is still there (now > when).
    assert_eq!(s.at(1500, set("other", "x")), Reply::Ok);
    assert_eq!(s.get("k"), Reply::Bulk(b("v")));
    assert_eq!(s.pttl("k"), Reply::Int(0));
    assert_eq!(s.at(1501, set("other", "y")), Reply::Ok);
    assert_eq!(s.get("k"), Reply::Nil);
    assert_eq!(s.pttl("k"), Reply::Int(-2));
    assert_eq!(s.q(Query::Exists { keys: vec![b("k"), b("other")] }), Reply::Int(1));
    assert_eq!(s.q(Query::Strlen { key: b("k") }), Reply::Int(0));
    // Not swept yet: DBSIZE counts it, as Redis does.
    assert_eq!(s.q(Query::DbSize), Reply::Int(2));
    assert_eq!(s.at(1502, Command::Sweep { max: 10 }), Reply::Int(1));
    assert_eq!(s.q(Query::DbSize), Reply::Int(1));
    assert_eq!(s.store.expires_count(), 0);
}

#[test]
fn log_time_never_goes_back() {
    let mut s = Clocked::new();
    s.at(5000, setex("k", "v", SetExpiry::In(100)));
    // A new leader whose clock is behind: its stamp does not move the log time back.
    s.at(10, set("x", "1"));
    assert_eq!(s.store.time(), 5000);
    s.at(5101, set("x", "2"));
    assert_eq!(s.get("k"), Reply::Nil);
    s.at(0, set("x", "3"));
    assert_eq!(s.get("k"), Reply::Nil);
    // Unstamped (format 1) entries leave the time alone.
    let p = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command: set("y", "1") });
    s.index += 1;
    s.store.apply(s.index, &p).unwrap();
    assert_eq!(s.store.time(), 5101);
}

#[test]
fn plain_writes_clear_or_keep_deadlines_like_redis() {
    let mut s = Clocked::new();
    s.at(0, setex("k", "1", SetExpiry::In(1000)));
    // INCR and APPEND keep the deadline.
    assert_eq!(s.at(1, Command::IncrBy { key: b("k"), by: 1 }), Reply::Int(2));
    assert_eq!(s.pttl("k"), Reply::Int(999));
    s.at(2, Command::Append { key: b("k"), value: b("0") });
    assert_eq!(s.pttl("k"), Reply::Int(998));
    // SET NX that fails keeps it; KEEPTTL keeps it; plain SET clears it.
    let nx = Command::Set { key: b("k"), value: b("z"), condition: SetCondition::IfAbsent, get: false };
    assert_eq!(s.at(3, nx), Reply::Nil);
    assert_eq!(s.pttl("k"), Reply::Int(997));
    assert_eq!(s.at(4, setex("k", "a", SetExpiry::Keep)), Reply::Ok);
    assert_eq!(s.pttl("k"), Reply::Int(996));
    assert_eq!(s.at(5, set("k", "b")), Reply::Ok);
    assert_eq!(s.pttl("k"), Reply::Int(-1));
    // MSET clears it too; DEL of an expired key counts nothing.
    s.at(6, setex("m", "1", SetExpiry::In(10)));
    s.at(7, Command::MSet { pairs: vec![(b("m"), b("2"))] });
    assert_eq!(s.pttl("m"), Reply::Int(-1));
    s.at(8, setex("d", "1", SetExpiry::In(1)));
    assert_eq!(s.at(100, Command::Del { keys: vec![b("d"), b("m")] }), Reply::Int(1));
    // INCR on an expired key starts from 0, without a deadline.
    s.at(101, setex("c", "41", SetExpiry::In(1)));
    assert_eq!(s.at(200, Command::IncrBy { key: b("c"), by: 1 }), Reply::Int(1));
    assert_eq!(s.pttl("c"), Reply::Int(-1));
    // SET NX succeeds on an expired key.
    s.at(201, setex("n", "old", SetExpiry::In(1)));
    let nx = Command::Set { key: b("n"), value: b("new"), condition: SetCondition::IfAbsent, get: true };
    assert_eq!(s.at(300, nx), Reply::Nil);
    assert_eq!(s.get("n"), Reply::Bulk(b("new")));
}

#[test]
fn expire_conditions_follow_redis() {
    use ExpireCondition::*;
    let mut s = Clocked::new();
    assert_eq!(s.at(1000, expire("k", 10, true, false, Always)), Reply::Int(0), "missing key");
    s.at(1000, set("k", "v"));
    assert_eq!(s.at(1000, expire("k", 10, true, false, IfSome)), Reply::Int(0));
    assert_eq!(s.at(1000, expire("k", 10, true, false, IfGreater)), Reply::Int(0), "none counts as infinite");
    assert_eq!(s.at(1000, expire("k", 10, true, false, IfLess)), Reply::Int(1));
    assert_eq!(s.pttl("k"), Reply::Int(10_000));
    assert_eq!(s.at(1000, expire("k", 20, true, false, IfNone)), Reply::Int(0));
    assert_eq!(s.at(1000, expire("k", 20, true, false, IfLess)), Reply::Int(0));
    assert_eq!(s.at(1000, expire("k", 20, true, false, IfGreater)), Reply::Int(1));
    assert_eq!(s.at(1000, expire("k", 5000, false, false, IfSomeLess)), Reply::Int(1));
    assert_eq!(s.pttl("k"), Reply::Int(5000));
    assert_eq!(s.at(1000, expire("k", 9_000, false, true, IfSome)), Reply::Int(1), "PEXPIREAT");
    assert_eq!(s.q(Query::Ttl { key: b("k"), millis: true, absolute: true }), Reply::Int(9000));
    assert_eq!(s.at(1000, Command::Persist { key: b("k") }), Reply::Int(1));
    assert_eq!(s.at(1000, Command::Persist { key: b("k") }), Reply::Int(0));
    assert_eq!(s.at(1000, expire("nokey", 1, true, false, IfSomeLess)), Reply::Int(0));
    s.at(1000, set("p", "v"));
    assert_eq!(s.at(1000, expire("p", 1, true, false, IfSomeLess)), Reply::Int(0), "XX LT needs a deadline");
    // A deadline not after the log time deletes the key at once (reply 1).
    assert_eq!(s.at(1000, expire("k", 0, true, false, Always)), Reply::Int(1));
    assert_eq!(s.get("k"), Reply::Nil);
    assert_eq!(s.q(Query::DbSize), Reply::Int(1));
    s.at(1000, set("k", "v"));
    assert_eq!(s.at(1000, expire("k", 1000, false, true, Always)), Reply::Int(1));
    assert_eq!(s.get("k"), Reply::Nil);
    // Overflows are Redis' error with the command's name.
    s.at(1000, set("k", "v"));
    assert_eq!(
        s.at(1000, expire("k", i64::MAX / 10, true, false, Always)),
        Reply::Error("ERR invalid expire time in 'expire' command".into())
    );
    assert_eq!(
        s.at(1000, expire("k", i64::MAX, false, false, Always)),
        Reply::Error("ERR invalid expire time in 'pexpire' command".into())
    );
    assert_eq!(s.pttl("k"), Reply::Int(-1));
}

#[test]
fn getex_getdel_and_set_get() {
    let mut s = Clocked::new();
    assert_eq!(s.at(0, Command::GetEx { key: b("k"), expiry: SetExpiry::In(10) }), Reply::Nil);
    s.at(0, set("k", "v"));
    assert_eq!(s.at(0, Command::GetEx { key: b("k"), expiry: SetExpiry::In(10) }), Reply::Bulk(b("v")));
    assert_eq!(s.pttl("k"), Reply::Int(10));
    assert_eq!(s.at(1, Command::GetEx { key: b("k"), expiry: SetExpiry::Default }), Reply::Bulk(b("v")));
    assert_eq!(s.pttl("k"), Reply::Int(9));
    assert_eq!(s.at(1, Command::GetEx { key: b("k"), expiry: SetExpiry::Persist }), Reply::Bulk(b("v")));
    assert_eq!(s.pttl("k"), Reply::Int(-1));
    assert_eq!(s.at(1, Command::GetEx { key: b("k"), expiry: SetExpiry::At(1) }), Reply::Bulk(b("v")));
    assert_eq!(s.get("k"), Reply::Nil, "a deadline in the past deletes");
    s.at(2, set("k", "v"));
    assert_eq!(s.at(2, Command::GetDel { key: b("k") }), Reply::Bulk(b("v")));
    assert_eq!(s.at(2, Command::GetDel { key: b("k") }), Reply::Nil);
    let set_get = Command::SetEx {
        key: b("g"),
        value: b("new"),
        condition: SetCondition::IfPresent,
        get: true,
        expiry: SetExpiry::In(5),
        origin: ExpiryOrigin::Set,
    };
    assert_eq!(s.at(3, set_get.clone()), Reply::Nil);
    assert_eq!(s.get("g"), Reply::Nil, "XX on a missing key writes nothing");
    s.at(3, set("g", "old"));
    assert_eq!(s.at(3, set_get), Reply::Bulk(b("old")));
    assert_eq!(s.pttl("g"), Reply::Int(5));
    assert_eq!(s.at(3, setex("x", "v", SetExpiry::At(2))), Reply::Ok);
    assert_eq!(s.get("x"), Reply::Nil, "EXAT in the past");
    let overflow = Command::SetEx {
        key: b("o"),
        value: b("v"),
        condition: SetCondition::Always,
        get: false,
        expiry: SetExpiry::In(i64::MAX),
        origin: ExpiryOrigin::PSetEx,
    };
    assert_eq!(s.at(3, overflow), Reply::Error("ERR invalid expire time in 'psetex' command".into()));
}

#[test]
fn sweeps_are_bounded_and_ordered() {
    let mut s = Clocked::new();
    for i in 0..25u64 {
        s.at(0, setex(&format!("k{i:02}"), "v", SetExpiry::In(100 - i as i64)));
    }
    s.at(0, setex("late", "v", SetExpiry::In(10_000)));
    assert_eq!(s.store.next_deadline(), Some(76));
    assert_eq!(s.at(200, Command::Sweep { max: 10 }), Reply::Int(10));
    // Earliest deadlines first: k24 (76) .. k15 (85) are gone.
    assert_eq!(s.store.next_deadline(), Some(86));
    assert_eq!(s.at(200, Command::Sweep { max: 10 }), Reply::Int(10));
    assert_eq!(s.at(200, Command::Sweep { max: 10 }), Reply::Int(5));
    assert_eq!(s.at(200, Command::Sweep { max: 10 }), Reply::Int(0));
    assert_eq!(s.store.len(), 1);
    assert_eq!(s.store.expires_count(), 1);
}

#[test]
fn snapshots_carry_deadlines_and_time() {
    let mut s = Clocked::new();
    s.at(1000, setex("a", "1", SetExpiry::In(500)));
    s.at(1000, set("b", "2"));
    s.at(1200, setex("c", "3", SetExpiry::At(9000)));
    let image = s.store.snapshot();
    let restored = KvStore::restore(&image).expect("restores");
    assert_eq!(restored, s.store);
    assert_eq!(restored.time(), 1200);
    assert_eq!(restored.query(&Query::Ttl { key: b("a"), millis: true, absolute: false }), Reply::Int(300));
    assert_eq!(restored.snapshot(), image, "canonical");
    // The restored store expires exactly like the original.
    let mut r = Clocked { store: restored, index: s.index };
    s.at(1501, set("x", "1"));
    r.at(1501, set("x", "1"));
    assert_eq!(r.get("a"), Reply::Nil);
    assert_eq!(r.store, s.store);
}

#[test]
fn replicas_agree_whatever_their_clocks() {
    // The same log applied twice gives the same state: time is in the entries.
    let mut one = Clocked::new();
    let mut two = Clocked::new();
    let script: Vec<(u64, Command)> = vec![
        (10, setex("a", "1", SetExpiry::In(5))),
        (12, expire("b", 1, false, false, ExpireCondition::Always)),
        (20, set("b", "2")),
        (21, expire("b", 3, false, false, ExpireCondition::Always)),
        (30, Command::Sweep { max: 100 }),
    ];
    for (at, c) in script {
        assert_eq!(one.at(at, c.clone()), two.at(at, c));
    }
    assert_eq!(one.store.snapshot(), two.store.snapshot());
    assert_eq!(one.store.len(), 0);
}
