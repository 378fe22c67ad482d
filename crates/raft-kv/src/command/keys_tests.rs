//! Parsing of the key-space and string commands of issue 14 (see `keys.rs`): the typed requests
//! and Redis 7.0's error texts.

use super::*;
use engine::kv::{Command as C, Query as Q};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn parse(line: &str) -> Result<Request, CommandError> {
    let args = crate::resp::split_args(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
        .into_iter()
        .map(Bytes::from)
        .collect();
    Request::from_args(args)
}

fn scan(cursor: u64, pattern: Option<&str>, count: u64, kind: Option<&str>) -> Request {
    Request::Scan(Box::new(ScanRequest {
        key: None,
        cursor,
        pattern: pattern.map(b),
        count,
        kind: kind.map(b),
        novalues: false,
        invalid: None,
    }))
}

#[test]
fn parses_key_space_commands() {
    let w = Request::KvWrite;
    let r = Request::KvRead;
    let cases: Vec<(&str, Request)> = vec![
        ("keys u*", r(Q::Keys { pattern: b("u*") })),
        ("scan 0", scan(0, None, 10, None)),
        (
            "scan 18446744073709551615 match a* count 5 type string",
            scan(u64::MAX, Some("a*"), 5, Some("string")),
        ),
        ("type k", r(Q::Type { key: b("k") })),
        ("rename a b", w(C::Rename { src: b("a"), dst: b("b"), nx: false })),
        ("renamenx a b", w(C::Rename { src: b("a"), dst: b("b"), nx: true })),
        ("copy a b", w(C::Copy { src: b("a"), dst: b("b"), replace: false })),
        ("copy a b db 0 replace", w(C::Copy { src: b("a"), dst: b("b"), replace: true })),
        ("unlink a b", Request::Del(vec![b("a"), b("b")])),
        ("touch a a", Request::Exists(vec![b("a"), b("a")])),
        ("flushdb", w(C::Flush)),
        ("flushall async", w(C::Flush)),
        ("getrange k -1 5", r(Q::GetRange { key: b("k"), start: -1, end: 5 })),
        ("setrange k 3 v", w(C::SetRange { key: b("k"), offset: 3, value: b("v") })),
        ("incrbyfloat k 1.5", w(C::IncrByFloat { key: b("k"), by: b("1.5") })),
        (
            "getset k v",
            Request::Set(Set { key: b("k"), value: b("v"), condition: SetCondition::Always, get: true }),
        ),
        ("setnx k v", w(C::MSetNx { pairs: vec![(b("k"), b("v"))] })),
        ("msetnx a 1 b 2", w(C::MSetNx { pairs: vec![(b("a"), b("1")), (b("b"), b("2"))] })),
        ("time", Request::Time),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line), Ok(want), "{line}");
    }
    assert!(matches!(parse("randomkey"), Ok(Request::KvRead(Q::RandomKey { .. }))));
    for (line, access) in
        [("scan 0", Access::Read), ("flushall", Access::Write), ("time", Access::Connection)]
    {
        assert_eq!(parse(line).map(|r| r.access()), Ok(access), "{line}");
    }
}

#[test]
fn key_space_errors_use_redis_wording() {
    let cases = [
        ("scan x", "ERR invalid cursor"),
        ("scan -1", "ERR invalid cursor"),
        ("scan 18446744073709551616", "ERR invalid cursor"),
        ("scan 0 count 0", "ERR syntax error"),
        ("scan 0 count x", "ERR value is not an integer or out of range"),
        ("scan 0 match", "ERR syntax error"),
        ("scan 0 foo", "ERR syntax error"),
        ("copy a b db 1", "ERR DB index is out of range"),
        ("copy a b db x", "ERR value is not an integer or out of range"),
        ("copy a b foo", "ERR syntax error"),
        ("flushall now", "ERR syntax error"),
        ("flushdb sync sync", "ERR syntax error"),
        ("getrange k a 1", "ERR value is not an integer or out of range"),
        ("setrange k -1 v", "ERR offset is out of range"),
        ("setrange k x v", "ERR value is not an integer or out of range"),
        ("msetnx a 1 b", "ERR wrong number of arguments for 'msetnx' command"),
        ("setnx a", "ERR wrong number of arguments for 'setnx' command"),
        ("keys", "ERR wrong number of arguments for 'keys' command"),
        ("randomkey x", "ERR wrong number of arguments for 'randomkey' command"),
        ("time x", "ERR wrong number of arguments for 'time' command"),
        ("rename a", "ERR wrong number of arguments for 'rename' command"),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line).map_err(|e| e.to_string()), Err(want.to_owned()), "{line}");
    }
}
