//! Hashes (Redis 7's semantics): every command, WRONGTYPE both ways, deadlines and versions, and
//! snapshots of hashes with deadlines (including reading a version 3 image).

use bytes::Bytes;

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

    fn h(&self, key: &str, read: HashRead) -> Reply {
        self.store.query(&Query::Hash { key: b(key), read })
    }
}

fn hset(key: &str, pairs: &[(&str, &str)]) -> Command {
    Command::Hash {
        key: b(key),
        op: HashOp::Set { pairs: pairs.iter().map(|(f, v)| (b(f), b(v))).collect(), ok: false },
    }
}

fn op(key: &str, op: HashOp) -> Command {
    Command::Hash { key: b(key), op }
}

#[test]
fn hash_commands_follow_redis() {
    let mut c = Clocked::new();
    assert_eq!(c.run(hset("h", &[("a", "1"), ("b", "2"), ("a", "3")])), Reply::Int(2));
    assert_eq!(c.run(hset("h", &[("a", "4"), ("c", "5")])), Reply::Int(1));
    assert_eq!(c.h("h", HashRead::Get { field: b("a") }), bulk("4"));
    assert_eq!(c.h("h", HashRead::Get { field: b("z") }), Reply::Nil);
    assert_eq!(
        c.h("h", HashRead::MGet { fields: vec![b("b"), b("z")] }),
        Reply::Array(vec![bulk("2"), Reply::Nil])
    );
    assert_eq!(c.h("h", HashRead::GetAll), Reply::Array(["a", "4", "b", "2", "c", "5"].map(bulk).to_vec()));
    assert_eq!(c.h("h", HashRead::Keys), Reply::Array(["a", "b", "c"].map(bulk).to_vec()));
    assert_eq!(c.h("h", HashRead::Vals), Reply::Array(["4", "2", "5"].map(bulk).to_vec()));
    assert_eq!(c.h("h", HashRead::Len), Reply::Int(3));
    assert_eq!(c.h("h", HashRead::Exists { field: b("b") }), Reply::Int(1));
    assert_eq!(c.h("h", HashRead::StrLen { field: b("b") }), Reply::Int(1));
    assert_eq!(c.run(op("h", HashOp::SetNx { field: b("a"), value: b("x") })), Reply::Int(0));
    assert_eq!(c.run(op("h", HashOp::SetNx { field: b("d"), value: b("x") })), Reply::Int(1));
    assert_eq!(c.run(op("h", HashOp::IncrBy { field: b("a"), by: 10 })), Reply::Int(14));
    assert_eq!(c.run(op("h", HashOp::IncrBy { field: b("n"), by: -3 })), Reply::Int(-3));
    assert_eq!(
        c.run(op("h", HashOp::IncrBy { field: b("d"), by: 1 })),
        err("ERR hash value is not an integer")
    );
    assert_eq!(
        c.run(op("h", HashOp::IncrBy { field: b("a"), by: i64::MAX })),
        err("ERR increment or decrement would overflow")
    );
    assert_eq!(c.run(op("h", HashOp::IncrByFloat { field: b("f"), by: b("0.1") })), bulk("0.1"));
    assert_eq!(c.run(op("h", HashOp::IncrByFloat { field: b("f"), by: b("0.2") })), bulk("0.3"));
    assert_eq!(
        c.run(op("h", HashOp::IncrByFloat { field: b("d"), by: b("1") })),
        err("ERR hash value is not a float")
    );
    assert_eq!(
        c.run(op("h", HashOp::IncrByFloat { field: b("f"), by: b("x") })),
        err("ERR value is not a valid float")
    );
    assert_eq!(
        c.run(op("h", HashOp::IncrByFloat { field: b("f"), by: b("inf") })),
        err("ERR value is NaN or Infinity")
    );
    let hmset = Command::Hash { key: b("h"), op: HashOp::Set { pairs: vec![(b("m"), b("1"))], ok: true } };
    assert_eq!(c.run(hmset), Reply::Ok);
    assert_eq!(c.run(op("h", HashOp::Del { fields: vec![b("a"), b("a"), b("zz")] })), Reply::Int(1));
    // Deleting the last fields removes the key.
    let all: Vec<Bytes> = match c.h("h", HashRead::Keys) {
        Reply::Array(items) => {
            items.into_iter().map(|r| if let Reply::Bulk(f) = r { f } else { panic!() }).collect()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(c.run(op("h", HashOp::Del { fields: all.clone() })), Reply::Int(all.len() as i64));
    assert_eq!(c.store.query(&Query::Exists { keys: vec![b("h")] }), Reply::Int(0));
    assert_eq!(c.store.len(), 0);
    // Absent keys read as empty hashes.
    assert_eq!(c.h("none", HashRead::GetAll), Reply::Array(vec![]));
    assert_eq!(c.h("none", HashRead::MGet { fields: vec![b("a")] }), Reply::Array(vec![Reply::Nil]));
    assert_eq!(c.h("none", HashRead::Len), Reply::Int(0));
    assert_eq!(c.run(op("none", HashOp::Del { fields: vec![b("a")] })), Reply::Int(0));
    // The empty-field-list shapes are arity errors.
    assert_eq!(c.run(hset("h", &[])), err("ERR wrong number of arguments for 'hset' command"));
}

#[test]
fn wrongtype_both_ways() {
    let mut c = Clocked::new();
    c.run(hset("h", &[("f", "v")]));
    let set =
        |k: &str, get: bool| Command::Set { key: b(k), value: b("s"), condition: SetCondition::Always, get };
    c.run(set("s", false));
    let w = err(WRONGTYPE);
    assert_eq!(c.store.query(&Query::Get { key: b("h") }), w);
    assert_eq!(c.store.query(&Query::Strlen { key: b("h") }), w);
    assert_eq!(c.store.query(&Query::GetRange { key: b("h"), start: 0, end: 1 }), w);
    assert_eq!(
        c.store.query(&Query::MGet { keys: vec![b("h"), b("s")] }),
        Reply::Array(vec![Reply::Nil, bulk("s")])
    );
    assert_eq!(c.store.query(&Query::Exists { keys: vec![b("h"), b("s")] }), Reply::Int(2));
    assert_eq!(c.store.query(&Query::Type { key: b("h") }), Reply::Status("hash".to_owned()));
    assert_eq!(c.run(Command::IncrBy { key: b("h"), by: 1 }), w);
    assert_eq!(c.run(Command::Append { key: b("h"), value: b("x") }), w);
    assert_eq!(c.run(Command::IncrByFloat { key: b("h"), by: b("1") }), w);
    assert_eq!(c.run(Command::SetRange { key: b("h"), offset: 0, value: b("x") }), w);
    assert_eq!(c.run(Command::GetDel { key: b("h") }), w);
    assert_eq!(c.run(Command::GetEx { key: b("h"), expiry: SetExpiry::Default }), w);
    assert_eq!(c.run(set("h", true)), w, "SET ... GET on a hash refuses and writes nothing");
    assert_eq!(c.h("h", HashRead::Len), Reply::Int(1));
    for read in [HashRead::Get { field: b("f") }, HashRead::GetAll, HashRead::Len, HashRead::Keys] {
        assert_eq!(c.h("s", read), w);
    }
    assert_eq!(c.run(hset("s", &[("f", "v")])), w);
    assert_eq!(c.run(op("s", HashOp::Del { fields: vec![b("f")] })), w);
    // Commands that replace any value work on hashes.
    assert_eq!(c.run(set("h", false)), Reply::Ok);
    assert_eq!(c.store.query(&Query::Get { key: b("h") }), bulk("s"));
    c.run(hset("h2", &[("f", "v")]));
    assert_eq!(c.run(Command::Del { keys: vec![b("h2")] }), Reply::Int(1));
}

#[test]
fn hashes_keep_deadlines_versions_and_survive_snapshots() {
    let mut c = Clocked::new();
    c.run(hset("h", &[("a", "1")]));
    let expire = Command::Expire {
        key: b("h"),
        when: 5000,
        seconds: false,
        absolute: false,
        condition: ExpireCondition::Always,
    };
    assert_eq!(c.at(1000, expire), Reply::Int(1));
    let before = c.index;
    c.at(2000, hset("h", &[("b", "2")]));
    assert_eq!(c.store.query(&Query::Ttl { key: b("h"), millis: true, absolute: false }), Reply::Int(4000));
    assert_eq!(c.store.query(&Query::Version { key: b("h") }), Reply::Int(before as i64 + 1));
    // COPY and RENAME carry the hash and its deadline.
    assert_eq!(c.at(2000, Command::Copy { src: b("h"), dst: b("h2"), replace: false }), Reply::Int(1));
    c.at(2000, hset("h2", &[("c", "3")]));
    assert_eq!(c.h("h", HashRead::Len), Reply::Int(2), "a copy is independent");
    assert_eq!(c.at(2000, Command::Rename { src: b("h2"), dst: b("h3"), nx: false }), Reply::Ok);
    assert_eq!(c.store.query(&Query::Ttl { key: b("h3"), millis: true, absolute: false }), Reply::Int(4000));
    c.run(Command::Set { key: b("s"), value: b("x"), condition: SetCondition::Always, get: false });
    let image = c.store.snapshot();
    let restored = KvStore::restore(&image).expect("restore");
    assert_eq!(restored, c.store);
    assert_eq!(restored.snapshot(), image, "the image is canonical");
    assert_eq!(
        restored.query(&Query::Hash { key: b("h3"), read: HashRead::GetAll }),
        Reply::Array(["a", "1", "b", "2", "c", "3"].map(bulk).to_vec())
    );
    assert_eq!(restored.query(&Query::Ttl { key: b("h"), millis: true, absolute: false }), Reply::Int(4000));
    // After the deadline the hash is gone for reads and purged by writes.
    c.at(7000, hset("other", &[("x", "y")]));
    assert_eq!(c.h("h", HashRead::Len), Reply::Int(0));
    assert_eq!(c.at(7000, hset("h", &[("z", "1")])), Reply::Int(1));
    assert_eq!(c.h("h", HashRead::Keys), Reply::Array(vec![bulk("z")]));
    assert_eq!(c.store.query(&Query::Ttl { key: b("h"), millis: true, absolute: false }), Reply::Int(-1));
    // SCAN TYPE sees hashes.
    let typed = Query::Scan { after: None, pattern: None, count: 100, kind: Some(b("hash")) };
    assert_eq!(
        c.store.query(&typed),
        Reply::Array(vec![Reply::Nil, Reply::Array(["h", "other"].map(bulk).to_vec())])
    );
}

#[test]
fn hscan_steps_cover_every_field_once() {
    let mut c = Clocked::new();
    let pairs: Vec<(String, String)> = (0..23).map(|i| (format!("f{i:02}"), i.to_string())).collect();
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
    c.run(hset("h", &refs));
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let reply = c.h(
            "h",
            HashRead::Scan { after: after.clone(), pattern: Some(b("f1*")), count: 3, novalues: false },
        );
        let Reply::Array(mut parts) = reply else { panic!() };
        let Some(Reply::Array(items)) = parts.pop() else { panic!() };
        seen.extend(items);
        match parts.pop() {
            Some(Reply::Bulk(f)) => after = Some(f),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 20, "f10..f19 with values: {seen:?}");
    let novalues = c.h("h", HashRead::Scan { after: None, pattern: None, count: 100, novalues: true });
    let Reply::Array(parts) = novalues else { panic!() };
    assert_eq!(parts[0], Reply::Nil);
    assert_eq!(parts[1], Reply::Array(pairs.iter().map(|(f, _)| bulk(f)).collect()));
}
