//! Parsing of the hash commands: `HSET`, `HMSET`, `HSETNX`, `HGET`, `HMGET`, `HDEL`, `HGETALL`,
//! `HKEYS`, `HVALS`, `HLEN`, `HEXISTS`, `HSTRLEN`, `HINCRBY`, `HINCRBYFLOAT`, `HSCAN` (the
//! latter in `keys.rs`, with `SCAN`).
//!
//! They parse into `engine::kv::Command::Hash` / `Query::Hash` (semantics in
//! `engine::kv::hash`) with Redis 7.0's checks in its order: the arity (also the pairing of
//! fields and values), then the increment (`HINCRBY`: not an integer; `HINCRBYFLOAT`: not a
//! valid float, then NaN or Infinity), before anything that depends on the data.

use bytes::Bytes;
use engine::kv::{Command as KvCommand, HashOp, HashRead, Query};

use super::{Args, CommandError, Request};

fn own(b: Bytes) -> Bytes {
    Bytes::copy_from_slice(&b)
}

fn write(key: Bytes, op: HashOp) -> Request {
    Request::KvWrite(KvCommand::Hash { key: own(key), op })
}

fn read(key: Bytes, read: HashRead) -> Request {
    Request::KvRead(Query::Hash { key: own(key), read })
}

/// Parses the hash command `name` (already looked up and arity-checked).
pub(super) fn parse(name: &'static str, mut a: Args) -> Result<Request, CommandError> {
    let key = a.next()?;
    Ok(match name {
        "hset" | "hmset" => {
            if a.len() % 2 == 1 {
                // Found by the command itself, as Redis does (queued in MULTI, EXEC answers it).
                return Err(CommandError::CommandArity(name));
            }
            let mut pairs = Vec::with_capacity(a.len() / 2);
            while let Some(f) = a.next_opt() {
                pairs.push((own(f), own(a.next()?)));
            }
            write(key, HashOp::Set { pairs, ok: name == "hmset" })
        }
        "hsetnx" => write(key, HashOp::SetNx { field: own(a.next()?), value: own(a.next()?) }),
        "hdel" => write(key, HashOp::Del { fields: a.remaining().into_iter().map(own).collect() }),
        "hincrby" => {
            let field = own(a.next()?);
            write(key, HashOp::IncrBy { field, by: a.integer()? })
        }
        "hincrbyfloat" => {
            let field = own(a.next()?);
            let by = own(a.next()?);
            engine::kv::hash::check_float_increment(&by).map_err(CommandError::Float)?;
            write(key, HashOp::IncrByFloat { field, by })
        }
        "hget" => read(key, HashRead::Get { field: own(a.next()?) }),
        "hmget" => read(key, HashRead::MGet { fields: a.remaining().into_iter().map(own).collect() }),
        "hgetall" => read(key, HashRead::GetAll),
        "hkeys" => read(key, HashRead::Keys),
        "hvals" => read(key, HashRead::Vals),
        "hlen" => read(key, HashRead::Len),
        "hexists" => read(key, HashRead::Exists { field: own(a.next()?) }),
        "hstrlen" => read(key, HashRead::StrLen { field: own(a.next()?) }),
        _ => return Err(CommandError::WrongArity(name)),
    })
}
