//! Compare-and-set (`SET ... IFEQ|IFNE|IFDEQ|IFDNE`), compare-and-delete (`DELEX`) and `DIGEST`
//! with Redis 8.4's semantics: the four conditions on a present, missing, expired and
//! wrong-typed key, `GET`, the expiry options, versions, transactions, and `TIME` in a
//! transaction. The replies marked "Redis 8.4" were observed on a Redis server built from source
//! (8.6.3, whose code for these commands is 8.4's; docs/REDIS.md says how).

use bytes::Bytes;

use super::cas::{
    digest, digest_hex, parse_digest, DigestArg as D, ValueCondition as V, DELEX_CONDITION_ERR,
    DELEX_TYPE_ERR, DIGEST_FORMAT_ERR,
};
use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(b(s))
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

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

    fn get(&self, k: &str) -> Reply {
        self.store.query(&Query::Get { key: b(k) })
    }

    fn version(&self, k: &str) -> Reply {
        self.store.query(&Query::Version { key: b(k) })
    }

    fn pttl(&self, k: &str) -> Reply {
        self.store.query(&Query::Ttl { key: b(k), millis: true, absolute: false })
    }
}

fn set(k: &str, v: &str) -> Command {
    Command::Set { key: b(k), value: b(v), condition: SetCondition::Always, get: false }
}

fn set_if(k: &str, v: &str, condition: V, get: bool, expiry: SetExpiry) -> Command {
    Command::SetIf { key: b(k), value: b(v), condition: Box::new(condition), get, expiry }
}

fn delex(k: &str, condition: V) -> Command {
    Command::DelEx { key: b(k), condition }
}

fn hset(k: &str) -> Command {
    Command::Hash { key: b(k), op: HashOp::Set { pairs: vec![(b("f"), b("v"))], ok: false } }
}

#[test]
fn digest_is_xxh3_64_as_16_hex_digits() {
    // XXH3-64 of the empty string (seed 0), and Redis' documented example.
    assert_eq!(digest_hex(digest(b"")), "2d06800538d394c2");
    assert_eq!(digest_hex(digest(b"Hello world")), "b6acb9d84a38ff74");
    // Redis issue 14496's value, whose digest starts with zeros: they are kept.
    let v = "v8lf0c11xh8ymlqztfd3eeq16kfn4sspw7fqmnuuq3k3t75em5wdizgcdw7uc26nnf961u2jkfzkjytls2kwlj7626sd";
    assert_eq!(digest_hex(digest(v.as_bytes())), "00006c38adf31777");
    assert_eq!(parse_digest(b"00006c38adf31777"), Some(0x6c38adf31777));
    assert_eq!(parse_digest(b"B6ACB9D84A38FF74"), Some(0xb6acb9d84a38ff74));
    for bad in
        ["6c38adf31777", "b6acb9d84a38ff741", "", "g6acb9d84a38ff74", "+6acb9d84a38ff74", " 6acb9d84a38ff74"]
    {
        assert_eq!(parse_digest(bad.as_bytes()), None, "{bad:?}");
    }
    // What IFDEQ/IFDNE make of their argument: Redis 8.4 checks only the length (16), then
    // compares the text ignoring case.
    assert_eq!(D::parse(b"B6ACB9D84A38FF74"), D::Hex(0xb6acb9d84a38ff74));
    assert_eq!(D::parse(b"zzzzzzzzzzzzzzzz"), D::NotHex);
    assert_eq!(D::parse(b"+6acb9d84a38ff74"), D::NotHex);
    assert_eq!(D::parse(b"0x6acb9d84a38ff7"), D::NotHex);
    assert_eq!(D::parse(b"b6acb9d84a38ff7\0"), D::NotHex);
    for bad in ["", "abc", "b6acb9d84a38ff741"] {
        assert_eq!(D::parse(bad.as_bytes()), D::BadLength, "{bad:?}");
    }

    let mut c = Clocked::new();
    assert_eq!(c.store.query(&Query::Digest { key: b("k") }), Reply::Nil);
    c.run(set("k", "Hello world"));
    assert_eq!(c.store.query(&Query::Digest { key: b("k") }), bulk("b6acb9d84a38ff74"));
    c.run(set("e", ""));
    assert_eq!(c.store.query(&Query::Digest { key: b("e") }), bulk("2d06800538d394c2"));
    c.run(hset("h"));
    assert_eq!(c.store.query(&Query::Digest { key: b("h") }), Reply::Error(WRONGTYPE.into()));
}

#[test]
fn set_if_conditions_on_present_and_missing_keys() {
    let d = |s: &str| D::Hex(digest(s.as_bytes()));
    // (condition, holds on "old", holds on a missing key)
    let cases = [
        (V::Equal(b("old")), true, false),
        (V::Equal(b("other")), false, false),
        (V::NotEqual(b("old")), false, true),
        (V::NotEqual(b("other")), true, true),
        (V::DigestEqual(d("old")), true, false),
        (V::DigestEqual(d("other")), false, false),
        (V::DigestNotEqual(d("old")), false, true),
        (V::DigestNotEqual(d("other")), true, true),
        // Equal bytes compare exactly: a prefix or the empty string is not equal.
        (V::Equal(b("ol")), false, false),
        (V::Equal(b("")), false, false),
        // Redis 8.4: 16 characters that are not all hex digits equal no digest (no error).
        (V::DigestEqual(D::NotHex), false, false),
        (V::DigestNotEqual(D::NotHex), true, true),
    ];
    for (cond, on_present, on_missing) in cases {
        for get in [false, true] {
            let mut c = Clocked::new();
            c.run(set("k", "old"));
            let reply = c.run(set_if("k", "new", cond.clone(), get, SetExpiry::Default));
            let expected = match (get, on_present) {
                (true, _) => bulk("old"),
                (false, true) => Reply::Ok,
                (false, false) => Reply::Nil,
            };
            assert_eq!(reply, expected, "{cond:?} get={get} on a present key");
            assert_eq!(c.get("k"), bulk(if on_present { "new" } else { "old" }), "{cond:?}");
            // A failed condition changes nothing, not even the version.
            assert_eq!(c.version("k"), Reply::Int(if on_present { 2 } else { 1 }), "{cond:?}");

            let reply = c.run(set_if("m", "new", cond.clone(), get, SetExpiry::Default));
            let expected = match (get, on_missing) {
                (true, _) => Reply::Nil,
                (false, true) => Reply::Ok,
                (false, false) => Reply::Nil,
            };
            assert_eq!(reply, expected, "{cond:?} get={get} on a missing key");
            assert_eq!(c.get("m"), if on_missing { bulk("new") } else { Reply::Nil }, "{cond:?}");
        }
    }
}

#[test]
fn a_digest_of_the_wrong_length_is_refused_only_by_a_string() {
    // Redis 8.4: `SET m v IFDEQ abc` on a missing key is nil, with IFDNE it writes; on a string
    // the length is refused (with GET too: Redis answers the old value and then this error,
    // two replies to one command; we answer the error alone); a hash is WRONGTYPE first.
    let err = Reply::Error(DIGEST_FORMAT_ERR.into());
    let mut c = Clocked::new();
    assert_eq!(c.run(set_if("m", "v", V::DigestEqual(D::BadLength), false, SetExpiry::Default)), Reply::Nil);
    assert_eq!(c.run(set_if("m", "v", V::DigestEqual(D::BadLength), true, SetExpiry::Default)), Reply::Nil);
    assert_eq!(c.get("m"), Reply::Nil);
    assert_eq!(c.run(set_if("n", "v", V::DigestNotEqual(D::BadLength), false, SetExpiry::In(5))), Reply::Ok);
    assert_eq!(c.get("n"), bulk("v"));
    for cond in [V::DigestEqual(D::BadLength), V::DigestNotEqual(D::BadLength)] {
        for get in [false, true] {
            assert_eq!(c.run(set_if("n", "x", cond.clone(), get, SetExpiry::Keep)), err, "{cond:?}");
        }
        assert_eq!(c.run(delex("n", cond.clone())), err, "{cond:?}");
        assert_eq!(c.run(delex("missing", cond.clone())), Reply::Int(0), "{cond:?}");
    }
    assert_eq!(c.get("n"), bulk("v"));
    assert_eq!(c.version("n"), Reply::Int(3));
    // The expire time is checked before the key: an overflowing one is its own error.
    let reply = c.run(set_if("n", "x", V::DigestEqual(D::BadLength), false, SetExpiry::In(i64::MAX)));
    assert_eq!(reply, Reply::Error("ERR invalid expire time in 'set' command".into()));
}

#[test]
fn delex_refuses_an_unknown_condition_only_on_a_string() {
    // Redis 8.4: `DELEX k FOO bar` is 0 for a missing key, the type error for a hash and
    // "Invalid condition" for a string (the parser gives every unknown word to the engine).
    let mut c = Clocked::new();
    assert_eq!(c.run(delex("k", V::Unknown)), Reply::Int(0));
    c.run(set("k", "v"));
    assert_eq!(c.run(delex("k", V::Unknown)), Reply::Error(DELEX_CONDITION_ERR.into()));
    assert_eq!(c.get("k"), bulk("v"));
    c.run(hset("h"));
    assert_eq!(c.run(delex("h", V::Unknown)), Reply::Error(DELEX_TYPE_ERR.into()));
    assert_eq!(DELEX_CONDITION_ERR, "ERR Invalid condition. Use IFEQ, IFNE, IFDEQ, or IFDNE");
    assert_eq!(DELEX_TYPE_ERR, "ERR Key should be of string type if conditions are specified");
}

#[test]
fn conditions_on_a_hash_are_errors_and_change_nothing() {
    let conditions = [
        V::Equal(b("v")),
        V::NotEqual(b("v")),
        V::DigestEqual(D::Hex(1)),
        V::DigestNotEqual(D::Hex(1)),
        V::DigestEqual(D::NotHex),
        V::DigestNotEqual(D::BadLength),
    ];
    for cond in conditions {
        let mut c = Clocked::new();
        c.run(hset("h"));
        for get in [false, true] {
            let reply = c.run(set_if("h", "x", cond.clone(), get, SetExpiry::In(10)));
            assert_eq!(reply, Reply::Error(WRONGTYPE.into()), "{cond:?}");
        }
        // Redis 8.4: DELEX with a condition has its own text for another type, not WRONGTYPE.
        assert_eq!(c.run(delex("h", cond.clone())), Reply::Error(DELEX_TYPE_ERR.into()), "{cond:?}");
        assert_eq!(c.store.query(&Query::Type { key: b("h") }), Reply::Status("hash".into()));
        assert_eq!(c.version("h"), Reply::Int(1));
    }
}

#[test]
fn set_if_applies_the_expiry_only_when_it_writes() {
    let mut c = Clocked::new();
    c.at(1000, set("k", "a"));
    // Written with PX: deadline from the entry's log time.
    assert_eq!(c.at(1000, set_if("k", "b", V::Equal(b("a")), false, SetExpiry::In(500))), Reply::Ok);
    assert_eq!(c.pttl("k"), Reply::Int(500));
    // Failed condition: the deadline stays as it was.
    assert_eq!(c.at(1100, set_if("k", "c", V::Equal(b("a")), false, SetExpiry::In(5000))), Reply::Nil);
    assert_eq!(c.pttl("k"), Reply::Int(400));
    // KEEPTTL keeps it; a plain conditional SET drops it (as any SET).
    assert_eq!(c.at(1100, set_if("k", "c", V::NotEqual(b("x")), false, SetExpiry::Keep)), Reply::Ok);
    assert_eq!(c.pttl("k"), Reply::Int(400));
    assert_eq!(c.at(1100, set_if("k", "d", V::Equal(b("c")), false, SetExpiry::Default)), Reply::Ok);
    assert_eq!(c.pttl("k"), Reply::Int(-1));
    // PXAT in the past deletes the key (Redis' rule for every SET); the reply is still OK.
    assert_eq!(c.at(1100, set_if("k", "e", V::Equal(b("d")), false, SetExpiry::At(50))), Reply::Ok);
    assert_eq!(c.get("k"), Reply::Nil);
    // An overflowing expire time is refused before the key is looked at.
    let r = c.at(1100, set_if("h", "e", V::NotEqual(b("d")), false, SetExpiry::In(i64::MAX)));
    assert_eq!(r, Reply::Error("ERR invalid expire time in 'set' command".into()));
    assert_eq!(c.get("h"), Reply::Nil);
}

#[test]
fn an_expired_key_has_no_value() {
    let mut c = Clocked::new();
    c.at(
        1000,
        Command::SetEx {
            key: b("k"),
            value: b("a"),
            condition: SetCondition::Always,
            get: false,
            expiry: SetExpiry::In(100),
            origin: ExpiryOrigin::Set,
        },
    );
    // Past the deadline: IFEQ of the old value fails (nothing created), DELEX answers 0, IFNE
    // creates the key anew without the old deadline.
    assert_eq!(c.at(1101, set_if("k", "b", V::Equal(b("a")), true, SetExpiry::Default)), Reply::Nil);
    assert_eq!(c.get("k"), Reply::Nil);
    c.at(
        1101,
        Command::SetEx {
            key: b("k"),
            value: b("a"),
            condition: SetCondition::Always,
            get: false,
            expiry: SetExpiry::In(100),
            origin: ExpiryOrigin::Set,
        },
    );
    assert_eq!(c.at(1202, delex("k", V::Equal(b("a")))), Reply::Int(0));
    c.at(
        1202,
        Command::SetEx {
            key: b("k"),
            value: b("a"),
            condition: SetCondition::Always,
            get: false,
            expiry: SetExpiry::In(100),
            origin: ExpiryOrigin::Set,
        },
    );
    assert_eq!(c.at(1303, set_if("k", "b", V::NotEqual(b("a")), false, SetExpiry::Default)), Reply::Ok);
    assert_eq!(c.get("k"), bulk("b"));
    assert_eq!(c.pttl("k"), Reply::Int(-1));
}

#[test]
fn delex_conditions() {
    let d = |s: &str| D::Hex(digest(s.as_bytes()));
    let cases = [
        (V::Equal(b("tok")), true),
        (V::Equal(b("tok2")), false),
        (V::NotEqual(b("tok")), false),
        (V::NotEqual(b("tok2")), true),
        (V::DigestEqual(d("tok")), true),
        (V::DigestEqual(d("tok2")), false),
        (V::DigestNotEqual(d("tok")), false),
        (V::DigestNotEqual(d("tok2")), true),
        // Redis 8.4: 16 characters that are not all hex digits equal no digest.
        (V::DigestEqual(D::NotHex), false),
        (V::DigestNotEqual(D::NotHex), true),
    ];
    for (cond, deletes) in cases {
        let mut c = Clocked::new();
        c.run(set("lock", "tok"));
        assert_eq!(c.run(delex("lock", cond.clone())), Reply::Int(i64::from(deletes)), "{cond:?}");
        assert_eq!(c.get("lock"), if deletes { Reply::Nil } else { bulk("tok") }, "{cond:?}");
        // A missing key: nothing to delete, whatever the condition.
        assert_eq!(c.run(delex("nothing", cond.clone())), Reply::Int(0), "{cond:?}");
    }
}

#[test]
fn compare_and_set_inside_a_transaction_sees_earlier_items_and_time_is_the_log_time() {
    let mut c = Clocked::new();
    c.at(5000, set("k", "a"));
    let items = vec![
        TxItem::Write(set_if("k", "b", V::Equal(b("a")), false, SetExpiry::Default)),
        TxItem::Write(set_if("k", "c", V::Equal(b("a")), true, SetExpiry::Default)),
        TxItem::Read(Query::Digest { key: b("k") }),
        TxItem::Write(delex("k", V::DigestEqual(D::Hex(digest(b"b"))))),
        TxItem::Read(Query::Time),
    ];
    let reply = c.at(1_733_500_123_456, Command::Multi { watch: None, items });
    assert_eq!(
        reply,
        Reply::Array(vec![
            Reply::Ok,
            bulk("b"),
            Reply::Bulk(Bytes::from(digest_hex(digest(b"b")))),
            Reply::Int(1),
            Reply::Array(vec![bulk("1733500123"), bulk("456000")]),
        ])
    );
    assert_eq!(c.get("k"), Reply::Nil);
    // TIME reads the state's log time, which never goes back (a stamp below it is ignored).
    let reply = c.at(10, Command::Multi { watch: None, items: vec![TxItem::Read(Query::Time)] });
    assert_eq!(reply, Reply::Array(vec![Reply::Array(vec![bulk("1733500123"), bulk("456000")])]));
}

#[test]
fn replicas_agree_and_snapshots_carry_the_result() {
    let script = [
        set("a", "1"),
        set_if("a", "2", V::Equal(b("1")), false, SetExpiry::In(1000)),
        set_if("b", "x", V::DigestNotEqual(D::Hex(7)), true, SetExpiry::Keep),
        set_if("d", "x", V::DigestNotEqual(D::NotHex), false, SetExpiry::Default),
        set_if("d", "y", V::DigestEqual(D::BadLength), false, SetExpiry::Default),
        delex("d", V::Unknown),
        delex("b", V::NotEqual(b("y"))),
        set_if("c", "z", V::NotEqual(b("q")), false, SetExpiry::At(9_000)),
    ];
    let mut one = Clocked::new();
    let mut two = Clocked::new();
    for cmd in script {
        assert_eq!(one.run(cmd.clone()), two.run(cmd));
    }
    assert_eq!(one.store.snapshot(), two.store.snapshot());
    let restored = KvStore::restore(&one.store.snapshot()).expect("restores");
    assert_eq!(restored.query(&Query::Get { key: b("a") }), bulk("2"));
    assert_eq!(restored.query(&Query::Get { key: b("b") }), Reply::Nil);
    assert_eq!(restored.query(&Query::Ttl { key: b("c"), millis: true, absolute: true }), Reply::Int(9_000));
}

#[test]
fn validate_counts_the_match_value() {
    let big = Bytes::from(vec![b'v'; MAX_VALUE_LEN + 1]);
    let c = Command::DelEx { key: b("k"), condition: V::Equal(big.clone()) };
    assert!(c.validate().unwrap_err().contains("maximum allowed size"));
    let c = Command::SetIf {
        key: b("k"),
        value: b("v"),
        condition: Box::new(V::NotEqual(big)),
        get: false,
        expiry: SetExpiry::Default,
    };
    assert!(c.validate().unwrap_err().contains("maximum allowed size"));
}
