//! `COMMAND GETKEYS` / `GETKEYSANDFLAGS` for every command of the table: one example each, with
//! the answer redis-server 7.0 gives (recorded from it; the differential test asks it again),
//! and Redis 8.4's key specs for `DELEX` and `DIGEST`.

use bytes::Bytes;

use super::getkeys::keys_and_flags;
use super::spec::COMMANDS;

/// An example per command and its answer: `key FLAG FLAG, key FLAG` or the error text.
const EXAMPLES: &[(&str, &str)] = &[
    ("append k v", "k RW insert"),
    ("client info", "ERR The command has no key arguments"),
    ("command info get", "ERR The command has no key arguments"),
    ("config get x", "ERR The command has no key arguments"),
    ("copy a b", "a RO access, b OW update"),
    ("dbsize", "ERR The command has no key arguments"),
    ("decr k", "k RW access update"),
    ("decrby k 1", "k RW access update"),
    ("del a b c", "a RM delete, b RM delete, c RM delete"),
    ("delex k", "k RM delete"),
    ("digest k", "k RO access"),
    ("discard", "ERR The command has no key arguments"),
    ("echo x", "ERR The command has no key arguments"),
    ("eval s 2 a b c", "a RW access update, b RW access update"),
    ("eval_ro s 1 a", "a RO access"),
    ("evalsha s 1 a", "a RW access update"),
    ("evalsha_ro s 1 a", "a RO access"),
    ("exec", "ERR The command has no key arguments"),
    ("exists a b", "a RO, b RO"),
    ("expire k 10", "k RW update"),
    ("expireat k 10", "k RW update"),
    ("expiretime k", "k RO access"),
    ("flushall async", "ERR The command has no key arguments"),
    ("flushdb", "ERR The command has no key arguments"),
    ("get k", "k RO access"),
    ("getdel k", "k RW access delete"),
    ("getex k ex 10", "k RW access update"),
    ("getrange k 0 1", "k RO access"),
    ("getset k v", "k RW access update"),
    ("hello 3", "ERR The command has no key arguments"),
    ("hdel h f", "h RW delete"),
    ("hexists h f", "h RO"),
    ("hget h f", "h RO access"),
    ("hgetall h", "h RO access"),
    ("hincrby h f 1", "h RW access update"),
    ("hincrbyfloat h f 1", "h RW access update"),
    ("hkeys h", "h RO access"),
    ("hlen h", "h RO"),
    ("hmget h a b", "h RO access"),
    ("hmset h f v", "h RW update"),
    ("hscan h 0", "h RO access"),
    ("hset h f v", "h RW update"),
    ("hsetnx h f v", "h RW insert"),
    ("hstrlen h f", "h RO"),
    ("hvals h", "h RO access"),
    ("incr k", "k RW access update"),
    ("incrby k 1", "k RW access update"),
    ("incrbyfloat k 1.5", "k RW access update"),
    ("info server", "ERR The command has no key arguments"),
    ("keys *", "ERR The command has no key arguments"),
    ("mget a b", "a RO access, b RO access"),
    ("mset a 1 b 2", "a OW update, b OW update"),
    ("msetnx a 1 b 2", "a OW insert, b OW insert"),
    ("multi", "ERR The command has no key arguments"),
    ("persist k", "k RW update"),
    ("pexpire k 10", "k RW update"),
    ("pexpireat k 10", "k RW update"),
    ("pexpiretime k", "k RO access"),
    ("ping x", "ERR The command has no key arguments"),
    ("psetex k 10 v", "k OW update"),
    ("pttl k", "k RO access"),
    ("quit", "ERR The command has no key arguments"),
    ("raft.member list", "ERR The command has no key arguments"),
    ("raft.snapshot", "ERR The command has no key arguments"),
    ("raft.transfer b", "ERR The command has no key arguments"),
    ("raft.version k", "k RO"),
    ("randomkey", "ERR The command has no key arguments"),
    ("rename a b", "a RW access delete, b OW update"),
    ("renamenx a b", "a RW access delete, b OW insert"),
    ("scan 0 match x", "ERR The command has no key arguments"),
    ("script load x", "ERR The command has no key arguments"),
    ("select 0", "ERR The command has no key arguments"),
    ("set k v", "k OW update"),
    ("setex k 10 v", "k OW update"),
    ("setnx k v", "k OW insert"),
    ("setrange k 0 v", "k RW update"),
    ("strlen k", "k RO"),
    ("time", "ERR The command has no key arguments"),
    ("touch a b", "a RO, b RO"),
    ("ttl k", "k RO access"),
    ("type k", "k RO"),
    ("unlink a b", "a RM delete, b RM delete"),
    ("unwatch", "ERR The command has no key arguments"),
    ("watch a b", "a RO, b RO"),
];

/// Further cases: options that change the flags, movable keys, the key range without syntax
/// checks, and the errors in Redis' order.
const MORE: &[(&str, &str)] = &[
    ("set k v get", "k RW access update"),
    ("set k v nx ex 10", "k OW update"),
    ("set k v ifeq x px 10", "k RW access update"),
    ("set k v IFDNE 0123456789abcdef", "k RW access update"),
    ("set get get", "get OW update"),
    ("delex k ifeq t", "k RW access delete"),
    ("mset a 1 b", "a OW update, b OW update"),
    ("copy a b db 0 replace", "a RO access, b OW update"),
    ("eval s 0", ""),
    ("eval s 3 a b", ""),
    ("eval s -1", ""),
    ("eval s x a", ""),
    ("foo x", "ERR Invalid command specified"),
    ("getkeys x", "ERR Invalid command specified"),
    ("dbsize x", "ERR The command has no key arguments"),
    ("get k extra", "ERR Invalid number of arguments specified for command"),
    ("set k", "ERR Invalid number of arguments specified for command"),
    ("incrby k", "ERR Invalid number of arguments specified for command"),
    ("eval s", "ERR Invalid number of arguments specified for command"),
];

fn answer(line: &str) -> String {
    let args: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
    match keys_and_flags(&args) {
        Err(e) => e.to_owned(),
        Ok(keys) => keys
            .iter()
            .map(|(k, f)| format!("{} {}", String::from_utf8_lossy(k), f.join(" ")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[test]
fn every_command_of_the_table_has_its_keys_and_flags() {
    for spec in COMMANDS {
        let example = EXAMPLES.iter().find(|(line, _)| line.split(' ').next() == Some(spec.name));
        let Some((line, expected)) = example else { panic!("no GETKEYS example for '{}'", spec.name) };
        assert!(spec.arity_ok(line.split(' ').count()), "the example of {} has the wrong arity", spec.name);
        assert_eq!(answer(line), *expected, "COMMAND GETKEYSANDFLAGS {line}");
    }
    assert_eq!(EXAMPLES.len(), COMMANDS.len(), "one example per command");
    for (line, expected) in MORE {
        assert_eq!(answer(line), *expected, "COMMAND GETKEYSANDFLAGS {line}");
    }
}

/// The table's `(first, last, step)` agrees with the keys found: a command names keys exactly
/// when its first key is not 0 (or it takes `numkeys`), and the movable ones say so in their
/// flags (Redis' `movablekeys`).
#[test]
fn key_ranges_agree_with_the_flags() {
    for spec in COMMANDS {
        let movable = spec.flags.contains(&"movablekeys");
        assert_eq!(
            movable,
            matches!(spec.name, "eval" | "evalsha" | "eval_ro" | "evalsha_ro"),
            "{}",
            spec.name
        );
        if movable || spec.first_key == 0 {
            assert_eq!((spec.last_key, spec.step), (0, 0), "{}: no fixed keys, no range", spec.name);
        } else {
            assert!(
                spec.step >= 1 && (spec.last_key < 0 || spec.last_key >= spec.first_key),
                "{}",
                spec.name
            );
        }
    }
}

#[test]
fn parsed_and_answered_like_redis() {
    use super::{command_reply, Request};
    use crate::resp::Frame;
    let ask = |line: &str| {
        let args = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        match Request::from_args(args) {
            Ok(Request::Command(c)) => command_reply(&c),
            Ok(other) => panic!("{other:?}"),
            Err(e) => e.to_frame(),
        }
    };
    let b = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
    assert_eq!(ask("COMMAND GETKEYS mset a 1 b 2"), Frame::Array(vec![b("a"), b("b")]));
    assert_eq!(
        ask("command getkeysandflags SET k v IFEQ x"),
        Frame::Array(vec![Frame::Array(vec![
            b("k"),
            Frame::Array(vec![Frame::simple("RW"), Frame::simple("access"), Frame::simple("update")])
        ])])
    );
    // At least one argument after the command name (Redis' arity -4).
    assert_eq!(
        ask("command getkeys dbsize"),
        Frame::error("ERR wrong number of arguments for 'command|getkeys' command")
    );
    assert_eq!(ask("command getkeys eval s 0"), Frame::Array(vec![]));
}
