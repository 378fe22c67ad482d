//! `COMMAND GETKEYS` and `COMMAND GETKEYSANDFLAGS`: which arguments of a command are keys, and
//! how the command uses each (Redis 7's key-spec flags), as cluster clients and proxies ask.
//!
//! Invariants (each checked by the tests, against redis-server 7.0 where it has the command):
//! - The keys are found the way Redis 7 finds them, from the command table alone, without
//!   checking the rest of the syntax: `(first, last, step)` of [`CommandSpec`] for every command
//!   (so `MSET a 1 b` names `a` and `b`), `numkeys` for the `EVAL` family (a `numkeys` that is not
//!   a number, is negative or exceeds the arguments names no key: an empty array, since those
//!   commands may have none).
//! - The errors come in Redis' order: an unknown command (`ERR Invalid command specified`), a
//!   command without key arguments (`ERR The command has no key arguments`, whatever its
//!   arity), then the arity (`ERR Invalid number of arguments specified for command`).
//! - The flags depend on the arguments where Redis' do: `SET` with `GET` or a value condition
//!   reads the old value (`RW access update`, else `OW update`); `DELEX` with a condition reads
//!   it (`RW access delete`, else `RM delete`).

use bytes::Bytes;

use super::spec::{lookup, CommandSpec};
use crate::resp::{parse_i64, Frame};

/// Key-spec flags, in Redis' words.
type Flags = &'static [&'static str];

const RO: Flags = &["RO"];
const RO_ACCESS: Flags = &["RO", "access"];
const RW_ACCESS_UPDATE: Flags = &["RW", "access", "update"];
const RW_ACCESS_DELETE: Flags = &["RW", "access", "delete"];
const RW_UPDATE: Flags = &["RW", "update"];
const RW_INSERT: Flags = &["RW", "insert"];
const RW_DELETE: Flags = &["RW", "delete"];
const OW_UPDATE: Flags = &["OW", "update"];
const OW_INSERT: Flags = &["OW", "insert"];
const RM_DELETE: Flags = &["RM", "delete"];

/// Whether the command finds its keys through a `numkeys` argument (at position 2).
fn numkeys_command(name: &str) -> bool {
    matches!(name, "eval" | "evalsha" | "eval_ro" | "evalsha_ro")
}

/// The keys of `args` (the command name first) with their flags, or Redis' error text.
pub fn keys_and_flags(args: &[Bytes]) -> Result<Vec<(Bytes, Flags)>, &'static str> {
    let spec = args.first().and_then(|n| lookup(n)).ok_or("ERR Invalid command specified")?;
    let movable = numkeys_command(spec.name);
    if spec.first_key == 0 && !movable {
        return Err("ERR The command has no key arguments");
    }
    if !spec.arity_ok(args.len()) {
        return Err("ERR Invalid number of arguments specified for command");
    }
    let positions: Vec<usize> = if movable {
        let n = parse_i64(&args[2]).and_then(|n| usize::try_from(n).ok()).filter(|n| *n <= args.len() - 3);
        n.map_or_else(Vec::new, |n| (3..3 + n).collect())
    } else {
        positions(spec, args.len())
    };
    Ok(positions.into_iter().enumerate().map(|(i, p)| (args[p].clone(), flags(spec.name, args, i))).collect())
}

/// The key positions of a command with a fixed key range, for `argc` words.
fn positions(spec: &CommandSpec, argc: usize) -> Vec<usize> {
    let last = if spec.last_key < 0 { argc as i64 + spec.last_key } else { spec.last_key };
    let step = spec.step.max(1) as usize;
    (spec.first_key..=last.min(argc as i64 - 1)).step_by(step).map(|p| p as usize).collect()
}

/// How command `name` uses its `i`-th key (Redis 7's key specs; Redis 8.4's for `DELEX` and
/// `DIGEST`).
fn flags(name: &str, args: &[Bytes], i: usize) -> Flags {
    let any_option = |words: &[&str]| {
        args.iter().skip(3).any(|a| words.iter().any(|w| a.eq_ignore_ascii_case(w.as_bytes())))
    };
    match name {
        "append" => RW_INSERT,
        "copy" if i == 0 => RO_ACCESS,
        "copy" => OW_UPDATE,
        "del" | "unlink" => RM_DELETE,
        "delex" if args.len() > 2 => RW_ACCESS_DELETE,
        "delex" => RM_DELETE,
        "getdel" => RW_ACCESS_DELETE,
        "rename" | "renamenx" if i == 0 => RW_ACCESS_DELETE,
        "rename" => OW_UPDATE,
        "renamenx" => OW_INSERT,
        "set" if any_option(&["get", "ifeq", "ifne", "ifdeq", "ifdne"]) => RW_ACCESS_UPDATE,
        "set" | "setex" | "psetex" | "mset" => OW_UPDATE,
        "setnx" | "msetnx" => OW_INSERT,
        "getex" | "getset" | "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" | "hincrby"
        | "hincrbyfloat" | "eval" | "evalsha" => RW_ACCESS_UPDATE,
        "setrange" | "expire" | "pexpire" | "expireat" | "pexpireat" | "persist" | "hset" | "hmset" => {
            RW_UPDATE
        }
        "hsetnx" => RW_INSERT,
        "hdel" => RW_DELETE,
        "get" | "getrange" | "mget" | "ttl" | "pttl" | "expiretime" | "pexpiretime" | "hget" | "hmget"
        | "hgetall" | "hkeys" | "hvals" | "hscan" | "eval_ro" | "evalsha_ro" | "digest" => RO_ACCESS,
        // exists, touch, strlen, type, hexists, hlen, hstrlen, watch, raft.version
        _ => RO,
    }
}

/// The reply to `COMMAND GETKEYS` (`with_flags` false) or `COMMAND GETKEYSANDFLAGS`.
pub fn getkeys_reply(args: &[Bytes], with_flags: bool) -> Frame {
    match keys_and_flags(args) {
        Err(text) => Frame::error(text.to_owned()),
        Ok(keys) => Frame::Array(
            keys.into_iter()
                .map(|(key, flags)| {
                    if with_flags {
                        let flags = flags.iter().map(|f| Frame::simple(f)).collect();
                        Frame::Array(vec![Frame::Bulk(key), Frame::Array(flags)])
                    } else {
                        Frame::Bulk(key)
                    }
                })
                .collect(),
        ),
    }
}
