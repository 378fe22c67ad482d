//! Behaviour tests of the state machine through its public API: Redis semantics, exactly-once
//! application, snapshot/restore, and a model-based property test.

use std::collections::BTreeMap;

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

fn set(key: &str, value: &str) -> Command {
    Command::Set { key: b(key), value: b(value), condition: SetCondition::Always, get: false }
}

fn set_with(key: &str, value: &str, condition: SetCondition, get: bool) -> Command {
    Command::Set { key: b(key), value: b(value), condition, get }
}

fn incr(key: &str, by: i64) -> Command {
    Command::IncrBy { key: b(key), by }
}

fn get(key: &str) -> Query {
    Query::Get { key: b(key) }
}

/// A test harness that numbers log entries and wraps commands into proposals.
struct Log {
    store: KvStore,
    index: u64,
}

impl Log {
    fn new() -> Self {
        Log { store: KvStore::new(), index: 0 }
    }

    fn propose(&mut self, session: u64, seq: u64, ack_below: u64, command: Command) -> Applied {
        let data = encode_proposal(&Proposal { session, seq, ack_below, command });
        self.index += 1;
        self.store.apply(self.index, &data).expect("valid entry").expect("non-empty entry yields an outcome")
    }

    /// Applies without duplicate detection and returns the reply.
    fn run(&mut self, command: Command) -> Reply {
        self.propose(NO_SESSION, 0, 0, command).reply
    }
}

#[test]
fn redis_semantics_table() {
    use SetCondition::*;
    // (command, expected reply), executed in order on one store.
    let script: Vec<(Command, Reply)> = vec![
        (set("a", "1"), Reply::Ok),
        (set_with("a", "2", IfAbsent, false), Reply::Nil),
        (set_with("b", "2", IfAbsent, false), Reply::Ok),
        (set_with("c", "3", IfPresent, false), Reply::Nil),
        (set_with("a", "10", IfPresent, false), Reply::Ok),
        (set_with("a", "11", Always, true), bulk("10")),
        (set_with("z", "1", Always, true), Reply::Nil),
        // GET with a failing condition still returns the old value, and does not write.
        (set_with("a", "12", IfAbsent, true), bulk("11")),
        (set_with("y", "1", IfPresent, true), Reply::Nil),
        (set_with("x", "1", IfAbsent, true), Reply::Nil),
        (Command::Del { keys: vec![b("x"), b("x"), b("nope"), b("z")] }, Reply::Int(2)),
        (Command::Del { keys: vec![b("x")] }, Reply::Int(0)),
        (Command::MSet { pairs: vec![(b("m"), b("1")), (b("n"), b("2")), (b("m"), b("3"))] }, Reply::Ok),
        (incr("m", 5), Reply::Int(8)),
        (incr("fresh", -3), Reply::Int(-3)),
        (incr("a", 0), Reply::Int(11)),
        (set("s", "abc"), Reply::Ok),
        (incr("s", 1), err("ERR value is not an integer or out of range")),
        (set("s", " 1"), Reply::Ok),
        (incr("s", 1), err("ERR value is not an integer or out of range")),
        (set("big", "9223372036854775806"), Reply::Ok),
        (incr("big", 1), Reply::Int(i64::MAX)),
        (incr("big", 1), err("ERR increment or decrement would overflow")),
        (set("small", "-9223372036854775807"), Reply::Ok),
        (incr("small", -1), Reply::Int(i64::MIN)),
        (incr("small", -1), err("ERR increment or decrement would overflow")),
        (Command::Append { key: b("ap"), value: b("hello") }, Reply::Int(5)),
        (Command::Append { key: b("ap"), value: b(" world") }, Reply::Int(11)),
        (Command::Append { key: b("empty"), value: b("") }, Reply::Int(0)),
        (Command::Append { key: b("m"), value: b("0") }, Reply::Int(2)),
        (incr("m", 1), Reply::Int(81)),
    ];
    let mut log = Log::new();
    for (i, (command, expected)) in script.into_iter().enumerate() {
        let got = log.run(command.clone());
        assert_eq!(got, expected, "step {i}: {command:?}");
    }
    let s = &log.store;
    let queries: Vec<(Query, Reply)> = vec![
        (get("a"), bulk("11")),
        (get("b"), bulk("2")),
        (get("c"), Reply::Nil),
        (get("x"), Reply::Nil),
        (get("y"), Reply::Nil),
        (get("ap"), bulk("hello world")),
        (get("empty"), bulk("")),
        (get("big"), bulk("9223372036854775807")),
        (get("m"), bulk("81")),
        (get("s"), bulk(" 1")),
        (
            Query::MGet { keys: vec![b("a"), b("nope"), b("b"), b("a")] },
            Reply::Array(vec![bulk("11"), Reply::Nil, bulk("2"), bulk("11")]),
        ),
        (Query::MGet { keys: vec![] }, Reply::Array(vec![])),
        (Query::Exists { keys: vec![b("a"), b("a"), b("nope"), b("b")] }, Reply::Int(3)),
        (Query::Strlen { key: b("ap") }, Reply::Int(11)),
        (Query::Strlen { key: b("nope") }, Reply::Int(0)),
        (Query::Strlen { key: b("empty") }, Reply::Int(0)),
        // a b n m fresh s big small ap empty
        (Query::DbSize, Reply::Int(10)),
    ];
    for (q, expected) in queries {
        assert_eq!(s.query(&q), expected, "{q:?}");
    }
    assert_eq!(s.len(), 10);
}

#[test]
fn invalid_commands_are_answered_not_executed() {
    let mut log = Log::new();
    let long_key = Bytes::from(vec![b'k'; MAX_KEY_LEN + 1]);
    let r = log.run(Command::Set {
        key: long_key.clone(),
        value: b("v"),
        condition: SetCondition::Always,
        get: false,
    });
    assert_eq!(r, err(&format!("ERR key exceeds the maximum length of {MAX_KEY_LEN} bytes")));
    assert_eq!(
        log.run(Command::Del { keys: vec![] }),
        err("ERR wrong number of arguments for 'del' command")
    );
    assert!(log.store.is_empty());
    // APPEND past the value limit is refused and leaves the value intact.
    let half = Bytes::from(vec![b'v'; MAX_VALUE_LEN / 2 + 1]);
    assert_eq!(log.run(Command::Append { key: b("k"), value: half.clone() }), Reply::Int(half.len() as i64));
    assert_eq!(
        log.run(Command::Append { key: b("k"), value: half.clone() }),
        err(&format!("ERR string exceeds maximum allowed size ({MAX_VALUE_LEN} bytes)"))
    );
    assert_eq!(log.store.query(&Query::Strlen { key: b("k") }), Reply::Int(half.len() as i64));
}

#[test]
fn append_does_not_disturb_readers_holding_the_old_value() {
    let mut log = Log::new();
    log.run(Command::Append { key: b("k"), value: b("ab") });
    let before = log.store.query(&get("k"));
    log.run(Command::Append { key: b("k"), value: b("cd") });
    assert_eq!(before, bulk("ab"));
    assert_eq!(log.store.query(&get("k")), bulk("abcd"));
    for _ in 0..100 {
        log.run(Command::Append { key: b("k"), value: b("x") });
    }
    assert_eq!(log.store.query(&Query::Strlen { key: b("k") }), Reply::Int(104));
}

#[test]
fn apply_index_rules_and_noops() {
    let mut s = KvStore::new();
    assert_eq!(s.apply(3, &[]), Ok(None));
    assert_eq!(s.applied_index(), 3);
    assert_eq!(s.apply(3, &[]), Err(KvError::IndexNotAfterApplied { index: 3, applied: 3 }));
    assert_eq!(s.apply(2, &[]), Err(KvError::IndexNotAfterApplied { index: 2, applied: 3 }));
    assert_eq!(s.advance_to(3), Err(KvError::IndexNotAfterApplied { index: 3, applied: 3 }));
    assert_eq!(s.advance_to(7), Ok(()));
    // A corrupt entry is an error and changes nothing.
    assert!(matches!(s.apply(8, &[1, 2, 3]), Err(KvError::BadProposal { .. })));
    assert!(matches!(s.apply(8, &[9]), Err(KvError::ProposalVersion { found: 9, .. })));
    assert_eq!(s.applied_index(), 7);
    let data = encode_proposal(&Proposal { session: 0, seq: 0, ack_below: 0, command: set("k", "v") });
    let applied = s.apply(8, &data).expect("ok").expect("outcome");
    assert_eq!(applied, Applied { index: 8, session: 0, seq: 0, reply: Reply::Ok, duplicate: false });
    assert_eq!(s.applied_index(), 8);
}

#[test]
fn same_proposal_twice_executes_once() {
    let mut log = Log::new();
    let first = log.propose(42, 1, 1, incr("c", 5));
    assert_eq!(first.reply, Reply::Int(5));
    assert!(!first.duplicate);
    let again = log.propose(42, 1, 1, incr("c", 5));
    assert_eq!(
        (again.session, again.seq, again.reply.clone(), again.duplicate),
        (42, 1, Reply::Int(5), true)
    );
    assert_eq!(log.store.query(&get("c")), bulk("5"));
    // Without a session, the same thing executes twice.
    log.run(incr("c", 5));
    log.run(incr("c", 5));
    assert_eq!(log.store.query(&get("c")), bulk("15"));
}

#[test]
fn acknowledged_seq_is_never_executed_again() {
    let mut log = Log::new();
    log.propose(7, 1, 1, incr("c", 1));
    log.propose(7, 2, 2, incr("c", 1)); // acknowledges seq 1
    assert_eq!(log.store.cached_reply_count(), 1);
    let late = log.propose(7, 1, 1, incr("c", 1));
    assert!(late.duplicate);
    assert_eq!(late.reply, err(DUPLICATE_FORGOTTEN_ERR));
    assert_eq!(log.store.query(&get("c")), bulk("2"));
}

#[test]
fn two_sessions_interleaved() {
    let mut log = Log::new();
    // Sessions A and B use the same seq numbers; they must not be confused.
    let a1 = log.propose(0xA, 1, 1, Command::Append { key: b("k"), value: b("a") });
    let b1 = log.propose(0xB, 1, 1, Command::Append { key: b("k"), value: b("b") });
    let a1_dup = log.propose(0xA, 1, 1, Command::Append { key: b("k"), value: b("a") });
    let b2 = log.propose(0xB, 2, 1, Command::Append { key: b("k"), value: b("B") });
    let a2 = log.propose(0xA, 2, 2, Command::Append { key: b("k"), value: b("A") });
    let b1_dup = log.propose(0xB, 1, 1, Command::Append { key: b("k"), value: b("b") });
    let b2_dup = log.propose(0xB, 2, 3, Command::Append { key: b("k"), value: b("B") });
    assert_eq!(
        [&a1, &b1, &a1_dup, &b2, &a2, &b1_dup].map(|x| (x.reply.clone(), x.duplicate)),
        [
            (Reply::Int(1), false),
            (Reply::Int(2), false),
            (Reply::Int(1), true),
            (Reply::Int(3), false),
            (Reply::Int(4), false),
            (Reply::Int(2), true),
        ]
    );
    // b2_dup carries ack_below 3: its cached reply is still returned, then dropped.
    assert_eq!((b2_dup.reply.clone(), b2_dup.duplicate), (Reply::Int(3), true));
    assert_eq!(log.store.query(&get("k")), bulk("abBA"));
    assert_eq!(log.store.session_count(), 2);
    // A keeps seq 2, B keeps nothing.
    assert_eq!(log.store.cached_reply_count(), 1);
}

#[test]
fn memory_stays_bounded_with_acknowledgements() {
    let mut log = Log::new();
    for seq in 1..=10_000u64 {
        // A proposer with a window of 3 in flight.
        let ack = seq.saturating_sub(3).max(1);
        log.propose(5, seq, ack, incr("n", 1));
        assert!(log.store.cached_reply_count() <= 4);
    }
    assert_eq!(log.store.query(&get("n")), bulk("10000"));
}

#[test]
fn session_eviction_is_deterministic_and_bounded() {
    const N: u64 = 2 * MAX_SESSIONS as u64;
    // Pseudo-random distinct ids; every 7th proposal re-uses one of five early sessions.
    let id_at =
        |i: u64| if i % 7 == 6 { 1 + (i / 7) % 5 } else { (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) };
    let run = || {
        let mut log = Log::new();
        for i in 0..N {
            log.propose(id_at(i), i + 1, 1, incr("n", 1));
        }
        log.store
    };
    let (a, b) = (run(), run());
    assert_eq!(a.session_count(), MAX_SESSIONS);
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a, b);
    // The survivors are exactly the MAX_SESSIONS ids with the latest last use.
    let mut last_use = BTreeMap::new();
    for i in 0..N {
        last_use.insert(id_at(i), i + 1);
    }
    let mut by_use: Vec<(u64, u64)> = last_use.into_iter().map(|(id, at)| (at, id)).collect();
    by_use.sort_unstable();
    let mut expected: Vec<u64> = by_use[by_use.len() - MAX_SESSIONS..].iter().map(|(_, id)| *id).collect();
    expected.sort_unstable();
    let survivors: Vec<u64> = a.sessions.sessions.keys().copied().collect();
    assert_eq!(survivors, expected);
    assert!((1..=5).all(|id| a.sessions.sessions.contains_key(&id)));
    assert_eq!(a.query(&get("n")), bulk(&N.to_string()));
}

#[test]
fn snapshot_restore_preserves_state_and_behaviour() {
    let mut log = Log::new();
    log.run(set("a", "1"));
    log.propose(9, 1, 1, incr("c", 1));
    log.propose(9, 2, 1, incr("c", 1));
    log.propose(11, 1, 1, Command::MSet { pairs: vec![(b("x"), b("1")), (b(""), b("empty key"))] });
    log.propose(12, 1, 1, set_with("a", "2", SetCondition::Always, true));
    let image = log.store.snapshot();
    let mut restored = Log { store: KvStore::restore(&image).expect("restore"), index: log.index };
    assert_eq!(restored.store, log.store);
    assert_eq!(restored.store.snapshot(), image);
    assert_eq!(restored.store.applied_index(), 5);

    // Identical behaviour afterwards, including duplicate detection and cached replies.
    let steps: Vec<(u64, u64, u64, Command)> = vec![
        (9, 2, 1, incr("c", 1)),                                    // duplicate, cached
        (9, 1, 1, incr("c", 1)),                                    // duplicate, cached
        (12, 1, 1, set_with("a", "3", SetCondition::Always, true)), // duplicate: old reply
        (9, 3, 3, incr("c", 1)),                                    // new
        (9, 1, 1, incr("c", 1)),                                    // forgotten
        (77, 5, 5, incr("c", 1)),                                   // expired session
    ];
    for (session, seq, ack, command) in steps {
        let x = log.propose(session, seq, ack, command.clone());
        let y = restored.propose(session, seq, ack, command);
        assert_eq!(x, y);
    }
    assert_eq!(log.store.query(&get("c")), bulk("3"));
    assert_eq!(log.store.query(&get("a")), bulk("2"));
    assert_eq!(restored.store.snapshot(), log.store.snapshot());
}

#[test]
fn damaged_snapshots_are_rejected() {
    let mut log = Log::new();
    log.run(set("key", "value"));
    log.propose(3, 1, 1, set_with("key", "v2", SetCondition::Always, true));
    let image = log.store.snapshot().to_vec();
    for i in 0..image.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = image.clone();
            bad[i] ^= bit;
            assert!(KvStore::restore(&bad).is_err(), "flip at byte {i} accepted");
        }
    }
    for len in 0..image.len() {
        assert!(KvStore::restore(&image[..len]).is_err(), "truncation to {len} accepted");
    }
    let mut longer = image.clone();
    longer.push(0);
    assert!(KvStore::restore(&longer).is_err());
    let mut flipped = image.clone();
    flipped[20] ^= 0x10;
    assert!(matches!(KvStore::restore(&flipped), Err(KvError::SnapshotChecksum { .. })));
    let mut future = image;
    future[8] = (SNAPSHOT_FORMAT_VERSION + 1) as u8;
    assert_eq!(
        KvStore::restore(&future),
        Err(KvError::SnapshotVersion {
            found: SNAPSHOT_FORMAT_VERSION + 1,
            supported: SNAPSHOT_FORMAT_VERSION
        })
    );
}

#[test]
fn snapshot_view_is_frozen_and_streams_the_same_image() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<SnapshotView>();

    let mut log = Log::new();
    log.run(set("a", "1"));
    log.propose(9, 1, 1, incr("c", 5));
    log.propose(9, 2, 1, Command::Append { key: b("a"), value: b("23") });
    let before = log.store.snapshot();
    let view = log.store.snapshot_view();
    assert_eq!((view.applied_index(), view.len(), view.session_count()), (3, 2, 1));

    // Writes after the view, including an in-place APPEND and a delete, do not reach it.
    log.propose(9, 3, 3, Command::Append { key: b("a"), value: b("4") });
    log.run(Command::Del { keys: vec![b("c")] });
    log.run(set("z", "9"));
    assert_eq!(log.store.query(&get("a")), bulk("1234"));

    let mut streamed = Vec::new();
    let n = view.write_to(&mut streamed).expect("write to a Vec");
    assert_eq!(n, streamed.len() as u64);
    assert_eq!(streamed, before.to_vec());
    let old = KvStore::restore(&streamed).expect("restore the view");
    assert_eq!(old.query(&get("a")), bulk("123"));
    assert_eq!(old.query(&get("c")), bulk("5"));
    assert_eq!(old.applied_index(), 3);
    assert_eq!(old.reply_for(9, 2), Some(Reply::Int(3)));

    // The live store's image is the view of its current state, byte for byte.
    let mut now = Vec::new();
    log.store.snapshot_view().write_to(&mut now).expect("write to a Vec");
    assert_eq!(now, log.store.snapshot().to_vec());
    assert_eq!(KvStore::restore(&now).expect("restore"), log.store);
}

/// A writer that accepts at most `chunk` bytes per call and counts the calls.
struct Trickle {
    out: Vec<u8>,
    chunk: usize,
    calls: usize,
    flushed: bool,
}

impl std::io::Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.out.extend_from_slice(&buf[..n]);
        self.calls += 1;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flushed = true;
        Ok(())
    }
}

#[test]
fn write_to_streams_in_chunks_and_passes_large_values_through() {
    let mut log = Log::new();
    let big = Bytes::from(vec![7u8; 3 * WRITE_CHUNK + 5]);
    log.run(Command::Set { key: b("big"), value: big.clone(), condition: SetCondition::Always, get: false });
    for i in 0..5000 {
        log.propose(1 + i % 3, 1 + i / 3, 1, set(&format!("k{i:05}"), "some value of a few bytes"));
    }
    // A cached reply carrying the large value.
    log.propose(
        4,
        1,
        1,
        Command::Set { key: b("big"), value: b("x"), condition: SetCondition::Always, get: true },
    );
    let image = log.store.snapshot();
    let mut t = Trickle { out: Vec::new(), chunk: 1000, calls: 0, flushed: false };
    let n = log.store.snapshot_view().write_to(&mut t).expect("write");
    assert_eq!(n as usize, image.len());
    assert_eq!(t.out, image.to_vec());
    assert!(t.flushed);
    assert!(t.calls > image.len() / 1000);
    let restored = KvStore::restore(&t.out).expect("restore");
    assert_eq!(restored, log.store);
    assert_eq!(restored.query(&get("big")), bulk("x"));
    assert_eq!(restored.reply_for(4, 1), Some(Reply::Bulk(big)));

    // An I/O error is returned, not swallowed.
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = log.store.snapshot_view().write_to(&mut Broken).expect_err("must fail");
    assert_eq!(e.to_string(), "disk on fire");
}

#[test]
fn restore_does_not_borrow_the_image() {
    let mut log = Log::new();
    log.run(set("key", "value"));
    log.propose(5, 1, 1, set_with("key", "v2", SetCondition::Always, true));
    let image = Bytes::from(log.store.snapshot().to_vec());
    let restored = KvStore::restore(&image).expect("restore");
    // The only reference to the image buffer is ours: nothing restored points into it.
    assert!(image.is_unique());
    assert_eq!(restored, log.store);
}

#[test]
fn reply_for_returns_cached_replies_only() {
    let mut log = Log::new();
    log.propose(9, 1, 1, incr("c", 1));
    log.propose(9, 2, 1, incr("c", 10));
    log.propose(NO_SESSION, 0, 0, incr("c", 100));
    assert_eq!(log.store.reply_for(9, 1), Some(Reply::Int(1)));
    assert_eq!(log.store.reply_for(9, 2), Some(Reply::Int(11)));
    assert_eq!(log.store.reply_for(9, 3), None, "never applied");
    assert_eq!(log.store.reply_for(8, 1), None, "unknown session");
    assert_eq!(log.store.reply_for(NO_SESSION, 0), None, "no session, no cache");
    // seq 3 acknowledges 1 and 2: their replies are dropped.
    log.propose(9, 3, 3, incr("c", 1000));
    assert_eq!(log.store.reply_for(9, 1), None);
    assert_eq!(log.store.reply_for(9, 2), None);
    assert_eq!(log.store.reply_for(9, 3), Some(Reply::Int(1111)));
    // A duplicate does not change the cached reply.
    assert!(log.propose(9, 3, 3, incr("c", 1000)).duplicate);
    assert_eq!(log.store.reply_for(9, 3), Some(Reply::Int(1111)));
    // It survives a snapshot.
    let restored = KvStore::restore(&log.store.snapshot()).expect("restore");
    assert_eq!(restored.reply_for(9, 3), Some(Reply::Int(1111)));
}

// ---- model-based property test -------------------------------------------------------------

/// A deliberately naive model of the same semantics over `Vec<u8>`.
#[derive(Default)]
struct Model {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Model {
    fn write(&mut self, c: &Command) -> Reply {
        match c {
            Command::Set { key, value, condition, get } => {
                let old = self.data.get(&key[..]).cloned();
                let ok = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => old.is_none(),
                    SetCondition::IfPresent => old.is_some(),
                };
                if ok {
                    self.data.insert(key.to_vec(), value.to_vec());
                }
                if *get {
                    old.map_or(Reply::Nil, |v| Reply::Bulk(Bytes::from(v)))
                } else if ok {
                    Reply::Ok
                } else {
                    Reply::Nil
                }
            }
            Command::Del { keys } => {
                let mut n = 0;
                for k in keys {
                    if self.data.remove(&k[..]).is_some() {
                        n += 1;
                    }
                }
                Reply::Int(n)
            }
            Command::MSet { pairs } => {
                for (k, v) in pairs {
                    self.data.insert(k.to_vec(), v.to_vec());
                }
                Reply::Ok
            }
            Command::IncrBy { key, by } => {
                let cur = match self.data.get(&key[..]) {
                    None => Some(0i64),
                    // The model parses with std and checks canonical form by round-tripping.
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok().filter(|n| n.to_string() == s)),
                };
                match cur {
                    None => Reply::Error("ERR value is not an integer or out of range".into()),
                    Some(cur) => match cur.checked_add(*by) {
                        None => Reply::Error("ERR increment or decrement would overflow".into()),
                        Some(n) => {
                            self.data.insert(key.to_vec(), n.to_string().into_bytes());
                            Reply::Int(n)
                        }
                    },
                }
            }
            Command::Append { key, value } => {
                let v = self.data.entry(key.to_vec()).or_default();
                v.extend_from_slice(value);
                Reply::Int(v.len() as i64)
            }
            // Expiry has its own tests (expiry_tests.rs); the model's commands never expire.
            other => unreachable!("the model has no {}", other.name()),
        }
    }

    fn read(&self, q: &Query) -> Reply {
        let get =
            |k: &Bytes| self.data.get(&k[..]).map_or(Reply::Nil, |v| Reply::Bulk(Bytes::from(v.clone())));
        match q {
            Query::Get { key } => get(key),
            Query::MGet { keys } => Reply::Array(keys.iter().map(get).collect()),
            Query::Exists { keys } => {
                Reply::Int(keys.iter().filter(|k| self.data.contains_key(&k[..])).count() as i64)
            }
            Query::Strlen { key } => Reply::Int(self.data.get(&key[..]).map_or(0, |v| v.len() as i64)),
            Query::DbSize => Reply::Int(self.data.len() as i64),
            other => unreachable!("not in the model: {other:?}"),
        }
    }
}

fn arb_key() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just(""), Just("a"), Just("b"), Just("c"), Just("counter")].prop_map(b)
}

fn arb_value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        any::<i64>().prop_map(|n| Bytes::from(n.to_string())),
        (-3i64..3).prop_map(|n| Bytes::from(n.to_string())),
        Just(b("01")),
        Just(b("-0")),
        Just(b("9223372036854775807")),
        "[a-z0-9 ]{0,4}".prop_map(|s| Bytes::from(s.into_bytes())),
    ]
}

fn arb_command() -> impl Strategy<Value = Command> {
    let cond =
        prop_oneof![Just(SetCondition::Always), Just(SetCondition::IfAbsent), Just(SetCondition::IfPresent)];
    prop_oneof![
        (arb_key(), arb_value(), cond, any::<bool>()).prop_map(|(key, value, condition, get)| Command::Set {
            key,
            value,
            condition,
            get
        }),
        prop::collection::vec(arb_key(), 1..4).prop_map(|keys| Command::Del { keys }),
        prop::collection::vec((arb_key(), arb_value()), 1..4).prop_map(|pairs| Command::MSet { pairs }),
        (arb_key(), prop_oneof![any::<i64>(), -5i64..5, Just(i64::MAX), Just(i64::MIN)])
            .prop_map(|(key, by)| Command::IncrBy { key, by }),
        (arb_key(), arb_value()).prop_map(|(key, value)| Command::Append { key, value }),
    ]
}

fn arb_query() -> impl Strategy<Value = Query> {
    prop_oneof![
        arb_key().prop_map(|key| Query::Get { key }),
        prop::collection::vec(arb_key(), 0..4).prop_map(|keys| Query::MGet { keys }),
        prop::collection::vec(arb_key(), 0..4).prop_map(|keys| Query::Exists { keys }),
        arb_key().prop_map(|key| Query::Strlen { key }),
        Just(Query::DbSize),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Write(Command),
    Read(Query),
    /// Re-apply the proposal made this many writes ago (a duplicate in the log).
    Retry(usize),
    /// Snapshot, restore, continue with the restored store.
    Snapshot,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => arb_command().prop_map(Op::Write),
        3 => arb_query().prop_map(Op::Read),
        1 => (0usize..4).prop_map(Op::Retry),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    /// Random command sequences with duplicates and snapshot/restore cycles give the same
    /// replies as the model, and duplicates never execute.
    #[test]
    fn store_matches_model(ops in prop::collection::vec(arb_op(), 1..80)) {
        let mut log = Log::new();
        let mut model = Model::default();
        let session = 0xDEAD_BEEF;
        let mut proposals: Vec<(u64, Command, Reply)> = Vec::new();
        // The first snapshot's view and image: the view must still write that image at the end.
        let mut frozen: Option<(SnapshotView, Bytes)> = None;
        for op in ops {
            match op {
                Op::Write(c) => {
                    let seq = proposals.len() as u64 + 1;
                    // Keep the last 4 proposals unacknowledged so that retries hit the cache.
                    let ack = seq.saturating_sub(4).max(1);
                    let got = log.propose(session, seq, ack, c.clone());
                    let want = model.write(&c);
                    prop_assert_eq!(&got.reply, &want, "{:?}", c);
                    prop_assert!(!got.duplicate);
                    proposals.push((seq, c, want));
                }
                Op::Read(q) => prop_assert_eq!(log.store.query(&q), model.read(&q), "{:?}", q),
                Op::Retry(back) => {
                    if let Some((seq, c, reply)) = proposals.iter().rev().nth(back).cloned() {
                        let ack = (proposals.len() as u64 + 1).saturating_sub(4).max(1);
                        let got = log.propose(session, seq, ack, c);
                        prop_assert!(got.duplicate);
                        prop_assert_eq!(got.reply, reply);
                    }
                }
                Op::Snapshot => {
                    let image = log.store.snapshot();
                    if frozen.is_none() {
                        frozen = Some((log.store.snapshot_view(), image.clone()));
                    }
                    let restored = KvStore::restore(&image).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(&restored, &log.store);
                    log.store = restored;
                }
            }
            prop_assert_eq!(log.store.len(), model.data.len());
        }
        let all: Vec<(Bytes, Bytes)> = log.store.data.iter().map(|(k, v)| (k.clone(), v.as_str().cloned().unwrap_or_default())).collect();
        let want: Vec<(Bytes, Bytes)> = model.data.iter().map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone()))).collect();
        prop_assert_eq!(all, want);
        if let Some((view, image)) = frozen {
            let mut streamed = Vec::new();
            view.write_to(&mut streamed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(streamed, image.to_vec());
        }
    }

    /// Arbitrary bytes never make `restore` panic.
    #[test]
    fn restore_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = KvStore::restore(&bytes);
        let mut sealed = SNAPSHOT_MAGIC.to_vec();
        sealed.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        sealed.extend_from_slice(&bytes);
        let crc = crc32fast::hash(&sealed);
        sealed.extend_from_slice(&crc.to_le_bytes());
        if let Ok(s) = KvStore::restore(&sealed) {
            // Whatever is accepted is canonical.
            prop_assert_eq!(s.snapshot().to_vec(), sealed);
        }
    }
}
