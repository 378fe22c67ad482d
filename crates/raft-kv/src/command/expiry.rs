//! Parsing of the expiry commands: `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (`NX XX GT LT`),
//! `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`, `SET ... EX|PX|EXAT|PXAT|KEEPTTL`,
//! `SETEX`, `PSETEX`, `GETEX`, `GETDEL`.
//!
//! They parse straight into the state machine's [`KvCommand`] / [`Query`] (the semantics live in
//! `engine::kv::expiry`), with Redis 7's checks and wording: options are parsed before the
//! integer they carry (`SET k v EX 10 FOO` is a syntax error, `SET k v EX x` is not an
//! integer), an expire time of 0 or less, or one whose milliseconds overflow, is `ERR invalid
//! expire time in '<cmd>' command`. What depends on the data and the log time (an overflow when
//! the time is added, the conditions) is decided at apply. Keys and values are copied out of the
//! connection's buffer here (these are not the hot-path commands).

use bytes::Bytes;
use engine::kv::{
    cas, Command as KvCommand, ExpireCondition, ExpiryOrigin, Query, SetCondition as KvSetCondition,
    SetExpiry, ValueCondition,
};

use super::{Args, CommandError, Request, Set, SetCondition};
use crate::resp::parse_i64;

fn own(b: Bytes) -> Bytes {
    Bytes::copy_from_slice(&b)
}

/// The unit and reference of an expire time option.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// `EX`.
    Ex,
    /// `PX`.
    Px,
    /// `EXAT`.
    ExAt,
    /// `PXAT`.
    PxAt,
}

/// Redis' `getExpireMillisecondsOrReply`: the integer, > 0, in ms.
fn expire_ms(raw: &[u8], unit: Unit, name: &'static str) -> Result<SetExpiry, CommandError> {
    let n = parse_i64(raw).ok_or(CommandError::NotAnInteger)?;
    let seconds = matches!(unit, Unit::Ex | Unit::ExAt);
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(CommandError::InvalidExpireTime(name));
    }
    let ms = if seconds { n * 1000 } else { n };
    Ok(match unit {
        Unit::Ex | Unit::Px => SetExpiry::In(ms),
        Unit::ExAt | Unit::PxAt => SetExpiry::At(ms),
    })
}

fn unit_of(opt: &[u8]) -> Option<Unit> {
    [("ex", Unit::Ex), ("px", Unit::Px), ("exat", Unit::ExAt), ("pxat", Unit::PxAt)]
        .into_iter()
        .find(|(n, _)| opt.eq_ignore_ascii_case(n.as_bytes()))
        .map(|(_, u)| u)
}

/// `SET key value [NX|XX|IFEQ v|IFNE v|IFDEQ d|IFDNE d] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`
/// (options in any order, the conditions exclusive as in Redis 8.4): without an expiry option or
/// value condition the plain [`Request::Set`] (the hot path, unchanged); with an expiry option a
/// [`KvCommand::SetEx`]; with a value condition a [`KvCommand::SetIf`]. As Redis, the same value
/// condition may be repeated (the last argument counts) and a digest of any shape is accepted
/// here: the engine checks it when it compares (see `engine::kv::cas`). `NX`/`XX` never go
/// with a value condition, in either order (Redis 8.4 accepts `IFEQ v NX`, a slip its later
/// releases refuse as we do: docs/REDIS.md).
pub(super) fn parse_set(mut a: Args) -> Result<Request, CommandError> {
    let key = a.next()?;
    let value = a.next()?;
    let mut condition = SetCondition::Always;
    let mut compare: Option<(Bytes, Bytes)> = None;
    let mut get = false;
    let mut keep = false;
    let mut expire: Option<(Unit, Bytes)> = None;
    while let Some(opt) = a.next_opt() {
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        if is("nx") && condition != SetCondition::IfPresent && compare.is_none() {
            condition = SetCondition::IfAbsent;
        } else if is("xx") && condition != SetCondition::IfAbsent && compare.is_none() {
            condition = SetCondition::IfPresent;
        } else if cas::is_condition(&opt)
            && condition == SetCondition::Always
            && compare.as_ref().is_none_or(|(same, _)| same.eq_ignore_ascii_case(&opt))
            && a.len() > 0
        {
            compare = Some((opt, a.next()?));
        } else if is("get") {
            get = true;
        } else if is("keepttl") && expire.is_none() {
            keep = true;
        } else if let Some(unit) = unit_of(&opt)
            .filter(|u| !keep && a.len() > 0 && expire.as_ref().is_none_or(|(other, _)| other == u))
        {
            expire = Some((unit, a.next()?));
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let expiry = match expire {
        Some((unit, raw)) => expire_ms(&raw, unit, "set")?,
        None if keep => SetExpiry::Keep,
        None if compare.is_none() => return Ok(Request::Set(Set { key, value, condition, get })),
        None => SetExpiry::Default,
    };
    if let Some((opt, arg)) = compare {
        let condition = Box::new(value_condition(&opt, arg)?);
        return Ok(Request::KvWrite(KvCommand::SetIf {
            key: own(key),
            value: own(value),
            condition,
            get,
            expiry,
        }));
    }
    let condition = match condition {
        SetCondition::Always => KvSetCondition::Always,
        SetCondition::IfAbsent => KvSetCondition::IfAbsent,
        SetCondition::IfPresent => KvSetCondition::IfPresent,
    };
    Ok(Request::KvWrite(KvCommand::SetEx {
        key: own(key),
        value: own(value),
        condition,
        get,
        expiry,
        origin: ExpiryOrigin::Set,
    }))
}

/// The value condition `opt arg` (`opt` is one of the four words).
fn value_condition(opt: &[u8], arg: Bytes) -> Result<ValueCondition, CommandError> {
    ValueCondition::parse(opt, own(arg)).ok_or(CommandError::Syntax)
}

/// `DELEX key [IFEQ v|IFNE v|IFDEQ d|IFDNE d]` (Redis 8.4): without a condition a `DEL` of the
/// one key (any type); with two more arguments a [`KvCommand::DelEx`], whatever the first of
/// them says (an unknown word is refused by the engine, and only if the key holds a string, as
/// Redis does); one or more than two more arguments are an arity error.
pub(super) fn parse_delex(mut a: Args) -> Result<Request, CommandError> {
    let key = a.next()?;
    match (a.next_opt(), a.next_opt(), a.next_opt()) {
        (None, _, _) => Ok(Request::Del(vec![key])),
        (Some(opt), Some(arg), None) => {
            let condition = ValueCondition::parse(&opt, own(arg)).unwrap_or(ValueCondition::Unknown);
            Ok(Request::KvWrite(KvCommand::DelEx { key: own(key), condition }))
        }
        _ => Err(CommandError::CommandArity("delex")),
    }
}

/// `SETEX key seconds value` / `PSETEX key milliseconds value`.
pub(super) fn parse_setex(mut a: Args, millis: bool) -> Result<Request, CommandError> {
    let key = a.next()?;
    let raw = a.next()?;
    let value = a.next()?;
    let (unit, name, origin) = if millis {
        (Unit::Px, "psetex", ExpiryOrigin::PSetEx)
    } else {
        (Unit::Ex, "setex", ExpiryOrigin::SetEx)
    };
    let expiry = expire_ms(&raw, unit, name)?;
    Ok(Request::KvWrite(KvCommand::SetEx {
        key: own(key),
        value: own(value),
        condition: KvSetCondition::Always,
        get: false,
        expiry,
        origin,
    }))
}

/// `GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]`.
pub(super) fn parse_getex(mut a: Args) -> Result<Request, CommandError> {
    let key = a.next()?;
    let mut persist = false;
    let mut expire: Option<(Unit, Bytes)> = None;
    while let Some(opt) = a.next_opt() {
        if opt.eq_ignore_ascii_case(b"persist") && expire.is_none() {
            persist = true;
        } else if let Some(unit) = unit_of(&opt)
            .filter(|u| !persist && a.len() > 0 && expire.as_ref().is_none_or(|(other, _)| other == u))
        {
            expire = Some((unit, a.next()?));
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let expiry = match expire {
        Some((unit, raw)) => expire_ms(&raw, unit, "getex")?,
        None if persist => SetExpiry::Persist,
        None => SetExpiry::Default,
    };
    Ok(Request::KvWrite(KvCommand::GetEx { key: own(key), expiry }))
}

/// `EXPIRE` (`seconds`, relative), `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`: `key time [NX|XX|GT|LT]...`.
pub(super) fn parse_expire(mut a: Args, seconds: bool, absolute: bool) -> Result<Request, CommandError> {
    let key = a.next()?;
    let raw = a.next()?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    while let Some(opt) = a.next_opt() {
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        if is("nx") {
            nx = true;
        } else if is("xx") {
            xx = true;
        } else if is("gt") {
            gt = true;
        } else if is("lt") {
            lt = true;
        } else {
            return Err(CommandError::UnsupportedOption(String::from_utf8_lossy(&opt).into_owned()));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::Incompatible("NX and XX, GT or LT"));
    }
    if gt && lt {
        return Err(CommandError::Incompatible("GT and LT"));
    }
    let when = parse_i64(&raw).ok_or(CommandError::NotAnInteger)?;
    let condition = if nx {
        ExpireCondition::IfNone
    } else if gt {
        ExpireCondition::IfGreater
    } else if lt {
        ExpireCondition::IfLess
    } else if xx {
        ExpireCondition::IfSome
    } else {
        ExpireCondition::Always
    };
    // XX with GT or LT: the key needs a deadline, which GT requires anyway and LT treats as
    // infinite: "XX LT" on a key without one must refuse, so it keeps XX's check.
    let condition = if xx && lt { ExpireCondition::IfSomeLess } else { condition };
    Ok(Request::KvWrite(KvCommand::Expire { key: own(key), when, seconds, absolute, condition }))
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`.
pub(super) fn parse_ttl(mut a: Args, millis: bool, absolute: bool) -> Result<Request, CommandError> {
    Ok(Request::KvRead(Query::Ttl { key: own(a.next()?), millis, absolute }))
}

/// `PERSIST key`, `GETDEL key`.
pub(super) fn parse_key_write(mut a: Args, make: fn(Bytes) -> KvCommand) -> Result<Request, CommandError> {
    Ok(Request::KvWrite(make(own(a.next()?))))
}
