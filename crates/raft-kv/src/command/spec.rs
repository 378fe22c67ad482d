//! The command table: every command this server understands, with the metadata `COMMAND`
//! reports (Redis 7 format) and the console's `help` prints.

/// How a request touches the replicated state; tells the server how to route it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads keys: must be answered linearizably (ReadIndex on the leader).
    Read,
    /// Changes keys: must go through the Raft log.
    Write,
    /// Concerns only the connection or the local node (PING, HELLO, CLIENT, COMMAND, CONFIG GET,
    /// INFO, SELECT, QUIT): answered by the node that received it.
    Connection,
    /// An administrative command of the `RAFT.` namespace.
    Admin,
}

impl Access {
    /// Whether a client may resend the request after losing the reply without risking a second
    /// effect: everything except writes and admin commands.
    pub fn is_retry_safe(self) -> bool {
        matches!(self, Access::Read | Access::Connection)
    }
}

/// One entry of the command table.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name; for a subcommand `container|sub`, as Redis 7 names them.
    pub name: &'static str,
    /// Redis arity: `n > 0` exactly n words (name included), `n < 0` at least `-n` words.
    pub arity: i64,
    /// Redis command flags (`readonly`, `write`, `fast`, ...), reported by `COMMAND`.
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: no key).
    pub first_key: i64,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i64,
    /// Distance between key arguments.
    pub step: i64,
    /// ACL categories, reported by `COMMAND`.
    pub categories: &'static [&'static str],
    /// How the command touches state.
    pub access: Access,
    /// Arguments after the name, for help texts.
    pub usage: &'static str,
    /// One-line description, for help texts.
    pub summary: &'static str,
    /// Subcommands of a container command (`CLIENT`, `COMMAND`, `CONFIG`).
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// Whether `words` (name included) satisfies the arity.
    pub fn arity_ok(&self, words: usize) -> bool {
        let words = words as i64;
        if self.arity >= 0 {
            words == self.arity
        } else {
            words >= -self.arity
        }
    }
}

/// A table entry without subcommands (a constructor for the tables below).
#[allow(clippy::too_many_arguments)]
const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    categories: &'static [&'static str],
    access: Access,
    usage: &'static str,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        categories,
        access,
        usage,
        summary,
        subcommands: &[],
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "denyoom", "fast"];
const CONN: &[&str] = &["loading", "stale", "fast"];
const STRING_READ: &[&str] = &["@read", "@string", "@fast"];
const STRING_WRITE: &[&str] = &["@write", "@string", "@slow"];
const STRING_WRITE_FAST: &[&str] = &["@write", "@string", "@fast"];
const KEYSPACE_READ: &[&str] = &["@keyspace", "@read", "@fast"];
const KEYSPACE_WRITE: &[&str] = &["@keyspace", "@write", "@slow"];
const KEYSPACE_WRITE_FAST: &[&str] = &["@keyspace", "@write", "@fast"];
const CONNECTION: &[&str] = &["@fast", "@connection"];
const SERVER: &[&str] = &["@slow", "@connection"];
const TRANSACTION: &[&str] = &["@fast", "@transaction"];
const READ_SLOW: &[&str] = &["readonly"];
const STRING_READ_SLOW: &[&str] = &["@read", "@string", "@slow"];
const KEYSPACE_READ_SLOW: &[&str] = &["@keyspace", "@read", "@slow"];
const HASH_READ: &[&str] = &["@read", "@hash", "@fast"];
const HASH_READ_SLOW: &[&str] = &["@read", "@hash", "@slow"];
const HASH_WRITE_FAST: &[&str] = &["@write", "@hash", "@fast"];
const KEYSPACE_DANGEROUS: &[&str] = &["@keyspace", "@write", "@slow", "@dangerous"];
const SCRIPTING: &[&str] = &["@slow", "@scripting"];
const EVAL: &[&str] = &["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"];
const EVAL_RO: &[&str] =
    &["readonly", "noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"];

/// Subcommands of `CLIENT`.
#[rustfmt::skip]
pub static CLIENT_SUBCOMMANDS: &[CommandSpec] = &[
    spec("client|getname", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Returns the name of the connection."),
    spec("client|help", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Shows the subcommands of CLIENT."),
    spec("client|id", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Returns the unique id of the connection."),
    spec("client|info", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Describes the connection."),
    spec("client|setinfo", 4, CONN, NO_KEYS, SERVER, Access::Connection, "LIB-NAME|LIB-VER value", "Records the client library's name or version."),
    spec("client|setname", 3, CONN, NO_KEYS, SERVER, Access::Connection, "name", "Names the connection."),
];

/// Subcommands of `COMMAND`.
#[rustfmt::skip]
pub static COMMAND_SUBCOMMANDS: &[CommandSpec] = &[
    spec("command|count", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Returns the number of commands."),
    spec("command|docs", -2, CONN, NO_KEYS, SERVER, Access::Connection, "[name ...]", "Returns documentation of commands (none is provided)."),
    spec("command|getkeys", -4, CONN, NO_KEYS, SERVER, Access::Connection, "command [arg ...]", "Returns the key arguments of a command."),
    spec("command|getkeysandflags", -4, CONN, NO_KEYS, SERVER, Access::Connection, "command [arg ...]", "Returns the key arguments of a command and how it uses each."),
    spec("command|help", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Shows the subcommands of COMMAND."),
    spec("command|info", -2, CONN, NO_KEYS, SERVER, Access::Connection, "[name ...]", "Describes commands."),
    spec("command|list", -2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Lists command names."),
];

/// Subcommands of `CONFIG`.
#[rustfmt::skip]
pub static CONFIG_SUBCOMMANDS: &[CommandSpec] = &[
    spec("config|get", -3, CONN, NO_KEYS, SERVER, Access::Connection, "pattern [pattern ...]", "Returns configuration parameters matching glob patterns."),
    spec("config|help", 2, CONN, NO_KEYS, SERVER, Access::Connection, "", "Shows the subcommands of CONFIG."),
];

/// Subcommands of `SCRIPT`.
#[rustfmt::skip]
pub static SCRIPT_SUBCOMMANDS: &[CommandSpec] = &[
    spec("script|exists", -3, &["noscript"], NO_KEYS, SCRIPTING, Access::Read, "sha1 [sha1 ...]", "Tells which scripts are in the (replicated) script cache."),
    spec("script|flush", -2, &["noscript"], NO_KEYS, SCRIPTING, Access::Write, "[ASYNC|SYNC]", "Empties the script cache of the cluster (a log entry)."),
    spec("script|help", 2, &["loading", "stale"], NO_KEYS, SCRIPTING, Access::Connection, "", "Shows the subcommands of SCRIPT."),
    spec("script|kill", 2, &["noscript", "allow_busy"], NO_KEYS, SCRIPTING, Access::Connection, "", "Answers NOTBUSY: scripts are bounded by an instruction budget, never killed."),
    spec("script|load", 3, &["noscript", "stale"], NO_KEYS, SCRIPTING, Access::Write, "script", "Adds a script to the cache of the cluster (a log entry); returns its SHA1."),
];

/// Every top-level command, sorted by name.
#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    spec("append", 3, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key value", "Appends value to the string at key; returns the new length."),
    CommandSpec {
        subcommands: CLIENT_SUBCOMMANDS,
        ..spec("client", -2, &[], NO_KEYS, &["@slow"], Access::Connection, "subcommand [arg ...]", "Connection commands (SETNAME, GETNAME, ID, INFO, SETINFO, HELP).")
    },
    CommandSpec {
        subcommands: COMMAND_SUBCOMMANDS,
        ..spec("command", -1, &["loading", "stale"], NO_KEYS, SERVER, Access::Connection, "[subcommand [arg ...]]", "Describes the commands of this server.")
    },
    CommandSpec {
        subcommands: CONFIG_SUBCOMMANDS,
        ..spec("config", -2, &[], NO_KEYS, &["@slow"], Access::Connection, "GET pattern [pattern ...]", "Reads configuration parameters.")
    },
    spec("copy", -3, WRITE, (1, 2, 1), KEYSPACE_WRITE, Access::Write, "source destination [DB 0] [REPLACE]", "Copies the value and expiry of source to destination; 1 if copied."),
    spec("dbsize", 1, READ, NO_KEYS, KEYSPACE_READ, Access::Read, "", "Returns the number of keys."),
    spec("decr", 2, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key", "Decrements the integer at key by one."),
    spec("decrby", 3, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key decrement", "Decrements the integer at key."),
    spec("del", -2, &["write"], ALL_KEYS, KEYSPACE_WRITE, Access::Write, "key [key ...]", "Deletes keys; returns how many existed."),
    spec("delex", -2, &["write", "fast"], ONE_KEY, STRING_WRITE_FAST, Access::Write, "key [IFEQ value|IFNE value|IFDEQ digest|IFDNE digest]", "Deletes key if its value (or digest) satisfies the condition (Redis 8.4); 1 if deleted."),
    spec("digest", 2, READ, ONE_KEY, STRING_READ, Access::Read, "key", "Returns the XXH3-64 digest of the string at key as 16 hex digits (Redis 8.4), or nil."),
    spec("discard", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NO_KEYS, TRANSACTION, Access::Connection, "", "Drops the queued transaction."),
    spec("echo", 2, &["fast"], NO_KEYS, CONNECTION, Access::Connection, "message", "Returns message."),
    spec("eval", -3, EVAL, NO_KEYS, SCRIPTING, Access::Write, "script numkeys [key ...] [arg ...]", "Runs a Lua script (one log entry, run at apply on every replica; keys given by numkeys)."),
    spec("eval_ro", -3, EVAL_RO, NO_KEYS, SCRIPTING, Access::Read, "script numkeys [key ...] [arg ...]", "Runs a read-only Lua script after a read index."),
    spec("evalsha", -3, EVAL, NO_KEYS, SCRIPTING, Access::Write, "sha1 numkeys [key ...] [arg ...]", "Runs a cached Lua script by its SHA1 (resolved at apply against the replicated cache)."),
    spec("evalsha_ro", -3, EVAL_RO, NO_KEYS, SCRIPTING, Access::Read, "sha1 numkeys [key ...] [arg ...]", "Runs a cached read-only Lua script after a read index."),
    spec("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], NO_KEYS, TRANSACTION, Access::Connection, "", "Runs the queued transaction atomically (one log entry); nil if a watched key changed."),
    spec("exists", -2, READ, ALL_KEYS, KEYSPACE_READ, Access::Read, "key [key ...]", "Counts how many of the keys exist."),
    spec("expire", -3, WRITE_FAST, ONE_KEY, KEYSPACE_WRITE_FAST, Access::Write, "key seconds [NX|XX|GT|LT]", "Sets the time to live of key in seconds."),
    spec("expireat", -3, WRITE_FAST, ONE_KEY, KEYSPACE_WRITE_FAST, Access::Write, "key unix-time-seconds [NX|XX|GT|LT]", "Sets the expiry of key as a Unix time in seconds."),
    spec("expiretime", 2, READ, ONE_KEY, KEYSPACE_READ, Access::Read, "key", "Returns the expiry of key as a Unix time in seconds (-1 none, -2 no key)."),
    spec("flushall", -1, &["write"], NO_KEYS, KEYSPACE_DANGEROUS, Access::Write, "[ASYNC|SYNC]", "Deletes every key (admin)."),
    spec("flushdb", -1, &["write"], NO_KEYS, KEYSPACE_DANGEROUS, Access::Write, "[ASYNC|SYNC]", "Deletes every key of the (only) database (admin)."),
    spec("get", 2, READ, ONE_KEY, STRING_READ, Access::Read, "key", "Returns the value of key, or nil."),
    spec("getdel", 2, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key", "Returns the value of key and deletes it."),
    spec("getex", -2, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key [EX s|PX ms|EXAT t|PXAT t|PERSIST]", "Returns the value of key and changes its expiry."),
    spec("getrange", 4, READ_SLOW, ONE_KEY, STRING_READ_SLOW, Access::Read, "key start end", "Returns a substring of the value at key."),
    spec("getset", 3, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key value", "Sets key to value and returns the old value (drops the expiry)."),
    spec("hdel", -3, &["write", "fast"], ONE_KEY, HASH_WRITE_FAST, Access::Write, "key field [field ...]", "Removes fields of the hash at key (the key when none is left); returns how many existed."),
    spec("hello", -1, &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], NO_KEYS, CONNECTION, Access::Connection, "[protover [AUTH username password] [SETNAME name]]", "Handshake; only protocol 2 (RESP2) is spoken."),
    spec("hexists", 3, READ, ONE_KEY, HASH_READ, Access::Read, "key field", "Returns 1 if the hash at key has field."),
    spec("hget", 3, READ, ONE_KEY, HASH_READ, Access::Read, "key field", "Returns the value of field in the hash at key, or nil."),
    spec("hgetall", 2, READ_SLOW, ONE_KEY, HASH_READ_SLOW, Access::Read, "key", "Returns every field and value of the hash at key (in field order)."),
    spec("hincrby", 4, WRITE_FAST, ONE_KEY, HASH_WRITE_FAST, Access::Write, "key field increment", "Increments the integer in field of the hash at key."),
    spec("hincrbyfloat", 4, WRITE_FAST, ONE_KEY, HASH_WRITE_FAST, Access::Write, "key field increment", "Increments the number in field by a float (Redis' long double arithmetic)."),
    spec("hkeys", 2, READ_SLOW, ONE_KEY, HASH_READ_SLOW, Access::Read, "key", "Returns the fields of the hash at key."),
    spec("hlen", 2, READ, ONE_KEY, HASH_READ, Access::Read, "key", "Returns the number of fields of the hash at key."),
    spec("hmget", -3, READ, ONE_KEY, HASH_READ, Access::Read, "key field [field ...]", "Returns the values of fields of the hash at key."),
    spec("hmset", -4, WRITE_FAST, ONE_KEY, HASH_WRITE_FAST, Access::Write, "key field value [field value ...]", "Sets fields of the hash at key (as HSET); returns OK."),
    spec("hscan", -3, READ_SLOW, ONE_KEY, HASH_READ_SLOW, Access::Read, "key cursor [MATCH pattern] [COUNT count] [NOVALUES]", "Iterates over the fields of the hash at key; each field present for the whole scan is returned once."),
    spec("hset", -4, WRITE_FAST, ONE_KEY, HASH_WRITE_FAST, Access::Write, "key field value [field value ...]", "Sets fields of the hash at key; returns how many were created."),
    spec("hsetnx", 4, WRITE_FAST, ONE_KEY, HASH_WRITE_FAST, Access::Write, "key field value", "Sets field of the hash at key if it does not exist; 1 if set."),
    spec("hstrlen", 3, READ, ONE_KEY, HASH_READ, Access::Read, "key field", "Returns the length of the value of field in the hash at key."),
    spec("hvals", 2, READ_SLOW, ONE_KEY, HASH_READ_SLOW, Access::Read, "key", "Returns the values of the hash at key (in field order)."),
    spec("incr", 2, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key", "Increments the integer at key by one."),
    spec("incrby", 3, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key increment", "Increments the integer at key."),
    spec("incrbyfloat", 3, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key increment", "Increments the number at key by a float (Redis' long double arithmetic)."),
    spec("info", -1, &["loading", "stale"], NO_KEYS, &["@slow", "@dangerous"], Access::Connection, "[section ...]", "Reports on the node (try INFO raft)."),
    spec("keys", 2, READ_SLOW, NO_KEYS, &["@keyspace", "@read", "@slow", "@dangerous"], Access::Read, "pattern", "Returns the keys matching a glob pattern."),
    spec("mget", -2, READ, ALL_KEYS, STRING_READ, Access::Read, "key [key ...]", "Returns the values of keys."),
    spec("mset", -3, WRITE, (1, -1, 2), STRING_WRITE, Access::Write, "key value [key value ...]", "Sets several keys atomically."),
    spec("msetnx", -3, WRITE, (1, -1, 2), STRING_WRITE, Access::Write, "key value [key value ...]", "Sets several keys if none of them exists; 1 if set."),
    spec("multi", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NO_KEYS, TRANSACTION, Access::Connection, "", "Starts queueing a transaction."),
    spec("persist", 2, WRITE_FAST, ONE_KEY, KEYSPACE_WRITE_FAST, Access::Write, "key", "Removes the expiry of key."),
    spec("pexpire", -3, WRITE_FAST, ONE_KEY, KEYSPACE_WRITE_FAST, Access::Write, "key milliseconds [NX|XX|GT|LT]", "Sets the time to live of key in milliseconds."),
    spec("pexpireat", -3, WRITE_FAST, ONE_KEY, KEYSPACE_WRITE_FAST, Access::Write, "key unix-time-milliseconds [NX|XX|GT|LT]", "Sets the expiry of key as a Unix time in milliseconds."),
    spec("pexpiretime", 2, READ, ONE_KEY, KEYSPACE_READ, Access::Read, "key", "Returns the expiry of key as a Unix time in milliseconds."),
    spec("ping", -1, &["fast"], NO_KEYS, CONNECTION, Access::Connection, "[message]", "Returns PONG, or message."),
    spec("psetex", 4, WRITE, ONE_KEY, STRING_WRITE, Access::Write, "key milliseconds value", "Sets key to value, expiring in milliseconds."),
    spec("pttl", 2, READ, ONE_KEY, KEYSPACE_READ, Access::Read, "key", "Returns the time to live of key in milliseconds (-1 none, -2 no key)."),
    spec("quit", -1, &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], NO_KEYS, CONNECTION, Access::Connection, "", "Closes the connection."),
    spec("raft.member", -2, &["admin", "noscript"], NO_KEYS, &["@admin", "@slow", "@dangerous"], Access::Admin, "LIST | ADD name host clientPort corePort | PROMOTE name | REMOVE name", "Lists or changes the cluster's members (ADD: a learner; PROMOTE: learner to voter); answered once the change is committed."),
    spec("raft.snapshot", 1, &["admin", "noscript"], NO_KEYS, &["@admin", "@slow", "@dangerous"], Access::Admin, "", "Takes a snapshot of this node now (compacting its log); returns the index it covers."),
    spec("raft.transfer", 2, &["admin", "noscript"], NO_KEYS, &["@admin", "@slow", "@dangerous"], Access::Admin, "name", "Hands leadership to voter name; answered once it leads."),
    spec("raft.version", 2, READ, ONE_KEY, KEYSPACE_READ, Access::Read, "key", "Returns the log index of the write that last changed key (a fencing token), or nil."),
    spec("randomkey", 1, READ_SLOW, NO_KEYS, KEYSPACE_READ_SLOW, Access::Read, "", "Returns a random key, or nil."),
    spec("rename", 3, &["write"], (1, 2, 1), KEYSPACE_WRITE, Access::Write, "key newkey", "Renames key, with its expiry."),
    spec("renamenx", 3, WRITE_FAST, (1, 2, 1), KEYSPACE_WRITE_FAST, Access::Write, "key newkey", "Renames key if newkey does not exist; 1 if renamed."),
    spec("scan", -2, READ_SLOW, NO_KEYS, KEYSPACE_READ_SLOW, Access::Read, "cursor [MATCH pattern] [COUNT count] [TYPE type]", "Iterates over the keys; every key present for the whole scan is returned exactly once (cursors are valid on the node that gave them)."),
    CommandSpec {
        subcommands: SCRIPT_SUBCOMMANDS,
        ..spec("script", -2, &[], NO_KEYS, &["@slow"], Access::Connection, "subcommand [arg ...]", "Script cache commands (LOAD, EXISTS, FLUSH, KILL, HELP).")
    },
    spec("select", 2, CONN, NO_KEYS, CONNECTION, Access::Connection, "index", "Selects a database; only database 0 exists."),
    spec("set", -3, WRITE, ONE_KEY, STRING_WRITE, Access::Write, "key value [NX|XX|IFEQ value|IFNE value|IFDEQ digest|IFDNE digest] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]", "Sets key to value, with an optional condition and expiry."),
    spec("setex", 4, WRITE, ONE_KEY, STRING_WRITE, Access::Write, "key seconds value", "Sets key to value, expiring in seconds."),
    spec("setnx", 3, WRITE_FAST, ONE_KEY, STRING_WRITE_FAST, Access::Write, "key value", "Sets key if it does not exist; 1 if set."),
    spec("setrange", 4, WRITE, ONE_KEY, STRING_WRITE, Access::Write, "key offset value", "Overwrites part of the value at key; returns the new length."),
    spec("strlen", 2, READ, ONE_KEY, STRING_READ, Access::Read, "key", "Returns the length of the value at key."),
    spec("time", 1, &["loading", "stale", "fast"], NO_KEYS, &["@fast"], Access::Connection, "", "Returns this node's clock (seconds, microseconds); not the log time expiry uses."),
    spec("touch", -2, READ, ALL_KEYS, KEYSPACE_READ, Access::Read, "key [key ...]", "Counts how many of the keys exist."),
    spec("ttl", 2, READ, ONE_KEY, KEYSPACE_READ, Access::Read, "key", "Returns the time to live of key in seconds (-1 none, -2 no key)."),
    spec("type", 2, READ, ONE_KEY, KEYSPACE_READ, Access::Read, "key", "Returns the type of the value at key (string, hash or none)."),
    spec("unlink", -2, WRITE_FAST, ALL_KEYS, KEYSPACE_WRITE_FAST, Access::Write, "key [key ...]", "Deletes keys (as DEL); returns how many existed."),
    spec("unwatch", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], NO_KEYS, TRANSACTION, Access::Connection, "", "Forgets the watched keys."),
    spec("watch", -2, &["noscript", "loading", "stale", "fast", "allow_busy"], ALL_KEYS, TRANSACTION, Access::Read, "key [key ...]", "Makes the next EXEC fail if any of the keys changes."),
];

/// The longest name in [`COMMANDS`] is at most this long (a test checks).
const MAX_NAME_LEN: usize = 32;

/// Finds a top-level command by name, ignoring ASCII case: the lower-cased name among the
/// commands of its first letter, found by a binary search on first bytes, since [`COMMANDS`] is
/// sorted by its lower-case names (a test checks both, and that this finds what a scan with
/// `eq_ignore_ascii_case` finds). Every client request looks its name up; the scan compared ~70
/// names for a `SET` (~550 instructions, with callgrind), a binary search on whole names ~360.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = buf.get_mut(..name.len())?;
    for (l, c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    let lower = &*lower;
    let first = lower.first();
    let start = COMMANDS.partition_point(|s| s.name.as_bytes().first() < first);
    COMMANDS
        .get(start..)?
        .iter()
        .take_while(|s| s.name.as_bytes().first() == first)
        .find(|s| s.name.as_bytes() == lower)
}

/// Finds a subcommand of `container` by its own name (`setname` for `client|setname`).
pub fn lookup_sub(container: &CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    container
        .subcommands
        .iter()
        .find(|s| s.name.split_once('|').is_some_and(|(_, own)| own.as_bytes().eq_ignore_ascii_case(sub)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What `lookup` finds, the slow way.
    fn scan(name: &[u8]) -> Option<&'static CommandSpec> {
        COMMANDS.iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
    }

    #[test]
    fn the_table_is_sorted_by_lower_case_names_that_fit_the_search_buffer() {
        for s in COMMANDS {
            assert_eq!(s.name, s.name.to_ascii_lowercase(), "{}", s.name);
            assert!(s.name.len() <= MAX_NAME_LEN, "{}", s.name);
        }
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name.as_bytes() < pair[1].name.as_bytes(),
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn every_name_is_found_in_any_case() {
        for s in COMMANDS {
            let upper = s.name.to_ascii_uppercase();
            let mixed: String = s
                .name
                .chars()
                .enumerate()
                .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
                .collect();
            for name in [s.name, &upper, &mixed] {
                assert!(std::ptr::eq(lookup(name.as_bytes()).expect(name), s), "{name}");
            }
        }
        for name in ["", "se", "sett", "set ", "gét", "raft.", "x".repeat(MAX_NAME_LEN + 1).as_str()] {
            assert!(lookup(name.as_bytes()).is_none(), "{name}");
        }
    }

    proptest! {
        /// Any bytes: the search finds what the scan finds.
        #[test]
        fn lookup_is_a_case_insensitive_scan(name in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::sample::select(COMMANDS.iter().map(|s| s.name).collect::<Vec<_>>()).prop_flat_map(|s| {
                proptest::collection::vec(any::<bool>(), s.len()).prop_map(move |up| {
                    s.bytes().zip(up).map(|(c, u)| if u { c.to_ascii_uppercase() } else { c }).collect()
                })
            }),
        ]) {
            prop_assert_eq!(lookup(&name).map(|s| s.name), scan(&name).map(|s| s.name));
        }
    }
}
