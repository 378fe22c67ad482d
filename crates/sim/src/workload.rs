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
//! Some operations are WATCH-guarded transactions, in three requests as redis-py's
//! `pipeline.watch()` loop sends them ([`next_step`]): `WATCH key` (a read of the applied index
//! `w`, not in the history), `GET key` (an ordinary history operation), then `MULTI`, the
//! operation, a `GET` of its key, `EXEC` with the watch `(w, key)`, recorded as
//! [`Op::Watched`] with the value the `GET` saw. The `EXEC` must answer the null array
//! ([`OpOutput::Aborted`]) if a write changed the key after `w`; the checker fails a run in which
//! it ran on a value other than the one the `GET` saw (see the checker's module docs). Think
//! times between the three let other clients' writes land in between.
//!
//! Outcomes: an answer is a completed operation; a `NoLeader` error means the write was never handed
//! to a leader, and an `Overloaded` error that it never left the node's queue, so the operation is
//! removed from the history (it did not happen); a timeout, or a
//! crash of the node holding the request, makes the operation indeterminate (it may or may not have
//! happened, at any time after its call).

use bytes::Bytes;
use engine::kv::{
    Command, ExpireCondition, ExpiryOrigin, Query, Reply, SetCondition, SetExpiry, TxItem, Watch,
};
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
    /// A WATCH-guarded transaction in progress.
    pub watch: Option<WatchPlan>,
}

/// Share of operations that become WATCH-guarded transactions.
const WATCHED_SHARE: f64 = 0.1;

/// History index of an outstanding request the history does not record (the `WATCH`).
pub const NOT_RECORDED: usize = usize::MAX;

/// A WATCH-guarded transaction in progress (see the module docs).
#[derive(Debug)]
pub struct WatchPlan {
    /// The watched key.
    key: Vec<u8>,
    /// The operation the transaction runs.
    op: Op,
    /// How far it got.
    stage: WatchStage,
}

/// The requests of a WATCH-guarded transaction.
#[derive(Debug)]
enum WatchStage {
    /// `WATCH` sent.
    Watching,
    /// `WATCH` answered the index `w`; the `GET` is next (or outstanding).
    Reading(u64),
    /// The `GET` saw the value; the `EXEC` is next.
    Executing(u64, Option<Vec<u8>>),
}

/// A client's next request.
pub struct Step {
    /// The key it is about.
    pub key: Vec<u8>,
    /// The history operation it is (None: the `WATCH`, not recorded).
    pub record: Option<Op>,
    /// The request.
    pub request: Request,
    /// The request is [`to_request`]'s transaction form (for [`outcome`]).
    pub txn: bool,
}

/// The client's next request: the next stage of its watched transaction, or a new random
/// operation (a tenth start a watched transaction, a fifth of the rest travel as transactions).
pub fn next_step(rng: &mut Rng, client: &mut Client, keys: u64) -> Step {
    match client.watch.take() {
        Some(WatchPlan { key, op, stage: WatchStage::Reading(w) }) => {
            let request = Request::Read(Query::Get { key: Bytes::copy_from_slice(&key) });
            let step = Step { key: key.clone(), record: Some(Op::Get), request, txn: false };
            client.watch = Some(WatchPlan { key, op, stage: WatchStage::Reading(w) });
            return step;
        }
        Some(WatchPlan { key, op, stage: WatchStage::Executing(w, seen) }) => {
            let request = to_request(&key, &op, true, Some(w));
            let record = Some(Op::Watched { seen, op: Box::new(op) });
            return Step { key, record, request, txn: true };
        }
        // A WATCH whose answer never came (the client moved on): start afresh.
        Some(WatchPlan { stage: WatchStage::Watching, .. }) | None => {}
    }
    let (key, op) = random_op(rng, client, keys);
    if rng.chance(WATCHED_SHARE) {
        client.watch = Some(WatchPlan { key: key.clone(), op, stage: WatchStage::Watching });
        return Step { key, record: None, request: Request::Read(Query::AppliedIndex), txn: false };
    }
    let txn = rng.chance(0.2);
    let request = to_request(&key, &op, txn, None);
    Step { key, record: Some(op), request, txn }
}

/// The `WATCH` of the client's plan was answered.
pub fn watch_answered(client: &mut Client, response: &Response) {
    client.watch = match (client.watch.take(), response) {
        (Some(WatchPlan { key, op, stage: WatchStage::Watching }), Ok(Reply::Int(w))) => {
            Some(WatchPlan { key, op, stage: WatchStage::Reading(*w as u64) })
        }
        _ => None,
    };
}

/// An operation of the history was answered (`outcome` as [`outcome`] returned it): the `GET`
/// of a watched transaction moves it on to its `EXEC`; anything else ends the plan.
pub fn step_answered(client: &mut Client, outcome: &Result<Option<OpOutput>, String>) {
    client.watch = match (client.watch.take(), outcome) {
        (Some(WatchPlan { key, op, stage: WatchStage::Reading(w) }), Ok(Some(OpOutput::Value(seen)))) => {
            Some(WatchPlan { key, op, stage: WatchStage::Executing(w, seen.clone()) })
        }
        _ => None,
    };
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
/// docs), guarded by a `WATCH` of the key at index `watch` if given.
pub fn to_request(key: &[u8], op: &Op, txn: bool, watch: Option<u64>) -> Request {
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
    let watch = watch.map(|index| Watch { index, keys: vec![Bytes::copy_from_slice(key)] });
    Request::Write(Command::Multi { watch, items })
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
        Op::Watched { op, .. } => single_request(&key, op),
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
    // A watched transaction: the null array is an abort; otherwise it is its inner operation.
    let (op, reply) = match (op, reply) {
        (Op::Watched { .. }, Reply::Nil) => return Ok(Some(OpOutput::Aborted)),
        (Op::Watched { op, .. }, reply) => (op.as_ref(), reply),
        (op, reply) => (op, reply),
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
