//! [`KvStore`]: the data, the session table and the applied index, and the execution of
//! commands and queries with Redis semantics.
//!
//! The data is an ordered map rather than a hash map: iteration is deterministic (the snapshot
//! is a straight in-order walk, byte-identical on every replica), there is no hash seed to take
//! from the OS inside the simulator and no hash-flooding concern, and lookups at Raft write rates
//! are far from the bottleneck (fsync is).
//!
//! The ordered map is a *persistent* B+tree ([`imbl::OrdMap`]): cloning it is O(1) and the
//! clone shares every node with the original until one of them writes, when only the path to
//! the written key is copied. That is what makes [`KvStore::snapshot_view`] cheap enough to call
//! on the apply thread while the image is written elsewhere (see [`super::snapshot`]).

use bytes::{Bytes, BytesMut};
use imbl::OrdMap;

use super::codec::decode_entry;
use super::command::{
    parse_i64, value_too_long_err, Command, Query, Reply, SetCondition, NOT_AN_INTEGER_ERR, OVERFLOW_ERR,
};
use super::expiry::Ttls;
use super::script::ScriptCache;
use super::session::{SessionTable, NO_SESSION};
use super::{KvError, MAX_VALUE_LEN};

/// The outcome of applying one non-empty log entry, for the proposer (the driver) to match with
/// the request waiting for it by `(session, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Log index of the entry.
    pub index: u64,
    /// The proposal's session id.
    pub session: u64,
    /// The proposal's sequence number within its session.
    pub seq: u64,
    /// The answer for the client: the command's reply, the cached reply of the original if this
    /// entry is a duplicate, or one of the errors [`super::DUPLICATE_FORGOTTEN_ERR`] /
    /// [`super::SESSION_EXPIRED_ERR`].
    pub reply: Reply,
    /// True if this entry did *not* execute its command: it is a duplicate of an already applied
    /// proposal, or it came from an expired session (then `reply` is
    /// `Reply::Error(SESSION_EXPIRED_ERR)` and the proposer must retry under a new session).
    pub duplicate: bool,
}

/// What a key holds: a string or a hash (see [`super::hash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    /// A string (binary-safe bytes).
    Str(Bytes),
    /// A hash: fields to values, never empty.
    Hash(super::hash::Fields),
}

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    /// The value.
    pub(crate) data: Data,
    /// Log index of the entry that last changed the key (its value or its deadline): what
    /// `WATCH` compares and `RAFT.VERSION` returns. 0 for keys restored from an image written
    /// before versions existed.
    pub(crate) version: u64,
}

impl Value {
    /// The name `TYPE` answers for this value.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.data {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
        }
    }

    /// The string, if it is one.
    #[inline]
    pub(crate) fn as_str(&self) -> Option<&Bytes> {
        match &self.data {
            Data::Str(b) => Some(b),
            Data::Hash(_) => None,
        }
    }

    /// The string, or the `WRONGTYPE` error.
    #[inline]
    pub(crate) fn string(&self) -> Result<&Bytes, Reply> {
        self.as_str().ok_or_else(wrongtype)
    }
}

/// Redis' `WRONGTYPE` error reply.
pub(crate) fn wrongtype() -> Reply {
    Reply::Error(super::hash::WRONGTYPE_ERR.to_owned())
}

/// The replicated key-value state machine. See the [module docs](super) for its invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    /// The key space.
    pub(crate) data: OrdMap<Bytes, Value>,
    /// Duplicate-detection state per client session.
    pub(crate) sessions: SessionTable,
    /// Index of the last log entry applied (0 = nothing applied).
    pub(crate) applied_index: u64,
    /// Log time: the highest stamp of the entries applied, in ms since the Unix epoch (0: no
    /// stamped entry yet). See [`super::expiry`].
    pub(crate) time: u64,
    /// Deadlines of the keys that have one.
    pub(crate) ttls: Ttls,
    /// Index of the last entry that removed a key (deleted, expired or swept): `WATCH` on a key
    /// absent at `EXEC` cannot tell whether it existed in between, so it fails if any key was
    /// removed since the watch (see [`super::txn`]).
    pub(crate) last_removal: u64,
    /// The replicated script cache (see [`super::script`]).
    pub(crate) scripts: ScriptCache,
}

/// The key space as one command sees it: the data, the deadlines, the entry's index (the
/// version of what it writes) and log time.
pub(crate) struct Db<'a> {
    /// The key space.
    pub(crate) data: &'a mut OrdMap<Bytes, Value>,
    /// Deadlines.
    pub(crate) ttls: &'a mut Ttls,
    /// See [`KvStore::last_removal`].
    pub(crate) last_removal: &'a mut u64,
    /// The entry's index.
    pub(crate) index: u64,
    /// The entry's log time.
    pub(crate) time: u64,
    /// The script cache.
    pub(crate) scripts: &'a mut ScriptCache,
}

impl Db<'_> {
    /// Removes `key` if it has expired (a write about to touch it must not see it).
    #[inline]
    pub(crate) fn purge(&mut self, key: &[u8]) {
        if self.ttls.is_expired(key, self.time) {
            self.remove(key);
        }
    }

    /// Removes `key` and its deadline; returns the value it had (expired or not).
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Value> {
        self.ttls.remove(key);
        let v = self.data.remove(key)?;
        *self.last_removal = self.index;
        Some(v)
    }

    /// Removes `key`, whose deadline the caller already took out of `ttls` (a sweep).
    pub(crate) fn remove_untimed(&mut self, key: &[u8]) {
        if self.data.remove(key).is_some() {
            *self.last_removal = self.index;
        }
    }

    /// The string value of `key`: `Ok(None)` if absent, `Err(WRONGTYPE)` if it holds another
    /// type (callers purged it first if it may have expired).
    #[inline]
    pub(crate) fn get_string(&self, key: &[u8]) -> Result<Option<&Bytes>, Reply> {
        self.data.get(key).map(Value::string).transpose()
    }

    /// Writes `key` (its version becomes this entry's index); the deadline is the caller's.
    #[inline]
    pub(crate) fn put(&mut self, key: &Bytes, bytes: Bytes) {
        self.insert(key.clone(), bytes);
    }

    /// [`Self::put`] of a key the caller owns.
    #[inline]
    pub(crate) fn insert(&mut self, key: Bytes, bytes: Bytes) {
        self.data.insert(key, Value { data: Data::Str(bytes), version: self.index });
    }

    /// A read-only view, for the reads of a transaction.
    pub(crate) fn view(&self) -> View<'_> {
        View { data: self.data, ttls: self.ttls, time: self.time, applied: self.index, scripts: self.scripts }
    }

    /// Marks `key` changed by this entry (its deadline changed).
    pub(crate) fn touch(&mut self, key: &[u8]) {
        if let Some(v) = self.data.get_mut(key) {
            v.version = self.index;
        }
    }
}

/// What a query reads: the key space, the deadlines, the log time and the applied index, from the
/// store or from inside a transaction (which sees its own earlier writes).
pub(crate) struct View<'a> {
    /// The key space.
    pub(crate) data: &'a OrdMap<Bytes, Value>,
    /// Deadlines.
    pub(crate) ttls: &'a Ttls,
    /// Log time.
    pub(crate) time: u64,
    /// The index this state is at.
    pub(crate) applied: u64,
    /// The script cache.
    pub(crate) scripts: &'a ScriptCache,
}

impl View<'_> {
    /// Answers a query. Expiry is decided by the log time (see [`super::expiry`]).
    pub(crate) fn query(&self, q: &Query) -> Reply {
        match q {
            Query::Get { key } => match self.live_string(key) {
                Ok(v) => v.map_or(Reply::Nil, |v| Reply::Bulk(v.clone())),
                Err(e) => e,
            },
            Query::MGet { keys } => Reply::Array(keys.iter().map(|k| self.get_reply(k)).collect()),
            Query::Exists { keys } => {
                Reply::Int(keys.iter().filter(|k| self.live_value(k).is_some()).count() as i64)
            }
            Query::Strlen { key } => match self.live_string(key) {
                Ok(v) => Reply::Int(v.map_or(0, |v| v.len() as i64)),
                Err(e) => e,
            },
            Query::Hash { key, read } => self.hash_reply(key, read),
            Query::DbSize => Reply::Int(self.data.len() as i64),
            Query::Ttl { key, millis, absolute } => self.ttl_reply(key, *millis, *absolute),
            Query::Version { key } => self.live_version(key).map_or(Reply::Nil, |v| Reply::Int(v as i64)),
            Query::AppliedIndex => Reply::Int(self.applied as i64),
            Query::Keys { pattern } => self.keys_reply(pattern),
            Query::Scan { after, pattern, count, kind } => {
                self.scan_reply(after.as_ref(), pattern.as_ref(), *count, kind.as_ref())
            }
            Query::Type { key } => self.type_reply(key),
            Query::RandomKey { seed } => self.random_key(*seed),
            Query::GetRange { key, start, end } => self.getrange_reply(key, *start, *end),
            Query::Script(s) => super::script::query(self, s),
            Query::Digest { key } => self.digest_reply(key),
            Query::Time => {
                let micros = |v: u64| Reply::Bulk(Bytes::from(v.to_string()));
                Reply::Array(vec![micros(self.time / 1000), micros(self.time % 1000 * 1000)])
            }
        }
    }

    /// The value of `key` unless it is absent or expired (by the log time).
    #[inline]
    pub(crate) fn live_value(&self, key: &[u8]) -> Option<&Value> {
        let v = self.data.get(key)?;
        if self.ttls.is_expired(key, self.time) {
            return None;
        }
        Some(v)
    }

    /// The string value of `key` unless it is absent, expired or of another type (`MGET`).
    #[inline]
    pub(crate) fn live(&self, key: &[u8]) -> Option<&Bytes> {
        self.live_value(key)?.as_str()
    }

    /// The version of `key` (see [`Value::version`]) unless it is absent or expired.
    pub(crate) fn live_version(&self, key: &[u8]) -> Option<u64> {
        let v = self.data.get(key)?;
        if self.ttls.is_expired(key, self.time) {
            return None;
        }
        Some(v.version)
    }

    /// The string value of `key` unless absent or expired; `Err(WRONGTYPE)` for another type.
    pub(crate) fn live_string(&self, key: &[u8]) -> Result<Option<&Bytes>, Reply> {
        self.live_value(key).map(Value::string).transpose()
    }

    fn get_reply(&self, key: &Bytes) -> Reply {
        match self.live(key) {
            Some(v) => Reply::Bulk(v.clone()),
            None => Reply::Nil,
        }
    }
}

impl KvStore {
    /// An empty store with nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the committed log entry `index` whose data is `data`.
    ///
    /// * `index <= applied_index()` → [`KvError::IndexNotAfterApplied`] (a driver bug), nothing
    ///   changes.
    /// * empty `data` (a leader's no-op entry) → `Ok(None)`; the applied index advances.
    /// * undecodable `data` → `Err` ([`KvError::BadProposal`] / [`KvError::ProposalVersion`]),
    ///   nothing changes; the node must stop: its log is corrupt or from an incompatible version.
    /// * otherwise → `Ok(Some(applied))`: the command is executed unless it is a duplicate (see
    ///   [`super::session`]); a command violating [`Command::validate`] is answered with that
    ///   error and not executed (identically on every replica).
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Result<Option<Applied>, KvError> {
        self.check_index(index)?;
        if data.is_empty() {
            self.applied_index = index;
            return Ok(None);
        }
        let (stamp, p) = decode_entry(data)?;
        self.applied_index = index;
        if let Some(stamp) = stamp {
            self.time = self.time.max(stamp);
        }
        let mut db = Db {
            data: &mut self.data,
            ttls: &mut self.ttls,
            last_removal: &mut self.last_removal,
            index,
            time: self.time,
            scripts: &mut self.scripts,
        };
        let command = p.command;
        let (reply, duplicate) = if p.session == NO_SESSION {
            (execute_owned(&mut db, command), false)
        } else {
            let o =
                self.sessions.apply(index, p.session, p.seq, p.ack_below, || execute_owned(&mut db, command));
            (o.reply, o.duplicate)
        };
        Ok(Some(Applied { index, session: p.session, seq: p.seq, reply, duplicate }))
    }

    /// Advances the applied index over entries that do not concern the state machine (for
    /// example membership changes the driver consumes itself), so that [`Self::applied_index`]
    /// and the snapshot's index stay exact. Same index rule as [`Self::apply`].
    pub fn advance_to(&mut self, index: u64) -> Result<(), KvError> {
        self.check_index(index)?;
        self.applied_index = index;
        Ok(())
    }

    fn check_index(&self, index: u64) -> Result<(), KvError> {
        if index <= self.applied_index {
            return Err(KvError::IndexNotAfterApplied { index, applied: self.applied_index });
        }
        Ok(())
    }

    /// Answers a read-only query from the current state.
    /// Expiry is decided by the log time of this state (see [`super::expiry`]).
    pub fn query(&self, q: &Query) -> Reply {
        self.view().query(q)
    }

    /// A read-only view of the state.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            data: &self.data,
            ttls: &self.ttls,
            time: self.time,
            applied: self.applied_index,
            scripts: &self.scripts,
        }
    }

    /// Log time: the highest stamp among the applied entries, in ms since the Unix epoch (0 if
    /// none was stamped). See [`super::expiry`].
    pub fn time(&self) -> u64 {
        self.time
    }

    /// Number of scripts in the replicated script cache (see [`super::script`]).
    pub fn script_count(&self) -> usize {
        self.scripts.len()
    }

    /// Number of keys with a deadline (expired ones not yet swept included).
    pub fn expires_count(&self) -> usize {
        self.ttls.len()
    }

    /// The earliest deadline of any key, if one has a deadline: the leader proposes a
    /// [`Command::Sweep`] once its clock has passed it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.ttls.next_deadline()
    }

    /// Index of the last log entry applied (or advanced over); 0 if none.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of client sessions remembered for duplicate detection.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of replies cached for duplicate detection, over all sessions.
    pub fn cached_reply_count(&self) -> usize {
        self.sessions.cached_replies()
    }

    /// The cached reply of the proposal `(session, seq)`, if the session table still holds it.
    ///
    /// A reply is cached from the moment its proposal is applied until its proposer
    /// acknowledges it (a later proposal of the session with `ack_below > seq`), the session's
    /// reply cap drops it, or the session is evicted (see [`super::session`]). The driver uses
    /// this to answer a write whose entry was not applied one by one on this node but covered by
    /// an installed snapshot: since the snapshot carries the session table, the reply is the one
    /// the entry produced. `None` means no such reply is known: the session is unknown or
    /// [`NO_SESSION`] (never cached), the `seq` was acknowledged or dropped, or it was never
    /// applied.
    pub fn reply_for(&self, session: u64, seq: u64) -> Option<Reply> {
        self.sessions.reply_for(session, seq)
    }
}

/// [`execute`] of a command the caller owns (a decoded log entry): a plain `SET` and `MSET` move
/// their keys and values into the map instead of cloning them. The decoded `Bytes` are each
/// their own exact-size allocation, not yet shared; a clone would make them shared (one more
/// allocation each) only for the command's copy to be dropped right after. Same outcome as
/// [`execute`] in every case (the other commands go through it).
pub(crate) fn execute_owned(db: &mut Db<'_>, command: Command) -> Reply {
    if let Err(e) = prepare(db, &command) {
        return e;
    }
    match command {
        Command::Set { key, value, condition: SetCondition::Always, get: false } => {
            // As `execute`: no lookup, the deadline dropped, `OK`.
            db.ttls.remove(&key);
            db.insert(key, value);
            Reply::Ok
        }
        Command::MSet { pairs } => {
            for (k, v) in pairs {
                db.ttls.remove(&k);
                db.insert(k, v);
            }
            Reply::Ok
        }
        command => execute_prepared(db, &command),
    }
}

/// What every write does first: the command's limits ([`Command::validate`]: an error reply, and
/// nothing executed), then the expired keys it names are removed.
fn prepare(db: &mut Db<'_>, command: &Command) -> Result<(), Reply> {
    command.validate().map_err(Reply::Error)?;
    if !db.ttls.is_empty() {
        for key in command.keys() {
            db.purge(key);
        }
    }
    Ok(())
}

/// Executes one write against the key space with Redis semantics and returns its reply.
pub(crate) fn execute(db: &mut Db<'_>, command: &Command) -> Reply {
    match prepare(db, command) {
        Ok(()) => execute_prepared(db, command),
        Err(e) => e,
    }
}

/// [`execute`] after [`prepare`].
fn execute_prepared(db: &mut Db<'_>, command: &Command) -> Reply {
    match command {
        Command::Set { key, value, condition, get } => {
            let old = if *get {
                match db.get_string(key) {
                    Ok(v) => v,
                    Err(e) => return e,
                }
            } else if matches!(condition, SetCondition::Always) {
                // A plain SET neither reads nor answers the old value: no lookup before the insert
                // (about a third of executing a plain SET, measured with callgrind).
                None
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
                db.put(key, value.clone());
                db.ttls.remove(key);
            }
            reply
        }
        Command::Del { keys } => {
            let removed = keys.iter().filter(|k| db.remove(k).is_some()).count();
            Reply::Int(removed as i64)
        }
        Command::MSet { pairs } => {
            for (k, v) in pairs {
                db.ttls.remove(k);
                db.put(k, v.clone());
            }
            Reply::Ok
        }
        Command::IncrBy { key, by } => {
            let current = match db.get_string(key) {
                Err(e) => return e,
                Ok(None) => 0,
                Ok(Some(v)) => match parse_i64(v) {
                    Some(n) => n,
                    None => return Reply::Error(NOT_AN_INTEGER_ERR.to_owned()),
                },
            };
            let Some(new) = current.checked_add(*by) else {
                return Reply::Error(OVERFLOW_ERR.to_owned());
            };
            db.put(key, Bytes::from(new.to_string()));
            Reply::Int(new)
        }
        Command::Append { key, value } => {
            let index = db.index;
            let Some(old) = db.data.get_mut(key) else {
                db.put(key, value.clone());
                return Reply::Int(value.len() as i64);
            };
            let Data::Str(old_bytes) = &mut old.data else { return wrongtype() };
            let new_len = old_bytes.len() + value.len();
            if new_len > MAX_VALUE_LEN {
                return Reply::Error(value_too_long_err());
            }
            // Reuse the stored buffer when nothing else shares it, so that repeated appends are
            // amortised O(appended bytes) rather than a full copy each time.
            let mut buf = match std::mem::take(old_bytes).try_into_mut() {
                Ok(unique) => unique,
                Err(shared) => {
                    let mut b = BytesMut::with_capacity(new_len);
                    b.extend_from_slice(&shared);
                    b
                }
            };
            buf.extend_from_slice(value);
            *old_bytes = buf.freeze();
            old.version = index;
            Reply::Int(new_len as i64)
        }
        Command::SetEx { .. }
        | Command::Expire { .. }
        | Command::Persist { .. }
        | Command::GetEx { .. }
        | Command::GetDel { .. }
        | Command::Sweep { .. } => super::expiry::execute(db, command),
        Command::Multi { watch, items } => super::txn::execute(db, watch.as_ref(), items),
        Command::Rename { .. } | Command::Copy { .. } | Command::Flush | Command::MSetNx { .. } => {
            super::keys::execute(db, command)
        }
        Command::SetRange { .. } | Command::IncrByFloat { .. } => super::strings::execute(db, command),
        Command::Hash { key, op } => super::hash::execute(db, key, op),
        Command::Script(s) => super::script::execute(db, s),
        Command::SetIf { .. } | Command::DelEx { .. } => super::cas::execute(db, command),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{ExpiryOrigin, SetExpiry, MAX_KEY_LEN};
    use super::*;

    fn arb_key() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            8 => prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(|k: &str| Bytes::copy_from_slice(k.as_bytes())),
            1 => Just(Bytes::from(vec![b'k'; MAX_KEY_LEN + 1])),
        ]
    }

    fn arb_value() -> impl Strategy<Value = Bytes> {
        "[a-z0-9]{0,3}".prop_map(|s| Bytes::from(s.into_bytes()))
    }

    fn arb_condition() -> impl Strategy<Value = SetCondition> {
        prop_oneof![Just(SetCondition::Always), Just(SetCondition::IfAbsent), Just(SetCondition::IfPresent)]
    }

    /// SETs and MSETs of every shape (the owned fast paths and the others), with keys that may
    /// be expired or too long, and the writes that give keys deadlines or another type.
    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            4 => (arb_key(), arb_value(), arb_condition(), any::<bool>())
                .prop_map(|(key, value, condition, get)| Command::Set { key, value, condition, get }),
            2 => prop::collection::vec((arb_key(), arb_value()), 0..4).prop_map(|pairs| Command::MSet { pairs }),
            2 => (arb_key(), arb_value(), 1i64..20).prop_map(|(key, value, ms)| Command::SetEx {
                key,
                value,
                condition: SetCondition::Always,
                get: false,
                expiry: SetExpiry::In(ms),
                origin: ExpiryOrigin::Set,
            }),
            1 => (arb_key(), arb_value()).prop_map(|(key, value)| Command::Hash {
                key,
                op: super::super::hash::HashOp::Set { pairs: vec![(value.clone(), value)], ok: false },
            }),
            1 => prop::collection::vec(arb_key(), 1..3).prop_map(|keys| Command::Del { keys }),
        ]
    }

    proptest! {
        /// `execute_owned` (what `apply` runs) has the outcome of `execute` on every command and
        /// state: the same reply and the same store, removals and deadlines included.
        #[test]
        fn executing_an_owned_command_is_executing_it_by_reference(
            history in prop::collection::vec((arb_command(), 0u64..10), 0..12),
            command in arb_command(),
            at in 0u64..40,
        ) {
            let mut store = KvStore::new();
            let mut time = 0;
            for (index, (c, step)) in history.into_iter().enumerate() {
                time += step;
                let mut db = store.db(index as u64 + 1, time);
                execute(&mut db, &c);
                store.applied_index = index as u64 + 1;
            }
            let index = store.applied_index + 1;
            let (mut by_ref, mut owned) = (store.clone(), store);
            let want = execute(&mut by_ref.db(index, time + at), &command);
            let got = execute_owned(&mut owned.db(index, time + at), command.clone());
            prop_assert_eq!(got, want, "{:?}", command);
            prop_assert_eq!(owned, by_ref);
        }
    }

    impl KvStore {
        /// The key space as the command of entry `index` at log time `time` sees it.
        fn db(&mut self, index: u64, time: u64) -> Db<'_> {
            Db {
                data: &mut self.data,
                ttls: &mut self.ttls,
                last_removal: &mut self.last_removal,
                index,
                time,
                scripts: &mut self.scripts,
            }
        }
    }
}
