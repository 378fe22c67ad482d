//! Hashes: a key holding a map of fields to values (`HSET`, `HGET`, `HMGET`, `HDEL`, `HGETALL`,
//! `HKEYS`, `HVALS`, `HLEN`, `HEXISTS`, `HSTRLEN`, `HINCRBY`, `HINCRBYFLOAT`, `HSETNX`, `HMSET`,
//! `HSCAN`), with Redis 7's semantics and error texts.
//!
//! # Invariants
//!
//! - A hash is never empty: `HDEL` of its last field removes the key (as Redis), so `EXISTS`,
//!   `TYPE` and `DBSIZE` never see an empty hash, and a snapshot never holds one.
//! - The fields are an ordered persistent map ([`imbl::OrdMap`]): iteration (`HGETALL`, `HKEYS`,
//!   `HSCAN`, the snapshot) is in field byte order, identical on every replica; a snapshot view
//!   shares the fields with the live store until one of them changes.
//! - Every field and value is at most [`super::MAX_VALUE_LEN`] bytes, like a string value
//!   ([`super::Command::validate`]); `HINCRBYFLOAT` results are at most about 5,000 bytes.
//! - A write to a hash sets the key's version (`WATCH`, `RAFT.VERSION`) and keeps its deadline.
//! - A hash command on a string key, and a string command on a hash, answer
//!   [`WRONGTYPE_ERR`] and change nothing (commands that replace any value, `SET`, `MSET`, `DEL`,
//!   `RENAME`, `COPY`, the expiry commands, work on both, as in Redis).
//!
//! `HSCAN` steps like `SCAN` ([`super::keys`]): strictly after the last field examined, so every
//! field present for the whole scan is returned exactly once.

use bytes::Bytes;
use imbl::OrdMap;

use super::command::{parse_i64, Reply};
use super::glob::{glob_match, literal_prefix};
use super::ldouble;
use super::store::{Data, Db, Value, View};
use super::strings::{NAN_OR_INFINITY_ERR, NOT_A_FLOAT_ERR};

/// Redis' error for a command against a key holding another type.
pub const WRONGTYPE_ERR: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The fields of a hash.
pub(crate) type Fields = OrdMap<Bytes, Bytes>;

/// A write to one hash ([`super::Command::Hash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOp {
    /// `HSET key field value [field value ...]`: [`Reply::Int`], the number of fields created;
    /// `HMSET` (`ok`): [`Reply::Ok`].
    Set {
        /// The field/value pairs (at least one), later pairs win.
        pairs: Vec<(Bytes, Bytes)>,
        /// `HMSET`: answer `OK`.
        ok: bool,
    },
    /// `HSETNX key field value`: [`Reply::Int`] 1 if the field was created, 0 if it existed.
    SetNx {
        /// The field.
        field: Bytes,
        /// The value.
        value: Bytes,
    },
    /// `HDEL key field [field ...]`: [`Reply::Int`], the number of fields removed.
    Del {
        /// The fields (at least one).
        fields: Vec<Bytes>,
    },
    /// `HINCRBY key field increment`: [`Reply::Int`], the new value.
    IncrBy {
        /// The field.
        field: Bytes,
        /// The increment.
        by: i64,
    },
    /// `HINCRBYFLOAT key field increment`: [`Reply::Bulk`], the new value (see
    /// [`super::ldouble`]).
    IncrByFloat {
        /// The field.
        field: Bytes,
        /// The increment as the client wrote it.
        by: Bytes,
    },
}

/// A read of one hash ([`super::Query::Hash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashRead {
    /// `HGET key field`: [`Reply::Bulk`] or [`Reply::Nil`].
    Get {
        /// The field.
        field: Bytes,
    },
    /// `HMGET key field [field ...]`: one `Bulk` or `Nil` per field.
    MGet {
        /// The fields.
        fields: Vec<Bytes>,
    },
    /// `HGETALL key`: field, value, field, value... in field order.
    GetAll,
    /// `HKEYS key`: the fields in order.
    Keys,
    /// `HVALS key`: the values in field order.
    Vals,
    /// `HLEN key`: [`Reply::Int`].
    Len,
    /// `HEXISTS key field`: [`Reply::Int`] 1 or 0.
    Exists {
        /// The field.
        field: Bytes,
    },
    /// `HSTRLEN key field`: [`Reply::Int`], the value's length or 0.
    StrLen {
        /// The field.
        field: Bytes,
    },
    /// One `HSCAN` step: [`Reply::Array`] of the last field examined ([`Reply::Nil`] when the
    /// scan is complete) and the array of fields and values (fields only with `novalues`).
    Scan {
        /// Examine fields strictly after this one (`None`: from the first).
        after: Option<Bytes>,
        /// `MATCH`: only fields matching this glob pattern.
        pattern: Option<Bytes>,
        /// `COUNT`: how many fields to examine (at least 1).
        count: u64,
        /// `NOVALUES`: fields only.
        novalues: bool,
    },
}

impl HashOp {
    /// The lower-case command name.
    pub fn name(&self) -> &'static str {
        match self {
            HashOp::Set { ok: false, .. } => "hset",
            HashOp::Set { ok: true, .. } => "hmset",
            HashOp::SetNx { .. } => "hsetnx",
            HashOp::Del { .. } => "hdel",
            HashOp::IncrBy { .. } => "hincrby",
            HashOp::IncrByFloat { .. } => "hincrbyfloat",
        }
    }

    /// The fields and values it carries, for the size checks of [`super::Command::validate`].
    pub(crate) fn items(&self) -> Vec<&Bytes> {
        match self {
            HashOp::Set { pairs, .. } => pairs.iter().flat_map(|(f, v)| [f, v]).collect(),
            HashOp::SetNx { field, value } | HashOp::IncrByFloat { field, by: value } => vec![field, value],
            HashOp::Del { fields } => fields.iter().collect(),
            HashOp::IncrBy { field, .. } => vec![field],
        }
    }

    /// True if the operation carries no field at all (an arity error).
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            HashOp::Set { pairs, .. } => pairs.is_empty(),
            HashOp::Del { fields } => fields.is_empty(),
            _ => false,
        }
    }
}

/// Checks an `HINCRBYFLOAT` increment as Redis does before it looks at the key: the error text
/// for one that is not a valid float, or NaN or an infinity.
pub fn check_float_increment(by: &[u8]) -> Result<(), &'static str> {
    match ldouble::parse(by) {
        Some(ldouble::Parsed::Finite(_)) => Ok(()),
        Some(ldouble::Parsed::Infinite) => Err("ERR value is NaN or Infinity"),
        None => Err(NOT_A_FLOAT_ERR),
    }
}

/// The fields of `key`: `Ok(None)` if absent, [`WRONGTYPE_ERR`] if it holds another type.
fn fields_of(value: Option<&Value>) -> Result<Option<&Fields>, Reply> {
    match value.map(|v| &v.data) {
        None => Ok(None),
        Some(Data::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(Reply::Error(WRONGTYPE_ERR.to_owned())),
    }
}

/// Executes a write to the hash at `key` (purged if expired).
pub(crate) fn execute(db: &mut Db<'_>, key: &Bytes, op: &HashOp) -> Reply {
    let current = match fields_of(db.data.get(key)) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let mut fields = current.cloned().unwrap_or_default();
    let reply = match op {
        HashOp::Set { pairs, ok } => {
            let mut created = 0;
            for (f, v) in pairs {
                if fields.insert(f.clone(), v.clone()).is_none() {
                    created += 1;
                }
            }
            if *ok {
                Reply::Ok
            } else {
                Reply::Int(created)
            }
        }
        HashOp::SetNx { field, value } => {
            if fields.contains_key(field) {
                return Reply::Int(0);
            }
            fields.insert(field.clone(), value.clone());
            Reply::Int(1)
        }
        HashOp::Del { fields: names } => {
            if current.is_none() {
                return Reply::Int(0);
            }
            let removed = names.iter().filter(|f| fields.remove(&f[..]).is_some()).count();
            if removed == 0 {
                return Reply::Int(0);
            }
            if fields.is_empty() {
                db.remove(key);
                return Reply::Int(removed as i64);
            }
            Reply::Int(removed as i64)
        }
        HashOp::IncrBy { field, by } => {
            let old = match fields.get(field) {
                None => 0,
                Some(v) => match parse_i64(v) {
                    Some(n) => n,
                    None => return Reply::Error("ERR hash value is not an integer".to_owned()),
                },
            };
            let Some(new) = old.checked_add(*by) else {
                return Reply::Error("ERR increment or decrement would overflow".to_owned());
            };
            fields.insert(field.clone(), Bytes::from(new.to_string()));
            Reply::Int(new)
        }
        HashOp::IncrByFloat { field, by } => {
            let by = match ldouble::parse(by) {
                Some(ldouble::Parsed::Finite(v)) => ldouble::Parsed::Finite(v),
                Some(ldouble::Parsed::Infinite) => {
                    return Reply::Error("ERR value is NaN or Infinity".to_owned());
                }
                None => return Reply::Error(NOT_A_FLOAT_ERR.to_owned()),
            };
            let old = match fields.get(field) {
                None => ldouble::Parsed::Finite(ldouble::LongDouble::default()),
                Some(v) => match ldouble::parse(v) {
                    Some(p) => p,
                    None => return Reply::Error("ERR hash value is not a float".to_owned()),
                },
            };
            let Some(text) = ldouble::add_human(&old, &by) else {
                return Reply::Error(NAN_OR_INFINITY_ERR.to_owned());
            };
            let value = Bytes::from(text);
            fields.insert(field.clone(), value.clone());
            Reply::Bulk(value)
        }
    };
    db.data.insert(key.clone(), Value { data: Data::Hash(fields), version: db.index });
    reply
}

impl View<'_> {
    /// Answers a read of the hash at `key`.
    pub(crate) fn hash_reply(&self, key: &[u8], read: &HashRead) -> Reply {
        let value = self.data.get(key).filter(|_| !self.ttls.is_expired(key, self.time));
        let fields = match fields_of(value) {
            Ok(Some(h)) => h,
            Ok(None) => return absent_reply(read),
            Err(e) => return e,
        };
        let bulk = |b: &Bytes| Reply::Bulk(b.clone());
        let get = |f: &Bytes| fields.get(f).map_or(Reply::Nil, bulk);
        match read {
            HashRead::Get { field } => get(field),
            HashRead::MGet { fields: names } => Reply::Array(names.iter().map(get).collect()),
            HashRead::GetAll => Reply::Array(fields.iter().flat_map(|(f, v)| [bulk(f), bulk(v)]).collect()),
            HashRead::Keys => Reply::Array(fields.keys().map(bulk).collect()),
            HashRead::Vals => Reply::Array(fields.values().map(bulk).collect()),
            HashRead::Len => Reply::Int(fields.len() as i64),
            HashRead::Exists { field } => Reply::Int(i64::from(fields.contains_key(field))),
            HashRead::StrLen { field } => Reply::Int(fields.get(field).map_or(0, |v| v.len() as i64)),
            HashRead::Scan { after, pattern, count, novalues } => {
                scan(fields, after.as_ref(), pattern.as_ref(), *count, *novalues)
            }
        }
    }
}

/// The answer of a read on a key that does not exist (Redis treats it as an empty hash).
fn absent_reply(read: &HashRead) -> Reply {
    match read {
        HashRead::Get { .. } => Reply::Nil,
        HashRead::MGet { fields } => Reply::Array(vec![Reply::Nil; fields.len()]),
        HashRead::GetAll | HashRead::Keys | HashRead::Vals => Reply::Array(Vec::new()),
        HashRead::Len | HashRead::Exists { .. } | HashRead::StrLen { .. } => Reply::Int(0),
        HashRead::Scan { .. } => Reply::Array(vec![Reply::Nil, Reply::Array(Vec::new())]),
    }
}

/// One `HSCAN` step over `fields` (see the module docs).
fn scan(
    fields: &Fields,
    after: Option<&Bytes>,
    pattern: Option<&Bytes>,
    count: u64,
    novalues: bool,
) -> Reply {
    use std::ops::Bound;
    let prefix = pattern.map(|p| literal_prefix(p)).unwrap_or_default();
    let lower = match after {
        Some(a) if a[..] >= prefix[..] => Bound::Excluded(&a[..]),
        _ => Bound::Included(&prefix[..]),
    };
    let mut iter =
        fields.range::<_, [u8]>((lower, Bound::Unbounded)).take_while(|(f, _)| f.starts_with(&prefix));
    let mut found = Vec::new();
    let mut last = None;
    let mut examined = 0;
    let mut done = true;
    for (f, v) in iter.by_ref() {
        examined += 1;
        last = Some(f);
        if pattern.is_none_or(|p| glob_match(p, f, false)) {
            found.push(Reply::Bulk(f.clone()));
            if !novalues {
                found.push(Reply::Bulk(v.clone()));
            }
        }
        if examined >= count.max(1) {
            done = false;
            break;
        }
    }
    if !done && iter.next().is_none() {
        done = true;
    }
    let position = match last {
        Some(f) if !done => Reply::Bulk(f.clone()),
        _ => Reply::Nil,
    };
    Reply::Array(vec![position, Reply::Array(found)])
}
