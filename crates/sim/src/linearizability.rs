//! Linearizability checker for histories of operations on a Redis-like key-value store.
//!
//! A history is *linearizable* (Herlihy & Wing, 1990) if every operation can be given a single
//! instant between its call and its return such that, taken in the order of those instants, the
//! operations form a legal sequential execution of the model and return what the clients saw.
//! This is the consistency the Raft paper promises clients (§8; thesis §6).
//!
//! # Model
//! Each key is an independent string register, `Option<Vec<u8>>` (absent or a byte string),
//! initially absent, with Redis semantics:
//! - [`Op::Get`] returns the value ([`OpOutput::Value`]).
//! - [`Op::Set`] stores a value and returns [`OpOutput::Ok`].
//! - [`Op::Incr`] is `INCRBY`: an absent key counts as 0; the value must be a canonical decimal
//!   `i64` as Redis's `string2ll` accepts it (optional `-`, no `+`, no leading zeros, no spaces);
//!   it stores and returns the sum ([`OpOutput::Int`]); if the value is not such an integer or
//!   the sum overflows it returns [`OpOutput::Error`] and leaves the value unchanged.
//! - [`Op::Del`] removes the key and returns whether it existed ([`OpOutput::Bool`]).
//! - [`Op::Append`] appends bytes (an absent key counts as empty) and returns the new length
//!   ([`OpOutput::Len`]).
//! - [`Op::Watched`] is an `EXEC` guarded by a `WATCH` of its key: the client sent `WATCH key`,
//!   then `GET key` (a separate operation of the history, which saw `seen`), then the
//!   transaction. It may answer [`OpOutput::Aborted`] (the null array) in any state and change
//!   nothing: the server aborts when the key changed after the `WATCH`, and may abort
//!   spuriously (a key created and removed in between). It may *run* only where the key holds
//!   exactly `seen`, and then it is its inner operation (with the inner operation's output).
//!   Why that is the whole of WATCH's promise in this model: the `GET` read a state at an index
//!   at or after the `WATCH`'s, and the `EXEC` applies at a later index; if the key's version
//!   did not change between the `WATCH` and the `EXEC` (the condition to run), the value at the
//!   `EXEC` is the value the `GET` saw. A run where the key holds anything else means a write
//!   between the two was missed. (An `A -> B -> A` change in between is invisible here: values
//!   the workload writes are unique, so only absent -> present -> absent can repeat.) An
//!   indeterminate one runs where the key holds `seen` and otherwise changes nothing; not
//!   running at all is the search's "never".
//!
//! A reply that the model cannot produce (for example an error for `SET`, or a "not leader"
//! error) counts as an observation the model must explain, so the recorder must not put such
//! replies into the history: an operation whose fate the client does not know (timeout,
//! connection lost, crash, a retryable error after the request may have been sent) must be
//! recorded as *indeterminate* (`ret: None, output: None`), and one the server certainly did not
//! execute must be left out.
//!
//! # Time
//! `call` and `ret` are timestamps in any monotonic unit shared by all clients (virtual ticks in
//! the simulator, nanoseconds since a common start in real tests). Intervals are closed: an
//! operation whose call time equals another's return time may be ordered either way. This is the
//! conservative choice: the checker never reports a violation that another order of equal
//! timestamps would avoid.
//!
//! An indeterminate operation may take effect at any instant after its call, however late, or
//! never; an indeterminate `GET` observes nothing and is dropped.
//!
//! # Algorithm
//! The operations are partitioned by key (each touches exactly one, and the model's keys are
//! independent, so the history is linearizable iff each key's sub-history is: *locality*,
//! Herlihy & Wing, Theorem 1). Each key is then searched with Wing & Gong's backtracking search
//! and Lowe's memoization of visited (linearized set, state) configurations, as Knossos and
//! Porcupine do; see the `search` submodule for the data structures and their invariants. The
//! search is exponential in the worst case (checking linearizability is NP-complete), so each key
//! has a step budget, and exhausting it yields [`CheckResult::Inconclusive`] instead of a hang.
//! Histories that are mostly sequential are checked in time roughly linear in their length.
//!
//! Visited states are remembered by a 2×61-bit polynomial fingerprint, not by value: a
//! fingerprint collision could in principle hide a valid linearization, with a probability far
//! below 2^-80 per pair of states compared.
//!
//! # Cost, measured (release build, one core; see `tests::measure`)
//! - Sequential histories: about 1.5 µs per operation (10,000 operations in about 15 ms).
//! - Closed-loop clients on one key, 10,000 operations: 10 clients with 1% of replies lost about
//!   0.15 s; 15 clients about 1 s; 20 clients exceed the default budget (inconclusive).
//! - Refuting a history (proving a violation) explores every configuration the history allows
//!   before the violation, which grows with the number of indeterminate operations pending at
//!   each point (they stay pending forever): 10 clients on one key, 10,000 operations, a
//!   corrupted last read: 0.5 s with no lost reply, inconclusive with 0.2% lost; on 4 keys:
//!   20 ms with 0.2% lost, inconclusive with 1% lost. Spreading operations over several keys
//!   keeps each key's search small (locality above).

mod model;
mod search;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use model::{evaluate, model_step, PreparedOp, State};
use search::{search, SearchOp, SearchOutcome};

/// A budget of search steps per key that is ample for histories of tens of thousands of mostly
/// sequential operations and tens of concurrent clients, while bounding a pathological search to
/// seconds.
pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 200_000_000;

/// How many operations of the longest prefix, and how many candidates, an explanation shows.
const EXPLAIN_LIMIT: usize = 12;

/// How many bytes of a value are shown before it is abbreviated.
const BYTES_SHOWN: usize = 40;

/// A request to the key-value store (the key is in [`Operation::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `GET key`: read the value.
    Get,
    /// `SET key value`: overwrite the value unconditionally.
    Set(Vec<u8>),
    /// `INCRBY key by`: add `by` to the value interpreted as a decimal `i64`.
    Incr(i64),
    /// `DEL key`: remove the key.
    Del,
    /// `APPEND key bytes`: append bytes to the value.
    Append(Vec<u8>),
    /// `WATCH key`, `GET key` (which answered `seen`), then `MULTI`, the inner operation, `EXEC`
    /// (see the module docs). The inner operation is never itself `Watched`.
    Watched {
        /// What the `GET` between the `WATCH` and the `EXEC` returned.
        seen: Option<Vec<u8>>,
        /// The operation the transaction runs.
        op: Box<Op>,
    },
}

/// What a client observed as the result of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpOutput {
    /// Result of [`Op::Get`]: the value, `None` if the key does not exist.
    Value(Option<Vec<u8>>),
    /// Result of [`Op::Set`].
    Ok,
    /// Result of a successful [`Op::Incr`]: the new value.
    Int(i64),
    /// Result of [`Op::Del`]: whether the key existed.
    Bool(bool),
    /// Result of [`Op::Append`]: the length of the value after the append.
    Len(u64),
    /// Result of a failed [`Op::Incr`] (value not an integer, or overflow); the state is unchanged.
    Error,
    /// Result of an [`Op::Watched`] whose `EXEC` answered the null array: nothing ran.
    Aborted,
}

/// One operation of a concurrent history, as recorded by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client (process) that issued the operation; used only in explanations.
    pub client: u64,
    /// The key the operation touches.
    pub key: Vec<u8>,
    /// The request.
    pub op: Op,
    /// When the request was issued.
    pub call: u64,
    /// When the reply was received, `None` if the outcome is unknown (indeterminate).
    pub ret: Option<u64>,
    /// The reply; `Some` exactly when `ret` is `Some`.
    pub output: Option<OpOutput>,
}

/// The verdict of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// The sub-history of `key` is not linearizable (the first such key in byte order).
    NotLinearizable {
        /// The key whose operations cannot be linearized.
        key: Vec<u8>,
        /// A human-readable account: the longest linearizable prefix found, the model state after
        /// it, and the operations that could not be placed next, with times and outputs.
        explanation: String,
    },
    /// The search on `key` used up its step budget before reaching a verdict (the first such
    /// key in byte order; reported only if no key is found not linearizable).
    Inconclusive {
        /// The key whose search ran out of steps.
        key: Vec<u8>,
    },
}

impl CheckResult {
    /// Whether the verdict is [`CheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// A history that is malformed, i.e. could not have been recorded by a correct recorder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An operation returned before it was called.
    #[error("operation #{index} returns at {ret}, before its call at {call}")]
    ReturnBeforeCall {
        /// Index of the operation in the history.
        index: usize,
        /// Its call time.
        call: u64,
        /// Its return time.
        ret: u64,
    },
    /// An operation has a return time but no output.
    #[error("operation #{index} has a return time but no output")]
    MissingOutput {
        /// Index of the operation in the history.
        index: usize,
    },
    /// An operation has an output but no return time.
    #[error("operation #{index} has an output but no return time")]
    OutputWithoutReturn {
        /// Index of the operation in the history.
        index: usize,
    },
}

/// Decides whether `history` is linearizable with respect to the string-register model.
///
/// The order of `history` does not matter. Each key is searched with at most
/// `max_steps_per_key` steps (see [`DEFAULT_MAX_STEPS_PER_KEY`]); keys are checked in byte order
/// and the first violation is returned. Returns an error, without checking, if an operation is
/// malformed (see [`HistoryError`]).
pub fn check(history: &[Operation], max_steps_per_key: u64) -> Result<CheckResult, HistoryError> {
    validate(history)?;
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, operation) in history.iter().enumerate() {
        // An indeterminate read observed nothing and changed nothing.
        if operation.op == Op::Get && operation.ret.is_none() {
            continue;
        }
        by_key.entry(operation.key.as_slice()).or_default().push(index);
    }
    let mut inconclusive = None;
    for (key, mut indexes) in by_key {
        // Bits of the linearized set follow call order, so a mostly sequential search keeps
        // them a dense prefix (see `search`).
        indexes.sort_by_key(|&index| (history[index].call, index));
        let ops: Vec<SearchOp<'_>> = indexes
            .iter()
            .map(|&index| {
                let operation = &history[index];
                SearchOp {
                    prepared: PreparedOp::new(&operation.op, operation.output.as_ref()),
                    call: operation.call,
                    ret: operation.ret,
                }
            })
            .collect();
        match search(&ops, max_steps_per_key) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Exhausted => {
                inconclusive.get_or_insert_with(|| key.to_vec());
            }
            SearchOutcome::Violation { longest_prefix } => {
                let explanation = explain(key, history, &indexes, &ops, &longest_prefix);
                return Ok(CheckResult::NotLinearizable { key: key.to_vec(), explanation });
            }
        }
    }
    Ok(match inconclusive {
        Some(key) => CheckResult::Inconclusive { key },
        None => CheckResult::Linearizable,
    })
}

/// Checks the per-operation invariants of a history.
fn validate(history: &[Operation]) -> Result<(), HistoryError> {
    for (index, operation) in history.iter().enumerate() {
        match (operation.ret, &operation.output) {
            (Some(ret), Some(_)) if ret < operation.call => {
                return Err(HistoryError::ReturnBeforeCall { index, call: operation.call, ret });
            }
            (Some(_), None) => return Err(HistoryError::MissingOutput { index }),
            (None, Some(_)) => return Err(HistoryError::OutputWithoutReturn { index }),
            _ => {}
        }
    }
    Ok(())
}

/// Builds the explanation of a violation on `key` from the longest prefix the search found.
///
/// `indexes[i]` is the history index of the search's operation `i`.
fn explain(
    key: &[u8],
    history: &[Operation],
    indexes: &[usize],
    ops: &[SearchOp<'_>],
    longest_prefix: &[usize],
) -> String {
    use std::fmt::Write as _;

    let describe = |op: usize| describe_operation(indexes[op], &history[indexes[op]]);
    let completed = ops.iter().filter(|op| op.ret.is_some()).count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "key {}: no linearization exists for its {} operations ({} completed, {} indeterminate).",
        Bytes(key),
        ops.len(),
        completed,
        ops.len() - completed
    );

    // Replay the prefix to recover the state the search was stuck in.
    let mut state = State::absent();
    let mut placed = vec![false; ops.len()];
    for &op in longest_prefix {
        if let Some(transition) = evaluate(&state, &ops[op].prepared) {
            state.apply(transition);
        }
        placed[op] = true;
    }
    let placed_completed = longest_prefix.iter().filter(|&&op| ops[op].ret.is_some()).count();
    let _ = writeln!(
        text,
        "Longest linearizable prefix: {} operations ({} of the {} completed ones){}",
        longest_prefix.len(),
        placed_completed,
        completed,
        if longest_prefix.len() > EXPLAIN_LIMIT { "; the last ones:" } else { ":" }
    );
    for &op in &longest_prefix[longest_prefix.len().saturating_sub(EXPLAIN_LIMIT)..] {
        let _ = writeln!(text, "  {}", describe(op));
    }
    let _ = writeln!(text, "State after that prefix: {}", Value(state.value.as_deref()));

    // The first return event left in the list bounds the candidates for the next position.
    let blocking =
        (0..ops.len()).filter(|&op| !placed[op]).filter_map(|op| ops[op].ret.map(|ret| (ret, op))).min();
    let Some((deadline, blocking)) = blocking else {
        return text;
    };
    let _ = writeln!(
        text,
        "It must be followed by this operation or by one called no later than its return:\n  {}",
        describe(blocking)
    );
    let candidates: Vec<usize> =
        (0..ops.len()).filter(|&op| !placed[op] && ops[op].call <= deadline).collect();
    let _ = writeln!(
        text,
        "None of these {} operations can come next{}",
        candidates.len(),
        if candidates.len() > EXPLAIN_LIMIT { " (the first ones shown):" } else { ":" }
    );
    for &op in candidates.iter().take(EXPLAIN_LIMIT) {
        let prepared = &ops[op].prepared;
        let (expected, _) = model_step(state.value.as_deref(), state.fp, prepared);
        let reason = if evaluate(&state, prepared).is_some() {
            "it fits here, but every continuation fails".to_string()
        } else {
            format!("the model would return {expected}")
        };
        let _ = writeln!(text, "  {}: {reason}", describe(op));
    }
    text
}

/// One line describing an operation of the history.
fn describe_operation(index: usize, operation: &Operation) -> String {
    let output = operation.output.as_ref().map_or("?".to_string(), ToString::to_string);
    let ret = operation.ret.map_or("unknown".to_string(), |ret| ret.to_string());
    format!(
        "#{index} client {} {} -> {output} [call {}, ret {ret}]",
        operation.client, operation.op, operation.call
    )
}

/// Displays bytes as a quoted, escaped, possibly abbreviated string.
struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(BYTES_SHOWN)];
        write!(f, "\"{}\"", shown.escape_ascii())?;
        if self.0.len() > BYTES_SHOWN {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// Displays a key's value: `(nil)` or the quoted bytes.
struct Value<'a>(Option<&'a [u8]>);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("(nil)"),
            Some(bytes) => Bytes(bytes).fmt(f),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => f.write_str("GET"),
            Op::Set(value) => write!(f, "SET {}", Bytes(value)),
            Op::Incr(by) => write!(f, "INCRBY {by}"),
            Op::Del => f.write_str("DEL"),
            Op::Append(value) => write!(f, "APPEND {}", Bytes(value)),
            Op::Watched { seen, op } => write!(f, "WATCH+GET {} EXEC {op}", Value(seen.as_deref())),
        }
    }
}

impl fmt::Display for OpOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpOutput::Value(value) => Value(value.as_deref()).fmt(f),
            OpOutput::Ok => f.write_str("OK"),
            OpOutput::Int(value) => write!(f, "(integer) {value}"),
            OpOutput::Bool(existed) => write!(f, "(existed: {existed})"),
            OpOutput::Len(len) => write!(f, "(length) {len}"),
            OpOutput::Error => f.write_str("(error)"),
            OpOutput::Aborted => f.write_str("(nil: aborted)"),
        }
    }
}
