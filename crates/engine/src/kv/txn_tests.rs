//! Transactions and per-key versions: atomic application with Redis' error semantics, WATCH by
//! versions, RAFT.VERSION, and versions in snapshots.

use bytes::Bytes;

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

struct Log {
    store: KvStore,
    index: u64,
}

impl Log {
    fn new() -> Self {
        Log { store: KvStore::new(), index: 0 }
    }

    /// Applies `command` at the next index, stamped `at`.
    fn at(&mut self, at: u64, command: Command) -> Reply {
        let p = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command });
        self.index += 1;
        self.store.apply(self.index, &stamp_entry(&p, at)).expect("valid").expect("outcome").reply
    }

    fn run(&mut self, command: Command) -> Reply {
        self.at(1000, command)
    }

    fn version(&self, k: &str) -> Reply {
        self.store.query(&Query::Version { key: b(k) })
    }

    fn watch_index(&self) -> u64 {
        match self.store.query(&Query::AppliedIndex) {
            Reply::Int(i) => i as u64,
            other => panic!("{other:?}"),
        }
    }
}

fn set(k: &str, v: &str) -> Command {
    Command::Set { key: b(k), value: b(v), condition: SetCondition::Always, get: false }
}

fn w(c: Command) -> TxItem {
    TxItem::Write(c)
}

fn multi(watch: Option<(u64, &[&str])>, items: Vec<TxItem>) -> Command {
    Command::Multi {
        watch: watch.map(|(index, keys)| Watch { index, keys: keys.iter().map(|k| b(k)).collect() }),
        items,
    }
}

#[test]
fn exec_applies_everything_in_order_and_runtime_errors_do_not_stop_it() {
    let mut l = Log::new();
    l.run(set("s", "text"));
    let reply = l.run(multi(
        None,
        vec![
            w(set("a", "1")),
            w(Command::IncrBy { key: b("s"), by: 1 }),
            w(Command::IncrBy { key: b("a"), by: 41 }),
            TxItem::Read(Query::Get { key: b("a") }),
            TxItem::Read(Query::Version { key: b("a") }),
        ],
    ));
    assert_eq!(
        reply,
        Reply::Array(vec![
            Reply::Ok,
            Reply::Error("ERR value is not an integer or out of range".into()),
            Reply::Int(42),
            Reply::Bulk(b("42")),
            Reply::Int(2),
        ])
    );
    assert_eq!(l.run(multi(None, vec![])), Reply::Array(vec![]));
}

#[test]
fn versions_are_the_index_of_the_last_change() {
    let mut l = Log::new();
    assert_eq!(l.version("k"), Reply::Nil);
    l.run(set("k", "v")); // 1
    assert_eq!(l.version("k"), Reply::Int(1));
    l.run(set("other", "v")); // 2
    assert_eq!(l.version("k"), Reply::Int(1));
    l.run(Command::Append { key: b("k"), value: b("x") }); // 3
    assert_eq!(l.version("k"), Reply::Int(3));
    let expire = Command::Expire {
        key: b("k"),
        when: 100,
        seconds: true,
        absolute: false,
        condition: ExpireCondition::Always,
    };
    l.run(expire); // 4: a new deadline is a change (Redis signals it too)
    assert_eq!(l.version("k"), Reply::Int(4));
    l.run(Command::Persist { key: b("k") }); // 5
    assert_eq!(l.version("k"), Reply::Int(5));
    l.run(Command::Persist { key: b("k") }); // 6: nothing to remove, no change
    assert_eq!(l.version("k"), Reply::Int(5));
    let nx = Command::Set { key: b("k"), value: b("z"), condition: SetCondition::IfAbsent, get: false };
    l.run(nx); // 7: refused, no change
    assert_eq!(l.version("k"), Reply::Int(5));
    l.run(Command::Del { keys: vec![b("k")] });
    assert_eq!(l.version("k"), Reply::Nil);
}

#[test]
fn watch_aborts_on_any_change_after_the_watch_and_only_then() {
    let mut l = Log::new();
    l.run(set("k", "1"));
    l.run(set("x", "1"));
    let w1 = l.watch_index();
    // Unchanged: runs.
    assert_eq!(l.run(multi(Some((w1, &["k"])), vec![w(set("k", "2"))])), Reply::Array(vec![Reply::Ok]));
    // The EXEC's own write is after w1: a transaction watching from w1 again fails.
    assert_eq!(l.run(multi(Some((w1, &["k"])), vec![w(set("x", "9"))])), Reply::Nil);
    assert_eq!(l.store.query(&Query::Get { key: b("x") }), Reply::Bulk(b("1")), "nothing ran");
    // A change to another key does not matter.
    let w2 = l.watch_index();
    l.run(set("x", "2"));
    assert_eq!(l.run(multi(Some((w2, &["k"])), vec![])), Reply::Array(vec![]));
    // A key absent at WATCH and created after: changed.
    let w3 = l.watch_index();
    l.run(set("new", "1"));
    assert_eq!(l.run(multi(Some((w3, &["new"])), vec![])), Reply::Nil);
    // Absent at WATCH and at EXEC, with no removal in between: unchanged.
    let w4 = l.watch_index();
    assert_eq!(l.run(multi(Some((w4, &["ghost"])), vec![])), Reply::Array(vec![]));
    // ... but any removal in between may have been of it (created and deleted): changed.
    l.run(set("ghost", "1"));
    let w5 = l.watch_index();
    l.run(Command::Del { keys: vec![b("ghost")] });
    assert_eq!(l.run(multi(Some((w5, &["ghost"])), vec![])), Reply::Nil);
    // A watched key that expires counts as changed.
    l.at(2000, set("t", "1"));
    l.at(
        2000,
        Command::Expire {
            key: b("t"),
            when: 10,
            seconds: false,
            absolute: false,
            condition: ExpireCondition::Always,
        },
    );
    let w6 = l.watch_index();
    assert_eq!(l.at(2011, multi(Some((w6, &["t"])), vec![])), Reply::Nil);
}

#[test]
fn transactions_are_validated_as_a_whole() {
    let nested = multi(None, vec![w(multi(None, vec![]))]);
    assert!(nested.validate().is_err());
    let sweep = multi(None, vec![w(Command::Sweep { max: 1 })]);
    assert!(sweep.validate().is_err());
    let too_long = multi(None, vec![w(set(&"k".repeat(MAX_KEY_LEN + 1), "v"))]);
    assert!(too_long.validate().is_err());
    // Such an entry never reaches the log (the driver validates before proposing), and a log
    // entry holding one does not decode: corruption, not a command.
    let data = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command: nested });
    assert!(decode_proposal(&data).is_err());
}

#[test]
fn snapshots_carry_versions_and_the_last_removal() {
    let mut l = Log::new();
    l.run(set("a", "1"));
    l.run(set("b", "1"));
    l.run(Command::Del { keys: vec![b("b")] });
    l.run(set("c", "1"));
    let image = l.store.snapshot();
    let restored = KvStore::restore(&image).expect("restores");
    assert_eq!(restored, l.store);
    assert_eq!(restored.query(&Query::Version { key: b("c") }), Reply::Int(4));
    assert_eq!(restored.last_removal, 3);
    assert_eq!(restored.snapshot(), image);
}
