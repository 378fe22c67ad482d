//! The rights a script runs under: the caller's ACL, carried in the script's own log entry and
//! checked against every command the script calls.
//!
//! # Why the rights travel with the entry
//!
//! A write script runs at apply, on every replica, from its log entry (see [`super`]). The users
//! and their rules live in each node's users file, which is server configuration: it may differ
//! between nodes, change between a proposal and its apply, or be gone when the entry is replayed
//! after a restart or shipped to a new member. A check that consulted it at apply could answer
//! differently on two replicas and make them diverge. So the node that **receives** `EVAL`
//! (after checking the command itself and its declared `KEYS` against the caller's rules, as for
//! any command) copies the caller's rules into the command ([`ScriptAcl`]: the user name for
//! the error text, the categories, the key patterns), and the state machine checks each
//! `redis.call` / `redis.pcall` against that copy only. The check is then a pure function of the
//! entry and the parsed call: identical on every replica, forever.
//!
//! # What is checked (Redis' `scriptVerifyACL`)
//!
//! For each call, after the call is parsed (unknown command, wrong arity and commands a script
//! may not call are refused first, as Redis does) and **before** the read-only rule of
//! `EVAL_RO` / `no-writes` scripts (which still applies on top):
//! 1. the category: a call that writes needs `write`, a call that reads needs `read` (the
//!    parser refuses every admin command inside scripts, so `admin` never decides; `TIME`,
//!    answered by the engine, needs none, as at the top level);
//! 2. every key the call names must match one of the patterns (Redis glob syntax).
//!
//! A refusal is Redis 7.2's text for scripts: `ERR ACL failure in script: User <name> has no
//! permissions to run the '<command>' command` or `ERR ACL failure in script: No permissions to
//! access a key` ([`command_denied`], [`KEY_DENIED`]). `redis.call` raises it (the script ends
//! and, like every script error here, is rolled back; Redis keeps the writes done before the
//! failing call); `redis.pcall` returns it as an error table and the script goes on.
//!
//! # Invariants
//!
//! - `None` (no [`ScriptAcl`] in the command) means unrestricted: what every entry written before
//!   this existed decodes to, and what the server sends for a user with every category and the
//!   `*` pattern, so that an unrestricted caller's entry does not grow by a byte.
//! - The check reads nothing but the [`ScriptAcl`], the call's name and the parsed call.

use bytes::{BufMut, Bytes, BytesMut};

use crate::kv::codec::{put_bytes, put_varint, DecodeError, Reader};
use crate::kv::glob::glob_match;
use crate::kv::txn::TxItem;

/// The prefix Redis 7.2+ gives an ACL refusal inside a script.
pub const ACL_FAILURE_PREFIX: &str = "ERR ACL failure in script: ";

/// The refusal of a call that names a key outside the caller's patterns.
pub const KEY_DENIED: &str = "ERR ACL failure in script: No permissions to access a key";

/// Flag bits of the encoded categories.
const READ: u8 = 1;
const WRITE: u8 = 2;
const ADMIN: u8 = 4;

/// The rules a restricted caller's script runs under (a copy of the user's ACL made by the node
/// that received the script).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptAcl {
    /// The user's name (only for the error text).
    pub user: Bytes,
    /// May run commands that read (`+@read`).
    pub read: bool,
    /// May run commands that write (`+@write`).
    pub write: bool,
    /// May run administrative commands (`+@admin`; none can be called from a script).
    pub admin: bool,
    /// The key patterns (Redis glob syntax), in the user's order; no pattern: no key.
    pub key_patterns: Vec<Bytes>,
}

impl ScriptAcl {
    /// Whether `key` matches one of the patterns.
    pub fn may_access_key(&self, key: &[u8]) -> bool {
        self.key_patterns.iter().any(|p| p.as_ref() == b"*" || glob_match(p, key, false))
    }

    /// Checks one parsed call (`name`: the command name as the script wrote it): `Err` is the
    /// refusal text (see the module docs).
    pub(crate) fn check(&self, name: &[u8], item: &TxItem) -> Result<(), String> {
        let (allowed, keys) = match item {
            TxItem::Write(c) => (self.write, c.keys()),
            TxItem::Read(q) => (self.read, q.keys()),
        };
        if !allowed {
            return Err(command_denied(&self.user, name));
        }
        if keys.iter().all(|k| self.may_access_key(k)) {
            Ok(())
        } else {
            Err(KEY_DENIED.to_owned())
        }
    }

    /// Appends the encoding: `user, u8 flags (bit 0 read, bit 1 write, bit 2 admin), varint n,
    /// n patterns`.
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_bytes(buf, &self.user);
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        buf.put_u8(flag(self.read, READ) | flag(self.write, WRITE) | flag(self.admin, ADMIN));
        put_varint(buf, self.key_patterns.len() as u64);
        for p in &self.key_patterns {
            put_bytes(buf, p);
        }
    }

    /// Reads what [`ScriptAcl::put`] wrote (unknown flag bits are an error: the codec is strict).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<ScriptAcl, DecodeError> {
        let user = r.bytes()?;
        let at = r.offset();
        let flags = r.u8()?;
        if flags & !(READ | WRITE | ADMIN) != 0 {
            return Err(DecodeError { offset: at, reason: "unknown script ACL category bits" });
        }
        let n = r.count(1)?;
        let key_patterns = (0..n).map(|_| r.bytes()).collect::<Result<_, _>>()?;
        Ok(ScriptAcl {
            user,
            read: flags & READ != 0,
            write: flags & WRITE != 0,
            admin: flags & ADMIN != 0,
            key_patterns,
        })
    }

    /// The byte strings it carries (for the command size limits).
    pub(crate) fn items(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.user).chain(self.key_patterns.iter())
    }
}

/// The refusal of a call whose category the user lacks (`name` as the script wrote it; Redis
/// prints the command's lower-case name).
pub fn command_denied(user: &[u8], name: &[u8]) -> String {
    let printable = |b: &[u8]| -> String {
        String::from_utf8_lossy(b).chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
    };
    format!(
        "{ACL_FAILURE_PREFIX}User {} has no permissions to run the '{}' command",
        printable(user),
        printable(&name.to_ascii_lowercase())
    )
}
