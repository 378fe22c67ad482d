//! The vocabulary of the state machine: replicated writes ([`Command`]), local reads ([`Query`]),
//! their domain answers ([`Reply`]) and the log-entry envelope ([`Proposal`]).
//!
//! The semantics of every command follow Redis for string values (the only value type this store
//! has). The server parses RESP into these types and maps a [`Reply`] back to RESP; the state
//! machine never sees protocol details.

use bytes::Bytes;

pub use super::cas::ValueCondition;
pub use super::expiry::{ExpireCondition, ExpiryOrigin, SetExpiry};
pub use super::hash::{HashOp, HashRead};
pub use super::script::{ScriptCommand, ScriptQuery};
pub use super::txn::{TxItem, Watch};
use super::{MAX_COMMAND_LEN, MAX_KEY_LEN, MAX_VALUE_LEN, PER_ITEM_OVERHEAD};

/// The condition of a `SET` (the `NX` / `XX` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SetCondition {
    /// Plain `SET`: always write.
    #[default]
    Always,
    /// `SET ... NX`: write only if the key does not exist.
    IfAbsent,
    /// `SET ... XX`: write only if the key already exists.
    IfPresent,
}

/// A write command. It is replicated through the Raft log and executed by every replica.
///
/// Commands that involve time (deadlines) take it from the log time of their entry (see
/// [`super::expiry`]); every command treats an expired key as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SET key value [NX|XX] [GET]`.
    ///
    /// Reply without `GET`: [`Reply::Ok`] if written, [`Reply::Nil`] if the condition failed.
    /// Reply with `GET`: the previous value ([`Reply::Bulk`]) or [`Reply::Nil`] if there was none,
    /// whether or not the condition allowed the write (Redis ≥ 7.0 behaviour).
    Set {
        /// The key to write.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// `NX` / `XX` condition.
        condition: SetCondition,
        /// `GET` option: reply with the old value instead of `OK`.
        get: bool,
    },
    /// `DEL key [key ...]`: removes the keys; replies with the number of keys that existed
    /// (a key named twice is counted once).
    Del {
        /// Keys to remove (at least one).
        keys: Vec<Bytes>,
    },
    /// `MSET key value [key value ...]`: sets all pairs atomically (later pairs win for a repeated
    /// key); replies [`Reply::Ok`].
    MSet {
        /// The key/value pairs (at least one).
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `INCRBY key by` (and `INCR`, `DECR`, `DECRBY` mapped onto it by the protocol layer).
    ///
    /// An absent key counts as 0. Replies with the new value as [`Reply::Int`], or the errors
    /// `ERR value is not an integer or out of range` (stored value is not a canonical decimal
    /// 64-bit integer, see [`parse_i64`]) and `ERR increment or decrement would overflow`.
    IncrBy {
        /// The key holding the counter.
        key: Bytes,
        /// The signed increment.
        by: i64,
    },
    /// `APPEND key value`: appends to the value (creating it if absent); replies with the new
    /// length as [`Reply::Int`].
    Append {
        /// The key to append to.
        key: Bytes,
        /// The bytes to append.
        value: Bytes,
    },
    /// `SET` with an expiry option (`EX`, `PX`, `EXAT`, `PXAT`, `KEEPTTL`), `SETEX`, `PSETEX`:
    /// [`Command::Set`]'s semantics plus the deadline. A deadline already past deletes the key
    /// (the reply is the one the write would give).
    SetEx {
        /// The key to write.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// `NX` / `XX` condition.
        condition: SetCondition,
        /// `GET` option.
        get: bool,
        /// The deadline to set, or `Keep`.
        expiry: SetExpiry,
        /// The command it came from (for error texts).
        origin: ExpiryOrigin,
    },
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` with Redis' semantics: [`Reply::Int`] 1 if
    /// the deadline was set (or the key deleted because it is already past), 0 if the key does
    /// not exist or the condition failed; `ERR invalid expire time in '<name>' command` when the
    /// deadline overflows.
    Expire {
        /// The key.
        key: Bytes,
        /// The integer argument as given.
        when: i64,
        /// True for seconds (`EXPIRE`, `EXPIREAT`), false for milliseconds.
        seconds: bool,
        /// True for a Unix time (`EXPIREAT`, `PEXPIREAT`), false for a time from now.
        absolute: bool,
        /// `NX` / `XX` / `GT` / `LT`.
        condition: ExpireCondition,
    },
    /// `PERSIST key`: removes the deadline; [`Reply::Int`] 1 if there was one, else 0.
    Persist {
        /// The key.
        key: Bytes,
    },
    /// `GETEX key [EX|PX|EXAT|PXAT|PERSIST]`: the value (or nil), and the deadline changed.
    GetEx {
        /// The key.
        key: Bytes,
        /// `Default` leaves the deadline alone.
        expiry: SetExpiry,
    },
    /// `GETDEL key`: the value (or nil), and the key removed.
    GetDel {
        /// The key.
        key: Bytes,
    },
    /// `MULTI` ... `EXEC`: the queued commands, applied atomically in one entry (see
    /// [`super::txn`]). [`Reply::Nil`] if a watched key changed; otherwise [`Reply::Array`]
    /// with one reply per item, errors included (a failing command does not stop the others).
    Multi {
        /// `WATCH`: the keys and the index of the state the watch read.
        watch: Option<Watch>,
        /// The queued commands, in order (never a `Multi` or a `Sweep`).
        items: Vec<TxItem>,
    },
    /// Internal, proposed by the leader (never by a client): removes at most `max` expired
    /// keys, earliest deadline first (see [`super::expiry`]); replies with the number removed.
    Sweep {
        /// Most keys to remove.
        max: u32,
    },
    /// `RENAME src dst` (`nx` false) and `RENAMENX src dst` (`nx` true): moves the value, its
    /// deadline and its type to `dst` (see [`super::keys`]). `ERR no such key` if `src` does not
    /// exist; `RENAME` replies [`Reply::Ok`], `RENAMENX` [`Reply::Int`] 1, or 0 if `dst` exists.
    Rename {
        /// The key to move.
        src: Bytes,
        /// The new name.
        dst: Bytes,
        /// `RENAMENX`: only if `dst` does not exist.
        nx: bool,
    },
    /// `COPY src dst [REPLACE]`: copies the value and its deadline; [`Reply::Int`] 1 if copied,
    /// 0 if `src` does not exist or `dst` exists without `REPLACE`.
    Copy {
        /// The key to copy.
        src: Bytes,
        /// The destination.
        dst: Bytes,
        /// `REPLACE`: overwrite an existing `dst`.
        replace: bool,
    },
    /// `FLUSHDB` / `FLUSHALL` (admin): removes every key; [`Reply::Ok`].
    Flush,
    /// `SETRANGE key offset value`: overwrites from `offset` (zero-padding a shorter value);
    /// [`Reply::Int`], the new length.
    SetRange {
        /// The key.
        key: Bytes,
        /// The byte offset (checked against [`MAX_VALUE_LEN`] with the value's length).
        offset: u64,
        /// The bytes to write.
        value: Bytes,
    },
    /// `INCRBYFLOAT key increment`: Redis' long double arithmetic and formatting (see
    /// [`super::ldouble`]); the new value as [`Reply::Bulk`].
    IncrByFloat {
        /// The key.
        key: Bytes,
        /// The increment as the client wrote it (parsed at apply, identically everywhere).
        by: Bytes,
    },
    /// `MSETNX key value [key value ...]` (and `SETNX key value`): sets every pair if none of
    /// the keys exists; [`Reply::Int`] 1 if set, else 0.
    MSetNx {
        /// The key/value pairs (at least one).
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// A write to the hash at `key` (`HSET`, `HDEL`, ...; see [`super::hash`]).
    Hash {
        /// The key.
        key: Bytes,
        /// What to do.
        op: HashOp,
    },
    /// `EVAL`, `EVALSHA`, `SCRIPT LOAD`, `SCRIPT FLUSH` (see [`super::script`]).
    Script(ScriptCommand),
    /// `SET key value IFEQ|IFNE|IFDEQ|IFDNE match [GET] [EX|PX|EXAT|PXAT|KEEPTTL]` (Redis 8.4,
    /// see [`super::cas`]): [`Reply::Ok`] if written, [`Reply::Nil`] if the condition failed;
    /// with `GET`, the previous value or nil either way; `WRONGTYPE` for a hash; a digest of the
    /// wrong length is an error once the key holds a string.
    SetIf {
        /// The key to write.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// What the current value must satisfy (boxed: it keeps [`Command`] small).
        condition: Box<ValueCondition>,
        /// `GET` option.
        get: bool,
        /// The deadline to set (`Default`: none, `Keep`: `KEEPTTL`; never `Persist`).
        expiry: SetExpiry,
    },
    /// `DELEX key IFEQ|IFNE|IFDEQ|IFDNE match` (Redis 8.4, see [`super::cas`]): [`Reply::Int`]
    /// 1 if removed, 0 if absent or the condition failed; for a hash Redis's "Key should be of
    /// string type" error (not `WRONGTYPE`); on a string, errors for a digest of the wrong
    /// length or an unknown condition word. (`DELEX key` without a condition is a `DEL` of one
    /// key.)
    DelEx {
        /// The key.
        key: Bytes,
        /// What the current value must satisfy.
        condition: ValueCondition,
    },
}

/// Error text for an oversized key (this store's own limit; Redis has none below 512 MiB).
pub(crate) fn key_too_long_err() -> String {
    format!("ERR key exceeds the maximum length of {MAX_KEY_LEN} bytes")
}

/// Error text for an oversized value (Redis' wording, with this store's limit).
pub(crate) fn value_too_long_err() -> String {
    format!("ERR string exceeds maximum allowed size ({MAX_VALUE_LEN} bytes)")
}

/// Error text for an `INCRBY` on a non-integer value (exactly Redis').
pub(crate) const NOT_AN_INTEGER_ERR: &str = "ERR value is not an integer or out of range";
/// Error text for an `INCRBY` whose result overflows an `i64` (exactly Redis').
pub(crate) const OVERFLOW_ERR: &str = "ERR increment or decrement would overflow";

impl Command {
    /// The lower-case Redis command name, for error messages and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Set { .. } => "set",
            Command::Del { .. } => "del",
            Command::MSet { .. } => "mset",
            Command::IncrBy { .. } => "incrby",
            Command::Append { .. } => "append",
            Command::SetEx { origin, .. } => origin.name(),
            Command::Expire { seconds: true, absolute: false, .. } => "expire",
            Command::Expire { seconds: false, absolute: false, .. } => "pexpire",
            Command::Expire { seconds: true, absolute: true, .. } => "expireat",
            Command::Expire { seconds: false, absolute: true, .. } => "pexpireat",
            Command::Persist { .. } => "persist",
            Command::GetEx { .. } => "getex",
            Command::GetDel { .. } => "getdel",
            Command::Sweep { .. } => "sweep",
            Command::Multi { .. } => "exec",
            Command::Rename { nx: false, .. } => "rename",
            Command::Rename { nx: true, .. } => "renamenx",
            Command::Copy { .. } => "copy",
            Command::Flush => "flushall",
            Command::SetRange { .. } => "setrange",
            Command::IncrByFloat { .. } => "incrbyfloat",
            Command::MSetNx { .. } => "msetnx",
            Command::Hash { op, .. } => op.name(),
            Command::Script(s) => s.name(),
            Command::SetIf { .. } => "set",
            Command::DelEx { .. } => "delex",
        }
    }

    /// The keys the command names (for access control and `COMMAND GETKEYS`).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Command::Set { key, .. }
            | Command::IncrBy { key, .. }
            | Command::Append { key, .. }
            | Command::SetEx { key, .. }
            | Command::Expire { key, .. }
            | Command::Persist { key }
            | Command::GetEx { key, .. }
            | Command::GetDel { key }
            | Command::SetRange { key, .. }
            | Command::IncrByFloat { key, .. }
            | Command::SetIf { key, .. }
            | Command::DelEx { key, .. }
            | Command::Hash { key, .. } => vec![key],
            Command::Rename { src, dst, .. } | Command::Copy { src, dst, .. } => vec![src, dst],
            Command::Del { keys } => keys.iter().collect(),
            Command::MSet { pairs } | Command::MSetNx { pairs } => pairs.iter().map(|(k, _)| k).collect(),
            Command::Sweep { .. } | Command::Flush => Vec::new(),
            Command::Script(s) => s.keys(),
            Command::Multi { watch, items } => {
                let mut keys: Vec<&Bytes> = watch.iter().flat_map(|w| w.keys.iter()).collect();
                for item in items {
                    match item {
                        TxItem::Write(c) => keys.extend(c.keys()),
                        TxItem::Read(q) => keys.extend(q.keys()),
                    }
                }
                keys
            }
        }
    }

    /// Checks the command against the store's limits and shape rules and returns the Redis-style
    /// error text (the text of a [`Reply::Error`], starting with `ERR`) if it must be refused.
    ///
    /// * every key is at most [`MAX_KEY_LEN`] bytes;
    /// * every value is at most [`MAX_VALUE_LEN`] bytes;
    /// * `DEL` and `MSET` carry at least one key (Redis' arity error otherwise);
    /// * the whole payload is at most [`MAX_COMMAND_LEN`] bytes (see [`PER_ITEM_OVERHEAD`]).
    ///
    /// The result of `APPEND` is checked against [`MAX_VALUE_LEN`] when it is executed, since it
    /// depends on the stored value.
    pub fn validate(&self) -> Result<(), String> {
        let mut total: usize = 0;
        let key = |k: &Bytes, total: &mut usize| -> Result<(), String> {
            if k.len() > MAX_KEY_LEN {
                return Err(key_too_long_err());
            }
            *total = total.saturating_add(k.len() + PER_ITEM_OVERHEAD);
            Ok(())
        };
        let value = |v: &Bytes, total: &mut usize| -> Result<(), String> {
            if v.len() > MAX_VALUE_LEN {
                return Err(value_too_long_err());
            }
            *total = total.saturating_add(v.len() + PER_ITEM_OVERHEAD);
            Ok(())
        };
        match self {
            Command::Set { key: k, value: v, .. }
            | Command::SetEx { key: k, value: v, .. }
            | Command::Append { key: k, value: v }
            | Command::IncrByFloat { key: k, by: v } => {
                key(k, &mut total)?;
                value(v, &mut total)?;
            }
            Command::SetRange { key: k, offset, value: v } => {
                key(k, &mut total)?;
                value(v, &mut total)?;
                // Redis checks the resulting length only when something is written.
                if !v.is_empty() && offset.saturating_add(v.len() as u64) > MAX_VALUE_LEN as u64 {
                    return Err(value_too_long_err());
                }
            }
            Command::Rename { src, dst, .. } | Command::Copy { src, dst, .. } => {
                key(src, &mut total)?;
                key(dst, &mut total)?;
            }
            Command::SetIf { key: k, value: v, condition, .. } => {
                key(k, &mut total)?;
                value(v, &mut total)?;
                condition.bytes().map_or(Ok(()), |m| value(m, &mut total))?;
            }
            Command::DelEx { key: k, condition } => {
                key(k, &mut total)?;
                condition.bytes().map_or(Ok(()), |m| value(m, &mut total))?;
            }
            Command::Flush => {}
            Command::Hash { key: k, op } => {
                if op.is_empty() {
                    return Err(arity_err(self.name()));
                }
                key(k, &mut total)?;
                for v in op.items() {
                    value(v, &mut total)?;
                }
            }
            Command::IncrBy { key: k, .. }
            | Command::Expire { key: k, .. }
            | Command::Persist { key: k }
            | Command::GetEx { key: k, .. }
            | Command::GetDel { key: k } => key(k, &mut total)?,
            Command::Sweep { .. } => {}
            Command::Script(s) => {
                for k in s.keys() {
                    key(k, &mut total)?;
                }
                for v in s.values() {
                    value(v, &mut total)?;
                }
            }
            Command::Multi { watch, items } => {
                for k in watch.iter().flat_map(|w| w.keys.iter()) {
                    key(k, &mut total)?;
                }
                for item in items {
                    match item {
                        TxItem::Write(Command::Multi { .. } | Command::Sweep { .. }) => {
                            return Err("ERR a transaction cannot contain this command".to_owned())
                        }
                        TxItem::Write(c) => {
                            c.validate()?;
                            total = total.saturating_add(c.payload_len());
                        }
                        TxItem::Read(q) => {
                            for k in q.keys() {
                                key(k, &mut total)?;
                            }
                        }
                    }
                }
            }
            Command::Del { keys } => {
                if keys.is_empty() {
                    return Err(arity_err(self.name()));
                }
                for k in keys {
                    key(k, &mut total)?;
                }
            }
            Command::MSet { pairs } | Command::MSetNx { pairs } => {
                if pairs.is_empty() {
                    return Err(arity_err(self.name()));
                }
                for (k, v) in pairs {
                    key(k, &mut total)?;
                    value(v, &mut total)?;
                }
            }
        }
        if total > MAX_COMMAND_LEN {
            return Err(format!("ERR command payload exceeds the maximum of {MAX_COMMAND_LEN} bytes"));
        }
        Ok(())
    }
}

impl Command {
    /// The payload size [`Command::validate`] counts (keys and values with their overhead).
    fn payload_len(&self) -> usize {
        let item = |b: &Bytes| b.len() + PER_ITEM_OVERHEAD;
        match self {
            Command::Set { key, value, .. }
            | Command::SetEx { key, value, .. }
            | Command::Append { key, value }
            | Command::SetRange { key, value, .. }
            | Command::IncrByFloat { key, by: value } => item(key) + item(value),
            Command::MSet { pairs } | Command::MSetNx { pairs } => {
                pairs.iter().map(|(k, v)| item(k) + item(v)).sum()
            }
            Command::Hash { key, op } => item(key) + op.items().into_iter().map(item).sum::<usize>(),
            Command::SetIf { key, value, condition, .. } => {
                item(key) + item(value) + condition.bytes().map_or(0, item)
            }
            Command::DelEx { key, condition } => item(key) + condition.bytes().map_or(0, item),
            Command::Script(s) => s.keys().into_iter().chain(s.values()).map(item).sum(),
            Command::Multi { items, .. } => items
                .iter()
                .map(|i| match i {
                    TxItem::Write(c) => c.payload_len(),
                    TxItem::Read(q) => q.keys().into_iter().map(item).sum(),
                })
                .sum(),
            other => other.keys().into_iter().map(item).sum(),
        }
    }
}

/// Redis' wrong-arity error text for `name`.
fn arity_err(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// A read-only query, answered from the local state after a ReadIndex round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `GET key`: [`Reply::Bulk`] or [`Reply::Nil`].
    Get {
        /// The key to read.
        key: Bytes,
    },
    /// `MGET key [key ...]`: [`Reply::Array`] with one `Bulk` or `Nil` per key, in order.
    MGet {
        /// The keys to read.
        keys: Vec<Bytes>,
    },
    /// `EXISTS key [key ...]`: [`Reply::Int`], the number of named keys that exist; a key named
    /// twice is counted twice.
    Exists {
        /// The keys to test.
        keys: Vec<Bytes>,
    },
    /// `STRLEN key`: [`Reply::Int`], the length of the value or 0 if absent.
    Strlen {
        /// The key to measure.
        key: Bytes,
    },
    /// `DBSIZE`: [`Reply::Int`], the number of keys (as in Redis, expired keys not yet swept
    /// count).
    DbSize,
    /// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`: [`Reply::Int`] -2 if the key does not exist,
    /// -1 if it has no deadline, else the time left (from the log time) or the deadline, in
    /// seconds (rounded as Redis does) or milliseconds.
    Ttl {
        /// The key.
        key: Bytes,
        /// Milliseconds (`PTTL`, `PEXPIRETIME`) rather than seconds.
        millis: bool,
        /// The deadline (`EXPIRETIME`) rather than the time left.
        absolute: bool,
    },
    /// `RAFT.VERSION key`: [`Reply::Int`], the index of the log entry that last changed the key
    /// (a fencing token), or [`Reply::Nil`] if it does not exist.
    Version {
        /// The key.
        key: Bytes,
    },
    /// The index of the state read ([`Reply::Int`]): what `WATCH` records (see
    /// [`super::txn`]).
    AppliedIndex,
    /// `KEYS pattern`: [`Reply::Array`] of the live keys matching the glob pattern, in key
    /// order.
    Keys {
        /// Redis glob pattern (`*`, `?`, `[a-z]`, `\x`).
        pattern: Bytes,
    },
    /// One step of `SCAN` (see [`super::keys`] for the cursor and its guarantee):
    /// [`Reply::Array`] of two items, the last key examined ([`Reply::Bulk`]) or [`Reply::Nil`]
    /// when the scan is complete, and the array of keys returned.
    Scan {
        /// Examine keys strictly after this one (`None`: from the first key).
        after: Option<Bytes>,
        /// `MATCH`: only keys matching this glob pattern.
        pattern: Option<Bytes>,
        /// `COUNT`: how many keys to examine (at least 1).
        count: u64,
        /// `TYPE`: only keys holding this type (`string`, `hash`, ...).
        kind: Option<Bytes>,
    },
    /// `TYPE key`: the type name as [`Reply::Status`] (`string`, `hash`, or `none`).
    Type {
        /// The key.
        key: Bytes,
    },
    /// `RANDOMKEY`: a live key chosen by `seed` ([`Reply::Bulk`]), or [`Reply::Nil`] if there is
    /// none. The same seed on the same state gives the same key.
    RandomKey {
        /// Chooses the key; the server gives a fresh random number for each request.
        seed: u64,
    },
    /// A read of the hash at `key` (`HGET`, `HGETALL`, `HSCAN`, ...; see [`super::hash`]).
    Hash {
        /// The key.
        key: Bytes,
        /// What to read.
        read: HashRead,
    },
    /// `GETRANGE key start end`: the substring (Redis' index rules), [`Reply::Bulk`].
    GetRange {
        /// The key.
        key: Bytes,
        /// First byte (negative: from the end).
        start: i64,
        /// Last byte, inclusive (negative: from the end).
        end: i64,
    },
    /// `EVAL_RO`, `EVALSHA_RO`, `SCRIPT EXISTS` (see [`super::script`]).
    Script(ScriptQuery),
    /// `DIGEST key` (Redis 8.4, see [`super::cas`]): the XXH3-64 of the string as 16 lower-case
    /// hex digits ([`Reply::Bulk`]), [`Reply::Nil`] if absent, `WRONGTYPE` for a hash.
    Digest {
        /// The key.
        key: Bytes,
    },
    /// `TIME` inside a transaction: the log time of the state read (the transaction's entry),
    /// as Redis' two bulk strings, seconds and microseconds ([`Reply::Array`]). Every replica
    /// answers the same. Outside a transaction the server answers `TIME` from its own clock.
    Time,
}

impl Query {
    /// The keys the query names (for access control and `COMMAND GETKEYS`).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Query::Get { key } | Query::Strlen { key } | Query::Ttl { key, .. } | Query::Version { key } => {
                vec![key]
            }
            Query::Type { key } | Query::GetRange { key, .. } | Query::Hash { key, .. } => vec![key],
            Query::Digest { key } => vec![key],
            Query::Time => Vec::new(),
            Query::MGet { keys } | Query::Exists { keys } => keys.iter().collect(),
            Query::DbSize
            | Query::AppliedIndex
            | Query::Keys { .. }
            | Query::Scan { .. }
            | Query::RandomKey { .. } => Vec::new(),
            Query::Script(s) => s.keys(),
        }
    }
}

/// The domain answer to a [`Command`] or [`Query`]; the server maps it to RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// Another status reply (`+string` for `TYPE`): the text, without `+` and line end.
    Status(String),
    /// The null bulk string (`$-1` in RESP2, `_` in RESP3).
    Nil,
    /// A bulk string.
    Bulk(Bytes),
    /// An integer.
    Int(i64),
    /// An array of replies.
    Array(Vec<Reply>),
    /// An error; the text is the full RESP error line without the leading `-`, e.g.
    /// `ERR value is not an integer or out of range`.
    Error(String),
}

/// The data of every non-empty Raft log entry: a [`Command`] stamped with the identity the state
/// machine uses to detect duplicates (see [`super::session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The proposing client session (a random id per server-process incarnation);
    /// [`super::NO_SESSION`] (0) disables duplicate detection for this proposal.
    pub session: u64,
    /// Sequence number of this proposal within its session, starting at [`super::FIRST_SEQ`] and
    /// increasing by one per new proposal (a retry reuses the number).
    pub seq: u64,
    /// The proposer's lowest sequence number whose answer it has not yet received: every lower
    /// number was answered and will never be retried, so its cached reply can be dropped.
    pub ack_below: u64,
    /// The write to execute.
    pub command: Command,
}

/// Parses `bytes` as a 64-bit signed integer exactly like Redis' `string2ll`, the function behind
/// `INCR`/`INCRBY`/`DECRBY` on stored values and integer arguments.
///
/// Accepted: an optional `-` followed by decimal digits without leading zeros (`0` alone is
/// allowed, `-0` is not), no `+`, no spaces, at most 20 bytes, within `i64` range.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE in Redis is 21: anything of 21 bytes or more is refused outright.
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    // Accumulate as a negative number so that i64::MIN is representable.
    let mut acc: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_i64_matches_redis_string2ll() {
        let ok: &[(&[u8], i64)] = &[
            (b"0", 0),
            (b"1", 1),
            (b"-1", -1),
            (b"42", 42),
            (b"9223372036854775807", i64::MAX),
            (b"-9223372036854775808", i64::MIN),
        ];
        for (s, v) in ok {
            assert_eq!(parse_i64(s), Some(*v), "{:?}", String::from_utf8_lossy(s));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"abc",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"00000000000000000001",
            b"123456789012345678901",
            b"1e3",
        ];
        for s in bad {
            assert_eq!(parse_i64(s), None, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn validate_limits() {
        let k = |n: usize| Bytes::from(vec![b'k'; n]);
        let v = |n: usize| Bytes::from(vec![b'v'; n]);
        let set = |key, value| Command::Set { key, value, condition: SetCondition::Always, get: false };
        assert_eq!(set(k(MAX_KEY_LEN), v(MAX_VALUE_LEN)).validate(), Ok(()));
        assert_eq!(set(Bytes::new(), Bytes::new()).validate(), Ok(()));
        assert_eq!(set(k(MAX_KEY_LEN + 1), v(1)).validate(), Err(key_too_long_err()));
        assert_eq!(set(k(1), v(MAX_VALUE_LEN + 1)).validate(), Err(value_too_long_err()));
        let append = Command::Append { key: k(1), value: v(MAX_VALUE_LEN + 1) };
        assert_eq!(append.validate(), Err(value_too_long_err()));
        let incr = Command::IncrBy { key: k(MAX_KEY_LEN + 1), by: 1 };
        assert_eq!(incr.validate(), Err(key_too_long_err()));
        assert_eq!(
            Command::Del { keys: vec![] }.validate(),
            Err("ERR wrong number of arguments for 'del' command".to_owned())
        );
        assert_eq!(
            Command::MSet { pairs: vec![] }.validate(),
            Err("ERR wrong number of arguments for 'mset' command".to_owned())
        );
        // Two values at the limit fit; three exceed the total payload limit.
        let two = Command::MSet { pairs: vec![(k(1), v(MAX_VALUE_LEN)), (k(2), v(MAX_VALUE_LEN - 64))] };
        assert_eq!(two.validate(), Ok(()));
        let three =
            Command::MSet { pairs: vec![(k(1), v(MAX_VALUE_LEN)), (k(2), v(MAX_VALUE_LEN)), (k(3), v(1))] };
        assert!(three.validate().unwrap_err().contains("payload exceeds"));
        // Many tiny keys are bounded by the per-item overhead.
        let many = Command::Del { keys: vec![Bytes::new(); MAX_COMMAND_LEN / PER_ITEM_OVERHEAD + 1] };
        assert!(many.validate().unwrap_err().contains("payload exceeds"));
        let fits = Command::Del { keys: vec![Bytes::new(); MAX_COMMAND_LEN / PER_ITEM_OVERHEAD] };
        assert_eq!(fits.validate(), Ok(()));
    }
}
