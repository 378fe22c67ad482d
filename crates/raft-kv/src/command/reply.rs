//! Replies to the requests that need no engine: `HELLO`, `COMMAND`, `CONFIG GET`, the `HELP`
//! subcommands and `CLIENT INFO`. They follow Redis 7's reply shapes so that `redis-cli`,
//! `redis-benchmark` and client libraries recognise them.

use bytes::Bytes;
pub use engine::kv::glob_match;

use super::spec::{lookup, CommandSpec, COMMANDS};
use super::{CommandRequest, Container};
use crate::resp::{Frame, Protocol};

fn bulk_str(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn static_bulk(s: &'static str) -> Frame {
    Frame::Bulk(Bytes::from_static(s.as_bytes()))
}

/// The reply to `HELLO`: Redis's map (`server`, `version`, `proto`, `id`, `mode`, `role`,
/// `modules`; a flat array in RESP2). `protocol` is the connection's protocol after the
/// `HELLO`. `server` is `raft-kv`; `version` is the Redis version whose behaviour this server
/// follows (client libraries parse it to enable features). `role` is Redis's word for the
/// node's role: `master` for the Raft leader, `replica` otherwise.
pub fn hello_reply(client_id: i64, role: &str, protocol: Protocol) -> Frame {
    Frame::Map(vec![
        (static_bulk("server"), static_bulk("raft-kv")),
        (static_bulk("version"), static_bulk("7.0.0")),
        (static_bulk("proto"), Frame::Integer(protocol.version())),
        (static_bulk("id"), Frame::Integer(client_id)),
        (static_bulk("mode"), static_bulk("standalone")),
        (static_bulk("role"), bulk_str(role)),
        (static_bulk("modules"), Frame::Array(Vec::new())),
    ])
}

fn simple_list(items: &[&'static str]) -> Frame {
    Frame::Array(items.iter().map(|s| Frame::simple(s)).collect())
}

/// One command described as Redis 7's `COMMAND INFO` does: name, arity, flags, first key, last
/// key, key step, ACL categories, tips, key specifications (none given), subcommands.
fn describe(spec: &CommandSpec) -> Frame {
    Frame::Array(vec![
        static_bulk(spec.name),
        Frame::Integer(spec.arity),
        simple_list(spec.flags),
        Frame::Integer(spec.first_key),
        Frame::Integer(spec.last_key),
        Frame::Integer(spec.step),
        simple_list(spec.categories),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(spec.subcommands.iter().map(describe).collect()),
    ])
}

/// The reply to a `COMMAND` request.
pub fn command_reply(request: &CommandRequest) -> Frame {
    match request {
        CommandRequest::All => Frame::Array(COMMANDS.iter().map(describe).collect()),
        CommandRequest::Count => Frame::Integer(COMMANDS.len() as i64),
        CommandRequest::Docs(_) => Frame::Map(Vec::new()),
        CommandRequest::Info(names) if names.is_empty() => command_reply(&CommandRequest::All),
        CommandRequest::Info(names) => {
            Frame::Array(names.iter().map(|n| lookup(n).map_or(Frame::Null, describe)).collect())
        }
        CommandRequest::List => Frame::Array(COMMANDS.iter().map(|s| static_bulk(s.name)).collect()),
        CommandRequest::GetKeys { args, flags } => super::getkeys::getkeys_reply(args, *flags),
    }
}

/// The parameters `CONFIG GET` reports: a fixed, truthful description of this server for the
/// tools that ask (`redis-benchmark` prints `save` and `appendonly`).
pub static CONFIG_PARAMETERS: &[(&str, &str)] = &[
    // Durability comes from the Raft log, which is fsync'd before a write is acknowledged.
    ("appendfsync", "always"),
    ("appendonly", "yes"),
    ("databases", "1"),
    ("maxmemory", "0"),
    // No RDB snapshots.
    ("save", ""),
];

/// The reply to `CONFIG GET pattern...`: a map (a flat array in RESP2) of the parameters
/// matching any pattern (glob, case-insensitive), each once.
pub fn config_get_reply(patterns: &[Bytes]) -> Frame {
    let mut out = Vec::new();
    for (name, value) in CONFIG_PARAMETERS {
        if patterns.iter().any(|p| glob_match(p, name.as_bytes(), true)) {
            out.push((static_bulk(name), static_bulk(value)));
        }
    }
    Frame::Map(out)
}

/// The reply to `CLIENT HELP`, `COMMAND HELP`, `CONFIG HELP`.
pub fn help_reply(container: Container) -> Frame {
    let spec = lookup(container.name().as_bytes());
    let mut lines = vec![Frame::Simple(Bytes::from(format!(
        "{} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        container.name()
    )))];
    for sub in spec.map(|s| s.subcommands).unwrap_or_default() {
        let own = sub.name.split_once('|').map_or(sub.name, |(_, own)| own);
        let head = format!("{} {}", own.to_ascii_uppercase(), sub.usage);
        lines.push(Frame::Simple(Bytes::from(head.trim_end().to_string())));
        lines.push(Frame::Simple(Bytes::from(format!("    {}", sub.summary))));
    }
    Frame::Array(lines)
}

/// The reply to `CLIENT INFO`: one line in Redis's `CLIENT LIST` format, with the fields this
/// server knows.
pub fn client_info_reply(id: i64, addr: &str, laddr: &str, name: &[u8], protocol: Protocol) -> Frame {
    let mut line = format!("id={id} addr={addr} laddr={laddr} name=").into_bytes();
    line.extend_from_slice(name);
    line.extend_from_slice(format!(" db=0 resp={}\n", protocol.version()).as_bytes());
    Frame::Bulk(Bytes::from(line))
}
