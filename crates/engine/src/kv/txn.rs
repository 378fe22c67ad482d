//! Transactions: `MULTI` / `EXEC` as one log entry, and `WATCH` by per-key versions.
//!
//! # Atomicity
//!
//! The server queues a connection's commands between `MULTI` and `EXEC` and proposes them as one
//! [`Command::Multi`] entry. Every replica applies the whole entry at once, so no other command
//! interleaves and either all of it is in the log or none. Redis' error semantics: a command the
//! server refused while queueing (syntax, arity, permissions) aborts the `EXEC` before anything is
//! proposed (`EXECABORT`); a command that fails at run time (`INCR` on a non-integer) answers its
//! error in the reply array and the others still run. Reads inside the transaction see the
//! transaction's earlier writes.
//!
//! # WATCH
//!
//! Every key carries a *version*: the index of the entry that last changed its value or deadline
//! ([`super::store::Value::version`]; `RAFT.VERSION` returns it). `WATCH k...` is a linearizable
//! read that returns the index `w` of the state it read (after ReadIndex: it reflects every write
//! completed before the `WATCH`). `EXEC` carries `(w, keys)`; at apply the transaction runs only if
//! no watched key changed after `w`:
//! - a present key changed iff its version is above `w`;
//! - an absent key may have been created and removed in between, which leaves no version, so it
//!   counts as changed if *any* key was removed after `w` ([`super::KvStore`]'s `last_removal`).
//!   This can abort a transaction Redis would run (a spurious retry), never run one Redis would
//!   abort;
//! - a watched key that expired counts as changed (Redis 7 does the same): it is purged, which
//!   is a removal after `w`.
//!
//! A failed watch answers [`Reply::Nil`] and changes nothing. The check happens at apply, so a
//! change made through any node between the `WATCH` and the `EXEC` is seen.

use bytes::Bytes;

use super::command::{Command, Query, Reply};
use super::store::{execute as execute_one, Db};

/// One queued command of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxItem {
    /// A write.
    Write(Command),
    /// A read, answered from the state as the transaction has left it so far.
    Read(Query),
}

/// The `WATCH` of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The index of the state the (earliest) `WATCH` read: changes after it abort the `EXEC`.
    pub index: u64,
    /// The watched keys.
    pub keys: Vec<Bytes>,
}

/// Applies a transaction (see the module docs).
pub(crate) fn execute(db: &mut Db<'_>, watch: Option<&Watch>, items: &[TxItem]) -> Reply {
    if let Some(w) = watch {
        for key in &w.keys {
            db.purge(key);
        }
        let changed = w.keys.iter().any(|key| match db.data.get(key) {
            Some(v) => v.version > w.index,
            None => *db.last_removal > w.index,
        });
        if changed {
            return Reply::Nil;
        }
    }
    let mut replies = Vec::with_capacity(items.len());
    for item in items {
        replies.push(match item {
            TxItem::Write(c) => execute_one(db, c),
            TxItem::Read(q) => db.view().query(q),
        });
    }
    Reply::Array(replies)
}
