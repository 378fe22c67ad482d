//! Scripts at the state machine: conversions, errors, rollback, the budget, the cache and its
//! replication, read-only runs, determinism across replicas.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::kv::{
    encode_proposal, stamp_entry, Command, KvStore, Proposal, Query, Reply, SetCondition, NO_SESSION,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A small stand-in for the server's parser: GET, SET, INCR, DEL, DBSIZE; MULTI and EVAL are
/// refused like the server refuses them.
fn test_parser(args: Vec<Bytes>) -> Result<TxItem, String> {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err("ERR Wrong number of args calling Redis command from script".to_owned())
        }
    };
    Ok(match name.as_str() {
        "get" => {
            arity(2)?;
            TxItem::Read(Query::Get { key: args[1].clone() })
        }
        "dbsize" => TxItem::Read(Query::DbSize),
        "set" => {
            arity(3)?;
            TxItem::Write(Command::Set {
                key: args[1].clone(),
                value: args[2].clone(),
                condition: SetCondition::Always,
                get: false,
            })
        }
        "incr" => {
            arity(2)?;
            TxItem::Write(Command::IncrBy { key: args[1].clone(), by: 1 })
        }
        "del" => TxItem::Write(Command::Del { keys: args[1..].to_vec() }),
        "multi" | "eval" => return Err(NOT_FROM_SCRIPT_ERR.to_owned()),
        "evil" => TxItem::Write(Command::Script(ScriptCommand::Flush)),
        _ => return Err("ERR Unknown Redis command called from script".to_owned()),
    })
}

struct Log {
    store: KvStore,
    index: u64,
}

impl Log {
    fn new() -> Self {
        install_command_parser(test_parser);
        Log { store: KvStore::new(), index: 0 }
    }

    fn at(&mut self, at: u64, command: Command) -> Reply {
        let p = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command });
        self.index += 1;
        self.store.apply(self.index, &stamp_entry(&p, at)).expect("valid").expect("outcome").reply
    }

    fn run(&mut self, command: Command) -> Reply {
        self.at(1_700_000_000_123, command)
    }

    fn eval(&mut self, body: &str, keys: &[&str], args: &[&str]) -> Reply {
        self.run(eval_cmd(ScriptRef::Body(b(body)), keys, args))
    }

    fn evalsha(&mut self, sha: &str, keys: &[&str], args: &[&str]) -> Reply {
        self.run(eval_cmd(ScriptRef::Sha(b(sha)), keys, args))
    }

    fn eval_ro(&self, body: &str, keys: &[&str]) -> Reply {
        self.store.query(&Query::Script(ScriptQuery::Eval {
            script: ScriptRef::Body(b(body)),
            keys: keys.iter().map(|k| b(k)).collect(),
            args: vec![],
            acl: None,
        }))
    }

    fn get(&self, k: &str) -> Reply {
        self.store.query(&Query::Get { key: b(k) })
    }
}

fn eval_cmd(script: ScriptRef, keys: &[&str], args: &[&str]) -> Command {
    Command::Script(ScriptCommand::Eval {
        script,
        keys: keys.iter().map(|k| b(k)).collect(),
        args: args.iter().map(|a| b(a)).collect(),
        acl: None,
    })
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(b(s))
}

fn err(r: &Reply) -> &str {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn lua_to_reply_conversions() {
    let mut l = Log::new();
    assert_eq!(l.eval("return 42", &[], &[]), Reply::Int(42));
    assert_eq!(l.eval("return 3.99", &[], &[]), Reply::Int(3));
    assert_eq!(l.eval("return -3.99", &[], &[]), Reply::Int(-3));
    assert_eq!(l.eval("return 'x\\0y'", &[], &[]), Reply::Bulk(Bytes::from_static(b"x\0y")));
    assert_eq!(l.eval("return true", &[], &[]), Reply::Int(1));
    assert_eq!(l.eval("return false", &[], &[]), Reply::Nil);
    assert_eq!(l.eval("return nil", &[], &[]), Reply::Nil);
    assert_eq!(l.eval("return", &[], &[]), Reply::Nil);
    assert_eq!(l.eval("return {}", &[], &[]), Reply::Array(vec![]));
    assert_eq!(
        l.eval("return {1, 'a', {2, false}, nil, 5}", &[], &[]),
        Reply::Array(vec![Reply::Int(1), bulk("a"), Reply::Array(vec![Reply::Int(2), Reply::Nil])])
    );
    assert_eq!(l.eval("return {a=1}", &[], &[]), Reply::Array(vec![]));
    assert_eq!(l.eval("return {err='MY error'}", &[], &[]), Reply::Error("MY error".into()));
    assert_eq!(l.eval("return {ok='PONG'}", &[], &[]), Reply::Status("PONG".into()));
    assert_eq!(l.eval("return redis.status_reply('OK')", &[], &[]), Reply::Ok);
    assert_eq!(l.eval("return redis.error_reply('boom')", &[], &[]), Reply::Error("ERR boom".into()));
    assert_eq!(l.eval("return redis.error_reply('MY boom')", &[], &[]), Reply::Error("MY boom".into()));
    assert_eq!(l.eval("return {KEYS[1], ARGV[1], ARGV[2], #KEYS, #ARGV}", &["k"], &["a", "b"]), {
        Reply::Array(vec![bulk("k"), bulk("a"), bulk("b"), Reply::Int(1), Reply::Int(2)])
    });
    assert_eq!(
        l.eval("return redis.sha1hex('')", &[], &[]),
        bulk("da39a3ee5e6b4b0d3255bfef95601890afd80709")
    );
    // Deep nesting is refused rather than producing a reply the snapshot codec would refuse.
    let deep = l.eval("local t = 1 for i = 1, 40 do t = {t} end return t", &[], &[]);
    assert!(err(&deep).contains("nests arrays"), "{deep:?}");
}

#[test]
fn redis_call_and_reply_to_lua_conversions() {
    let mut l = Log::new();
    assert_eq!(l.eval("return redis.call('SET', KEYS[1], ARGV[1])", &["k"], &["v"]), Reply::Ok);
    assert_eq!(l.get("k"), bulk("v"));
    assert_eq!(l.eval("return redis.call('set', 'k', 'v').ok", &[], &[]), bulk("OK"));
    assert_eq!(l.eval("return redis.call('get', 'missing') == false", &[], &[]), Reply::Int(1));
    assert_eq!(l.eval("return redis.call('incr', 'n') + 1", &[], &[]), Reply::Int(2));
    // Numbers as arguments are rendered as Redis renders them.
    assert_eq!(l.eval("redis.call('set', 'f', 1.5) return redis.call('get', 'f')", &[], &[]), bulk("1.5"));
    assert_eq!(l.eval("redis.call('set', 'i', 7) return redis.call('get', 'i')", &[], &[]), bulk("7"));
    // Log time, not a clock.
    assert_eq!(
        l.eval("return redis.call('TIME')", &[], &[]),
        Reply::Array(vec![bulk("1700000000"), bulk("123000")])
    );
    // pcall returns the error as a table; call raises it with Redis' suffix.
    assert_eq!(
        l.eval("redis.call('set', 'w', 'x') return redis.pcall('incr', 'w')", &[], &[]),
        Reply::Error("ERR value is not an integer or out of range".into())
    );
    let sha = sha1_hex(b"\nreturn redis.call('incr', 'w')");
    assert_eq!(
        l.eval("\nreturn redis.call('incr', 'w')", &[], &[]),
        Reply::Error(format!(
            "ERR value is not an integer or out of range script: {sha}, on @user_script:2."
        ))
    );
    let r = l.eval("return redis.call('nosuch')", &[], &[]);
    assert!(err(&r).starts_with("ERR Unknown Redis command called from script script: "), "{r:?}");
    let r = l.eval("return redis.call()", &[], &[]);
    assert!(err(&r).starts_with("ERR Please specify at least one argument for this redis lib call"), "{r:?}");
    let r = l.eval("return redis.call('get', {})", &[], &[]);
    assert!(err(&r).starts_with("ERR Lua redis lib command arguments must be strings or integers"), "{r:?}");
    for refused in ["multi", "eval", "evil"] {
        let r = l.eval(&format!("return redis.call('{refused}')"), &[], &[]);
        assert!(err(&r).starts_with(NOT_FROM_SCRIPT_ERR), "{r:?}");
    }
    assert_eq!(l.eval("return redis.pcall('multi')", &[], &[]), Reply::Error(NOT_FROM_SCRIPT_ERR.into()));
}

#[test]
fn runtime_and_compile_errors() {
    let mut l = Log::new();
    let r = l.eval("error('boom')", &[], &[]);
    assert!(err(&r).starts_with("ERR user_script:1: boom script: "), "{r:?}");
    assert!(err(&r).ends_with(", on @user_script:1."), "{r:?}");
    let r = l.eval("error({err='CUSTOM thing'})", &[], &[]);
    assert!(err(&r).starts_with("CUSTOM thing script: "), "{r:?}");
    let r = l.eval("return undefined_thing", &[], &[]);
    assert!(
        err(&r).starts_with(
            "ERR user_script:1: Script attempted to access nonexistent global variable 'undefined_thing'"
        ),
        "{r:?}"
    );
    let r = l.eval("x = 1", &[], &[]);
    assert!(err(&r).starts_with("ERR user_script:1: Attempt to modify a readonly table"), "{r:?}");
    let r = l.eval("return (", &[], &[]);
    assert!(err(&r).starts_with("ERR Error compiling script (new function): user_script:1:"), "{r:?}");
    // No clock, no files, no coroutines, no bytecode.
    for absent in ["os", "io", "print", "dofile", "loadfile", "coroutine", "debug", "load"] {
        let r = l.eval(&format!("return {absent}"), &[], &[]);
        assert!(err(&r).contains("nonexistent global variable"), "{absent}: {r:?}");
    }
    let r = l.eval("return loadstring(string.dump(function() return 1 end))", &[], &[]);
    assert_eq!(r, Reply::Nil);
    assert_eq!(l.eval("return tostring({})", &[], &[]), bulk("table"));
    let r = l.run(eval_cmd(ScriptRef::Body(b("\x1bLua")), &[], &[]));
    assert!(err(&r).starts_with("ERR Error compiling script"), "{r:?}");
}

#[test]
fn an_error_rolls_the_script_back() {
    let mut l = Log::new();
    l.eval("redis.call('set', 'a', '1')", &[], &[]);
    let r = l.eval(
        "redis.call('set', 'a', '2') redis.call('del', 'a') redis.call('set', 'b', 'x') error('stop')",
        &[],
        &[],
    );
    assert!(err(&r).contains("stop"), "{r:?}");
    assert_eq!(l.get("a"), bulk("1"));
    assert_eq!(l.get("b"), Reply::Nil);
    // A command error caught with pcall does not fail the script: its writes stay.
    l.eval("redis.call('set', 'b', 'y') redis.pcall('incr', 'b') return 1", &[], &[]);
    assert_eq!(l.get("b"), bulk("y"));
}

#[test]
fn the_instruction_budget_stops_a_runaway_script_and_pcall_cannot_catch_it() {
    let mut l = Log::new();
    for body in [
        "while true do end",
        "redis.call('set', 'loop', 'x') while true do pcall(function() while true do end end) end",
        "while true do redis.pcall('get', 'k') end",
        "local ok = pcall(error, 'x') if ok then return end local q = pcall(error, 'x') while true do xpcall(function() while true do end end, function(e) return e end) end",
    ] {
        let r = l.eval(body, &[], &[]);
        assert!(err(&r).starts_with("ERR Script exceeded its instruction budget"), "{body}: {r:?}");
    }
    assert_eq!(l.get("loop"), Reply::Nil, "the budget error rolls back");
    // Work inside library functions counts too: allocation is capped for the whole run (the
    // collector is off), and functions that scan their input are charged by its length.
    for body in [
        "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1e6) .. i end",
        "local s = string.rep('x', 1e7) for i = 1, 1e9 do local x = s .. i end",
        "local s = string.rep('x', 1e7) for i = 1, 1e9 do string.find(s, 'y', 1, true) end",
        "local t = {} for i = 1, 1e5 do t[i] = i end for i = 1, 1e9 do table.sort(t) end",
        "local t = {} for i = 1, 1e5 do t[i] = i end for i = 1, 1e9 do table.insert(t, 1, 0) table.remove(t, 1) end",
        // Backtracking inside one pattern call (Lua's C matcher ran these for hours).
        "return string.find(string.rep('a', 40), '.-.-.-.-.-.-.-.-b')",
        "return pcall(string.match, string.rep('a', 40), '(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)b')",
        "for w in string.gmatch(string.rep('a', 40), 'a*a*a*a*a*a*a*a*b') do end",
        "return (string.rep('a', 40)):gsub('.-.-.-.-.-.-.-.-b', 'x')",
        "local s = string.rep('x', 1e7) for i = 1, 1e9 do s:gsub('y', '') end",
    ] {
        let started = std::time::Instant::now();
        let r = l.eval(body, &[], &[]);
        assert!(matches!(r, Reply::Error(_)), "{body}: {r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{body}: {:?}", started.elapsed());
    }
    assert_eq!(l.eval("return string.rep('ab', 3, ',')", &[], &[]), bulk("ab,ab,ab"));
    assert_eq!(l.eval("return string.rep('ab', 0)", &[], &[]), bulk(""));
    // The store works normally afterwards.
    assert_eq!(l.eval("return 1", &[], &[]), Reply::Int(1));
}

#[test]
fn script_cache_load_evalsha_flush() {
    let mut l = Log::new();
    let body = "return ARGV[1]";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(l.evalsha(&sha, &[], &["x"]), Reply::Error(NOSCRIPT_ERR.into()));
    assert_eq!(l.evalsha("nonsense", &[], &[]), Reply::Error(NOSCRIPT_ERR.into()));
    assert_eq!(l.run(Command::Script(ScriptCommand::Load { body: b(body) })), bulk(&sha));
    assert_eq!(l.evalsha(&sha, &[], &["x"]), bulk("x"));
    assert_eq!(l.evalsha(&sha.to_ascii_uppercase(), &[], &["y"]), bulk("y"));
    let exists = |l: &Log, shas: &[&str]| {
        l.store.query(&Query::Script(ScriptQuery::Exists { shas: shas.iter().map(|s| b(s)).collect() }))
    };
    assert_eq!(exists(&l, &[&sha, "abc"]), Reply::Array(vec![Reply::Int(1), Reply::Int(0)]));
    let r = l.run(Command::Script(ScriptCommand::Load { body: b("return (") }));
    assert!(err(&r).starts_with("ERR Error compiling script"), "{r:?}");
    // EVAL adds its script too.
    l.eval("return 2", &[], &[]);
    assert_eq!(l.evalsha(&sha1_hex(b"return 2"), &[], &[]), Reply::Int(2));
    assert_eq!(l.store.script_count(), 2);
    assert_eq!(l.run(Command::Script(ScriptCommand::Flush)), Reply::Ok);
    assert_eq!(l.store.script_count(), 0);
    assert_eq!(l.evalsha(&sha, &[], &["x"]), Reply::Error(NOSCRIPT_ERR.into()));
}

#[test]
fn eval_scripts_are_evicted_oldest_first_loaded_ones_stay() {
    let mut l = Log::new();
    l.run(Command::Script(ScriptCommand::Load { body: b("return 'kept'") }));
    for i in 0..MAX_EVAL_SCRIPTS + 10 {
        l.eval(&format!("return {i}"), &[], &[]);
    }
    // Refresh the oldest survivor: it must outlive the next evictions.
    let survivor = sha1_hex(b"return 10");
    assert_eq!(l.evalsha(&survivor, &[], &[]), Reply::Int(10));
    for i in 0..5 {
        l.eval(&format!("return 'more{i}'"), &[], &[]);
    }
    assert_eq!(l.store.script_count(), MAX_EVAL_SCRIPTS + 1);
    assert_eq!(l.evalsha(&sha1_hex(b"return 0"), &[], &[]), Reply::Error(NOSCRIPT_ERR.into()));
    assert_eq!(l.evalsha(&survivor, &[], &[]), Reply::Int(10));
    assert_eq!(l.evalsha(&sha1_hex(b"return 'kept'"), &[], &[]), bulk("kept"));
    let restored = KvStore::restore(&l.store.snapshot()).expect("restores");
    assert_eq!(restored, l.store);
}

#[test]
fn read_only_scripts_refuse_writes() {
    let mut l = Log::new();
    l.eval("redis.call('set', 'k', 'v')", &[], &[]);
    assert_eq!(l.eval_ro("return redis.call('get', KEYS[1])", &["k"]), bulk("v"));
    let r = l.eval_ro("return redis.call('set', 'k', 'w')", &[]);
    assert!(err(&r).starts_with(READ_ONLY_SCRIPT_ERR), "{r:?}");
    assert_eq!(
        l.eval_ro("return redis.pcall('set', 'k', 'w')", &[]),
        Reply::Error(READ_ONLY_SCRIPT_ERR.into())
    );
    // A no-writes shebang makes even EVAL read-only.
    let r = l.eval("#!lua flags=no-writes\nreturn redis.call('set', 'k', 'w')", &[], &[]);
    assert!(err(&r).starts_with(READ_ONLY_SCRIPT_ERR), "{r:?}");
    assert!(err(&r).ends_with("on @user_script:2."), "{r:?}");
    assert_eq!(l.get("k"), bulk("v"));
    assert_eq!(shebang_no_writes(b"#!lua flags=no-writes\nreturn 1"), Ok(true));
    assert_eq!(shebang_no_writes(b"return 1"), Ok(false));
}

#[test]
fn randomness_is_redis_rand48_seeded_per_run() {
    let mut l = Log::new();
    let draw = "return {math.random(100), math.random(100), math.random(1, 6), math.random() < 1}";
    let first = l.eval(draw, &[], &[]);
    assert_eq!(first, l.eval(draw, &[], &[]), "every run starts from the same seed");
    // What redis-server 7.0.15 answers to this script the first time after it starts.
    assert_eq!(first, Reply::Array(vec![Reply::Int(40), Reply::Int(85), Reply::Int(3), Reply::Int(1)]));
    let reseeded = l.eval("math.randomseed(7) return math.random(1000)", &[], &[]);
    assert_eq!(reseeded, l.eval("math.randomseed(7) return math.random(1000)", &[], &[]));
}

#[test]
fn two_replicas_applying_the_same_entries_end_identical() {
    let entries: Vec<Command> = vec![
        Command::Script(ScriptCommand::Load { body: b("return redis.call('incr', KEYS[1])") }),
        eval_cmd(ScriptRef::Body(b("local t = {} for i = 1, 20 do t[i] = math.random(1000) end redis.call('set', 'r', table.concat(t, ',')) return t")), &[], &[]),
        eval_cmd(ScriptRef::Body(b("redis.call('set', 'addr', tostring({}) .. tostring(print)) return 1")), &[], &[]),
        eval_cmd(ScriptRef::Sha(b(&sha1_hex(b"return redis.call('incr', KEYS[1])"))), &["c"], &[]),
        eval_cmd(ScriptRef::Body(b("redis.call('set', 'now', redis.call('TIME')[1])")), &[], &[]),
        eval_cmd(ScriptRef::Body(b("redis.call('set', 'x', 'y') while true do end")), &[], &[]),
    ];
    let mut a = Log::new();
    let mut b_ = Log::new();
    let mut replies = (Vec::new(), Vec::new());
    for (i, c) in entries.iter().enumerate() {
        replies.0.push(a.at(1000 + i as u64, c.clone()));
    }
    for (i, c) in entries.iter().enumerate() {
        replies.1.push(b_.at(1000 + i as u64, c.clone()));
    }
    assert_eq!(replies.0, replies.1);
    assert_eq!(a.store, b_.store);
    assert_eq!(a.store.snapshot(), b_.store.snapshot());
    let restored = KvStore::restore(&a.store.snapshot()).expect("restores");
    assert_eq!(restored, a.store);
}

#[test]
fn script_commands_round_trip_through_the_log_encoding() {
    use crate::kv::decode_proposal;
    let commands = vec![
        eval_cmd(ScriptRef::Body(b("return 1")), &["a", "b"], &["x"]),
        eval_cmd(ScriptRef::Sha(b("abc")), &[], &[]),
        Command::Script(ScriptCommand::Load { body: b("return 1") }),
        Command::Script(ScriptCommand::Flush),
        Command::Multi {
            watch: None,
            items: vec![
                TxItem::Write(eval_cmd(ScriptRef::Body(b("return 1")), &["k"], &[])),
                TxItem::Read(Query::Script(ScriptQuery::Exists { shas: vec![b("x")] })),
                TxItem::Read(Query::Script(ScriptQuery::Eval {
                    script: ScriptRef::Sha(b("s")),
                    keys: vec![b("k")],
                    args: vec![b("a")],
                    acl: None,
                })),
            ],
        },
    ];
    for command in commands {
        let p = Proposal { session: 7, seq: 1, ack_below: 1, command };
        let enc = encode_proposal(&p);
        assert_eq!(decode_proposal(&enc), Ok(p));
    }
}

#[test]
fn status_replies_survive_snapshots() {
    let mut l = Log::new();
    let p = encode_proposal(&Proposal {
        session: 9,
        seq: 1,
        ack_below: 1,
        command: eval_cmd(ScriptRef::Body(b("return {ok='PONG'}")), &[], &[]),
    });
    l.index += 1;
    let out = l.store.apply(l.index, &stamp_entry(&p, 5)).unwrap().unwrap();
    assert_eq!(out.reply, Reply::Status("PONG".into()));
    let restored = KvStore::restore(&l.store.snapshot()).expect("restores");
    assert_eq!(restored.reply_for(9, 1), Some(Reply::Status("PONG".into())));
}

// ---- The caller's ACL inside scripts (see `acl.rs`) ----

fn acl(user: &str, read: bool, write: bool, patterns: &[&str]) -> Option<Arc<ScriptAcl>> {
    Some(Arc::new(ScriptAcl {
        user: b(user),
        read,
        write,
        admin: false,
        key_patterns: patterns.iter().map(|p| b(p)).collect(),
    }))
}

fn eval_as(rules: &Option<Arc<ScriptAcl>>, script: ScriptRef, keys: &[&str], args: &[&str]) -> Command {
    Command::Script(ScriptCommand::Eval {
        script,
        keys: keys.iter().map(|k| b(k)).collect(),
        args: args.iter().map(|a| b(a)).collect(),
        acl: rules.clone(),
    })
}

impl Log {
    fn eval_with(&mut self, rules: &Option<Arc<ScriptAcl>>, body: &str) -> Reply {
        self.run(eval_as(rules, ScriptRef::Body(b(body)), &[], &[]))
    }

    fn eval_ro_with(&self, rules: &Option<Arc<ScriptAcl>>, body: &str) -> Reply {
        self.store.query(&Query::Script(ScriptQuery::Eval {
            script: ScriptRef::Body(b(body)),
            keys: vec![],
            args: vec![],
            acl: rules.clone(),
        }))
    }
}

/// The text `redis.call` ends a script with: the refusal, then where.
fn raised(refusal: &str, body: &str, line: usize) -> Reply {
    Reply::Error(format!("{refusal} script: {}, on @user_script:{line}.", sha1_hex(body.as_bytes())))
}

#[test]
fn every_call_is_checked_against_the_callers_key_patterns() {
    let mut l = Log::new();
    let app = acl("app", true, true, &["app:*", "cache:?"]);
    l.eval("redis.call('set', 'other', 'secret')", &[], &[]);
    // Allowed: inside the patterns.
    assert_eq!(l.eval_with(&app, "return redis.call('set', 'app:1', 'v')"), Reply::Ok);
    assert_eq!(l.eval_with(&app, "return redis.call('get', 'app:1')"), bulk("v"));
    assert_eq!(l.eval_with(&app, "return redis.call('incr', 'cache:x')"), Reply::Int(1));
    // Denied key, read or write, through redis.call: the script ends with Redis 7.2's text.
    let body = "return redis.call('get', 'other')";
    assert_eq!(l.eval_with(&app, body), raised(KEY_DENIED, body, 1));
    let body = "redis.call('set', 'other', 'mine')";
    assert_eq!(l.eval_with(&app, body), raised(KEY_DENIED, body, 1));
    assert_eq!(l.get("other"), bulk("secret"));
    // Every key of a call counts (one outside is enough), wherever the key comes from.
    for body in [
        "return redis.call('del', 'app:1', 'other')",
        "return redis.call('incr', 'cache:xy')",
        "return redis.call('get', ARGV[1])",
    ] {
        let r = l.run(eval_as(&app, ScriptRef::Body(b(body)), &[], &["other"]));
        assert_eq!(r, raised(KEY_DENIED, body, 1), "{body}");
    }
    assert_eq!(l.get("app:1"), bulk("v"));
    // A denied call ends the script and, like every error, undoes its earlier writes.
    let body = "redis.call('set', 'app:2', 'x')\nredis.call('get', 'other')\nreturn 1";
    assert_eq!(l.eval_with(&app, body), raised(KEY_DENIED, body, 2));
    assert_eq!(l.get("app:2"), Reply::Nil);
    // pcall returns the refusal as an error table and the script goes on.
    assert_eq!(l.eval_with(&app, "return redis.pcall('get', 'other')"), Reply::Error(KEY_DENIED.into()));
    let body = "local r = redis.pcall('set', 'other', 'x') redis.call('set', 'app:3', r.err) return 1";
    assert_eq!(l.eval_with(&app, body), Reply::Int(1));
    assert_eq!(l.get("app:3"), bulk(KEY_DENIED));
    assert_eq!(l.get("other"), bulk("secret"));
    // EVALSHA of a cached script runs under the rules of its own entry.
    let sha = sha1_hex(b"return redis.call('get', KEYS[1])");
    l.run(Command::Script(ScriptCommand::Load { body: b("return redis.call('get', KEYS[1])") }));
    assert_eq!(l.run(eval_as(&None, ScriptRef::Sha(b(&sha)), &["other"], &[])), bulk("secret"));
    let r = l.run(eval_as(&app, ScriptRef::Sha(b(&sha)), &["other"], &[]));
    assert!(err(&r).starts_with(KEY_DENIED), "{r:?}");
    // No patterns at all: no key; key-less commands still run.
    let none = acl("nokeys", true, true, &[]);
    assert!(err(&l.eval_with(&none, "return redis.call('get', 'app:1')")).starts_with(KEY_DENIED));
    assert_eq!(l.eval_with(&none, "return redis.call('dbsize')"), Reply::Int(4));
}

#[test]
fn every_call_is_checked_against_the_callers_categories() {
    let mut l = Log::new();
    l.eval("redis.call('set', 'k', 'v')", &[], &[]);
    let reader = acl("reader", true, false, &["*"]);
    let writer = acl("writer", false, true, &["*"]);
    assert_eq!(l.eval_with(&reader, "return redis.call('get', 'k')"), bulk("v"));
    // A write by a user without +@write: Redis 7.2's text, the command's lower-case name.
    let body = "return redis.call('SET', 'k', 'w')";
    let denied = "ERR ACL failure in script: User reader has no permissions to run the 'set' command";
    assert_eq!(command_denied(b"reader", b"SET"), denied);
    assert_eq!(l.eval_with(&reader, body), raised(denied, body, 1));
    assert_eq!(l.eval_with(&reader, "return redis.pcall('set', 'k', 'w')"), Reply::Error(denied.into()));
    assert_eq!(l.get("k"), bulk("v"));
    // A read by a user without +@read; writes are fine.
    let body = "redis.call('set', 'k', 'w') return redis.call('get', 'k')";
    let denied = "ERR ACL failure in script: User writer has no permissions to run the 'get' command";
    assert_eq!(l.eval_with(&writer, body), raised(denied, body, 1));
    assert_eq!(l.get("k"), bulk("v"), "rolled back");
    assert_eq!(l.eval_with(&writer, "return redis.call('incr', 'n')"), Reply::Int(1));
    // TIME needs no category (as at the top level); parse errors come before the rules.
    assert!(matches!(l.eval_with(&writer, "return redis.call('time')"), Reply::Array(_)));
    let r = l.eval_with(&reader, "return redis.call('nosuch', 'k')");
    assert!(err(&r).starts_with("ERR Unknown Redis command called from script"), "{r:?}");
    let r = l.eval_with(&reader, "return redis.call('multi')");
    assert!(err(&r).starts_with(NOT_FROM_SCRIPT_ERR), "{r:?}");
    // Read-only scripts: the rules first (Redis' order), then their own rule on top.
    let r = l.eval_ro_with(&reader, "return redis.call('set', 'k', 'w')");
    assert!(err(&r).starts_with("ERR ACL failure in script: User reader has no permissions"), "{r:?}");
    let all = acl("all", true, true, &["*"]);
    let r = l.eval_ro_with(&all, "return redis.call('set', 'k', 'w')");
    assert!(err(&r).starts_with(READ_ONLY_SCRIPT_ERR), "{r:?}");
    let narrow = acl("narrow", true, true, &["x"]);
    let r = l.eval_ro_with(&narrow, "return redis.pcall('get', 'k')");
    assert_eq!(r, Reply::Error(KEY_DENIED.into()));
    let r = l.eval_with(&reader, "#!lua flags=no-writes\nreturn redis.call('set', 'k', 'w')");
    assert!(err(&r).starts_with("ERR ACL failure in script: User reader"), "{r:?}");
    assert_eq!(l.get("k"), bulk("v"));
}

#[test]
fn acl_check_cmd_answers_what_the_caller_may_call() {
    let mut l = Log::new();
    let app = acl("app", true, false, &["app:*"]);
    let check = |l: &mut Log, rules: &Option<Arc<ScriptAcl>>, call: &str| {
        l.eval_with(rules, &format!("return redis.acl_check_cmd({call}) and 1 or 0"))
    };
    // Unrestricted callers may call everything.
    assert_eq!(check(&mut l, &None, "'set', 'other', 'v'"), Reply::Int(1));
    // Key patterns and categories, as redis.call checks them; nothing runs.
    assert_eq!(check(&mut l, &app, "'get', 'app:1'"), Reply::Int(1));
    assert_eq!(check(&mut l, &app, "'get', 'other'"), Reply::Int(0));
    assert_eq!(check(&mut l, &app, "'set', 'app:1', 'v'"), Reply::Int(0), "no +@write");
    assert_eq!(check(&mut l, &app, "'time'"), Reply::Int(1));
    assert_eq!(l.get("app:1"), Reply::Nil);
    // An unknown command or a wrong arity raises Redis' text.
    for call in ["'nosuch', 'k'", "'get'"] {
        let r = check(&mut l, &app, call);
        assert!(err(&r).starts_with("ERR Invalid command passed to redis.acl_check_cmd()"), "{call}: {r:?}");
    }
}

#[test]
fn rules_travel_in_the_entry_and_replicas_agree() {
    use crate::kv::decode_proposal;
    let app = acl("app", true, true, &["app:*"]);
    let ro = acl("ro", true, false, &["*", "[a-c]?"]);
    let commands = vec![
        eval_as(&app, ScriptRef::Body(b("return 1")), &["app:1"], &["x"]),
        eval_as(&ro, ScriptRef::Sha(b("abc")), &[], &[]),
        Command::Multi {
            watch: None,
            items: vec![
                TxItem::Write(eval_as(&app, ScriptRef::Body(b("return 1")), &["k"], &[])),
                TxItem::Read(Query::Script(ScriptQuery::Eval {
                    script: ScriptRef::Body(b("return 2")),
                    keys: vec![],
                    args: vec![],
                    acl: ro.clone(),
                })),
                TxItem::Read(Query::Script(ScriptQuery::Eval {
                    script: ScriptRef::Sha(b("s")),
                    keys: vec![b("k")],
                    args: vec![b("a")],
                    acl: app.clone(),
                })),
            ],
        },
    ];
    for command in commands {
        let p = Proposal { session: 7, seq: 1, ack_below: 1, command };
        let enc = encode_proposal(&p);
        assert_eq!(decode_proposal(&enc), Ok(p.clone()));
        // Strict: a cut anywhere, or an unknown category bit, is refused.
        for cut in 1..enc.len() {
            assert!(decode_proposal(&enc[..cut]).is_err(), "cut at {cut}");
        }
    }
    let p = Proposal {
        session: 7,
        seq: 1,
        ack_below: 1,
        command: eval_as(&app, ScriptRef::Sha(b("s")), &[], &[]),
    };
    let enc = encode_proposal(&p).to_vec();
    // ... 69 EVALSHA+rules, "s", 0 keys, 0 args, "app", flags, 1 pattern, "app:*"
    let flags_at = enc.len() - 1 - 1 - 5 - 1;
    assert_eq!(&enc[flags_at - 4..flags_at], b"\x03app");
    assert_eq!(enc[flags_at], 0b011);
    let mut bad = enc.clone();
    bad[flags_at] = 0b1011;
    assert!(decode_proposal(&bad).is_err());

    // Two replicas applying the same restricted entries end identical.
    let entries = [
        eval_as(
            &app,
            ScriptRef::Body(b("redis.call('set', 'app:1', 'a') return redis.pcall('set', 'z', 'b')")),
            &[],
            &[],
        ),
        eval_as(
            &app,
            ScriptRef::Body(b("redis.call('set', 'app:2', 'a') return redis.call('set', 'z', 'b')")),
            &[],
            &[],
        ),
        eval_as(&ro, ScriptRef::Body(b("return redis.pcall('incr', 'app:1')")), &[], &[]),
        eval_as(&None, ScriptRef::Body(b("return redis.call('set', 'z', 'c')")), &[], &[]),
    ];
    let (mut a, mut c) = (Log::new(), Log::new());
    let ra: Vec<Reply> = entries.iter().map(|e| a.run(e.clone())).collect();
    let rc: Vec<Reply> = entries.iter().map(|e| c.run(e.clone())).collect();
    assert_eq!(ra, rc);
    assert_eq!(a.store, c.store);
    assert_eq!(ra[0], Reply::Error(KEY_DENIED.into()));
    assert!(err(&ra[1]).starts_with(KEY_DENIED));
    assert!(
        err(&ra[2]).starts_with("ERR ACL failure in script: User ro has no permissions to run the 'incr'")
    );
    assert_eq!(ra[3], Reply::Ok);
    assert_eq!((a.get("app:1"), a.get("app:2"), a.get("z")), (bulk("a"), Reply::Nil, bulk("c")));
}

#[test]
fn entries_without_rules_decode_as_unrestricted_byte_for_byte() {
    use crate::kv::decode_proposal;
    // An EVAL entry as every build before the rules travelled wrote it (format 2, tag 64):
    // version, session (u64 LE), seq, ack_below, tag, body, 1 key, 0 args.
    let body = b"return redis.call('set', KEYS[1], 'x')";
    let mut old = vec![2u8];
    old.extend_from_slice(&7u64.to_le_bytes());
    old.extend_from_slice(&[1, 1, 64, body.len() as u8]);
    old.extend_from_slice(body);
    old.extend_from_slice(&[1, 5]);
    old.extend_from_slice(b"other");
    old.push(0);
    let p = decode_proposal(&old).expect("an old entry decodes");
    let Command::Script(ScriptCommand::Eval { acl, .. }) = &p.command else {
        panic!("not an EVAL: {:?}", p.command);
    };
    assert_eq!(*acl, None, "no rules: unrestricted");
    // An unrestricted caller's entry is written exactly as before (it does not grow).
    assert_eq!(&encode_proposal(&p)[..], &old[..]);
    // The same for EVALSHA (65) and, inside a transaction, EVAL_RO (query 64).
    let sha = eval_as(&None, ScriptRef::Sha(b("abc")), &[], &[]);
    let enc = encode_proposal(&Proposal { session: 7, seq: 1, ack_below: 1, command: sha });
    assert_eq!(&enc[11..], &[65, 3, b'a', b'b', b'c', 0, 0]);
    // And it runs unrestricted: any key.
    let mut l = Log::new();
    l.index += 1;
    let out = l.store.apply(l.index, &stamp_entry(&old, 5)).unwrap().unwrap();
    assert_eq!(out.reply, Reply::Ok);
    assert_eq!(l.get("other"), bulk("x"));
}
