//! Compare-and-set and compare-and-delete as Redis 8.4 spells them: `SET key value
//! IFEQ|IFNE|IFDEQ|IFDNE match ...` ([`Command::SetIf`]), `DELEX key IFEQ|IFNE|IFDEQ|IFDNE match`
//! ([`Command::DelEx`]) and `DIGEST key` ([`Query::Digest`]).
//!
//! # Semantics (Redis 8.4)
//!
//! * The condition compares the key's current value (`IFEQ`/`IFNE`: the bytes; `IFDEQ`/`IFDNE`:
//!   its [`digest`], the XXH3-64 of the bytes) with the client's. A missing (or expired) key has
//!   no value: it equals nothing, so `IFEQ`/`IFDEQ` fail on it and `IFNE`/`IFDNE` hold (a `SET`
//!   then creates the key; a `DELEX` has nothing to delete and answers 0).
//! * With a condition, the key must hold a string: a hash is `WRONGTYPE` and nothing changes
//!   (plain `SET` overwrites any type and plain `DELEX` removes any type; they are not here).
//! * `SET ... IF*` replies `OK` when it wrote and nil when the condition failed; with `GET` it
//!   replies the previous value (nil if none) whether or not it wrote. The expiry options work as
//!   for any `SET`: the new deadline, `KEEPTTL`, or none, and only when it writes.
//! * A digest is written as 16 hexadecimal digits (`DIGEST` answers lower case with leading
//!   zeros); `IFDEQ`/`IFDNE` take exactly 16 hex digits in either case (anything else is refused
//!   by the parser) and compare the number, so case does not matter.
//!
//! # Invariants
//!
//! * These are writes applied at apply, on every replica, from the state the entry sees: the
//!   compare and the write are one step of the log, so no other write can come between them
//!   (that is the whole point: a lock release by `DELEX lock IFEQ token` cannot delete a lock that
//!   another holder took after an expiry, since the expiry and the new `SET` are earlier entries).
//! * The digest is a pure function of the bytes (XXH3-64 with seed 0), so replicas agree.
//! * A write that happens gives the key the entry's index as its version (`RAFT.VERSION`, `WATCH`);
//!   a condition that fails changes nothing, not even the version.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{put_bytes, DecodeError, Reader};
use super::command::{Command, Query, Reply};
use super::expiry::{deadline_of, write_with_expiry, ExpiryOrigin};
use super::store::{Db, View};

/// Redis 8.4's error for an `IFDEQ`/`IFDNE` argument that is not 16 hexadecimal digits.
pub const DIGEST_FORMAT_ERR: &str = "ERR must be exactly 16 hexadecimal characters";

/// The condition of a compare-and-set or compare-and-delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueCondition {
    /// `IFEQ match`: the current value is exactly these bytes.
    Equal(Bytes),
    /// `IFNE match`: there is no value, or it differs from these bytes.
    NotEqual(Bytes),
    /// `IFDEQ digest`: the current value's [`digest`] is this number.
    DigestEqual(u64),
    /// `IFDNE digest`: there is no value, or its [`digest`] differs from this number.
    DigestNotEqual(u64),
}

impl ValueCondition {
    /// Whether the condition holds for the current value (`None`: no such key).
    pub fn holds(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (ValueCondition::Equal(m), Some(v)) => v == &m[..],
            (ValueCondition::NotEqual(m), Some(v)) => v != &m[..],
            (ValueCondition::DigestEqual(d), Some(v)) => digest(v) == *d,
            (ValueCondition::DigestNotEqual(d), Some(v)) => digest(v) != *d,
            (ValueCondition::Equal(_) | ValueCondition::DigestEqual(_), None) => false,
            (ValueCondition::NotEqual(_) | ValueCondition::DigestNotEqual(_), None) => true,
        }
    }

    /// The bytes the condition carries (for the size checks), if any.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            ValueCondition::Equal(m) | ValueCondition::NotEqual(m) => Some(m),
            ValueCondition::DigestEqual(_) | ValueCondition::DigestNotEqual(_) => None,
        }
    }

    /// Parses `IFEQ|IFNE|IFDEQ|IFDNE` (any case) and its argument: `None` if `option` is not one
    /// of them, `Some(Err(DIGEST_FORMAT_ERR))` for a digest that is not 16 hex digits.
    pub fn parse(option: &[u8], arg: Bytes) -> Option<Result<ValueCondition, &'static str>> {
        let is = |name: &str| option.eq_ignore_ascii_case(name.as_bytes());
        let digest = |arg: &[u8]| parse_digest(arg).ok_or(DIGEST_FORMAT_ERR);
        if is("ifeq") {
            Some(Ok(ValueCondition::Equal(arg)))
        } else if is("ifne") {
            Some(Ok(ValueCondition::NotEqual(arg)))
        } else if is("ifdeq") {
            Some(digest(&arg).map(ValueCondition::DigestEqual))
        } else if is("ifdne") {
            Some(digest(&arg).map(ValueCondition::DigestNotEqual))
        } else {
            None
        }
    }
}

/// Whether `option` names a value condition (`IFEQ`, `IFNE`, `IFDEQ`, `IFDNE`, any case).
pub fn is_condition(option: &[u8]) -> bool {
    ["ifeq", "ifne", "ifdeq", "ifdne"].iter().any(|n| option.eq_ignore_ascii_case(n.as_bytes()))
}

/// The digest of a value: XXH3-64 with seed 0, as Redis 8.4's `DIGEST`.
pub fn digest(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

/// A digest as `DIGEST` writes it: 16 lower-case hex digits, leading zeros kept.
pub fn digest_hex(d: u64) -> String {
    format!("{d:016x}")
}

/// Parses exactly 16 hexadecimal digits (either case) into a digest.
pub fn parse_digest(text: &[u8]) -> Option<u64> {
    if text.len() != 16 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

/// Executes [`Command::SetIf`] and [`Command::DelEx`] (the expired key it names was purged).
pub(crate) fn execute(db: &mut Db<'_>, command: &Command) -> Reply {
    match command {
        Command::SetIf { key, value, condition, get, expiry } => {
            // As Redis: an expire time that overflows is refused before the key is looked at.
            let deadline = match deadline_of(*expiry, db.time, ExpiryOrigin::Set) {
                Ok(d) => d,
                Err(e) => return Reply::Error(e),
            };
            let old = match db.get_string(key) {
                Ok(v) => v.cloned(),
                Err(e) => return e,
            };
            let write = condition.holds(old.as_deref());
            let reply = match (get, old) {
                (true, Some(v)) => Reply::Bulk(v),
                (true, None) => Reply::Nil,
                (false, _) if write => Reply::Ok,
                (false, _) => Reply::Nil,
            };
            if write {
                write_with_expiry(db, key, value.clone(), deadline, *expiry);
            }
            reply
        }
        Command::DelEx { key, condition } => match db.get_string(key) {
            Err(e) => e,
            Ok(None) => Reply::Int(0),
            Ok(Some(v)) if condition.holds(Some(v)) => {
                db.remove(key);
                Reply::Int(1)
            }
            Ok(Some(_)) => Reply::Int(0),
        },
        _ => Reply::Error(format!("ERR internal: '{}' is not a compare-and-set command", command.name())),
    }
}

impl View<'_> {
    /// `DIGEST key`: the digest of the string as [`digest_hex`], nil for no key, `WRONGTYPE`.
    pub(crate) fn digest_reply(&self, key: &[u8]) -> Reply {
        match self.live_string(key) {
            Ok(Some(v)) => Reply::Bulk(Bytes::from(digest_hex(digest(v)))),
            Ok(None) => Reply::Nil,
            Err(e) => e,
        }
    }
}

/// Command tags (proposal format 2; see [`super::codec`]).
pub(crate) const TAG_SETIF: u8 = 27;
pub(crate) const TAG_DELEX: u8 = 28;
/// Query tag of `DIGEST` (inside a transaction).
pub(crate) const QTAG_DIGEST: u8 = 26;

fn put_condition(buf: &mut BytesMut, c: &ValueCondition) {
    match c {
        ValueCondition::Equal(m) => {
            buf.put_u8(0);
            put_bytes(buf, m);
        }
        ValueCondition::NotEqual(m) => {
            buf.put_u8(1);
            put_bytes(buf, m);
        }
        ValueCondition::DigestEqual(d) => {
            buf.put_u8(2);
            buf.put_u64_le(*d);
        }
        ValueCondition::DigestNotEqual(d) => {
            buf.put_u8(3);
            buf.put_u64_le(*d);
        }
    }
}

fn read_condition(r: &mut Reader<'_>) -> Result<ValueCondition, DecodeError> {
    let at = r.offset();
    Ok(match r.u8()? {
        0 => ValueCondition::Equal(r.bytes()?),
        1 => ValueCondition::NotEqual(r.bytes()?),
        2 => ValueCondition::DigestEqual(r.u64_le()?),
        3 => ValueCondition::DigestNotEqual(r.u64_le()?),
        _ => return Err(DecodeError { offset: at, reason: "unknown value condition" }),
    })
}

/// Appends [`Command::SetIf`] / [`Command::DelEx`]: tag and fields (see [`super::codec`]).
pub(crate) fn put_command(buf: &mut BytesMut, command: &Command) {
    match command {
        Command::SetIf { key, value, condition, get, expiry } => {
            buf.put_u8(TAG_SETIF);
            buf.put_u8(u8::from(*get) | super::codec::expiry_kind(*expiry) << 3);
            put_bytes(buf, key);
            put_bytes(buf, value);
            put_condition(buf, condition);
            super::codec::put_expiry_ms(buf, *expiry);
        }
        Command::DelEx { key, condition } => {
            buf.put_u8(TAG_DELEX);
            put_bytes(buf, key);
            put_condition(buf, condition);
        }
        _ => {}
    }
}

/// Reads the fields of command `tag` (`None`: not a tag of this module).
pub(crate) fn decode_command(tag: u8, r: &mut Reader<'_>) -> Option<Result<Command, DecodeError>> {
    let read = |r: &mut Reader<'_>| -> Result<Command, DecodeError> {
        if tag == TAG_DELEX {
            return Ok(Command::DelEx { key: r.bytes()?, condition: read_condition(r)? });
        }
        let at = r.offset();
        let flags = r.u8()?;
        let kind = flags >> 3;
        // Bits 1-2 are unused; SETIF never carries PERSIST (kind 2), which is GETEX's.
        if flags & 0b110 != 0 || kind == 2 {
            return Err(DecodeError { offset: at, reason: "unknown SETIF flag bits" });
        }
        let key = r.bytes()?;
        let value = r.bytes()?;
        let condition = read_condition(r)?;
        let expiry = super::codec::read_expiry(r, kind, at)?;
        Ok(Command::SetIf { key, value, condition: Box::new(condition), get: flags & 1 != 0, expiry })
    };
    (tag == TAG_SETIF || tag == TAG_DELEX).then(|| read(r))
}

/// Appends [`Query::Digest`].
pub(crate) fn put_query(buf: &mut BytesMut, key: &[u8]) {
    buf.put_u8(QTAG_DIGEST);
    put_bytes(buf, key);
}

/// Reads the fields of query `tag` (`None`: not [`QTAG_DIGEST`]).
pub(crate) fn decode_query(tag: u8, r: &mut Reader<'_>) -> Option<Result<Query, DecodeError>> {
    (tag == QTAG_DIGEST).then(|| Ok(Query::Digest { key: r.bytes()? }))
}
