//! Client requests: a RESP request frame (an array of bulk strings) turned into a typed
//! [`Request`], with Redis's exact error messages for everything that is not a valid request.
//!
//! What this module guarantees:
//! - Command names are case-insensitive; options (`NX`, `GET`, `AUTH`, ...) too.
//! - A request that parses is well formed: arity, option syntax and integer arguments are all
//!   checked here, with the wording of Redis 7 (`ERR wrong number of arguments for 'get'
//!   command`, `ERR syntax error`, `ERR value is not an integer or out of range`, `ERR unknown
//!   command 'foo', with args beginning with: 'a' 'b' `, ...). What remains for the server is
//!   what depends on the data (e.g. `INCR` on a non-integer value).
//! - Keys and values are the frame's own [`Bytes`] (no copy). They are slices of the
//!   connection's read buffer: a component that keeps them long-term should copy them.
//! - Nothing here depends on the storage engine; [`Access`] tells the server whether a request
//!   reads, writes, or concerns only the connection.
//!
//! The commands added with expiry (see [`expiry`]) parse straight into the state machine's
//! command and query types ([`Request::KvWrite`], [`Request::KvRead`]), with owned bytes.
//!
//! Deliberate differences from Redis: there is one database, so `SELECT` accepts only
//! 0. Names starting with `RAFT.` are
//! reserved for administrative commands ([`Request::Admin`]); those in the table (`RAFT.SNAPSHOT`)
//! have their arity checked here.
//!
//! `HELLO 3` parses (as [`Hello::protocol`] = RESP3): recent client libraries (redis-py 8 for
//! one) ask for RESP3 by default and give up on `NOPROTO`. The server then either switches the
//! connection's replies to RESP3 ([`crate::resp::encode_as`]) or refuses with
//! [`CommandError::Resp3NotSupported`].

mod expiry;
pub mod getkeys;
mod hash;
mod keys;
mod reply;
pub mod script;
mod spec;

use bytes::Bytes;
use thiserror::Error;

use crate::resp::{parse_i64, Frame, Protocol};

pub use keys::ScanRequest;
pub use reply::{
    client_info_reply, command_reply, config_get_reply, glob_match, hello_reply, help_reply,
    CONFIG_PARAMETERS,
};
pub use spec::{
    lookup, lookup_sub, Access, CommandSpec, CLIENT_SUBCOMMANDS, COMMANDS, COMMAND_SUBCOMMANDS,
    CONFIG_SUBCOMMANDS,
};

/// A parsed client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `PING [message]`: `PONG`, or the message as a bulk string.
    Ping(Option<Bytes>),
    /// `ECHO message`.
    Echo(Bytes),
    /// `GET key`.
    Get(Bytes),
    /// `SET key value [NX|XX] [GET]`.
    Set(Set),
    /// `DEL key [key ...]`: number of keys removed.
    Del(Vec<Bytes>),
    /// `EXISTS key [key ...]`: number of keys that exist (a key named twice counts twice).
    Exists(Vec<Bytes>),
    /// `MGET key [key ...]`.
    MGet(Vec<Bytes>),
    /// `MSET key value [key value ...]`: all pairs, in order (a later pair wins).
    MSet(Vec<(Bytes, Bytes)>),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: add `delta` to the integer at `key` (missing = 0).
    /// `DECRBY n` is `delta = -n`; `DECRBY` of `i64::MIN` is refused at parse time, as in Redis.
    IncrBy {
        /// The key.
        key: Bytes,
        /// The signed amount to add.
        delta: i64,
    },
    /// `APPEND key value`: the new length.
    Append {
        /// The key.
        key: Bytes,
        /// The bytes to append.
        value: Bytes,
    },
    /// `STRLEN key`.
    StrLen(Bytes),
    /// `DBSIZE`.
    DbSize,
    /// `QUIT`: reply `OK`, then close the connection.
    Quit,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`; see [`hello_reply`].
    Hello(Hello),
    /// `CLIENT ...`.
    Client(ClientRequest),
    /// `COMMAND ...`; answer with [`command_reply`].
    Command(CommandRequest),
    /// `CONFIG GET pattern [pattern ...]`; answer with [`config_get_reply`].
    ConfigGet(Vec<Bytes>),
    /// `INFO [section ...]`, sections as given (Redis matches them case-insensitively).
    Info(Vec<Bytes>),
    /// `SELECT 0` (the only database): reply `OK`.
    Select,
    /// `CLIENT HELP`, `COMMAND HELP`, `CONFIG HELP`; answer with [`help_reply`].
    Help(Container),
    /// A write parsed straight into the state machine's command (keys and values owned).
    KvWrite(engine::kv::Command),
    /// A read parsed straight into the state machine's query (keys owned).
    KvRead(engine::kv::Query),
    /// `MULTI`: start queueing a transaction.
    Multi,
    /// `EXEC`: run the queued transaction.
    Exec,
    /// `DISCARD`: drop the queued transaction.
    Discard,
    /// `WATCH key [key ...]`.
    Watch(Vec<Bytes>),
    /// `UNWATCH`.
    Unwatch,
    /// `SCAN` / `HSCAN`: one step; the server resolves the cursor (see `crate::scan`).
    Scan(Box<ScanRequest>),
    /// `TIME`: the node's clock (not the log time).
    Time,
    /// A command of the reserved `RAFT.` namespace (e.g. `RAFT.SNAPSHOT`), not interpreted here.
    Admin {
        /// The command name in lower case, e.g. `raft.snapshot`.
        name: String,
        /// The arguments after the name.
        args: Vec<Bytes>,
    },
}

/// The arguments of `SET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// The key.
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// When to set.
    pub condition: SetCondition,
    /// `GET`: reply with the old value (or nil) instead of `OK`; when the condition prevents the
    /// write, the old value is still returned, as in Redis 7.
    pub get: bool,
}

/// The condition of `SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    /// No condition.
    Always,
    /// `NX`: only if the key does not exist (reply nil otherwise).
    IfAbsent,
    /// `XX`: only if the key exists (reply nil otherwise).
    IfPresent,
}

/// The options of `HELLO`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// The protocol asked for (`None`: keep the current one). Versions other than 2 and 3 were
    /// refused at parse time.
    pub protocol: Option<Protocol>,
    /// `AUTH username password`.
    pub auth: Option<(Bytes, Bytes)>,
    /// `SETNAME name` (already validated like `CLIENT SETNAME`).
    pub setname: Option<Bytes>,
}

/// `CLIENT` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// `CLIENT SETNAME name`: `OK`; an empty name clears it. The name was validated.
    SetName(Bytes),
    /// `CLIENT GETNAME`: the name, or nil.
    GetName,
    /// `CLIENT ID`: the connection's unique integer id.
    Id,
    /// `CLIENT INFO`: a bulk string describing the connection; see [`client_info_reply`].
    Info,
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value` (sent by recent client libraries): `OK`.
    SetInfo {
        /// `lib-name` or `lib-ver` (lower case).
        attribute: &'static str,
        /// The value.
        value: Bytes,
    },
}

/// `COMMAND` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandRequest {
    /// `COMMAND`: every command, described.
    All,
    /// `COMMAND COUNT`.
    Count,
    /// `COMMAND DOCS [name ...]`: no documentation is provided (an empty array).
    Docs(Vec<Bytes>),
    /// `COMMAND INFO [name ...]`: the named commands (all when none is named).
    Info(Vec<Bytes>),
    /// `COMMAND LIST`: the command names.
    List,
    /// `COMMAND GETKEYS command [arg ...]` (`flags` false) and `COMMAND GETKEYSANDFLAGS`: the
    /// command's key arguments (see [`getkeys`]).
    GetKeys {
        /// The command to look into, its name first.
        args: Vec<Bytes>,
        /// `GETKEYSANDFLAGS`: each key with its key-spec flags.
        flags: bool,
    },
}

/// A command that has subcommands (and a `HELP` subcommand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// `CLIENT`.
    Client,
    /// `COMMAND`.
    Command,
    /// `CONFIG`.
    Config,
    /// `SCRIPT`.
    Script,
}

impl Container {
    /// The upper-case name, as used in help texts and errors.
    pub fn name(self) -> &'static str {
        match self {
            Container::Client => "CLIENT",
            Container::Command => "COMMAND",
            Container::Config => "CONFIG",
            Container::Script => "SCRIPT",
        }
    }
}

/// A request that is not valid. `Display` is the complete error line the server sends (after
/// `-`), Redis's wording included; see [`CommandError::to_frame`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CommandError {
    /// The command name is not known.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name, at most 128 bytes of it.
        name: String,
        /// The first arguments, each quoted and followed by a space, 128 bytes or so in all.
        args: String,
    },
    /// The subcommand of a container command is not known.
    #[error("ERR unknown subcommand '{sub}'. Try {} HELP.", .container.name())]
    UnknownSubcommand {
        /// The container command.
        container: Container,
        /// The subcommand, at most 128 bytes of it.
        sub: String,
    },
    /// Wrong number of arguments; holds the lower-case command name (`client|setname` for a
    /// subcommand).
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// The same text, found by the command itself past the table's arity check (Redis's
    /// `addReplyErrorArity` inside `DELEX`, and for an odd number of arguments after the key in
    /// `MSET`, `MSETNX`, `HSET`, `HMSET`): inside `MULTI` it is queued and becomes `EXEC`'s
    /// answer to the command, and a script gets this text, not the "from script" one.
    #[error("ERR wrong number of arguments for '{0}' command")]
    CommandArity(&'static str),
    /// An option that does not belong there.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument that must be an integer is not one (or overflows 64 bits).
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    /// `DECRBY key -9223372036854775808`.
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    /// `SELECT` of a database other than 0.
    #[error("ERR DB index is out of range")]
    DbIndexOutOfRange,
    /// A client name with spaces, newlines or non-printable characters.
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    InvalidClientName,
    /// `HELLO x` where x is not an integer.
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersionNotInteger,
    /// `HELLO 3` refused: never produced by the parser; for a server that does not speak RESP3.
    #[error("NOPROTO sorry, this protocol version is not supported")]
    Resp3NotSupported,
    /// `HELLO n` for n other than 2 and 3.
    #[error("NOPROTO unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// `HELLO` with an unknown or incomplete option.
    #[error("ERR Syntax error in HELLO option '{0}'")]
    HelloSyntax(String),
    /// An expire time that is not positive or overflows (holds the command name).
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpireTime(&'static str),
    /// An option `EXPIRE` and its siblings do not know.
    #[error("ERR Unsupported option {0}")]
    UnsupportedOption(String),
    /// Options that exclude each other (`NX and XX, GT or LT`, `GT and LT`).
    #[error("ERR {0} options at the same time are not compatible")]
    Incompatible(&'static str),
    /// A `SCAN` cursor that is not an unsigned 64-bit integer.
    #[error("ERR invalid cursor")]
    InvalidCursor,
    /// An increment that is not a valid float, or not finite (the full text).
    #[error("{0}")]
    Float(&'static str),
    /// A negative `SETRANGE` offset.
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    /// An error of the script commands with its full text (`ERR Number of keys can't be
    /// negative`, `NOTBUSY ...`).
    #[error("{0}")]
    Script(&'static str),
    /// A frame that is not a non-empty array of bulk strings.
    #[error("ERR Protocol error: a request must be an array of bulk strings")]
    NotARequest,
}

impl CommandError {
    /// The error reply frame.
    pub fn to_frame(&self) -> Frame {
        Frame::error(self.to_string())
    }
}

/// Lossy text of at most `max` bytes of `bytes` (Redis's `%.128s`).
fn text(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// Redis 7's unknown-command error: name cut to 128 bytes; arguments appended as `'arg' ` while
/// the argument text is shorter than 128 bytes, each cut to the room left.
fn unknown_command(args: &[Bytes]) -> CommandError {
    let name = args.first().map(|n| text(n, 128)).unwrap_or_default();
    let mut list = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(&arg[..arg.len().min(room)]);
        list.extend_from_slice(b"' ");
    }
    CommandError::UnknownCommand { name, args: String::from_utf8_lossy(&list).into_owned() }
}

/// The arguments after a command's name, consumed in order.
struct Args {
    /// Name used in arity errors.
    name: &'static str,
    /// Remaining arguments.
    rest: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// The next argument; a missing one is an arity error (the table check normally catches it
    /// first).
    fn next(&mut self) -> Result<Bytes, CommandError> {
        self.rest.next().ok_or(CommandError::WrongArity(self.name))
    }

    fn next_opt(&mut self) -> Option<Bytes> {
        self.rest.next()
    }

    fn integer(&mut self) -> Result<i64, CommandError> {
        parse_i64(&self.next()?).ok_or(CommandError::NotAnInteger)
    }

    fn remaining(self) -> Vec<Bytes> {
        self.rest.collect()
    }

    fn len(&self) -> usize {
        self.rest.len()
    }
}

/// Whether `name` is an acceptable client name: printable ASCII without spaces ('!' to '~'),
/// or empty (which clears the name).
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

impl Request {
    /// Parses a request frame (as produced by [`crate::resp::Parser::requests`]).
    pub fn parse(frame: Frame) -> Result<Request, CommandError> {
        let Frame::Array(items) = frame else {
            return Err(CommandError::NotARequest);
        };
        let args = items
            .into_iter()
            .map(|item| match item {
                Frame::Bulk(b) => Ok(b),
                _ => Err(CommandError::NotARequest),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Request::from_args(args)
    }

    /// Parses a request given as words, the command name first.
    pub fn from_args(args: Vec<Bytes>) -> Result<Request, CommandError> {
        let Some(name) = args.first() else {
            return Err(CommandError::NotARequest);
        };
        if name.eq_ignore_ascii_case(b"raft.version") {
            // A read any client may do (a fencing token), not an administrative command.
            if args.len() != 2 {
                return Err(CommandError::WrongArity("raft.version"));
            }
            let key = Bytes::copy_from_slice(&args[1]);
            return Ok(Request::KvRead(engine::kv::Query::Version { key }));
        }
        if name.len() > 5 && name[..5].eq_ignore_ascii_case(b"raft.") {
            // Admin commands of the table (RAFT.SNAPSHOT) have their arity checked; others are
            // passed on for the server to refuse or handle.
            if let Some(spec) = lookup(name) {
                if !spec.arity_ok(args.len()) {
                    return Err(CommandError::WrongArity(spec.name));
                }
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            return Ok(Request::Admin { name, args: args.into_iter().skip(1).collect() });
        }
        let Some(spec) = lookup(name) else {
            return Err(unknown_command(&args));
        };
        if !spec.arity_ok(args.len()) {
            return Err(CommandError::WrongArity(spec.name));
        }
        let mut rest = args.into_iter();
        rest.next();
        let mut a = Args { name: spec.name, rest };
        let request = match spec.name {
            "ping" if a.len() > 1 => return Err(CommandError::WrongArity("ping")),
            "ping" => Request::Ping(a.next_opt()),
            "echo" => Request::Echo(a.next()?),
            "get" => Request::Get(a.next()?),
            "set" => expiry::parse_set(a)?,
            "setex" => expiry::parse_setex(a, false)?,
            "psetex" => expiry::parse_setex(a, true)?,
            "getex" => expiry::parse_getex(a)?,
            "delex" => expiry::parse_delex(a)?,
            "digest" => {
                Request::KvRead(engine::kv::Query::Digest { key: Bytes::copy_from_slice(&a.next()?) })
            }
            "getdel" => expiry::parse_key_write(a, |key| engine::kv::Command::GetDel { key })?,
            "persist" => expiry::parse_key_write(a, |key| engine::kv::Command::Persist { key })?,
            "expire" => expiry::parse_expire(a, true, false)?,
            "pexpire" => expiry::parse_expire(a, false, false)?,
            "expireat" => expiry::parse_expire(a, true, true)?,
            "pexpireat" => expiry::parse_expire(a, false, true)?,
            "ttl" => expiry::parse_ttl(a, false, false)?,
            "pttl" => expiry::parse_ttl(a, true, false)?,
            "expiretime" => expiry::parse_ttl(a, false, true)?,
            "pexpiretime" => expiry::parse_ttl(a, true, true)?,
            "del" => Request::Del(a.remaining()),
            "exists" => Request::Exists(a.remaining()),
            "mget" => Request::MGet(a.remaining()),
            "mset" => parse_mset(a)?,
            "incr" => Request::IncrBy { key: a.next()?, delta: 1 },
            "decr" => Request::IncrBy { key: a.next()?, delta: -1 },
            "incrby" => Request::IncrBy { key: a.next()?, delta: a.integer()? },
            "decrby" => {
                let key = a.next()?;
                let n = a.integer()?;
                let delta = n.checked_neg().ok_or(CommandError::DecrementOverflow)?;
                Request::IncrBy { key, delta }
            }
            "append" => Request::Append { key: a.next()?, value: a.next()? },
            "strlen" => Request::StrLen(a.next()?),
            "dbsize" => Request::DbSize,
            "quit" => Request::Quit,
            "hello" => Request::Hello(parse_hello(a)?),
            "client" => parse_client(spec, a)?,
            "command" => parse_command(spec, a)?,
            "config" => parse_config(spec, a)?,
            "info" => Request::Info(a.remaining()),
            "multi" => Request::Multi,
            "exec" => Request::Exec,
            "discard" => Request::Discard,
            "watch" => Request::Watch(a.remaining()),
            "unwatch" => Request::Unwatch,
            "keys" => {
                Request::KvRead(engine::kv::Query::Keys { pattern: Bytes::copy_from_slice(&a.next()?) })
            }
            "scan" => keys::parse_scan(a, false)?,
            "type" => Request::KvRead(engine::kv::Query::Type { key: Bytes::copy_from_slice(&a.next()?) }),
            "rename" => keys::parse_rename(a, false)?,
            "renamenx" => keys::parse_rename(a, true)?,
            "copy" => keys::parse_copy(a)?,
            "unlink" => Request::Del(a.remaining()),
            "touch" => Request::Exists(a.remaining()),
            "randomkey" => keys::parse_randomkey(),
            "flushdb" | "flushall" => keys::parse_flush(a)?,
            "getrange" => keys::parse_getrange(a)?,
            "setrange" => keys::parse_setrange(a)?,
            "incrbyfloat" => keys::parse_incrbyfloat(a)?,
            "getset" => keys::parse_getset(a)?,
            "setnx" => keys::parse_msetnx(a, "setnx")?,
            "msetnx" => keys::parse_msetnx(a, "msetnx")?,
            "time" => Request::Time,
            "hscan" => keys::parse_scan(a, true)?,
            "hset" | "hmset" | "hsetnx" | "hget" | "hmget" | "hdel" | "hgetall" | "hkeys" | "hvals"
            | "hlen" | "hexists" | "hstrlen" | "hincrby" | "hincrbyfloat" => hash::parse(spec.name, a)?,
            "eval" => script::parse_eval(a.remaining(), false, false)?,
            "evalsha" => script::parse_eval(a.remaining(), true, false)?,
            "eval_ro" => script::parse_eval(a.remaining(), false, true)?,
            "evalsha_ro" => script::parse_eval(a.remaining(), true, true)?,
            "script" => script::parse_script(a.remaining())?,
            "select" => match a.integer()? {
                0 => Request::Select,
                _ => return Err(CommandError::DbIndexOutOfRange),
            },
            _ => return Err(unknown_command(&[Bytes::from_static(spec.name.as_bytes())])),
        };
        Ok(request)
    }

    /// How this request touches the replicated state.
    pub fn access(&self) -> Access {
        match self {
            Request::Get(_)
            | Request::Exists(_)
            | Request::MGet(_)
            | Request::StrLen(_)
            | Request::KvRead(_)
            | Request::Watch(_)
            | Request::Scan(_)
            | Request::DbSize => Access::Read,
            Request::Set(_)
            | Request::Del(_)
            | Request::MSet(_)
            | Request::IncrBy { .. }
            | Request::KvWrite(_)
            | Request::Append { .. } => Access::Write,
            Request::Admin { .. } => Access::Admin,
            Request::Ping(_)
            | Request::Echo(_)
            | Request::Quit
            | Request::Hello(_)
            | Request::Client(_)
            | Request::Command(_)
            | Request::ConfigGet(_)
            | Request::Info(_)
            | Request::Select
            | Request::Multi
            | Request::Exec
            | Request::Discard
            | Request::Unwatch
            | Request::Time
            | Request::Help(_) => Access::Connection,
        }
    }
}

fn parse_mset(mut a: Args) -> Result<Request, CommandError> {
    if a.len() % 2 == 1 {
        // Found by the command itself, as Redis does (queued in MULTI, EXEC answers it).
        return Err(CommandError::CommandArity("mset"));
    }
    let mut pairs = Vec::with_capacity(a.len() / 2);
    while let Some(key) = a.next_opt() {
        pairs.push((key, a.next()?));
    }
    Ok(Request::MSet(pairs))
}

fn parse_hello(mut a: Args) -> Result<Hello, CommandError> {
    let mut hello = Hello::default();
    let Some(version) = a.next_opt() else {
        return Ok(hello);
    };
    hello.protocol = Some(match parse_i64(&version) {
        None => return Err(CommandError::ProtocolVersionNotInteger),
        Some(2) => Protocol::Resp2,
        Some(3) => Protocol::Resp3,
        Some(_) => return Err(CommandError::UnsupportedProtocolVersion),
    });
    while let Some(opt) = a.next_opt() {
        let more = a.len();
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            hello.auth = Some((a.next()?, a.next()?));
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            let name = a.next()?;
            if !valid_client_name(&name) {
                return Err(CommandError::InvalidClientName);
            }
            hello.setname = Some(name);
        } else {
            return Err(CommandError::HelloSyntax(text(&opt, 128)));
        }
    }
    Ok(hello)
}

/// Resolves the subcommand of a container and checks its arity (`words` counts the container
/// name and the subcommand).
fn subcommand(
    spec: &CommandSpec,
    container: Container,
    a: &mut Args,
) -> Result<&'static CommandSpec, CommandError> {
    let sub = a.next()?;
    let found = lookup_sub(spec, &sub)
        .ok_or_else(|| CommandError::UnknownSubcommand { container, sub: text(&sub, 128) })?;
    if !found.arity_ok(a.len() + 2) {
        return Err(CommandError::WrongArity(found.name));
    }
    a.name = found.name;
    Ok(found)
}

fn parse_client(spec: &CommandSpec, mut a: Args) -> Result<Request, CommandError> {
    let sub = subcommand(spec, Container::Client, &mut a)?;
    Ok(Request::Client(match sub.name {
        "client|setname" => {
            let name = a.next()?;
            if !valid_client_name(&name) {
                return Err(CommandError::InvalidClientName);
            }
            ClientRequest::SetName(name)
        }
        "client|getname" => ClientRequest::GetName,
        "client|id" => ClientRequest::Id,
        "client|info" => ClientRequest::Info,
        "client|setinfo" => {
            let attr = a.next()?;
            let attribute = if attr.eq_ignore_ascii_case(b"lib-name") {
                "lib-name"
            } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                "lib-ver"
            } else {
                return Err(CommandError::Syntax);
            };
            ClientRequest::SetInfo { attribute, value: a.next()? }
        }
        _ => return Ok(Request::Help(Container::Client)),
    }))
}

fn parse_command(spec: &CommandSpec, mut a: Args) -> Result<Request, CommandError> {
    if a.len() == 0 {
        return Ok(Request::Command(CommandRequest::All));
    }
    let sub = subcommand(spec, Container::Command, &mut a)?;
    Ok(Request::Command(match sub.name {
        "command|count" => CommandRequest::Count,
        "command|docs" => CommandRequest::Docs(a.remaining()),
        "command|getkeys" => CommandRequest::GetKeys { args: a.remaining(), flags: false },
        "command|getkeysandflags" => CommandRequest::GetKeys { args: a.remaining(), flags: true },
        "command|info" => CommandRequest::Info(a.remaining()),
        "command|list" => {
            // Redis accepts FILTERBY options; this server has nothing to filter.
            if a.len() > 0 {
                return Err(CommandError::Syntax);
            }
            CommandRequest::List
        }
        _ => return Ok(Request::Help(Container::Command)),
    }))
}

fn parse_config(spec: &CommandSpec, mut a: Args) -> Result<Request, CommandError> {
    let sub = subcommand(spec, Container::Config, &mut a)?;
    match sub.name {
        "config|get" => Ok(Request::ConfigGet(a.remaining())),
        _ => Ok(Request::Help(Container::Config)),
    }
}

#[cfg(test)]
mod getkeys_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod tests;
