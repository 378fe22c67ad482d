//! `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO` and `SCRIPT LOAD|EXISTS|FLUSH|KILL|HELP` parsed into
//! the state machine's script command and query (see `engine::kv::script` for how scripts run,
//! replicate and stay deterministic), and the parser `redis.call` uses inside scripts
//! ([`script_command`], installed into the engine by [`install`]).
//!
//! ACL: the server checks `EVAL` itself and its declared `KEYS` against the caller's rules like
//! any command, then binds those rules to the script ([`bind_rules`]); the state machine checks
//! every `redis.call` against the bound copy (`engine::kv::script`, `acl.rs`).
//!
//! Routing: `EVAL`/`EVALSHA` are writes (one log entry each), unless the body's shebang says
//! `flags=no-writes` (then `EVAL` is a read, as `EVAL_RO`); `EVAL_RO`/`EVALSHA_RO` and
//! `SCRIPT EXISTS` are reads (after a read index); `SCRIPT LOAD`/`SCRIPT FLUSH` are writes, because
//! the script cache is replicated state: a script loaded through one node runs through any.

use std::sync::Arc;

use bytes::Bytes;
use engine::kv::script::ScriptAcl;
use engine::kv::{Command, Query, ScriptCommand, ScriptQuery, ScriptRef, TxItem};

use super::{lookup, CommandError, Container, Request};
use crate::resp::parse_i64;

/// Parses the arguments after `EVAL`/`EVALSHA` (and their `_RO` forms): `script numkeys key...
/// arg...`.
pub(super) fn parse_eval(args: Vec<Bytes>, sha: bool, read_only: bool) -> Result<Request, CommandError> {
    let mut it = args.into_iter();
    let (Some(text), Some(numkeys)) = (it.next(), it.next()) else {
        return Err(CommandError::WrongArity(match (sha, read_only) {
            (false, false) => "eval",
            (true, false) => "evalsha",
            (false, true) => "eval_ro",
            (true, true) => "evalsha_ro",
        }));
    };
    let numkeys = parse_i64(&numkeys).ok_or(CommandError::NotAnInteger)?;
    let rest: Vec<Bytes> = it.map(|b| Bytes::copy_from_slice(&b)).collect();
    if numkeys < 0 {
        return Err(CommandError::Script("ERR Number of keys can't be negative"));
    }
    if numkeys as u64 > rest.len() as u64 {
        return Err(CommandError::Script("ERR Number of keys can't be greater than number of args"));
    }
    let mut keys = rest;
    let args = keys.split_off(numkeys as usize);
    let text = Bytes::copy_from_slice(&text);
    let read = read_only || (!sha && engine::kv::script::shebang_no_writes(&text).unwrap_or(false));
    let script = if sha { ScriptRef::Sha(text) } else { ScriptRef::Body(text) };
    Ok(if read {
        Request::KvRead(Query::Script(ScriptQuery::Eval { script, keys, args, acl: None }))
    } else {
        Request::KvWrite(Command::Script(ScriptCommand::Eval { script, keys, args, acl: None }))
    })
}

/// Puts `rules` (the caller's ACL, `None` for an unrestricted caller) into a script request
/// (`EVAL`, `EVALSHA` and their `_RO` forms), so that they travel with it to every replica and
/// every `redis.call` of the script is checked against them (see `engine::kv::script`); any
/// other request is left as it is.
pub fn bind_rules(request: &mut Request, rules: Option<Arc<ScriptAcl>>) {
    match request {
        Request::KvWrite(Command::Script(ScriptCommand::Eval { acl, .. }))
        | Request::KvRead(Query::Script(ScriptQuery::Eval { acl, .. })) => *acl = rules,
        _ => {}
    }
}

/// Whether a request runs a script (and so needs the caller's rules bound).
pub fn runs_script(request: &Request) -> bool {
    matches!(
        request,
        Request::KvWrite(Command::Script(ScriptCommand::Eval { .. }))
            | Request::KvRead(Query::Script(ScriptQuery::Eval { .. }))
    )
}

/// Parses `SCRIPT subcommand ...` (the container's arity was checked).
pub(super) fn parse_script(args: Vec<Bytes>) -> Result<Request, CommandError> {
    let mut it = args.into_iter();
    let Some(sub) = it.next() else {
        return Err(CommandError::WrongArity("script"));
    };
    let rest: Vec<Bytes> = it.map(|b| Bytes::copy_from_slice(&b)).collect();
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    let arity = |name: &'static str, ok: bool| if ok { Ok(()) } else { Err(CommandError::WrongArity(name)) };
    if is("load") {
        arity("script|load", rest.len() == 1)?;
        let body = rest.into_iter().next().unwrap_or_default();
        Ok(Request::KvWrite(Command::Script(ScriptCommand::Load { body })))
    } else if is("exists") {
        arity("script|exists", !rest.is_empty())?;
        Ok(Request::KvRead(Query::Script(ScriptQuery::Exists { shas: rest })))
    } else if is("flush") {
        match rest.as_slice() {
            [] => {}
            [mode] if mode.eq_ignore_ascii_case(b"async") || mode.eq_ignore_ascii_case(b"sync") => {}
            _ => return Err(CommandError::Script("ERR SCRIPT FLUSH only support SYNC|ASYNC option")),
        }
        Ok(Request::KvWrite(Command::Script(ScriptCommand::Flush)))
    } else if is("kill") {
        arity("script|kill", rest.is_empty())?;
        // Scripts run inside the apply of one entry, bounded by their instruction budget:
        // there is never one to kill from outside.
        Err(CommandError::Script("NOTBUSY No scripts in execution right now."))
    } else if is("help") {
        arity("script|help", rest.is_empty())?;
        Ok(Request::Help(Container::Script))
    } else {
        Err(CommandError::UnknownSubcommand {
            container: Container::Script,
            sub: String::from_utf8_lossy(&sub[..sub.len().min(128)]).into_owned(),
        })
    }
}

/// The parser of `redis.call` arguments (installed into the engine): the same parser as client
/// requests, then the same mapping to a state-machine command or query as the server's, with
/// Redis' script error texts. Commands flagged `noscript`, `FLUSHDB`/`FLUSHALL` (admin-only for
/// clients) and everything that is not a data command (connection, admin, transactions, scripts,
/// `SCAN`, whose cursors are node-local) are refused; `RANDOMKEY` draws with a fixed seed so that
/// every replica picks the same key; `TIME` is answered by the engine from the log time.
pub fn script_command(args: Vec<Bytes>) -> Result<TxItem, String> {
    const NOT_ALLOWED: &str = engine::kv::script::NOT_FROM_SCRIPT_ERR;
    if let Some(spec) = args.first().and_then(|n| lookup(n)) {
        // FLUSHDB/FLUSHALL are admin-only for clients: a script must not be a way around that.
        if spec.flags.contains(&"noscript") || spec.name == "flushall" || spec.name == "flushdb" {
            return Err(NOT_ALLOWED.to_owned());
        }
    }
    let request = match Request::from_args(args) {
        Ok(r) => r,
        Err(CommandError::UnknownCommand { .. }) => {
            return Err("ERR Unknown Redis command called from script".to_owned())
        }
        Err(CommandError::WrongArity(_)) => {
            return Err("ERR Wrong number of args calling Redis command from script".to_owned())
        }
        Err(e) => return Err(e.to_string()),
    };
    match crate::server::data_item(request) {
        Ok(TxItem::Write(Command::Script(_) | Command::Multi { .. } | Command::Sweep { .. }))
        | Ok(TxItem::Read(Query::Script(_)))
        | Err(_) => Err(NOT_ALLOWED.to_owned()),
        // Every replica must draw the same key: a fixed seed (a function of the state only).
        Ok(TxItem::Read(Query::RandomKey { .. })) => Ok(TxItem::Read(Query::RandomKey { seed: 0 })),
        Ok(item) => Ok(item),
    }
}

/// Installs [`script_command`] as the engine's script command parser. Call it before the node
/// applies any entry (every replica must parse `redis.call` identically from the first entry).
pub fn install() {
    engine::kv::install_command_parser(script_command);
}
