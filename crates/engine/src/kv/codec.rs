//! The binary encoding of [`Proposal`]s (the data of Raft log entries); the encoding of `Reply`
//! values (inside snapshots), varints and the bounds-checked [`Reader`] every decoder uses are in
//! [`primitives`].
//!
//! # Why hand-written and not protobuf
//!
//! Log entries are stored forever (until compaction) and must be read back identically by every
//! replica and every future version, so the format is small and fully specified here: a version
//! byte, a fixed-width random session id, LEB128 varints for small numbers and lengths. A
//! hand-written decoder is strict where prost is lenient (prost skips unknown fields and accepts
//! non-canonical input): unknown tags, unknown flag bits, overlong varints and trailing bytes are
//! all errors, which makes the encoding *canonical* — a byte string that decodes re-encodes to
//! exactly itself, a property the tests check on random input. It needs no code generator.
//!
//! # Proposal format, versions 1 and 2
//!
//! ```text
//! u8        format version (1 or 2; never 0, so an encoded proposal is never empty)
//! u64 LE    session id
//! varint    seq
//! varint    ack_below
//! u8        command tag, then the command's fields:
//!   1 SET     u8 flags (bits 0-1: 0 Always, 1 IfAbsent/NX, 2 IfPresent/XX; bit 2: GET), key, value
//!   2 DEL     varint n >= 0, n keys
//!   3 MSET    varint n >= 0, n (key, value)
//!   4 INCRBY  key, zigzag varint by
//!   5 APPEND  key, value
//!   version 2 only (a command that version 1 has is still written as version 1, byte for byte):
//!   6 SETEX   u8 flags (bits 0-1 condition, bit 2 GET, bits 3-5 expiry kind: 0 default,
//!             1 KEEPTTL, 2 PERSIST, 3 in ms, 4 at ms; bits 6-7 origin: SET, SETEX, PSETEX,
//!             GETEX), key, value, [zigzag varint ms for kinds 3 and 4]
//!   7 EXPIRE  u8 flags (bits 0-2 condition: always, NX, XX, GT, LT, XX+LT; bit 3 seconds; bit 4
//!             absolute), key, zigzag varint when
//!   8 PERSIST key
//!   9 GETEX   u8 flags (bits 3-5 expiry kind as SETEX), key, [zigzag varint ms]
//!  10 GETDEL  key
//!  11 SWEEP   varint max (<= u32::MAX)
//!  12 MULTI   u8 watch (0/1), [varint watch index, varint n, n keys], varint n items, then per
//!             item: u8 1 + a command (tag and fields; not MULTI or SWEEP), or u8 2 + a query:
//!             1 GET key, 2 MGET n keys, 3 EXISTS n keys, 4 STRLEN key, 5 DBSIZE,
//!             6 TTL u8 (bit 0 ms, bit 1 absolute) key, 7 VERSION key, 8 APPLIED-INDEX,
//!             20 KEYS pattern, 21 SCAN u8 (bit 0 after, bit 1 pattern, bit 2 type) [after]
//!             [pattern] [type] varint count, 22 TYPE key, 23 RANDOMKEY u64 LE seed,
//!             24 GETRANGE key zigzag start zigzag end
//!   (tags 13-19 are left to the scripting commands)
//!  20 RENAME   u8 nx (0/1), src, dst
//!  21 COPY     u8 replace (0/1), src, dst
//!  22 FLUSH    (nothing)
//!  23 SETRANGE key, varint offset, value
//!  24 INCRBYFLOAT key, increment (the client's bytes)
//!  25 MSETNX   varint n >= 0, n (key, value)
//!  26 HASH     key, u8 op, then: 0 HSET / 1 HMSET varint n, n (field, value); 2 HSETNX field
//!             value; 3 HDEL varint n, n fields; 4 HINCRBY field zigzag by; 5 HINCRBYFLOAT field
//!             increment
//!   query 25 HASH key, u8 read, then: 0 HGET field; 1 HMGET varint n, n fields; 2 HGETALL;
//!             3 HKEYS; 4 HVALS; 5 HLEN; 6 HEXISTS field; 7 HSTRLEN field; 8 HSCAN u8 (bit 0
//!             after, bit 1 pattern, bit 2 novalues) [after] [pattern] varint count
//!             64-68 the script queries (see `script::codec`)
//!  27 SETIF    u8 flags (bit 0 GET, bits 3-5 expiry kind as SETEX but never 2), key, value,
//!             condition, [zigzag varint ms for kinds 3 and 4]
//!  28 DELEX    key, condition
//!             where a condition is u8 0 IFEQ / 1 IFNE + bytes, or 2 IFDEQ / 3 IFDNE + u64 LE
//!             (16 hex digits), 4 IFDEQ / 5 IFDNE of 16 characters not all hex digits, 6 IFDEQ /
//!             7 IFDNE of another length, 8 a word DELEX does not know (nothing follows 4-8;
//!             a build without 4-8 stops with "unknown value condition")
//!   query 26 DIGEST key; 27 TIME (nothing)
//!   (tags 27-28 and queries 26-27: a build without them stops with "unknown command tag")
//!  64-67 the script commands EVAL, EVALSHA, SCRIPT LOAD, SCRIPT FLUSH (see `script::codec`;
//!        format 2: a build without them stops with "unknown command tag")
//!  68-69 EVAL, EVALSHA of a restricted caller, carrying its ACL (queries 67-68 for the `_RO`
//!        forms; a build without them stops with "unknown command tag"; 64/65 stay unrestricted)
//! ```
//! where a key or value is `varint length` followed by that many bytes. Nothing may follow the
//! command.
//!
//! # Stamped entries
//!
//! The leader wraps every proposal it appends as `u8 0x80, u64 LE stamp (ms since the Unix
//! epoch), proposal` ([`stamp_entry`]); the stamp is the entry's time (see
//! [`super::expiry`]). Entries written before stamps existed are bare proposals, read as before
//! and without a time. A build that predates stamps refuses a stamped entry with a clear
//! "format version 128 not supported" rather than misreading it. Decoding never panics and never allocates more than the input could describe (every
//! count and length is checked against the bytes that remain).

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{Command, Proposal, Query, SetCondition};
use super::expiry::{ExpireCondition, ExpiryOrigin, SetExpiry};
use super::hash::{HashOp, HashRead};
use super::txn::{TxItem, Watch};
use super::KvError;

mod primitives;

pub(crate) use primitives::{put_bytes, put_reply, put_varint, read_reply, Reader};
use primitives::{unzigzag, zigzag};

/// The newest proposal format this build writes (for commands version 1 lacks) and reads.
pub const PROPOSAL_FORMAT_VERSION: u8 = 2;

/// The first byte of a stamped entry (see the module docs).
pub const STAMPED_ENTRY: u8 = 0x80;

const TAG_SETEX: u8 = 6;
const TAG_EXPIRE: u8 = 7;
const TAG_PERSIST: u8 = 8;
const TAG_GETEX: u8 = 9;
const TAG_GETDEL: u8 = 10;
const TAG_SWEEP: u8 = 11;
const TAG_MULTI: u8 = 12;
const TAG_RENAME: u8 = 20;
const TAG_COPY: u8 = 21;
const TAG_FLUSH: u8 = 22;
const TAG_SETRANGE: u8 = 23;
const TAG_INCRBYFLOAT: u8 = 24;
const TAG_MSETNX: u8 = 25;
const TAG_HASH: u8 = 26;
/// Query tag of `TIME` inside a transaction (the entry's log time).
const QTAG_TIME: u8 = 27;
const EXPIRY_SHIFT: u8 = 3;
const ORIGIN_SHIFT: u8 = 6;

const TAG_SET: u8 = 1;
const TAG_DEL: u8 = 2;
const TAG_MSET: u8 = 3;
const TAG_INCRBY: u8 = 4;
const TAG_APPEND: u8 = 5;

const SET_COND_MASK: u8 = 0b011;
const SET_GET_FLAG: u8 = 0b100;

/// Why decoding failed, and where; the callers turn it into the matching [`KvError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Offset of the failure in the input.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// Encodes a proposal in the current format (see the module docs).
pub fn encode_proposal(p: &Proposal) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + command_size_hint(&p.command));
    let version = match &p.command {
        Command::Set { .. }
        | Command::Del { .. }
        | Command::MSet { .. }
        | Command::IncrBy { .. }
        | Command::Append { .. } => 1,
        _ => PROPOSAL_FORMAT_VERSION,
    };
    buf.put_u8(version);
    buf.put_u64_le(p.session);
    put_varint(&mut buf, p.seq);
    put_varint(&mut buf, p.ack_below);
    put_command(&mut buf, &p.command);
    buf.freeze()
}

/// Appends a command: its tag and fields (see the module docs).
fn put_command(buf: &mut BytesMut, command: &Command) {
    match command {
        Command::Set { key, value, condition, get } => {
            buf.put_u8(TAG_SET);
            let cond = match condition {
                SetCondition::Always => 0,
                SetCondition::IfAbsent => 1,
                SetCondition::IfPresent => 2,
            };
            buf.put_u8(cond | if *get { SET_GET_FLAG } else { 0 });
            put_bytes(buf, key);
            put_bytes(buf, value);
        }
        Command::Del { keys } => {
            buf.put_u8(TAG_DEL);
            put_varint(buf, keys.len() as u64);
            for k in keys {
                put_bytes(buf, k);
            }
        }
        Command::MSet { pairs } => {
            buf.put_u8(TAG_MSET);
            put_varint(buf, pairs.len() as u64);
            for (k, v) in pairs {
                put_bytes(buf, k);
                put_bytes(buf, v);
            }
        }
        Command::IncrBy { key, by } => {
            buf.put_u8(TAG_INCRBY);
            put_bytes(buf, key);
            put_varint(buf, zigzag(*by));
        }
        Command::Append { key, value } => {
            buf.put_u8(TAG_APPEND);
            put_bytes(buf, key);
            put_bytes(buf, value);
        }
        Command::SetEx { key, value, condition, get, expiry, origin } => {
            buf.put_u8(TAG_SETEX);
            let origin = match origin {
                ExpiryOrigin::Set => 0,
                ExpiryOrigin::SetEx => 1,
                ExpiryOrigin::PSetEx => 2,
                ExpiryOrigin::GetEx => 3,
            };
            let flags = cond_bits(*condition)
                | if *get { SET_GET_FLAG } else { 0 }
                | expiry_kind(*expiry) << EXPIRY_SHIFT
                | origin << ORIGIN_SHIFT;
            buf.put_u8(flags);
            put_bytes(buf, key);
            put_bytes(buf, value);
            put_expiry_ms(buf, *expiry);
        }
        Command::Expire { key, when, seconds, absolute, condition } => {
            buf.put_u8(TAG_EXPIRE);
            let cond = match condition {
                ExpireCondition::Always => 0,
                ExpireCondition::IfNone => 1,
                ExpireCondition::IfSome => 2,
                ExpireCondition::IfGreater => 3,
                ExpireCondition::IfLess => 4,
                ExpireCondition::IfSomeLess => 5,
            };
            buf.put_u8(cond | u8::from(*seconds) << 3 | u8::from(*absolute) << 4);
            put_bytes(buf, key);
            put_varint(buf, zigzag(*when));
        }
        Command::Persist { key } => {
            buf.put_u8(TAG_PERSIST);
            put_bytes(buf, key);
        }
        Command::GetEx { key, expiry } => {
            buf.put_u8(TAG_GETEX);
            buf.put_u8(expiry_kind(*expiry) << EXPIRY_SHIFT);
            put_bytes(buf, key);
            put_expiry_ms(buf, *expiry);
        }
        Command::GetDel { key } => {
            buf.put_u8(TAG_GETDEL);
            put_bytes(buf, key);
        }
        Command::Sweep { max } => {
            buf.put_u8(TAG_SWEEP);
            put_varint(buf, u64::from(*max));
        }
        Command::Rename { src, dst, nx } => {
            buf.put_u8(TAG_RENAME);
            buf.put_u8(u8::from(*nx));
            put_bytes(buf, src);
            put_bytes(buf, dst);
        }
        Command::Copy { src, dst, replace } => {
            buf.put_u8(TAG_COPY);
            buf.put_u8(u8::from(*replace));
            put_bytes(buf, src);
            put_bytes(buf, dst);
        }
        Command::Flush => buf.put_u8(TAG_FLUSH),
        Command::SetRange { key, offset, value } => {
            buf.put_u8(TAG_SETRANGE);
            put_bytes(buf, key);
            put_varint(buf, *offset);
            put_bytes(buf, value);
        }
        Command::IncrByFloat { key, by } => {
            buf.put_u8(TAG_INCRBYFLOAT);
            put_bytes(buf, key);
            put_bytes(buf, by);
        }
        Command::Hash { key, op } => {
            buf.put_u8(TAG_HASH);
            put_bytes(buf, key);
            put_hash_op(buf, op);
        }
        Command::MSetNx { pairs } => {
            buf.put_u8(TAG_MSETNX);
            put_varint(buf, pairs.len() as u64);
            for (k, v) in pairs {
                put_bytes(buf, k);
                put_bytes(buf, v);
            }
        }
        Command::Script(s) => super::script::put_command(buf, s),
        Command::SetIf { .. } | Command::DelEx { .. } => super::cas::put_command(buf, command),
        Command::Multi { watch, items } => {
            buf.put_u8(TAG_MULTI);
            buf.put_u8(u8::from(watch.is_some()));
            if let Some(w) = watch {
                put_varint(buf, w.index);
                put_varint(buf, w.keys.len() as u64);
                for k in &w.keys {
                    put_bytes(buf, k);
                }
            }
            put_varint(buf, items.len() as u64);
            for item in items {
                match item {
                    TxItem::Write(c) => {
                        buf.put_u8(1);
                        put_command(buf, c);
                    }
                    TxItem::Read(q) => {
                        buf.put_u8(2);
                        put_query(buf, q);
                    }
                }
            }
        }
    }
}

/// Appends a query of a transaction: tag and fields (see the module docs).
fn put_query(buf: &mut BytesMut, q: &Query) {
    let keys = |buf: &mut BytesMut, keys: &[Bytes]| {
        put_varint(buf, keys.len() as u64);
        for k in keys {
            put_bytes(buf, k);
        }
    };
    match q {
        Query::Get { key } => {
            buf.put_u8(1);
            put_bytes(buf, key);
        }
        Query::MGet { keys: ks } => {
            buf.put_u8(2);
            keys(buf, ks);
        }
        Query::Exists { keys: ks } => {
            buf.put_u8(3);
            keys(buf, ks);
        }
        Query::Strlen { key } => {
            buf.put_u8(4);
            put_bytes(buf, key);
        }
        Query::DbSize => buf.put_u8(5),
        Query::Ttl { key, millis, absolute } => {
            buf.put_u8(6);
            buf.put_u8(u8::from(*millis) | u8::from(*absolute) << 1);
            put_bytes(buf, key);
        }
        Query::Version { key } => {
            buf.put_u8(7);
            put_bytes(buf, key);
        }
        Query::AppliedIndex => buf.put_u8(8),
        Query::Keys { pattern } => {
            buf.put_u8(20);
            put_bytes(buf, pattern);
        }
        Query::Scan { after, pattern, count, kind } => {
            buf.put_u8(21);
            buf.put_u8(
                u8::from(after.is_some()) | u8::from(pattern.is_some()) << 1 | u8::from(kind.is_some()) << 2,
            );
            for b in [after, pattern, kind].into_iter().flatten() {
                put_bytes(buf, b);
            }
            put_varint(buf, *count);
        }
        Query::Type { key } => {
            buf.put_u8(22);
            put_bytes(buf, key);
        }
        Query::RandomKey { seed } => {
            buf.put_u8(23);
            buf.put_u64_le(*seed);
        }
        Query::Hash { key, read } => {
            buf.put_u8(25);
            put_bytes(buf, key);
            put_hash_read(buf, read);
        }
        Query::GetRange { key, start, end } => {
            buf.put_u8(24);
            put_bytes(buf, key);
            put_varint(buf, zigzag(*start));
            put_varint(buf, zigzag(*end));
        }
        Query::Script(s) => super::script::put_query(buf, s),
        Query::Digest { key } => super::cas::put_query(buf, key),
        Query::Time => buf.put_u8(QTAG_TIME),
    }
}

fn read_query(r: &mut Reader<'_>) -> Result<Query, DecodeError> {
    let at = r.offset();
    let keys = |r: &mut Reader<'_>| -> Result<Vec<Bytes>, DecodeError> {
        let n = r.count(1)?;
        (0..n).map(|_| r.bytes()).collect()
    };
    Ok(match r.u8()? {
        1 => Query::Get { key: r.bytes()? },
        2 => Query::MGet { keys: keys(r)? },
        3 => Query::Exists { keys: keys(r)? },
        4 => Query::Strlen { key: r.bytes()? },
        5 => Query::DbSize,
        6 => {
            let flags = r.u8()?;
            if flags > 3 {
                return Err(DecodeError { offset: at + 1, reason: "unknown TTL flag bits" });
            }
            Query::Ttl { key: r.bytes()?, millis: flags & 1 != 0, absolute: flags & 2 != 0 }
        }
        7 => Query::Version { key: r.bytes()? },
        8 => Query::AppliedIndex,
        20 => Query::Keys { pattern: r.bytes()? },
        21 => {
            let flags = r.u8()?;
            if flags > 7 {
                return Err(DecodeError { offset: at + 1, reason: "unknown SCAN flag bits" });
            }
            let mut opt = |bit: u8| -> Result<Option<Bytes>, DecodeError> {
                if flags & bit != 0 {
                    Ok(Some(r.bytes()?))
                } else {
                    Ok(None)
                }
            };
            let after = opt(1)?;
            let pattern = opt(2)?;
            let kind = opt(4)?;
            Query::Scan { after, pattern, kind, count: r.varint()? }
        }
        22 => Query::Type { key: r.bytes()? },
        25 => Query::Hash { key: r.bytes()?, read: read_hash_read(r)? },
        23 => Query::RandomKey { seed: r.u64_le()? },
        24 => Query::GetRange { key: r.bytes()?, start: unzigzag(r.varint()?), end: unzigzag(r.varint()?) },
        QTAG_TIME => Query::Time,
        tag => match (super::script::decode_query(tag, r), super::cas::decode_query(tag, r)) {
            (Some(q), _) => Query::Script(q?),
            (None, Some(q)) => q?,
            (None, None) => return Err(DecodeError { offset: at, reason: "unknown query tag" }),
        },
    })
}

fn put_list(buf: &mut BytesMut, items: &[Bytes]) {
    put_varint(buf, items.len() as u64);
    for b in items {
        put_bytes(buf, b);
    }
}

fn read_list(r: &mut Reader<'_>) -> Result<Vec<Bytes>, DecodeError> {
    let n = r.count(1)?;
    (0..n).map(|_| r.bytes()).collect()
}

/// Appends a hash write (see the module docs).
fn put_hash_op(buf: &mut BytesMut, op: &HashOp) {
    match op {
        HashOp::Set { pairs, ok } => {
            buf.put_u8(u8::from(*ok));
            put_varint(buf, pairs.len() as u64);
            for (f, v) in pairs {
                put_bytes(buf, f);
                put_bytes(buf, v);
            }
        }
        HashOp::SetNx { field, value } => {
            buf.put_u8(2);
            put_bytes(buf, field);
            put_bytes(buf, value);
        }
        HashOp::Del { fields } => {
            buf.put_u8(3);
            put_list(buf, fields);
        }
        HashOp::IncrBy { field, by } => {
            buf.put_u8(4);
            put_bytes(buf, field);
            put_varint(buf, zigzag(*by));
        }
        HashOp::IncrByFloat { field, by } => {
            buf.put_u8(5);
            put_bytes(buf, field);
            put_bytes(buf, by);
        }
    }
}

fn read_hash_op(r: &mut Reader<'_>) -> Result<HashOp, DecodeError> {
    let at = r.offset();
    Ok(match r.u8()? {
        op @ (0 | 1) => {
            let n = r.count(2)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let f = r.bytes()?;
                let v = r.bytes()?;
                pairs.push((f, v));
            }
            HashOp::Set { pairs, ok: op == 1 }
        }
        2 => HashOp::SetNx { field: r.bytes()?, value: r.bytes()? },
        3 => HashOp::Del { fields: read_list(r)? },
        4 => HashOp::IncrBy { field: r.bytes()?, by: unzigzag(r.varint()?) },
        5 => HashOp::IncrByFloat { field: r.bytes()?, by: r.bytes()? },
        _ => return Err(DecodeError { offset: at, reason: "unknown hash operation" }),
    })
}

/// Appends a hash read (see the module docs).
fn put_hash_read(buf: &mut BytesMut, read: &HashRead) {
    match read {
        HashRead::Get { field } => {
            buf.put_u8(0);
            put_bytes(buf, field);
        }
        HashRead::MGet { fields } => {
            buf.put_u8(1);
            put_list(buf, fields);
        }
        HashRead::GetAll => buf.put_u8(2),
        HashRead::Keys => buf.put_u8(3),
        HashRead::Vals => buf.put_u8(4),
        HashRead::Len => buf.put_u8(5),
        HashRead::Exists { field } => {
            buf.put_u8(6);
            put_bytes(buf, field);
        }
        HashRead::StrLen { field } => {
            buf.put_u8(7);
            put_bytes(buf, field);
        }
        HashRead::Scan { after, pattern, count, novalues } => {
            buf.put_u8(8);
            buf.put_u8(
                u8::from(after.is_some()) | u8::from(pattern.is_some()) << 1 | u8::from(*novalues) << 2,
            );
            for b in [after, pattern].into_iter().flatten() {
                put_bytes(buf, b);
            }
            put_varint(buf, *count);
        }
    }
}

fn read_hash_read(r: &mut Reader<'_>) -> Result<HashRead, DecodeError> {
    let at = r.offset();
    Ok(match r.u8()? {
        0 => HashRead::Get { field: r.bytes()? },
        1 => HashRead::MGet { fields: read_list(r)? },
        2 => HashRead::GetAll,
        3 => HashRead::Keys,
        4 => HashRead::Vals,
        5 => HashRead::Len,
        6 => HashRead::Exists { field: r.bytes()? },
        7 => HashRead::StrLen { field: r.bytes()? },
        8 => {
            let at = r.offset();
            let flags = r.u8()?;
            if flags > 7 {
                return Err(DecodeError { offset: at, reason: "unknown HSCAN flag bits" });
            }
            let after = if flags & 1 != 0 { Some(r.bytes()?) } else { None };
            let pattern = if flags & 2 != 0 { Some(r.bytes()?) } else { None };
            HashRead::Scan { after, pattern, count: r.varint()?, novalues: flags & 4 != 0 }
        }
        _ => return Err(DecodeError { offset: at, reason: "unknown hash read" }),
    })
}

fn cond_bits(c: SetCondition) -> u8 {
    match c {
        SetCondition::Always => 0,
        SetCondition::IfAbsent => 1,
        SetCondition::IfPresent => 2,
    }
}

pub(crate) fn expiry_kind(e: SetExpiry) -> u8 {
    match e {
        SetExpiry::Default => 0,
        SetExpiry::Keep => 1,
        SetExpiry::Persist => 2,
        SetExpiry::In(_) => 3,
        SetExpiry::At(_) => 4,
    }
}

pub(crate) fn put_expiry_ms(buf: &mut BytesMut, e: SetExpiry) {
    if let SetExpiry::In(ms) | SetExpiry::At(ms) = e {
        put_varint(buf, zigzag(ms));
    }
}

pub(crate) fn read_expiry(r: &mut Reader<'_>, kind: u8, at: usize) -> Result<SetExpiry, DecodeError> {
    Ok(match kind {
        0 => SetExpiry::Default,
        1 => SetExpiry::Keep,
        2 => SetExpiry::Persist,
        3 => SetExpiry::In(unzigzag(r.varint()?)),
        4 => SetExpiry::At(unzigzag(r.varint()?)),
        _ => return Err(DecodeError { offset: at, reason: "invalid expiry kind" }),
    })
}

/// Bytes a stamp adds to a proposal: the first byte and the stamp.
pub const STAMP_LEN: usize = 9;

/// Wraps an encoded proposal in a stamped entry with time `stamp` (ms since the Unix epoch).
pub fn stamp_entry(proposal: &[u8], stamp: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(STAMP_LEN + proposal.len());
    put_stamped_entry(&mut buf, proposal, stamp);
    buf.freeze()
}

/// The stamped entries of `proposals`, all with time `stamp`, one after the other in one buffer:
/// the entry of the `i`-th proposal is the next `STAMP_LEN + len` bytes, exactly the bytes of
/// its [`stamp_entry`]. A leader stamps the proposals it appends together this way and appends
/// slices of the buffer ([`StampedEntries`]): two allocations per batch (the buffer, and the
/// reference count its first slice creates) instead of two per entry. The buffer lives as long
/// as any of its entries does; the entries of a batch are appended to the log together and
/// leave it together (compaction removes a prefix), as a follower's entries already share the
/// frame they arrived in, and the state machine copies what it keeps out of them (keys and
/// values are never slices of an entry).
pub fn stamp_entries<'a>(proposals: impl Iterator<Item = &'a [u8]> + Clone, stamp: u64) -> StampedEntries {
    let len = proposals.clone().map(|p| STAMP_LEN + p.len()).sum();
    let mut buf = BytesMut::with_capacity(len);
    for p in proposals {
        put_stamped_entry(&mut buf, p, stamp);
    }
    StampedEntries { buf: buf.freeze(), at: 0 }
}

/// The entries [`stamp_entries`] wrote, taken in order with [`StampedEntries::next`].
#[derive(Debug)]
pub struct StampedEntries {
    /// The entries, one after the other.
    buf: Bytes,
    /// Where the next one starts.
    at: usize,
}

impl StampedEntries {
    /// The entry of the next proposal, whose length is `proposal_len` (`None` past the end).
    pub fn next(&mut self, proposal_len: usize) -> Option<Bytes> {
        let end = self.at.checked_add(STAMP_LEN + proposal_len).filter(|&end| end <= self.buf.len())?;
        let entry = self.buf.slice(self.at..end);
        self.at = end;
        Some(entry)
    }
}

fn put_stamped_entry(buf: &mut BytesMut, proposal: &[u8], stamp: u64) {
    buf.put_u8(STAMPED_ENTRY);
    buf.put_u64_le(stamp);
    buf.put_slice(proposal);
}

/// Decodes the data of a log entry: a stamped entry (its stamp and proposal) or a bare proposal
/// (no stamp). Errors as [`decode_proposal`].
pub fn decode_entry(b: &[u8]) -> Result<(Option<u64>, Proposal), KvError> {
    if b.first() == Some(&STAMPED_ENTRY) {
        let mut r = Reader::new(b);
        let bad = |e: DecodeError| KvError::BadProposal { offset: e.offset, reason: e.reason };
        r.u8().map_err(bad)?;
        let stamp = r.u64_le().map_err(bad)?;
        let p = decode_proposal(&b[9..]).map_err(|e| match e {
            KvError::BadProposal { offset, reason } => KvError::BadProposal { offset: offset + 9, reason },
            other => other,
        })?;
        return Ok((Some(stamp), p));
    }
    Ok((None, decode_proposal(b)?))
}

/// Decodes a proposal written by [`encode_proposal`].
///
/// Errors: [`KvError::ProposalVersion`] for an unknown version byte, [`KvError::BadProposal`] for
/// anything else that is not exactly one well-formed proposal (including an empty input).
pub fn decode_proposal(b: &[u8]) -> Result<Proposal, KvError> {
    let mut r = Reader::new(b);
    let bad = |e: DecodeError| KvError::BadProposal { offset: e.offset, reason: e.reason };
    let version = r.u8().map_err(bad)?;
    if version == 0 || version > PROPOSAL_FORMAT_VERSION {
        return Err(KvError::ProposalVersion { found: version, supported: PROPOSAL_FORMAT_VERSION });
    }
    let p = decode_proposal_body(&mut r, version).map_err(bad)?;
    r.finish().map_err(bad)?;
    Ok(p)
}

fn decode_proposal_body(r: &mut Reader<'_>, version: u8) -> Result<Proposal, DecodeError> {
    let session = r.u64_le()?;
    let seq = r.varint()?;
    let ack_below = r.varint()?;
    let command = read_command(r, Some(version))?;
    Ok(Proposal { session, seq, ack_below, command })
}

/// Reads a command: at the top of a proposal of format `version`, or inside a transaction
/// (`None`: any command but `MULTI` and `SWEEP`).
fn read_command(r: &mut Reader<'_>, version: Option<u8>) -> Result<Command, DecodeError> {
    let tag_at = r.offset();
    let tag = r.u8()?;
    match version {
        Some(1) if tag > TAG_APPEND => {
            return Err(DecodeError { offset: tag_at, reason: "command tag not in proposal format 1" })
        }
        // Canonical: the commands of format 1 are always written as format 1.
        Some(v) if v > 1 && tag <= TAG_APPEND => {
            return Err(DecodeError { offset: tag_at, reason: "format 1 command in a format 2 proposal" })
        }
        None if tag == TAG_MULTI || tag == TAG_SWEEP => {
            return Err(DecodeError { offset: tag_at, reason: "command not allowed in a transaction" })
        }
        _ => {}
    }
    let command = match tag {
        TAG_SET => {
            let flags_at = r.offset();
            let flags = r.u8()?;
            if flags & !(SET_COND_MASK | SET_GET_FLAG) != 0 {
                return Err(DecodeError { offset: flags_at, reason: "unknown SET flag bits" });
            }
            let condition = match flags & SET_COND_MASK {
                0 => SetCondition::Always,
                1 => SetCondition::IfAbsent,
                2 => SetCondition::IfPresent,
                _ => return Err(DecodeError { offset: flags_at, reason: "invalid SET condition" }),
            };
            let key = r.bytes()?;
            let value = r.bytes()?;
            Command::Set { key, value, condition, get: flags & SET_GET_FLAG != 0 }
        }
        TAG_DEL => {
            // Each key takes at least one byte (its length), which bounds the count.
            let n = r.count(1)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(r.bytes()?);
            }
            Command::Del { keys }
        }
        TAG_MSET => {
            let n = r.count(2)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.bytes()?;
                let v = r.bytes()?;
                pairs.push((k, v));
            }
            Command::MSet { pairs }
        }
        TAG_INCRBY => {
            let key = r.bytes()?;
            let by = unzigzag(r.varint()?);
            Command::IncrBy { key, by }
        }
        TAG_APPEND => {
            let key = r.bytes()?;
            let value = r.bytes()?;
            Command::Append { key, value }
        }
        TAG_SETEX => {
            let at = r.offset();
            let flags = r.u8()?;
            let condition = match flags & SET_COND_MASK {
                0 => SetCondition::Always,
                1 => SetCondition::IfAbsent,
                2 => SetCondition::IfPresent,
                _ => return Err(DecodeError { offset: at, reason: "invalid SET condition" }),
            };
            let origin = match flags >> ORIGIN_SHIFT {
                0 => ExpiryOrigin::Set,
                1 => ExpiryOrigin::SetEx,
                2 => ExpiryOrigin::PSetEx,
                _ => ExpiryOrigin::GetEx,
            };
            let key = r.bytes()?;
            let value = r.bytes()?;
            let expiry = read_expiry(r, (flags >> EXPIRY_SHIFT) & 0b111, at)?;
            Command::SetEx { key, value, condition, get: flags & SET_GET_FLAG != 0, expiry, origin }
        }
        TAG_EXPIRE => {
            let at = r.offset();
            let flags = r.u8()?;
            if flags >> 5 != 0 {
                return Err(DecodeError { offset: at, reason: "unknown EXPIRE flag bits" });
            }
            let condition = match flags & 0b111 {
                0 => ExpireCondition::Always,
                1 => ExpireCondition::IfNone,
                2 => ExpireCondition::IfSome,
                3 => ExpireCondition::IfGreater,
                4 => ExpireCondition::IfLess,
                5 => ExpireCondition::IfSomeLess,
                _ => return Err(DecodeError { offset: at, reason: "invalid EXPIRE condition" }),
            };
            let key = r.bytes()?;
            let when = unzigzag(r.varint()?);
            Command::Expire {
                key,
                when,
                seconds: flags & 0b1000 != 0,
                absolute: flags & 0b1_0000 != 0,
                condition,
            }
        }
        TAG_PERSIST => Command::Persist { key: r.bytes()? },
        TAG_GETEX => {
            let at = r.offset();
            let flags = r.u8()?;
            if flags & !(0b111 << EXPIRY_SHIFT) != 0 {
                return Err(DecodeError { offset: at, reason: "unknown GETEX flag bits" });
            }
            let key = r.bytes()?;
            let expiry = read_expiry(r, flags >> EXPIRY_SHIFT, at)?;
            Command::GetEx { key, expiry }
        }
        TAG_GETDEL => Command::GetDel { key: r.bytes()? },
        TAG_SWEEP => {
            let at = r.offset();
            let max = u32::try_from(r.varint()?)
                .map_err(|_| DecodeError { offset: at, reason: "sweep size exceeds u32" })?;
            Command::Sweep { max }
        }
        TAG_MULTI => {
            let at = r.offset();
            let watch = match r.u8()? {
                0 => None,
                1 => {
                    let index = r.varint()?;
                    let n = r.count(1)?;
                    let keys = (0..n).map(|_| r.bytes()).collect::<Result<Vec<_>, _>>()?;
                    Some(Watch { index, keys })
                }
                _ => return Err(DecodeError { offset: at, reason: "unknown MULTI flag bits" }),
            };
            let n = r.count(2)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let at = r.offset();
                items.push(match r.u8()? {
                    1 => TxItem::Write(read_command(r, None)?),
                    2 => TxItem::Read(read_query(r)?),
                    _ => return Err(DecodeError { offset: at, reason: "unknown transaction item kind" }),
                });
            }
            Command::Multi { watch, items }
        }
        TAG_RENAME | TAG_COPY => {
            let at = r.offset();
            let flag = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError { offset: at, reason: "unknown RENAME/COPY flag bits" }),
            };
            let src = r.bytes()?;
            let dst = r.bytes()?;
            if tag == TAG_RENAME {
                Command::Rename { src, dst, nx: flag }
            } else {
                Command::Copy { src, dst, replace: flag }
            }
        }
        TAG_FLUSH => Command::Flush,
        TAG_HASH => Command::Hash { key: r.bytes()?, op: read_hash_op(r)? },
        TAG_SETRANGE => Command::SetRange { key: r.bytes()?, offset: r.varint()?, value: r.bytes()? },
        TAG_INCRBYFLOAT => Command::IncrByFloat { key: r.bytes()?, by: r.bytes()? },
        TAG_MSETNX => {
            let n = r.count(2)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.bytes()?;
                let v = r.bytes()?;
                pairs.push((k, v));
            }
            Command::MSetNx { pairs }
        }
        _ => match (super::script::decode_command(tag, r), super::cas::decode_command(tag, r)) {
            (Some(c), _) => Command::Script(c?),
            (None, Some(c)) => c?,
            (None, None) => return Err(DecodeError { offset: tag_at, reason: "unknown command tag" }),
        },
    };
    Ok(command)
}

/// Upper bound of the encoded size of a command's keys and values, for buffer pre-sizing.
fn command_size_hint(c: &Command) -> usize {
    const L: usize = 10; // largest varint
    match c {
        Command::Set { key, value, .. } | Command::Append { key, value } => {
            key.len() + value.len() + 2 * L + 1
        }
        Command::Del { keys } => keys.iter().map(|k| k.len() + L).sum::<usize>() + L,
        Command::MSet { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len() + 2 * L).sum::<usize>() + L,
        Command::IncrBy { key, .. } => key.len() + 2 * L,
        Command::SetEx { key, value, .. } => key.len() + value.len() + 3 * L + 1,
        Command::Expire { key, .. }
        | Command::Persist { key }
        | Command::GetEx { key, .. }
        | Command::GetDel { key } => key.len() + 2 * L + 1,
        Command::Sweep { .. } | Command::Flush => L,
        Command::Rename { src, dst, .. } | Command::Copy { src, dst, .. } => {
            src.len() + dst.len() + 2 * L + 1
        }
        Command::SetRange { key, value, .. } | Command::IncrByFloat { key, by: value } => {
            key.len() + value.len() + 3 * L
        }
        Command::MSetNx { pairs } => pairs.iter().map(|(k, v)| k.len() + v.len() + 2 * L).sum::<usize>() + L,
        Command::Hash { key, op } => {
            key.len() + op.items().iter().map(|b| b.len() + L).sum::<usize>() + 3 * L
        }
        Command::Script(s) => {
            s.keys().into_iter().chain(s.values()).map(|b| b.len() + L).sum::<usize>() + 3 * L
        }
        Command::SetIf { key, value, condition, .. } => {
            key.len() + value.len() + condition.bytes().map_or(8, Bytes::len) + 4 * L + 2
        }
        Command::DelEx { key, condition } => key.len() + condition.bytes().map_or(8, Bytes::len) + 2 * L + 2,
        Command::Multi { items, .. } => {
            items
                .iter()
                .map(|i| if let TxItem::Write(c) = i { command_size_hint(c) } else { 32 })
                .sum::<usize>()
                + L
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::Reply;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn arb_condition() -> impl Strategy<Value = SetCondition> {
        prop_oneof![Just(SetCondition::Always), Just(SetCondition::IfAbsent), Just(SetCondition::IfPresent)]
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (arb_bytes(), arb_bytes(), arb_condition(), any::<bool>())
                .prop_map(|(key, value, condition, get)| Command::Set { key, value, condition, get }),
            prop::collection::vec(arb_bytes(), 0..5).prop_map(|keys| Command::Del { keys }),
            prop::collection::vec((arb_bytes(), arb_bytes()), 0..5).prop_map(|pairs| Command::MSet { pairs }),
            (arb_bytes(), any::<i64>()).prop_map(|(key, by)| Command::IncrBy { key, by }),
            (arb_bytes(), arb_bytes()).prop_map(|(key, value)| Command::Append { key, value }),
            (arb_bytes(), arb_bytes(), arb_condition(), any::<bool>(), arb_expiry(), 0u8..4).prop_map(
                |(key, value, condition, get, expiry, o)| {
                    let origin =
                        [ExpiryOrigin::Set, ExpiryOrigin::SetEx, ExpiryOrigin::PSetEx, ExpiryOrigin::GetEx]
                            [o as usize];
                    Command::SetEx { key, value, condition, get, expiry, origin }
                }
            ),
            (arb_bytes(), any::<i64>(), any::<bool>(), any::<bool>(), 0usize..6).prop_map(
                |(key, when, seconds, absolute, c)| {
                    let condition = [
                        ExpireCondition::Always,
                        ExpireCondition::IfNone,
                        ExpireCondition::IfSome,
                        ExpireCondition::IfGreater,
                        ExpireCondition::IfLess,
                        ExpireCondition::IfSomeLess,
                    ][c];
                    Command::Expire { key, when, seconds, absolute, condition }
                }
            ),
            arb_bytes().prop_map(|key| Command::Persist { key }),
            (arb_bytes(), arb_expiry()).prop_map(|(key, expiry)| Command::GetEx { key, expiry }),
            arb_bytes().prop_map(|key| Command::GetDel { key }),
            any::<u32>().prop_map(|max| Command::Sweep { max }),
            (arb_bytes(), arb_bytes(), any::<bool>()).prop_map(|(src, dst, nx)| Command::Rename {
                src,
                dst,
                nx
            }),
            (arb_bytes(), arb_bytes(), any::<bool>()).prop_map(|(src, dst, replace)| Command::Copy {
                src,
                dst,
                replace
            }),
            Just(Command::Flush),
            (arb_bytes(), any::<u64>(), arb_bytes()).prop_map(|(key, offset, value)| Command::SetRange {
                key,
                offset,
                value
            }),
            (arb_bytes(), arb_bytes()).prop_map(|(key, by)| Command::IncrByFloat { key, by }),
            prop::collection::vec((arb_bytes(), arb_bytes()), 0..5)
                .prop_map(|pairs| Command::MSetNx { pairs }),
            (arb_bytes(), arb_hash_op()).prop_map(|(key, op)| Command::Hash { key, op }),
            (arb_bytes(), arb_bytes(), arb_value_condition(), any::<bool>(), arb_expiry())
                .prop_filter("SET never persists", |t| t.4 != SetExpiry::Persist)
                .prop_map(|(key, value, condition, get, expiry)| Command::SetIf {
                    key,
                    value,
                    condition: Box::new(condition),
                    get,
                    expiry
                }),
            (arb_bytes(), arb_value_condition())
                .prop_map(|(key, condition)| Command::DelEx { key, condition }),
        ]
    }

    fn arb_value_condition() -> impl Strategy<Value = super::super::cas::ValueCondition> {
        use super::super::cas::ValueCondition as V;
        prop_oneof![
            arb_bytes().prop_map(V::Equal),
            arb_bytes().prop_map(V::NotEqual),
            arb_digest_arg().prop_map(V::DigestEqual),
            arb_digest_arg().prop_map(V::DigestNotEqual),
            Just(V::Unknown),
        ]
    }

    fn arb_digest_arg() -> impl Strategy<Value = super::super::cas::DigestArg> {
        use super::super::cas::DigestArg as D;
        prop_oneof![any::<u64>().prop_map(D::Hex), Just(D::NotHex), Just(D::BadLength)]
    }

    fn arb_hash_op() -> impl Strategy<Value = HashOp> {
        prop_oneof![
            (prop::collection::vec((arb_bytes(), arb_bytes()), 0..4), any::<bool>())
                .prop_map(|(pairs, ok)| HashOp::Set { pairs, ok }),
            (arb_bytes(), arb_bytes()).prop_map(|(field, value)| HashOp::SetNx { field, value }),
            prop::collection::vec(arb_bytes(), 0..4).prop_map(|fields| HashOp::Del { fields }),
            (arb_bytes(), any::<i64>()).prop_map(|(field, by)| HashOp::IncrBy { field, by }),
            (arb_bytes(), arb_bytes()).prop_map(|(field, by)| HashOp::IncrByFloat { field, by }),
        ]
    }

    fn arb_hash_read() -> impl Strategy<Value = HashRead> {
        prop_oneof![
            arb_bytes().prop_map(|field| HashRead::Get { field }),
            prop::collection::vec(arb_bytes(), 0..4).prop_map(|fields| HashRead::MGet { fields }),
            Just(HashRead::GetAll),
            Just(HashRead::Keys),
            Just(HashRead::Vals),
            Just(HashRead::Len),
            arb_bytes().prop_map(|field| HashRead::Exists { field }),
            arb_bytes().prop_map(|field| HashRead::StrLen { field }),
            (prop::option::of(arb_bytes()), prop::option::of(arb_bytes()), any::<u64>(), any::<bool>())
                .prop_map(|(after, pattern, count, novalues)| HashRead::Scan {
                    after,
                    pattern,
                    count,
                    novalues
                }),
        ]
    }

    fn arb_query() -> impl Strategy<Value = Query> {
        prop_oneof![
            arb_bytes().prop_map(|key| Query::Get { key }),
            prop::collection::vec(arb_bytes(), 0..3).prop_map(|keys| Query::MGet { keys }),
            prop::collection::vec(arb_bytes(), 0..3).prop_map(|keys| Query::Exists { keys }),
            arb_bytes().prop_map(|key| Query::Strlen { key }),
            Just(Query::DbSize),
            (arb_bytes(), any::<bool>(), any::<bool>()).prop_map(|(key, millis, absolute)| Query::Ttl {
                key,
                millis,
                absolute
            }),
            arb_bytes().prop_map(|key| Query::Version { key }),
            Just(Query::AppliedIndex),
            arb_bytes().prop_map(|pattern| Query::Keys { pattern }),
            (arb_bytes(), arb_hash_read()).prop_map(|(key, read)| Query::Hash { key, read }),
            (
                prop::option::of(arb_bytes()),
                prop::option::of(arb_bytes()),
                any::<u64>(),
                prop::option::of(arb_bytes())
            )
                .prop_map(|(after, pattern, count, kind)| Query::Scan {
                    after,
                    pattern,
                    count,
                    kind
                }),
            arb_bytes().prop_map(|key| Query::Type { key }),
            any::<u64>().prop_map(|seed| Query::RandomKey { seed }),
            (arb_bytes(), any::<i64>(), any::<i64>()).prop_map(|(key, start, end)| Query::GetRange {
                key,
                start,
                end
            }),
            arb_bytes().prop_map(|key| Query::Digest { key }),
            Just(Query::Time),
        ]
    }

    fn arb_multi() -> impl Strategy<Value = Command> {
        let item = prop_oneof![
            arb_command()
                .prop_filter("not nestable", |c| !matches!(c, Command::Sweep { .. }))
                .prop_map(TxItem::Write),
            arb_query().prop_map(TxItem::Read),
        ];
        let watch = prop::option::of(
            (any::<u64>(), prop::collection::vec(arb_bytes(), 0..3))
                .prop_map(|(index, keys)| Watch { index, keys }),
        );
        (watch, prop::collection::vec(item, 0..5)).prop_map(|(watch, items)| Command::Multi { watch, items })
    }

    proptest! {
        #[test]
        fn multi_roundtrip(command in arb_multi(), session in any::<u64>()) {
            let p = Proposal { session, seq: 1, ack_below: 1, command };
            prop_assert_eq!(decode_proposal(&encode_proposal(&p)), Ok(p));
        }
    }

    fn arb_expiry() -> impl Strategy<Value = SetExpiry> {
        prop_oneof![
            Just(SetExpiry::Default),
            Just(SetExpiry::Keep),
            Just(SetExpiry::Persist),
            any::<i64>().prop_map(SetExpiry::In),
            any::<i64>().prop_map(SetExpiry::At),
        ]
    }

    proptest! {
        #[test]
        fn stamped_entry_roundtrip(p in arb_proposal(), stamp in any::<u64>()) {
            let enc = encode_proposal(&p);
            let entry = stamp_entry(&enc, stamp);
            prop_assert_eq!(decode_entry(&entry), Ok((Some(stamp), p.clone())));
            prop_assert_eq!(decode_entry(&enc), Ok((None, p)));
        }

        /// Entries stamped together are, byte for byte, the entries stamped one by one, and
        /// slices of one buffer.
        #[test]
        fn entries_stamped_together_are_entries_stamped_alone(
            proposals in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..12),
            stamp in any::<u64>(),
        ) {
            let mut entries = stamp_entries(proposals.iter().map(|p| &p[..]), stamp);
            let mut start: Option<usize> = None;
            let mut offset = 0;
            for p in &proposals {
                let entry = entries.next(p.len()).expect("an entry for every proposal");
                prop_assert_eq!(&entry, &stamp_entry(p, stamp));
                let start = *start.get_or_insert(entry.as_ptr() as usize);
                prop_assert_eq!(entry.as_ptr() as usize, start + offset, "one buffer, entries in order");
                offset += entry.len();
            }
            prop_assert_eq!(entries.next(0), None, "nothing after the last entry");
        }
    }

    fn arb_proposal() -> impl Strategy<Value = Proposal> {
        (any::<u64>(), any::<u64>(), any::<u64>(), arb_command())
            .prop_map(|(session, seq, ack_below, command)| Proposal { session, seq, ack_below, command })
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            Just(Reply::Ok),
            Just(Reply::Nil),
            arb_bytes().prop_map(Reply::Bulk),
            any::<i64>().prop_map(Reply::Int),
            ".{0,20}".prop_map(Reply::Error),
            "[a-z]{0,8}".prop_map(Reply::Status),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Reply::Array))
    }

    proptest! {
        #[test]
        fn proposal_roundtrip(p in arb_proposal()) {
            let enc = encode_proposal(&p);
            prop_assert!(!enc.is_empty());
            prop_assert_eq!(decode_proposal(&enc), Ok(p));
        }

        /// Arbitrary bytes never panic; whatever decodes re-encodes to exactly the input.
        #[test]
        fn random_bytes_never_panic_and_decoding_is_canonical(b in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = decode_proposal(&b) {
                prop_assert_eq!(&encode_proposal(&p)[..], &b[..]);
            }
        }

        /// Same, with a valid version byte so that the decoder gets deeper.
        #[test]
        fn random_bodies_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut input = vec![PROPOSAL_FORMAT_VERSION];
            input.extend_from_slice(&b);
            if let Ok(p) = decode_proposal(&input) {
                prop_assert_eq!(&encode_proposal(&p)[..], &input[..]);
            }
        }

        /// Damaging a valid encoding (truncation, one changed byte, an extra byte) never panics,
        /// and truncations and extra bytes are always rejected.
        #[test]
        fn damaged_encodings(p in arb_proposal(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), x in 1u8..=255) {
            let enc = encode_proposal(&p).to_vec();
            let at = cut.index(enc.len());
            prop_assert!(decode_proposal(&enc[..at]).is_err());
            let mut longer = enc.clone();
            longer.push(x);
            prop_assert!(decode_proposal(&longer).is_err());
            let mut flipped = enc.clone();
            let i = flip.index(enc.len());
            flipped[i] ^= x;
            if let Ok(q) = decode_proposal(&flipped) {
                prop_assert_eq!(&encode_proposal(&q)[..], &flipped[..]);
            }
        }

        #[test]
        fn reply_roundtrip(reply in arb_reply()) {
            let mut buf = BytesMut::new();
            put_reply(&mut buf, &reply);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(read_reply(&mut r), Ok(reply));
            prop_assert_eq!(r.finish(), Ok(()));
        }

        #[test]
        fn random_replies_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&b);
            let _ = read_reply(&mut r);
        }

        #[test]
        fn zigzag_roundtrip(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn varint_edges() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(r.finish(), Ok(()));
        }
        // Overlong zero, 11-byte and >64-bit encodings are rejected.
        assert!(Reader::new(&[0x80, 0x00]).varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(Reader::new(&too_big).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn version_and_shape_errors() {
        assert!(matches!(decode_proposal(&[]), Err(KvError::BadProposal { offset: 0, .. })));
        assert_eq!(decode_proposal(&[3, 0, 0]), Err(KvError::ProposalVersion { found: 3, supported: 2 }));
        assert_eq!(decode_proposal(&[0, 0, 0]), Err(KvError::ProposalVersion { found: 0, supported: 2 }));
        let p = Proposal {
            session: 7,
            seq: 1,
            ack_below: 1,
            command: Command::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                condition: SetCondition::IfPresent,
                get: true,
            },
        };
        let enc = encode_proposal(&p).to_vec();
        // version(1) + session(8) + seq(1) + ack(1) + tag(1) + flags(1) + "k"(2) + "v"(2)
        assert_eq!(enc.len(), 17);
        assert_eq!(enc[11], TAG_SET);
        assert_eq!(enc[12], 0b110);
        let mut bad_tag = enc.clone();
        bad_tag[11] = 9;
        assert_eq!(
            decode_proposal(&bad_tag),
            Err(KvError::BadProposal { offset: 11, reason: "command tag not in proposal format 1" })
        );
        bad_tag[0] = 2;
        bad_tag[11] = 99;
        assert_eq!(
            decode_proposal(&bad_tag),
            Err(KvError::BadProposal { offset: 11, reason: "unknown command tag" })
        );
        bad_tag[11] = TAG_SET;
        assert_eq!(
            decode_proposal(&bad_tag),
            Err(KvError::BadProposal { offset: 11, reason: "format 1 command in a format 2 proposal" })
        );
        // A stamped entry: 9 bytes of envelope, errors located in the whole entry.
        let stamped = stamp_entry(&enc, 1234);
        assert_eq!(decode_entry(&stamped), Ok((Some(1234), p.clone())));
        let mut bad = stamped.to_vec();
        bad[9 + 11] = 99;
        assert!(matches!(decode_entry(&bad), Err(KvError::BadProposal { offset: 20, .. })));
        assert!(matches!(decode_entry(&stamped[..5]), Err(KvError::BadProposal { .. })));
        let mut bad_cond = enc.clone();
        bad_cond[12] = 0b011;
        assert_eq!(
            decode_proposal(&bad_cond),
            Err(KvError::BadProposal { offset: 12, reason: "invalid SET condition" })
        );
        let mut bad_flags = enc.clone();
        bad_flags[12] = 0b1000;
        assert_eq!(
            decode_proposal(&bad_flags),
            Err(KvError::BadProposal { offset: 12, reason: "unknown SET flag bits" })
        );
        // A DEL claiming 2^40 keys in a short buffer is refused before allocating.
        let mut huge = enc[..11].to_vec();
        huge.push(TAG_DEL);
        huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
        assert!(matches!(
            decode_proposal(&huge),
            Err(KvError::BadProposal { reason: "count exceeds the remaining input", .. })
        ));
    }
}
