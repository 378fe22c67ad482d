//! Key expiry (TTLs), deterministic on every replica.
//!
//! # Where time comes from
//!
//! A replica never reads its own clock to decide anything about expiry. The leader *stamps* every
//! entry it proposes with its wall clock (milliseconds since the Unix epoch; see
//! [`super::codec::stamp_entry`]), never below the last stamp it proposed nor below its state
//! machine's time. Applying a stamped entry sets the state machine's time to
//! `max(time, stamp)` ([`KvStore::time`]): the *log time* is a pure function of the log prefix,
//! identical on every replica at the same index and monotonic across leaders even when their
//! clocks disagree (a new leader whose clock is behind cannot move it back). Entries written
//! before stamps existed (proposal format 1) and a leader's no-op entries leave the time
//! unchanged.
//!
//! Relative expiry (`EXPIRE k 10`, `SET ... PX 500`) is turned into an absolute deadline at apply,
//! from the log time of its entry, so every replica stores the same deadline.
//!
//! # When a key is expired
//!
//! A key with deadline `d` is expired when the log time `t > d` (Redis' rule, `now > when`).
//! Expired keys are invisible to every command and query, on every node, from the first entry
//! whose log time passes `d`:
//! - writes that touch an expired key first remove it (lazily, at apply, deterministically);
//! - reads decide by the log time of the state they read. A read is served after a ReadIndex round
//!   (thesis §6.4) from a state that has applied at least the read index; its log time is at least
//!   that of every entry committed before the read began, so a read never sees a key that an
//!   earlier completed operation saw expired (no resurrection), and two reads on two nodes at the
//!   same applied index agree. This is etcd's lease rule in reverse: etcd revokes a lease through
//!   the log and reads see the revocation; here the passage of time itself goes through the log.
//!   The price: time in the state machine moves only when entries are applied, so a key may be
//!   visible for a little while after its wall-clock deadline — until the leader's next entry. The
//!   leader makes sure one comes: when the earliest deadline is past its clock it proposes a
//!   [`super::Command::Sweep`], which both advances the log time and removes expired keys.
//! - `TTL`/`PTTL` count from the log time of the state read.
//!
//! # Reclaiming memory
//!
//! [`super::Command::Sweep`] removes at most its `max` expired keys, earliest deadline first, so
//! no single entry stops the world; the leader proposes one sweep at a time, at most one per tick,
//! while expired keys remain (`driver::clock` says why: a sweep holds every replica's apply).
//! Every replica removes exactly the same keys (the order is by `(deadline, key)`).
//!
//! # Invariants
//! - every key in [`Ttls::by_key`] is in the key space, and `by_key` and `by_deadline` hold
//!   exactly the same (key, deadline) pairs;
//! - a stored deadline is above the log time at which it was set (a deadline already past deletes
//!   the key instead, as Redis does), so `deadline >= 1`.

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use super::command::{Command, Reply, SetCondition};
use super::store::{Db, View};

/// The deadlines of the keys that have one, indexed both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ttls {
    /// Key -> deadline (ms since the Unix epoch, in log time).
    pub(crate) by_key: OrdMap<Bytes, u64>,
    /// (deadline, key), for the sweep: earliest first.
    pub(crate) by_deadline: OrdSet<(u64, Bytes)>,
}

impl Ttls {
    /// True if no key has a deadline (the common case: every check below starts with it).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Number of keys with a deadline.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The deadline of `key`, if it has one.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(key).copied()
    }

    /// True if `key` has a deadline that log time `time` has passed.
    #[inline]
    pub(crate) fn is_expired(&self, key: &[u8], time: u64) -> bool {
        self.get(key).is_some_and(|d| time > d)
    }

    /// Sets (or replaces) the deadline of `key`.
    pub(crate) fn set(&mut self, key: &Bytes, deadline: u64) {
        if let Some(old) = self.by_key.insert(key.clone(), deadline) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        self.by_deadline.insert((deadline, key.clone()));
    }

    /// Removes the deadline of `key`; returns whether it had one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        if self.by_key.is_empty() {
            return false;
        }
        match self.by_key.remove_with_key(key) {
            Some((k, old)) => {
                self.by_deadline.remove(&(old, k));
                true
            }
            None => false,
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.get_min().map(|(d, _)| *d)
    }

    /// Takes out the key with the earliest deadline if log time `time` has passed it (the sweep's
    /// step; the caller removes the key from the key space). `remove_min` walks the leftmost path
    /// of the deadline index without comparing keys, which a removal by value would do.
    pub(crate) fn pop_due(&mut self, time: u64) -> Option<Bytes> {
        let (deadline, _) = self.by_deadline.get_min()?;
        if time <= *deadline {
            return None;
        }
        let (_, key) = self.by_deadline.remove_min()?;
        self.by_key.remove(&key);
        Some(key)
    }
}

/// The `NX`/`XX`/`GT`/`LT` condition of `EXPIRE` and its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpireCondition {
    /// No condition.
    #[default]
    Always,
    /// `NX`: only if the key has no deadline.
    IfNone,
    /// `XX`: only if the key has a deadline.
    IfSome,
    /// `GT`: only if the new deadline is later (a key without one counts as infinite: never).
    IfGreater,
    /// `LT`: only if the new deadline is earlier (a key without one counts as infinite).
    IfLess,
    /// `XX LT`: only if the key has a deadline and the new one is earlier.
    IfSomeLess,
}

/// How `SET`, `GETEX` (and `SETEX`, `PSETEX`) change a key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SetExpiry {
    /// Plain `SET`: remove the deadline; `GETEX` without option: leave it.
    #[default]
    Default,
    /// `KEEPTTL`: keep the deadline (`SET` only).
    Keep,
    /// `PERSIST`: remove the deadline (`GETEX` only).
    Persist,
    /// `EX`/`PX`: this many milliseconds (> 0) after the entry's log time.
    In(i64),
    /// `EXAT`/`PXAT`: at this many milliseconds (> 0) since the Unix epoch.
    At(i64),
}

/// Which command an expiry came from, for Redis' error text
/// (`invalid expire time in 'setex' command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpiryOrigin {
    /// `SET`.
    #[default]
    Set,
    /// `SETEX`.
    SetEx,
    /// `PSETEX`.
    PSetEx,
    /// `GETEX`.
    GetEx,
}

impl ExpiryOrigin {
    /// The lower-case command name.
    pub fn name(self) -> &'static str {
        match self {
            ExpiryOrigin::Set => "set",
            ExpiryOrigin::SetEx => "setex",
            ExpiryOrigin::PSetEx => "psetex",
            ExpiryOrigin::GetEx => "getex",
        }
    }
}

/// Redis' error for an expire time out of range in command `name`.
pub(crate) fn invalid_expire_err(name: &str) -> String {
    format!("ERR invalid expire time in '{name}' command")
}

/// The absolute deadline of `expiry` at log time `time`: `Ok(None)` for the options that set no
/// deadline, Redis' error when the sum overflows.
pub(crate) fn deadline_of(expiry: SetExpiry, time: u64, origin: ExpiryOrigin) -> Result<Option<i64>, String> {
    match expiry {
        SetExpiry::Default | SetExpiry::Keep | SetExpiry::Persist => Ok(None),
        SetExpiry::At(ms) if ms > 0 => Ok(Some(ms)),
        SetExpiry::In(ms) if ms > 0 => {
            (ms.checked_add(time as i64)).map(Some).ok_or_else(|| invalid_expire_err(origin.name()))
        }
        _ => Err(invalid_expire_err(origin.name())),
    }
}

/// Executes the expiry commands ([`Command::SetEx`], [`Command::Expire`], [`Command::Persist`],
/// [`Command::GetEx`], [`Command::GetDel`], [`Command::Sweep`]) against `db`, whose expired keys
/// named by the command were already purged.
pub(crate) fn execute(db: &mut Db<'_>, command: &Command) -> Reply {
    let time = db.time;
    match command {
        Command::SetEx { key, value, condition, get, expiry, origin } => {
            let deadline = match deadline_of(*expiry, time, *origin) {
                Ok(d) => d,
                Err(e) => return Reply::Error(e),
            };
            let old = if *get {
                match db.get_string(key) {
                    Ok(v) => v,
                    Err(e) => return e,
                }
            } else {
                db.data.get(key).map(|_| value)
            };
            let write = match condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => old.is_none(),
                SetCondition::IfPresent => old.is_some(),
            };
            let reply = match (get, old) {
                (true, Some(v)) => Reply::Bulk(v.clone()),
                (true, None) => Reply::Nil,
                (false, _) if write => Reply::Ok,
                (false, _) => Reply::Nil,
            };
            if write {
                write_with_expiry(db, key, value.clone(), deadline, *expiry);
            }
            reply
        }
        Command::Expire { key, when, seconds, absolute, condition } => {
            let err = || Reply::Error(invalid_expire_err(command.name()));
            let mut when = *when;
            if *seconds {
                match when.checked_mul(1000) {
                    Some(ms) => when = ms,
                    None => return err(),
                }
            }
            if !*absolute {
                match when.checked_add(time as i64) {
                    Some(at) => when = at,
                    None => return err(),
                }
            }
            if !db.data.contains_key(key) {
                return Reply::Int(0);
            }
            let current = db.ttls.get(key).map(|d| d as i64);
            let refused = match condition {
                ExpireCondition::Always => false,
                ExpireCondition::IfNone => current.is_some(),
                ExpireCondition::IfSome => current.is_none(),
                ExpireCondition::IfGreater => current.is_none_or(|c| when <= c),
                ExpireCondition::IfLess => current.is_some_and(|c| when >= c),
                ExpireCondition::IfSomeLess => current.is_none_or(|c| when >= c),
            };
            if refused {
                return Reply::Int(0);
            }
            set_deadline(db, key, when);
            Reply::Int(1)
        }
        Command::Persist { key } => {
            let removed = db.data.contains_key(key) && db.ttls.remove(key);
            if removed {
                db.touch(key);
            }
            Reply::Int(i64::from(removed))
        }
        Command::GetEx { key, expiry } => {
            let value = match db.get_string(key) {
                Ok(Some(v)) => v.clone(),
                Ok(None) => return Reply::Nil,
                Err(e) => return e,
            };
            match deadline_of(*expiry, time, ExpiryOrigin::GetEx) {
                Err(e) => return Reply::Error(e),
                Ok(Some(d)) => set_deadline(db, key, d),
                Ok(None) if *expiry == SetExpiry::Persist => {
                    if db.ttls.remove(key) {
                        db.touch(key);
                    }
                }
                Ok(None) => {}
            }
            Reply::Bulk(value)
        }
        Command::GetDel { key } => match db.get_string(key) {
            Ok(Some(v)) => {
                let v = v.clone();
                db.remove(key);
                Reply::Bulk(v)
            }
            Ok(None) => Reply::Nil,
            Err(e) => e,
        },
        Command::Sweep { max } => {
            let mut swept = 0;
            while swept < *max {
                let Some(key) = db.ttls.pop_due(time) else { break };
                db.remove_untimed(&key);
                swept += 1;
            }
            Reply::Int(i64::from(swept))
        }
        _ => Reply::Error(format!("ERR internal: '{}' is not an expiry command", command.name())),
    }
}

/// Writes the string `value` at `key` as `SET` does: with the `deadline` computed by
/// [`deadline_of`], else keeping the current one for `KEEPTTL`, else with none.
pub(crate) fn write_with_expiry(
    db: &mut Db<'_>,
    key: &Bytes,
    value: Bytes,
    deadline: Option<i64>,
    expiry: SetExpiry,
) {
    db.put(key, value);
    match deadline {
        Some(d) => set_deadline(db, key, d),
        None if expiry == SetExpiry::Keep => {}
        None => {
            db.ttls.remove(key);
        }
    }
}

/// Gives `key` (present) the deadline `at` (ms since the epoch), or deletes it if `at` is not
/// after the log time (Redis' `checkAlreadyExpired`). Either changes the key's version.
fn set_deadline(db: &mut Db<'_>, key: &Bytes, at: i64) {
    if at <= db.time as i64 {
        db.remove(key);
    } else {
        db.ttls.set(key, at as u64);
        db.touch(key);
    }
}

impl View<'_> {
    /// The reply to `TTL` / `PTTL` / `EXPIRETIME` / `PEXPIRETIME` (see [`super::Query::Ttl`]).
    pub(crate) fn ttl_reply(&self, key: &[u8], millis: bool, absolute: bool) -> Reply {
        if self.live_value(key).is_none() {
            return Reply::Int(-2);
        }
        let Some(deadline) = self.ttls.get(key) else { return Reply::Int(-1) };
        let ms = if absolute { deadline as i64 } else { (deadline as i64 - self.time as i64).max(0) };
        Reply::Int(if millis { ms } else { (ms + 500) / 1000 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_indexes_agree() {
        let mut t = Ttls::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        t.set(&a, 10);
        t.set(&b, 5);
        t.set(&a, 20);
        assert_eq!(t.len(), 2);
        assert_eq!(t.by_deadline.len(), 2);
        assert_eq!(t.next_deadline(), Some(5));
        assert_eq!(t.clone().pop_due(5), None);
        let mut popped = t.clone();
        assert_eq!(popped.pop_due(6), Some(b.clone()));
        assert_eq!(popped.pop_due(6), None, "a's deadline (20) is not passed");
        assert_eq!((popped.by_key.len(), popped.by_deadline.len()), (1, 1), "both indexes lost b");
        assert!(t.remove(b"b"));
        assert!(!t.remove(b"b"));
        assert!(t.is_expired(b"a", 21));
        assert!(!t.is_expired(b"a", 20));
        assert_eq!(t.pop_due(100), Some(a.clone()));
        assert!(t.is_empty() && t.by_deadline.is_empty());
    }

    #[test]
    fn deadlines_follow_redis() {
        assert_eq!(deadline_of(SetExpiry::In(5), 100, ExpiryOrigin::Set), Ok(Some(105)));
        assert_eq!(deadline_of(SetExpiry::At(5), 100, ExpiryOrigin::Set), Ok(Some(5)));
        assert_eq!(
            deadline_of(SetExpiry::In(i64::MAX), 100, ExpiryOrigin::SetEx),
            Err("ERR invalid expire time in 'setex' command".to_owned())
        );
        assert!(deadline_of(SetExpiry::In(0), 100, ExpiryOrigin::GetEx).is_err());
        assert_eq!(deadline_of(SetExpiry::Keep, 100, ExpiryOrigin::Set), Ok(None));
    }
}
