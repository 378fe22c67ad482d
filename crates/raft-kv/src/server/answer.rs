//! Answers: how the state machine's reply to a request becomes the client's RESP frame
//! ([`Shape`]: as it is, or reshaped for `WATCH`, `EXEC`, `SCAN` / `HSCAN`), and the cursors of
//! scan steps (a position of this node's state machine, issued and resolved by `crate::scan`).
//!
//! Invariants: every engine response becomes exactly one frame; a `WATCH` answer is also handed to
//! the connection's reader (for its next `EXEC`), whatever the response; an `EXEC` reply keeps
//! the positions Redis gives queued commands (errors of commands that failed to parse while
//! queued are put back at theirs).

use bytes::Bytes;
use engine::kv::{Query, Reply, TxItem};
use engine::{RequestError, Response};
use std::sync::Arc;
use tokio::sync::oneshot;

use super::ServerContext;
use crate::command::CommandError;
use crate::resp::Frame;

/// How an engine answer becomes the client's frame.
#[derive(Default)]
pub(super) enum Shape {
    /// As it is.
    #[default]
    Plain,
    /// `WATCH`: `+OK`, and the answer (the index of the state read) goes to the connection's
    /// reader, which puts it in the next `EXEC` (see `engine::kv::txn`).
    Watch(oneshot::Sender<Response>),
    /// `EXEC`: a nil answer (a watched key changed) is Redis' null array; the errors of commands
    /// that failed to parse while queued go into the reply array at their positions (Redis
    /// reports those at run time too).
    /// The replies of `SCAN` / `HSCAN` steps among them (index in the reply array, hash key)
    /// become Redis' cursor replies, as `Scan` does.
    /// The `HSCAN`s with invalid options among them (index, error) were queued as `TYPE` reads
    /// and are answered as `ScanInvalid` does.
    Exec(Vec<(usize, String)>, Vec<(usize, Option<Bytes>)>, Vec<(usize, String)>, Arc<crate::scan::Cursors>),
    /// `SCAN` / `HSCAN`: the step's position becomes a cursor of this node (`crate::scan`); the
    /// key is the hash's for `HSCAN`.
    Scan(Arc<crate::scan::Cursors>, Option<Bytes>),
    /// `HSCAN` with invalid options, answered from the key's `TYPE` as Redis 7 does: an empty
    /// scan for a missing key, `WRONGTYPE` for another type, the option error for a hash.
    ScanInvalid(CommandError),
}

impl Shape {
    pub(super) fn frame(self, response: Response) -> Frame {
        match self {
            Shape::Plain => response_frame(response),
            Shape::Watch(tap) => {
                let frame = match &response {
                    Ok(_) => Frame::ok(),
                    Err(_) => response_frame(response.clone()),
                };
                let _ = tap.send(response);
                frame
            }
            Shape::Exec(errors, scans, invalid, cursors) => match response {
                Ok(Reply::Nil) => Frame::NullArray,
                Ok(Reply::Array(replies)) => {
                    let mut frames: Vec<Frame> = replies
                        .into_iter()
                        .enumerate()
                        .map(|(i, reply)| match scans.iter().find(|(at, _)| *at == i) {
                            Some((_, key)) => scan_frame(&cursors, key.clone(), reply),
                            None => match invalid.iter().find(|(at, _)| *at == i) {
                                Some((_, e)) => invalid_scan_frame(e, Ok(reply)),
                                None => reply_frame(reply),
                            },
                        })
                        .collect();
                    for (at, e) in errors {
                        frames.insert(at.min(frames.len()), Frame::error(e));
                    }
                    Frame::Array(frames)
                }
                other => response_frame(other),
            },
            Shape::Scan(cursors, key) => match response {
                Ok(reply) => scan_frame(&cursors, key, reply),
                other => response_frame(other),
            },
            Shape::ScanInvalid(e) => invalid_scan_frame(&e.to_string(), response),
        }
    }
}

/// Redis 7's answer to an `HSCAN` with invalid options (`error`), from the key's `TYPE`: an
/// empty scan for a missing key, `WRONGTYPE` for another type, the error for a hash.
pub(super) fn invalid_scan_frame(error: &str, kind: Response) -> Frame {
    match kind {
        Ok(Reply::Status(kind)) if kind == "none" => {
            Frame::Array(vec![Frame::Bulk(Bytes::from_static(b"0")), Frame::Array(Vec::new())])
        }
        Ok(Reply::Status(kind)) if kind == "hash" => Frame::error(error.to_owned()),
        Ok(Reply::Status(_)) => Frame::error(engine::kv::WRONGTYPE_ERR),
        other => response_frame(other),
    }
}

/// Redis' reply to a `SCAN` / `HSCAN` step from the state machine's (position, items): the
/// position becomes a cursor of this node (`crate::scan`), 0 at the end.
pub(super) fn scan_frame(cursors: &crate::scan::Cursors, key: Option<Bytes>, reply: Reply) -> Frame {
    match reply {
        Reply::Array(mut items) if items.len() == 2 => {
            let found = items.pop().map(reply_frame).unwrap_or(Frame::Array(Vec::new()));
            let cursor = match items.pop() {
                Some(Reply::Bulk(after)) => cursors.issue(crate::scan::Position { key, after }),
                _ => 0,
            };
            Frame::Array(vec![Frame::Bulk(Bytes::from(cursor.to_string())), found])
        }
        other => reply_frame(other),
    }
}

/// The state machine's query for a `SCAN` / `HSCAN` step: its cursor resolved to the position
/// it stands for on this node.
pub(super) fn scan_query(
    ctx: &ServerContext,
    scan: crate::command::ScanRequest,
) -> Result<Query, CommandError> {
    if let Some(e) = scan.invalid {
        // An HSCAN with invalid options and no key cannot be parsed; kept for completeness.
        return Err(*e);
    }
    let after = match ctx.cursors.resolve(scan.cursor) {
        Ok(position) if position.as_ref().is_none_or(|p| p.key == scan.key) => position.map(|p| p.after),
        _ => return Err(CommandError::InvalidCursor),
    };
    Ok(match scan.key {
        None => Query::Scan { after, pattern: scan.pattern, count: scan.count, kind: scan.kind },
        Some(key) => Query::Hash {
            key,
            read: engine::kv::HashRead::Scan {
                after,
                pattern: scan.pattern,
                count: scan.count,
                novalues: scan.novalues,
            },
        },
    })
}

/// The `SCAN` / `HSCAN` steps among a transaction's items: (index, hash key).
pub(super) fn scan_items(items: &[TxItem]) -> Vec<(usize, Option<Bytes>)> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            TxItem::Read(Query::Scan { .. }) => Some((i, None)),
            TxItem::Read(Query::Hash { key, read: engine::kv::HashRead::Scan { .. } }) => {
                Some((i, Some(key.clone())))
            }
            _ => None,
        })
        .collect()
}

/// The RESP answer to an engine response.
pub(super) fn response_frame(response: Response) -> Frame {
    match response {
        Ok(reply) => reply_frame(reply),
        Err(RequestError::NoLeader) => {
            Frame::error("TRYAGAIN no leader is available; the request was not executed, retry later")
        }
        Err(RequestError::Overloaded) => Frame::error(
            "TRYAGAIN too many writes in flight on this node; the request was not executed, retry later",
        ),
        Err(RequestError::Timeout) => Frame::error(
            "TIMEOUT the cluster did not answer in time; a write may or may not have been applied",
        ),
        Err(RequestError::NotLeader { .. }) => {
            Frame::error("NOTLEADER only the leader does this and this node is not it; nothing was done")
        }
    }
}

pub(super) fn reply_frame(reply: Reply) -> Frame {
    match reply {
        Reply::Ok => Frame::ok(),
        Reply::Status(s) => Frame::Simple(Bytes::from(s)),
        Reply::Nil => Frame::Null,
        Reply::Bulk(b) => Frame::Bulk(b),
        Reply::Int(i) => Frame::Integer(i),
        Reply::Array(items) => Frame::Array(items.into_iter().map(reply_frame).collect()),
        Reply::Error(e) => Frame::error(e),
    }
}
