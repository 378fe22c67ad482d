//! Simulated clients: closed-loop, each with at most one request outstanding, on a few hot keys, with
//! reads, blind writes of unique values (half of them with a deadline), increments (a
//! read-modify-write), appends and deletes (through expiry, see [`to_request`]). Every request and its
//! outcome is recorded in a history for the linearizability checker.
//!
//! Some operations travel as transactions (`MULTI` ... `EXEC`, one log entry): the operation
//! followed by a `GET` of its key ([`to_request`] with `txn`). The checker sees the operation; the
//! `GET` inside must agree with it (the value just set, the number just incremented, nothing after
//! a delete, a value of the length an append answered), or the answer is recorded as impossible
//! and the checker fails the run: another write applied between the two, or a transaction applied
//! twice or in part, shows there.
//!
//! Outcomes: an answer is a completed operation; a `NoLeader` error means the write was never handed
//! to a leader, and an `Overloaded` error that it never left the node's queue, so the operation is
//! removed from the history (it did not happen); a timeout, or a
//! crash of the node holding the request, makes the operation indeterminate (it may or may not have
//! happened, at any time after its call).

use bytes::Bytes;
use engine::kv::{Command, ExpireCondition, ExpiryOrigin, Query, Reply, SetCondition, SetExpiry, TxItem};
use engine::{Request, RequestError, Response};
use raft::{NodeId, Rng};

use crate::linearizability::{Op, OpOutput, Operation};

/// One client's state.
#[derive(Debug)]
pub struct Client {
    /// The client's id.
    pub id: u64,
    /// The outstanding request: (history index, node it was sent to, request id).
    pub outstanding: Option<(usize, NodeId, u64)>,
    /// The outstanding request is a transaction ([`to_request`]'s `txn`).
    pub txn: bool,
    /// Values written so far (to make each one unique).
    pub counter: u64,
}

/// Builds a random operation on one of `keys` hot keys.
pub fn random_op(rng: &mut Rng, client: &mut Client, keys: u64) -> (Vec<u8>, Op) {
    let key = format!("k{}", rng.range(0, keys)).into_bytes();
    let op = match rng.range(0, 10) {
        0..=3 => Op::Get,
        4..=6 => {
            client.counter += 1;
            Op::Set((client.id * 1_000_000 + client.counter).to_string().into_bytes())
        }
        7 => Op::Incr(rng.range(1, 4) as i64),
        8 => match rng.range(0, 2) {
            0 => Op::Del,
            _ => Op::Incr(rng.range(1, 4) as i64),
        },
        _ => Op::Append(b"x".to_vec()),
    };
    (key, op)
}

/// The engine request for a history operation. Expiry takes part where the model needs no clock:
/// every other `SET` carries a deadline an hour away (longer than any run), which a later plain
/// `SET` clears and `APPEND`/`INCR` keep, and a delete is `PEXPIREAT key 1` (a deadline in the
/// past deletes the key at once and answers 1 if it existed, exactly like `DEL`).
/// With `txn`, the same operation followed by a `GET` of its key, as one transaction (see the module
/// docs).
pub fn to_request(key: &[u8], op: &Op, txn: bool) -> Request {
    let first = single_request(key, op);
    if !txn {
        return match first {
            TxItem::Read(q) => Request::Read(q),
            TxItem::Write(c) => Request::Write(c),
        };
    }
    let mut items = vec![first];
    if !matches!(op, Op::Get) {
        items.push(TxItem::Read(Query::Get { key: Bytes::copy_from_slice(key) }));
    }
    Request::Write(Command::Multi { watch: None, items })
}

fn single_request(key: &[u8], op: &Op) -> TxItem {
    let key = Bytes::copy_from_slice(key);
    match op {
        Op::Get => TxItem::Read(Query::Get { key }),
        Op::Set(v) if v.last().is_some_and(|d| d % 2 == 1) => TxItem::Write(Command::SetEx {
            key,
            value: Bytes::copy_from_slice(v),
            condition: SetCondition::Always,
            get: false,
            expiry: SetExpiry::In(3_600_000),
            origin: ExpiryOrigin::Set,
        }),
        Op::Set(v) => TxItem::Write(Command::Set {
            key,
            value: Bytes::copy_from_slice(v),
            condition: SetCondition::Always,
            get: false,
        }),
        Op::Incr(by) => TxItem::Write(Command::IncrBy { key, by: *by }),
        Op::Del => TxItem::Write(Command::Expire {
            key,
            when: 1,
            seconds: false,
            absolute: true,
            condition: ExpireCondition::Always,
        }),
        Op::Append(v) => TxItem::Write(Command::Append { key, value: Bytes::copy_from_slice(v) }),
    }
}

/// What the history records for an answer: `Ok(Some(output))` completed, `Ok(None)` indeterminate,
/// `Err(())` did not happen. `txn`: the request was [`to_request`]'s transaction form.
pub fn outcome(op: &Op, txn: bool, response: Response) -> Result<Option<OpOutput>, String> {
    let reply = match response {
        Ok(reply) => reply,
        Err(RequestError::NoLeader) => return Err("no leader".into()),
        Err(RequestError::Overloaded) => return Err("overloaded".into()),
        Err(RequestError::Timeout) => return Ok(None),
        // Only admin requests get this; a client operation never does.
        Err(RequestError::NotLeader { .. }) => return Err("not the leader".into()),
    };
    let reply = if txn {
        let Reply::Array(items) = reply else { return Ok(Some(unexpected(op, reply))) };
        match txn_reply(op, items) {
            Some(first) => first,
            None => return Ok(Some(OpOutput::Len(u64::MAX))),
        }
    } else {
        reply
    };
    let out = match (op, reply) {
        (Op::Get, Reply::Bulk(v)) => OpOutput::Value(Some(v.to_vec())),
        (Op::Get, Reply::Nil) => OpOutput::Value(None),
        (Op::Set(_), Reply::Ok) => OpOutput::Ok,
        (Op::Incr(_), Reply::Int(n)) => OpOutput::Int(n),
        (Op::Incr(_), Reply::Error(_)) => OpOutput::Error,
        (Op::Del, Reply::Int(n)) => OpOutput::Bool(n > 0),
        (Op::Append(_), Reply::Int(n)) => OpOutput::Len(n as u64),
        (op, reply) => return Ok(Some(unexpected(op, reply))),
    };
    Ok(Some(out))
}

/// The reply of a transaction's operation, if the `GET` after it agrees with it (None: it does not).
fn txn_reply(op: &Op, items: Vec<Reply>) -> Option<Reply> {
    let mut items = items.into_iter();
    let first = items.next()?;
    if matches!(op, Op::Get) {
        return items.next().is_none().then_some(first);
    }
    let get = items.next()?;
    if items.next().is_some() {
        return None;
    }
    let agrees = match (op, &first, &get) {
        (Op::Set(v), Reply::Ok, Reply::Bulk(got)) => got[..] == v[..],
        (Op::Incr(_), Reply::Int(n), Reply::Bulk(got)) => got[..] == *n.to_string().as_bytes(),
        // A failed INCRBY changed nothing; the value is whatever it was.
        (Op::Incr(_), Reply::Error(_), _) => true,
        (Op::Del, Reply::Int(_), Reply::Nil) => true,
        (Op::Append(_), Reply::Int(n), Reply::Bulk(got)) => got.len() as i64 == *n,
        _ => false,
    };
    agrees.then_some(first)
}

fn unexpected(op: &Op, reply: Reply) -> OpOutput {
    // An answer of the wrong shape is recorded as an impossible output so the checker flags it.
    let _ = (op, reply);
    OpOutput::Len(u64::MAX)
}

/// Records a new operation in `history`; returns its index.
pub fn record_call(history: &mut Vec<Operation>, client: u64, key: Vec<u8>, op: Op, now: u64) -> usize {
    history.push(Operation { client, key, op, call: now, ret: None, output: None });
    history.len() - 1
}
