//! Compare-and-set and compare-and-delete as Redis 8.4 spells them: `SET key value
//! IFEQ|IFNE|IFDEQ|IFDNE match ...` ([`Command::SetIf`]), `DELEX key IFEQ|IFNE|IFDEQ|IFDNE match`
//! ([`Command::DelEx`]) and `DIGEST key` ([`Query::Digest`]).
//!
//! # Semantics (Redis 8.4, checked against a Redis server built from source; docs/REDIS.md)
//!
//! * The condition compares the key's current value (`IFEQ`/`IFNE`: the bytes; `IFDEQ`/`IFDNE`:
//!   its [`digest`], the XXH3-64 of the bytes) with the client's. A missing (or expired) key has
//!   no value: it equals nothing, so `IFEQ`/`IFDEQ` fail on it and `IFNE`/`IFDNE` hold (a `SET`
//!   then creates the key; a `DELEX` has nothing to delete and answers 0).
//! * With a condition, the key must hold a string: `SET` answers `WRONGTYPE` for a hash, `DELEX`
//!   its own [`DELEX_TYPE_ERR`], and nothing changes (plain `SET` overwrites any type and plain
//!   `DELEX` removes any type; they are not here).
//! * `SET ... IF*` replies `OK` when it wrote and nil when the condition failed; with `GET` it
//!   replies the previous value (nil if none) whether or not it wrote. The expiry options work as
//!   for any `SET`: the new deadline, `KEEPTTL`, or none, and only when it writes.
//! * A digest is written as 16 hexadecimal digits (`DIGEST` answers lower case with leading
//!   zeros). Redis checks an `IFDEQ`/`IFDNE` argument late: only its length, and only when the
//!   key exists and holds a string (after `WRONGTYPE`; a missing key never sees it), with
//!   [`DIGEST_FORMAT_ERR`]; 16 characters that are not all hex digits are accepted and equal no
//!   digest; hex digits compare in either case ([`DigestArg`]).
//! * The order of errors: syntax (the parser), then the expire time, then the type, then a
//!   missing key, then the digest's length (`DELEX`: an unknown condition word, on a string).
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

/// Redis 8.4's error for an `IFDEQ`/`IFDNE` argument that is not 16 characters long, given
/// only when the key holds a string (checked after `WRONGTYPE`, never for a missing key).
pub const DIGEST_FORMAT_ERR: &str = "ERR must be exactly 16 hexadecimal characters";

/// Redis 8.4's `DELEX` error for a condition on a key that holds another type than a string
/// (not `WRONGTYPE`).
pub const DELEX_TYPE_ERR: &str = "ERR Key should be of string type if conditions are specified";

/// Redis 8.4's `DELEX` error for a condition word it does not know, given only when the key
/// holds a string (a missing key answers 0 first).
pub const DELEX_CONDITION_ERR: &str = "ERR Invalid condition. Use IFEQ, IFNE, IFDEQ, or IFDNE";

/// An `IFDEQ`/`IFDNE` argument as the client wrote it. Redis 8.4 checks only its length, and only
/// once the key holds a string; then it compares the text with the value's 16 lower-case hex
/// digits ignoring case, so 16 characters that are not all hex digits equal no digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestArg {
    /// 16 hexadecimal digits (either case): this number.
    Hex(u64),
    /// 16 characters, not all hexadecimal digits: equal to no digest.
    NotHex,
    /// Not 16 bytes long: [`DIGEST_FORMAT_ERR`] when compared with a string.
    BadLength,
}

impl DigestArg {
    /// Classifies the client's argument.
    pub fn parse(text: &[u8]) -> DigestArg {
        match parse_digest(text) {
            Some(d) => DigestArg::Hex(d),
            None if text.len() == 16 => DigestArg::NotHex,
            None => DigestArg::BadLength,
        }
    }

    /// Whether the value's digest is this argument (`Err`: a [`DigestArg::BadLength`]).
    fn matches(self, value: &[u8]) -> Result<bool, &'static str> {
        match self {
            DigestArg::Hex(d) => Ok(digest(value) == d),
            DigestArg::NotHex => Ok(false),
            DigestArg::BadLength => Err(DIGEST_FORMAT_ERR),
        }
    }
}

/// The condition of a compare-and-set or compare-and-delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueCondition {
    /// `IFEQ match`: the current value is exactly these bytes.
    Equal(Bytes),
    /// `IFNE match`: there is no value, or it differs from these bytes.
    NotEqual(Bytes),
    /// `IFDEQ digest`: the current value's [`digest`] is this argument.
    DigestEqual(DigestArg),
    /// `IFDNE digest`: there is no value, or its [`digest`] is not this argument.
    DigestNotEqual(DigestArg),
    /// `DELEX key word match` with a word that is none of the four: [`DELEX_CONDITION_ERR`] when
    /// the key holds a string (the parser never gives it to `SET`, which refuses the syntax).
    Unknown,
}

impl ValueCondition {
    /// Whether the condition holds when there is no such key (`IFNE`/`IFDNE`: yes, whatever
    /// the argument; `IFEQ`/`IFDEQ`: no).
    pub fn holds_when_missing(&self) -> bool {
        matches!(self, ValueCondition::NotEqual(_) | ValueCondition::DigestNotEqual(_))
    }

    /// Whether the condition holds for the string the key holds; `Err` with the full error
    /// text for a digest of the wrong length or an unknown condition.
    pub fn check(&self, current: &[u8]) -> Result<bool, &'static str> {
        match self {
            ValueCondition::Equal(m) => Ok(current == &m[..]),
            ValueCondition::NotEqual(m) => Ok(current != &m[..]),
            ValueCondition::DigestEqual(d) => d.matches(current),
            ValueCondition::DigestNotEqual(d) => d.matches(current).map(|eq| !eq),
            ValueCondition::Unknown => Err(DELEX_CONDITION_ERR),
        }
    }

    /// Whether the condition holds for the current value (`None`: no such key); a condition
    /// that [`ValueCondition::check`] refuses does not hold.
    pub fn holds(&self, current: Option<&[u8]>) -> bool {
        match current {
            None => self.holds_when_missing(),
            Some(v) => self.check(v).unwrap_or(false),
        }
    }

    /// The bytes the condition carries (for the size checks), if any.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            ValueCondition::Equal(m) | ValueCondition::NotEqual(m) => Some(m),
            _ => None,
        }
    }

    /// Parses `IFEQ|IFNE|IFDEQ|IFDNE` (any case) and its argument: `None` if `option` is not one
    /// of them. A digest argument of any shape is accepted here (see [`DigestArg`]).
    pub fn parse(option: &[u8], arg: Bytes) -> Option<ValueCondition> {
        let is = |name: &str| option.eq_ignore_ascii_case(name.as_bytes());
        if is("ifeq") {
            Some(ValueCondition::Equal(arg))
        } else if is("ifne") {
            Some(ValueCondition::NotEqual(arg))
        } else if is("ifdeq") {
            Some(ValueCondition::DigestEqual(DigestArg::parse(&arg)))
        } else if is("ifdne") {
            Some(ValueCondition::DigestNotEqual(DigestArg::parse(&arg)))
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
///
/// The order of the checks is Redis 8.4's: the expire time; the type (`WRONGTYPE` for a key of
/// another type, `GET` or not); a missing key (`IFEQ`/`IFDEQ` fail, `IFNE`/`IFDNE` write,
/// whatever the argument); then the comparison, where a digest of the wrong length is an error.
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
            let write = match old.as_deref() {
                None => condition.holds_when_missing(),
                // Redis 8.4 with GET and a digest of the wrong length answers twice (the old
                // value, then this error); one reply is all a client can take: the error.
                Some(v) => match condition.check(v) {
                    Ok(w) => w,
                    Err(e) => return Reply::Error(e.to_owned()),
                },
            };
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
        Command::DelEx { key, condition } => {
            let current = match db.data.get(&key[..]) {
                None => return Reply::Int(0),
                Some(v) => match v.as_str() {
                    Some(s) => s,
                    None => return Reply::Error(DELEX_TYPE_ERR.to_owned()),
                },
            };
            match condition.check(current) {
                Err(e) => Reply::Error(e.to_owned()),
                Ok(true) => {
                    db.remove(key);
                    Reply::Int(1)
                }
                Ok(false) => Reply::Int(0),
            }
        }
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
    // Tags 0-3 are the first format; 4-8 came with the malformed digests and DELEX's unknown
    // word (a build without them stops with "unknown value condition").
    let digest = |buf: &mut BytesMut, d: &DigestArg, base: u8| match d {
        DigestArg::Hex(d) => {
            buf.put_u8(base);
            buf.put_u64_le(*d);
        }
        DigestArg::NotHex => buf.put_u8(base + 2),
        DigestArg::BadLength => buf.put_u8(base + 4),
    };
    match c {
        ValueCondition::Equal(m) => {
            buf.put_u8(0);
            put_bytes(buf, m);
        }
        ValueCondition::NotEqual(m) => {
            buf.put_u8(1);
            put_bytes(buf, m);
        }
        ValueCondition::DigestEqual(d) => digest(buf, d, 2),
        ValueCondition::DigestNotEqual(d) => digest(buf, d, 3),
        ValueCondition::Unknown => buf.put_u8(8),
    }
}

fn read_condition(r: &mut Reader<'_>) -> Result<ValueCondition, DecodeError> {
    let at = r.offset();
    Ok(match r.u8()? {
        0 => ValueCondition::Equal(r.bytes()?),
        1 => ValueCondition::NotEqual(r.bytes()?),
        2 => ValueCondition::DigestEqual(DigestArg::Hex(r.u64_le()?)),
        3 => ValueCondition::DigestNotEqual(DigestArg::Hex(r.u64_le()?)),
        4 => ValueCondition::DigestEqual(DigestArg::NotHex),
        5 => ValueCondition::DigestNotEqual(DigestArg::NotHex),
        6 => ValueCondition::DigestEqual(DigestArg::BadLength),
        7 => ValueCondition::DigestNotEqual(DigestArg::BadLength),
        8 => ValueCondition::Unknown,
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
