//! Parsing of the key-space and string commands added with issue 14: `KEYS`, `SCAN`, `TYPE`,
//! `RENAME`, `RENAMENX`, `COPY`, `UNLINK`, `TOUCH`, `RANDOMKEY`, `FLUSHDB`, `FLUSHALL`,
//! `GETRANGE`, `SETRANGE`, `INCRBYFLOAT`, `GETSET`, `SETNX`, `MSETNX`, and `TIME`.
//!
//! They parse straight into the state machine's command and query types (semantics in
//! `engine::kv::keys` and `engine::kv::strings`) with Redis 7.0's checks, in Redis' order, and
//! its error texts. `SCAN` is the exception: its integer cursor is resolved by the server
//! ([`Request::Scan`], see `crate::scan`). Keys and values are copied out of the connection's
//! buffer.

use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use engine::kv::{Command as KvCommand, Query};

use super::{Args, CommandError, Request, Set, SetCondition};

fn own(b: Bytes) -> Bytes {
    Bytes::copy_from_slice(&b)
}

/// The options of one `SCAN` / `HSCAN` step, as the client gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    /// `HSCAN`: the hash's key; `None` for `SCAN`.
    pub key: Option<Bytes>,
    /// The cursor (0 starts a scan).
    pub cursor: u64,
    /// `MATCH pattern`.
    pub pattern: Option<Bytes>,
    /// `COUNT n` (default 10).
    pub count: u64,
    /// `TYPE type` (`SCAN` only).
    pub kind: Option<Bytes>,
    /// `NOVALUES` (`HSCAN` only): fields without their values.
    pub novalues: bool,
    /// `HSCAN` only: the first option error, which Redis reports only when the key holds a hash
    /// (a missing key answers an empty scan, another type `WRONGTYPE`), so the server decides it
    /// from the key's type.
    pub invalid: Option<Box<CommandError>>,
}

/// Redis' `parseScanCursorOrReply`: an unsigned 64-bit decimal.
fn cursor(raw: &[u8]) -> Result<u64, CommandError> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::InvalidCursor);
    }
    std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()).ok_or(CommandError::InvalidCursor)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` and
/// `HSCAN key cursor [MATCH pattern] [COUNT count]`.
pub(super) fn parse_scan(mut a: Args, hash: bool) -> Result<Request, CommandError> {
    let key = if hash { Some(own(a.next()?)) } else { None };
    let cursor = cursor(&a.next()?)?;
    let mut s =
        ScanRequest { key, cursor, pattern: None, count: 10, kind: None, novalues: false, invalid: None };
    if let Err(e) = scan_options(&mut a, hash, &mut s) {
        if !hash {
            return Err(e);
        }
        s.invalid = Some(Box::new(e));
    }
    Ok(Request::Scan(Box::new(s)))
}

/// The options of `SCAN` / `HSCAN`, in order; the first error stops them.
fn scan_options(a: &mut Args, hash: bool, s: &mut ScanRequest) -> Result<(), CommandError> {
    while let Some(opt) = a.next_opt() {
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        let more = a.len() > 0;
        if is("count") && more {
            let n = a.integer()?;
            if n < 1 {
                return Err(CommandError::Syntax);
            }
            s.count = n as u64;
        } else if is("match") && more {
            s.pattern = Some(own(a.next()?));
        } else if is("type") && more && !hash {
            s.kind = Some(own(a.next()?));
        } else if is("novalues") && hash {
            s.novalues = true;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(())
}

/// `RENAME` / `RENAMENX`.
pub(super) fn parse_rename(mut a: Args, nx: bool) -> Result<Request, CommandError> {
    let src = own(a.next()?);
    let dst = own(a.next()?);
    Ok(Request::KvWrite(KvCommand::Rename { src, dst, nx }))
}

/// `COPY source destination [DB destination-db] [REPLACE]`: only database 0 exists.
pub(super) fn parse_copy(mut a: Args) -> Result<Request, CommandError> {
    let src = own(a.next()?);
    let dst = own(a.next()?);
    let mut replace = false;
    let mut db = 0;
    while let Some(opt) = a.next_opt() {
        if opt.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if opt.eq_ignore_ascii_case(b"db") && a.len() > 0 {
            db = a.integer()?;
            if i32::try_from(db).is_err() {
                return Err(CommandError::NotAnInteger);
            }
        } else {
            return Err(CommandError::Syntax);
        }
    }
    if db != 0 {
        return Err(CommandError::DbIndexOutOfRange);
    }
    Ok(Request::KvWrite(KvCommand::Copy { src, dst, replace }))
}

/// `FLUSHDB` / `FLUSHALL` `[ASYNC|SYNC]` (both free the memory at once).
pub(super) fn parse_flush(mut a: Args) -> Result<Request, CommandError> {
    match a.next_opt() {
        None => {}
        Some(m) if a.len() == 0 && (m.eq_ignore_ascii_case(b"async") || m.eq_ignore_ascii_case(b"sync")) => {}
        Some(_) => return Err(CommandError::Syntax),
    }
    Ok(Request::KvWrite(KvCommand::Flush))
}

/// `GETRANGE key start end`.
pub(super) fn parse_getrange(mut a: Args) -> Result<Request, CommandError> {
    let key = own(a.next()?);
    let start = a.integer()?;
    let end = a.integer()?;
    Ok(Request::KvRead(Query::GetRange { key, start, end }))
}

/// `SETRANGE key offset value`.
pub(super) fn parse_setrange(mut a: Args) -> Result<Request, CommandError> {
    let key = own(a.next()?);
    let offset = a.integer()?;
    let value = own(a.next()?);
    if offset < 0 {
        return Err(CommandError::OffsetOutOfRange);
    }
    Ok(Request::KvWrite(KvCommand::SetRange { key, offset: offset as u64, value }))
}

/// `INCRBYFLOAT key increment` (both operands are checked at apply, in Redis' order).
pub(super) fn parse_incrbyfloat(mut a: Args) -> Result<Request, CommandError> {
    let key = own(a.next()?);
    let by = own(a.next()?);
    Ok(Request::KvWrite(KvCommand::IncrByFloat { key, by }))
}

/// `GETSET key value`: `SET key value GET` (the deadline is dropped, as in Redis).
pub(super) fn parse_getset(mut a: Args) -> Result<Request, CommandError> {
    let key = a.next()?;
    let value = a.next()?;
    Ok(Request::Set(Set { key, value, condition: SetCondition::Always, get: true }))
}

/// `SETNX key value` and `MSETNX key value [key value ...]`.
pub(super) fn parse_msetnx(mut a: Args, name: &'static str) -> Result<Request, CommandError> {
    if a.len() % 2 == 1 {
        // Found by the command itself, as Redis does (queued in MULTI, EXEC answers it).
        return Err(CommandError::CommandArity(name));
    }
    let mut pairs = Vec::with_capacity(a.len() / 2);
    while let Some(key) = a.next_opt() {
        pairs.push((own(key), own(a.next()?)));
    }
    Ok(Request::KvWrite(KvCommand::MSetNx { pairs }))
}

/// `RANDOMKEY`: a fresh seed per request (see `engine::kv::keys`).
pub(super) fn parse_randomkey() -> Request {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    Request::KvRead(Query::RandomKey { seed: h.finish() })
}
