//! Lua scripts (`EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `SCRIPT LOAD|EXISTS|FLUSH`), run by an
//! embedded Lua 5.1 (the version Redis embeds) through `mlua`.
//!
//! # Replication: the script travels, and runs on every replica
//!
//! Redis replicates either a script or its effects; this store replicates the **script**: an
//! `EVAL` or `EVALSHA` that may write is one log entry ([`ScriptCommand::Eval`]: the body or the
//! SHA1, the keys and the arguments) and every replica runs it at apply, against the state the
//! entry finds. The whole script is applied at once, like a `MULTI` (see [`super::txn`]): nothing
//! interleaves with it.
//!
//! The **script cache is replicated state**: `SCRIPT LOAD` and `SCRIPT FLUSH` are log entries, an
//! `EVAL` adds its body to the cache when it is applied, and the cache is part of snapshots. An
//! `EVALSHA` carries only the SHA1 and is resolved at apply against this cache, so every replica
//! resolves it identically (same log prefix, same cache) and a `SCRIPT LOAD` sent to one node
//! serves an `EVALSHA` sent to any other once it is applied. An unknown SHA1 answers Redis'
//! `NOSCRIPT No matching script. Please use EVAL.` (from the entry's apply, so it costs one log
//! entry, as any write does). Scripts added by `EVAL` are kept up to [`MAX_EVAL_SCRIPTS`], the
//! least recently run evicted first (Redis 7.4 does the same with 500); scripts added by
//! `SCRIPT LOAD` stay until `SCRIPT FLUSH`.
//!
//! # Determinism (Redis' rules for script replication, enforced)
//!
//! Every replica must compute the same effects and reply from the same entry:
//! * **No clock.** `redis.call('TIME')` answers the entry's *log time* (the leader's stamp, see
//!   [`super::expiry`]), not a clock; `os` is not loaded.
//! * **No randomness.** `math.random` is Redis' own 48-bit `rand48` generator, reset to its
//!   initial state before every run (`math.randomseed(n)` reseeds it): the same sequence on every
//!   replica and every run, the one Redis 7 draws first after a start. No command that a script can call is nondeterministic (the
//!   command parser refuses any such command), so the rule "a script that writes after a
//!   nondeterministic call is refused" has nothing left to refuse.
//! * **No state between runs.** Every run gets a fresh Lua state (nothing a script leaves in
//!   globals survives it); reading an undefined global raises Redis' `Script attempted to access
//!   nonexistent global variable`, creating one raises `Attempt to modify a readonly table`.
//! * **No addresses.** `tostring` of a table, function, userdata or thread answers its type name
//!   only (Lua prints a memory address, which differs between replicas); `print`, `dofile`,
//!   `loadfile`, `coroutine` and precompiled (binary) chunks are not available. Iteration with
//!   `pairs` over a table keyed by *tables or functions* follows their addresses and is the one
//!   nondeterminism left to the script author (Redis has the same caveat).
//! * **A budget, never a clock.** A run may execute at most [`INSTRUCTION_BUDGET`] Lua VM
//!   instructions (each `redis.call` counts [`CALL_COST`]); past that it fails with
//!   `ERR Script exceeded its instruction budget ...` on every replica alike, and `pcall` cannot
//!   catch that error. Lua memory is capped at [`MEMORY_LIMIT`] bytes (the allocator counts the
//!   sizes Lua asks for, which are the same on every replica). The pattern functions
//!   (`string.find/match/gmatch/gsub`) run on our own matcher ([`pattern`], [`strlib`]), whose
//!   every step counts: Lua's C matcher backtracks where the instruction hook cannot see, and a
//!   40-byte subject with an 8-item pattern held the apply loop of every replica for hours.
//!
//! # Errors roll the script back (a difference from Redis)
//!
//! Redis keeps the writes a script made before it failed. Here a script that ends with an error
//! (a runtime error, an error raised by `redis.call`, the instruction budget or the memory cap)
//! has **no effect**: the key space, deadlines and removal mark are cloned before the run (O(1):
//! persistent maps) and put back on error. This is safe because the decision depends only on the
//! entry and the state (the same on every replica), and it makes a script atomic in the sense
//! applications want (a lock release or a compare-and-set either happens or not).
//!
//! # Reads
//!
//! `EVAL_RO` / `EVALSHA_RO`, and `EVAL` of a script whose shebang says `#!lua flags=no-writes`,
//! are [`ScriptQuery::Eval`] reads: the server runs them after a ReadIndex round like any read,
//! against the local state, and a write command in them answers `ERR Write commands are not
//! allowed from read-only scripts.`. `SCRIPT EXISTS` is a read of the replicated cache.
//!
//! # Commands inside scripts
//!
//! `redis.call` turns its arguments into a [`TxItem`] with the parser the server installed with
//! [`install_command_parser`] (the engine does not know the Redis command syntax; the server
//! does), then runs it with the same executor as a normal command. The parser refuses what a
//! script may not call (transactions, scripts, connection and admin commands) with Redis' texts.
//! Without an installed parser every `redis.call` fails (deterministically: every process of a
//! cluster runs the same binary, which installs it at start).
//!
//! # The caller's ACL applies to every call
//!
//! An `EVAL` of a restricted user carries that user's rules ([`ScriptAcl`]: categories and key
//! patterns, copied by the node that received it, never looked up at apply) and every
//! `redis.call` / `redis.pcall` is checked against them before it runs, after parsing and before
//! the read-only rule, with Redis 7.2's texts (`ERR ACL failure in script: ...`). `redis.call`
//! raises the refusal (the script ends and is rolled back, as on any error); `redis.pcall`
//! returns it. An unrestricted caller's entry carries nothing, and entries written before the
//! rules travelled decode as unrestricted (see `acl.rs` for the reasoning).

mod acl;
mod codec;
mod lua;
mod pattern;
mod rand48;
mod strlib;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use super::command::Reply;
use super::store::{Db, View};
use super::txn::TxItem;

pub use acl::{command_denied, ScriptAcl, ACL_FAILURE_PREFIX, KEY_DENIED};
pub(crate) use codec::{decode_command, decode_query, put_command, put_query, read_cache, write_cache};
pub use lua::{sha1_hex, CALL_COST, INSTRUCTION_BUDGET, MEMORY_LIMIT};

/// Most scripts added by `EVAL` that the cache keeps (least recently run evicted first).
pub const MAX_EVAL_SCRIPTS: usize = 500;

/// Redis' answer to an `EVALSHA` of an unknown script.
pub const NOSCRIPT_ERR: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// Redis' answer to a write command inside a read-only script.
pub const READ_ONLY_SCRIPT_ERR: &str = "ERR Write commands are not allowed from read-only scripts.";

/// Redis' answer to a command a script may not call.
pub const NOT_FROM_SCRIPT_ERR: &str = "ERR This Redis command is not allowed from script";

/// Turns the arguments of a `redis.call` (command name first) into a state-machine command or
/// query, or answers the error text (Redis' wording) the call raises.
pub type CommandParser = fn(Vec<Bytes>) -> Result<TxItem, String>;

static PARSER: OnceLock<CommandParser> = OnceLock::new();

/// Installs the parser `redis.call` uses (the server does it once at start; later calls are
/// ignored, so every script of a process sees the same parser).
pub fn install_command_parser(parser: CommandParser) {
    let _ = PARSER.set(parser);
}

/// The installed parser, if any.
pub(crate) fn parser() -> Option<CommandParser> {
    PARSER.get().copied()
}

/// Which script to run: the body itself (`EVAL`) or its SHA1 (`EVALSHA`), resolved at apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptRef {
    /// The source text.
    Body(Bytes),
    /// The SHA1 as the client gave it (40 hex digits in any case, or anything else, which
    /// matches nothing).
    Sha(Bytes),
}

/// A script request that goes through the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptCommand {
    /// `EVAL` / `EVALSHA`: runs the script with writes allowed (unless its shebang says
    /// `no-writes`); the reply is the script's.
    Eval {
        /// The script.
        script: ScriptRef,
        /// `KEYS`.
        keys: Vec<Bytes>,
        /// `ARGV`.
        args: Vec<Bytes>,
        /// The caller's rules every call is checked against; `None`: unrestricted (see
        /// [`ScriptAcl`]).
        acl: Option<Arc<ScriptAcl>>,
    },
    /// `SCRIPT LOAD body`: adds the script to the cache; replies its SHA1 (bulk).
    Load {
        /// The source text (compiled when applied: a script that does not compile is not added
        /// and the reply is the compile error).
        body: Bytes,
    },
    /// `SCRIPT FLUSH [ASYNC|SYNC]`: empties the cache; replies `OK`.
    Flush,
}

/// A script request answered from the local state after a read index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptQuery {
    /// `EVAL_RO` / `EVALSHA_RO` (or `EVAL` of a `no-writes` script): runs read-only.
    Eval {
        /// The script.
        script: ScriptRef,
        /// `KEYS`.
        keys: Vec<Bytes>,
        /// `ARGV`.
        args: Vec<Bytes>,
        /// The caller's rules every call is checked against; `None`: unrestricted.
        acl: Option<Arc<ScriptAcl>>,
    },
    /// `SCRIPT EXISTS sha [sha ...]`: an array of 1 or 0.
    Exists {
        /// The SHA1s asked about.
        shas: Vec<Bytes>,
    },
}

impl ScriptCommand {
    /// The keys (for access control and the engine's purge of expired keys).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ScriptCommand::Eval { keys, .. } => keys.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The lower-case Redis command name.
    pub fn name(&self) -> &'static str {
        match self {
            ScriptCommand::Eval { script: ScriptRef::Body(_), .. } => "eval",
            ScriptCommand::Eval { script: ScriptRef::Sha(_), .. } => "evalsha",
            ScriptCommand::Load { .. } => "script|load",
            ScriptCommand::Flush => "script|flush",
        }
    }

    /// The values it carries besides keys (body or SHA1, arguments, the caller's rules), for the
    /// size limits.
    pub(crate) fn values(&self) -> Vec<&Bytes> {
        match self {
            ScriptCommand::Eval { script, args, acl, .. } => {
                let mut v = vec![script.text()];
                v.extend(args.iter());
                v.extend(acl.iter().flat_map(|a| a.items()));
                v
            }
            ScriptCommand::Load { body } => vec![body],
            ScriptCommand::Flush => Vec::new(),
        }
    }
}

impl ScriptQuery {
    /// The keys (for access control).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ScriptQuery::Eval { keys, .. } => keys.iter().collect(),
            ScriptQuery::Exists { .. } => Vec::new(),
        }
    }
}

impl ScriptRef {
    /// The body or the SHA1 text.
    pub(crate) fn text(&self) -> &Bytes {
        match self {
            ScriptRef::Body(b) | ScriptRef::Sha(b) => b,
        }
    }
}

/// One cached script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cached {
    /// The source text.
    pub(crate) body: Bytes,
    /// Added by `SCRIPT LOAD` (never evicted), rather than only by `EVAL`.
    pub(crate) loaded: bool,
    /// Index of the entry that last ran or added it through `EVAL`/`EVALSHA` (the eviction
    /// order of scripts not `loaded`).
    pub(crate) used: u64,
}

/// The replicated script cache: SHA1 (40 lower-case hex digits) -> script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScriptCache {
    /// The scripts by SHA1.
    pub(crate) scripts: OrdMap<Bytes, Cached>,
    /// `(used, sha)` of the scripts not `loaded`: the eviction order.
    pub(crate) evictable: OrdSet<(u64, Bytes)>,
}

impl ScriptCache {
    /// The number of cached scripts.
    pub(crate) fn len(&self) -> usize {
        self.scripts.len()
    }

    /// The script with this SHA1 (any case).
    pub(crate) fn get(&self, sha: &[u8]) -> Option<&Cached> {
        if sha.len() != 40 {
            return None;
        }
        self.scripts.get(&Bytes::from(sha.to_ascii_lowercase()))
    }

    /// Adds (or refreshes) a script: `load` for `SCRIPT LOAD`, else an `EVAL` at `index`.
    pub(crate) fn add(&mut self, sha: Bytes, body: &Bytes, load: bool, index: u64) {
        let old = self.scripts.get(&sha).cloned();
        if let Some(old) = &old {
            if !old.loaded {
                self.evictable.remove(&(old.used, sha.clone()));
            }
        }
        let loaded = load || old.as_ref().is_some_and(|o| o.loaded);
        let used = if load { old.as_ref().map_or(index, |o| o.used) } else { index };
        self.scripts.insert(sha.clone(), Cached { body: body.clone(), loaded, used });
        if !loaded {
            self.evictable.insert((used, sha));
            while self.evictable.len() > MAX_EVAL_SCRIPTS {
                if let Some((_, victim)) = self.evictable.remove_min() {
                    self.scripts.remove(&victim);
                }
            }
        }
    }

    /// Marks a script run by `EVALSHA` at `index` as recently used.
    pub(crate) fn touch(&mut self, sha: &Bytes, index: u64) {
        if let Some(c) = self.scripts.get(sha).cloned() {
            if !c.loaded && c.used != index {
                self.evictable.remove(&(c.used, sha.clone()));
                self.evictable.insert((index, sha.clone()));
                self.scripts.insert(sha.clone(), Cached { used: index, ..c });
            }
        }
    }
}

/// Applies a script command to the key space (see the module docs).
pub(crate) fn execute(db: &mut Db<'_>, command: &ScriptCommand) -> Reply {
    match command {
        ScriptCommand::Flush => {
            *db.scripts = ScriptCache::default();
            Reply::Ok
        }
        ScriptCommand::Load { body } => match lua::compile_check(body) {
            Ok(()) => {
                let sha = Bytes::from(sha1_hex(body));
                db.scripts.add(sha.clone(), body, true, db.index);
                Reply::Bulk(sha)
            }
            Err(e) => Reply::Error(e),
        },
        ScriptCommand::Eval { script, keys, args, acl } => {
            let (sha, body) = match script {
                ScriptRef::Body(body) => (Bytes::from(sha1_hex(body)), body.clone()),
                ScriptRef::Sha(sha) => match db.scripts.get(sha) {
                    Some(c) => (Bytes::from(sha.to_ascii_lowercase()), c.body.clone()),
                    None => return Reply::Error(NOSCRIPT_ERR.to_owned()),
                },
            };
            // Roll back on error: O(1) clones of the persistent maps.
            let saved = (db.data.clone(), db.ttls.clone(), *db.last_removal);
            let outcome = lua::run(lua::Access::Write(db), &sha, &body, keys, args, acl.as_deref());
            let reply = match outcome {
                lua::Outcome::NotCompiled(e) => return Reply::Error(e),
                lua::Outcome::Failed(e) => {
                    (*db.data, *db.ttls, *db.last_removal) = saved;
                    Reply::Error(e)
                }
                lua::Outcome::Done(reply) => reply,
            };
            match script {
                ScriptRef::Body(_) => db.scripts.add(sha, &body, false, db.index),
                ScriptRef::Sha(_) => db.scripts.touch(&sha, db.index),
            }
            reply
        }
    }
}

/// Answers a script query from a read-only view (see the module docs).
pub(crate) fn query(view: &View<'_>, q: &ScriptQuery) -> Reply {
    match q {
        ScriptQuery::Exists { shas } => {
            Reply::Array(shas.iter().map(|s| Reply::Int(i64::from(view.scripts.get(s).is_some()))).collect())
        }
        ScriptQuery::Eval { script, keys, args, acl } => {
            let (sha, body) = match script {
                ScriptRef::Body(body) => (Bytes::from(sha1_hex(body)), body.clone()),
                ScriptRef::Sha(sha) => match view.scripts.get(sha) {
                    Some(c) => (Bytes::from(sha.to_ascii_lowercase()), c.body.clone()),
                    None => return Reply::Error(NOSCRIPT_ERR.to_owned()),
                },
            };
            match lua::run(lua::Access::Read(view), &sha, &body, keys, args, acl.as_deref()) {
                lua::Outcome::NotCompiled(e) | lua::Outcome::Failed(e) => Reply::Error(e),
                lua::Outcome::Done(reply) => reply,
            }
        }
    }
}

/// Whether the body starts with a shebang whose flags include `no-writes` (such a script may run
/// as a read). `Err` is Redis' error for a malformed shebang.
pub fn shebang_no_writes(body: &[u8]) -> Result<bool, String> {
    Ok(lua::shebang(body)?.is_some_and(|s| s.no_writes))
}
