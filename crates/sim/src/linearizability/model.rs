//! The sequential specification the checker compares a history against: one Redis-like string
//! register per key.
//!
//! The state of a key is `Option<Vec<u8>>` (absent, or a byte string). The search never clones
//! the state to remember it: it keeps one mutable [`State`], applies a [`Transition`] in place and
//! records an [`Undo`] on its stack to restore the previous state when it backtracks. The cache of
//! visited configurations stores only a [`Fingerprint`] of the state, which for `APPEND` is
//! updated in O(length of the appended bytes) instead of rehashing the whole value.
//!
//! Invariants:
//! - `State::fp == Fingerprint::of(state.value.as_deref())` at all times (maintained by
//!   [`State::apply`] / [`State::undo`], checked by the tests).
//! - [`evaluate`] is a pure function of (state, operation, observed output): it never mutates.
//! - An operation with an unknown output (`None`) is accepted in every state; its effect on the
//!   state is still exactly what the model prescribes (a failed `INCRBY` leaves the state as is).

use std::borrow::Cow;

use super::{Op, OpOutput};

/// The Mersenne prime 2^61 - 1, modulus of the polynomial hashes.
const MODULUS: u64 = (1 << 61) - 1;
/// Bases of the two independent polynomial hashes (arbitrary odd constants below the modulus).
const BASES: [u64; 2] = [0x0123_4567_89ab_cdef % MODULUS, 0x1f3d_5b79_a2c4_e683 % MODULUS];

/// `a * b mod 2^61 - 1`.
fn mul_mod(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // Both halves are below 2^61, so their sum fits in u64 and one conditional subtraction
    // brings it below the modulus (the classic Mersenne reduction).
    let low = (product as u64) & MODULUS;
    let high = (product >> 61) as u64;
    let sum = low + high;
    if sum >= MODULUS {
        sum - MODULUS
    } else {
        sum
    }
}

/// `a + b mod 2^61 - 1` for `a, b < 2^61 - 1`.
fn add_mod(a: u64, b: u64) -> u64 {
    let sum = a + b;
    if sum >= MODULUS {
        sum - MODULUS
    } else {
        sum
    }
}

/// `base^exponent mod 2^61 - 1`.
fn pow_mod(mut base: u64, mut exponent: u64) -> u64 {
    let mut result = 1;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul_mod(result, base);
        }
        base = mul_mod(base, base);
        exponent >>= 1;
    }
    result
}

/// Polynomial hashes of a byte string: `h = sum((byte + 1) * B^(len - 1 - i))` for each base.
fn poly_hash(bytes: &[u8]) -> [u64; 2] {
    let mut hash = [0u64; 2];
    for &byte in bytes {
        for (h, &base) in hash.iter_mut().zip(BASES.iter()) {
            *h = add_mod(mul_mod(*h, base), u64::from(byte) + 1);
        }
    }
    hash
}

/// A compact, collision-resistant summary of a key's state, used in the visited-configuration
/// cache. Two distinct states collide only if they have the same presence, the same length and
/// both 61-bit polynomial hashes agree (probability about `(len / 2^61)^2` per pair), which is
/// negligible next to every other source of error in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Fingerprint {
    /// Whether the key exists.
    present: bool,
    /// Length of the value in bytes (0 when absent).
    len: u64,
    /// The two polynomial hashes of the value.
    hash: [u64; 2],
}

impl Fingerprint {
    /// The fingerprint of an absent key.
    pub(super) const ABSENT: Fingerprint = Fingerprint { present: false, len: 0, hash: [0, 0] };

    /// Computes the fingerprint of a state from scratch.
    pub(super) fn of(value: Option<&[u8]>) -> Fingerprint {
        match value {
            None => Fingerprint::ABSENT,
            Some(bytes) => Fingerprint::present(bytes.len(), poly_hash(bytes)),
        }
    }

    /// The fingerprint of a present value with the given length and polynomial hash.
    fn present(len: usize, hash: [u64; 2]) -> Fingerprint {
        Fingerprint { present: true, len: len as u64, hash }
    }

    /// The fingerprint after appending bytes whose own hash is `suffix` (an absent key behaves as
    /// the empty string, as in Redis `APPEND`).
    fn appended(self, suffix_len: usize, suffix: [u64; 2]) -> Fingerprint {
        let mut hash = [0u64; 2];
        for (i, h) in hash.iter_mut().enumerate() {
            let shifted = mul_mod(self.hash[i], pow_mod(BASES[i], suffix_len as u64));
            *h = add_mod(shifted, suffix[i]);
        }
        Fingerprint { present: true, len: self.len + suffix_len as u64, hash }
    }

    /// Mixes the fingerprint into 64 bits for the cache's hash table.
    pub(super) fn mix(&self) -> u64 {
        let mut x = self.hash[0] ^ self.hash[1].rotate_left(29) ^ self.len.rotate_left(47);
        x ^= u64::from(self.present) << 63;
        splitmix64(x)
    }
}

/// The SplitMix64 finalizer: a cheap, well-distributed 64-bit mixing function.
pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// An operation prepared for the search: the request plus the polynomial hash of its argument,
/// computed once.
#[derive(Debug, Clone)]
pub(super) struct PreparedOp<'h> {
    /// The request.
    pub(super) op: &'h Op,
    /// What the client observed, or `None` when the outcome is unknown (indeterminate operation).
    pub(super) output: Option<&'h OpOutput>,
    /// Polynomial hash of the `SET`/`APPEND` argument (zero for other operations).
    arg_hash: [u64; 2],
}

impl<'h> PreparedOp<'h> {
    /// Prepares one operation of the history.
    pub(super) fn new(op: &'h Op, output: Option<&'h OpOutput>) -> PreparedOp<'h> {
        let arg_hash = match op {
            Op::Set(value) | Op::Append(value) => poly_hash(value),
            Op::Watched { op, .. } => PreparedOp::new(op, None).arg_hash,
            Op::Get | Op::Incr(_) | Op::Del => [0, 0],
        };
        PreparedOp { op, output, arg_hash }
    }

    /// The inner operation of an [`Op::Watched`] that ran, with the same output.
    fn inner(&self, op: &'h Op) -> PreparedOp<'h> {
        PreparedOp { op, output: self.output, arg_hash: self.arg_hash }
    }
}

/// The mutable state of one key during the search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct State {
    /// The value of the key, `None` when absent.
    pub(super) value: Option<Vec<u8>>,
    /// Fingerprint of `value`, kept in sync by every mutation.
    pub(super) fp: Fingerprint,
}

impl State {
    /// The initial state: the key does not exist.
    pub(super) fn absent() -> State {
        State { value: None, fp: Fingerprint::ABSENT }
    }

    /// Applies an accepted transition in place and returns how to undo it.
    pub(super) fn apply(&mut self, transition: Transition<'_>) -> Undo {
        let old_fp = self.fp;
        self.fp = transition.fp;
        match transition.change {
            Change::Keep => Undo { fp: old_fp, action: UndoAction::Nothing },
            Change::Put(new) => {
                let old = std::mem::replace(&mut self.value, new.map(Cow::into_owned));
                Undo { fp: old_fp, action: UndoAction::Restore(old) }
            }
            Change::Extend(suffix) => {
                let was_present = self.value.is_some();
                let value = self.value.get_or_insert_with(Vec::new);
                let len = value.len();
                value.extend_from_slice(suffix);
                Undo { fp: old_fp, action: UndoAction::Truncate { len, was_present } }
            }
        }
    }

    /// Reverts the effect of the transition that returned `undo`. Undos must be applied in the
    /// reverse order of the applications (the search's stack guarantees it).
    pub(super) fn undo(&mut self, undo: Undo) {
        self.fp = undo.fp;
        match undo.action {
            UndoAction::Nothing => {}
            UndoAction::Restore(old) => self.value = old,
            UndoAction::Truncate { len, was_present } => {
                if was_present {
                    if let Some(value) = self.value.as_mut() {
                        value.truncate(len);
                    }
                } else {
                    self.value = None;
                }
            }
        }
    }
}

/// How an accepted operation changes the state.
#[derive(Debug)]
pub(super) enum Change<'a> {
    /// The state stays as it is (`GET`, a failed `INCRBY`).
    Keep,
    /// The value is replaced (`SET`, `DEL`, a successful `INCRBY`).
    Put(Option<Cow<'a, [u8]>>),
    /// Bytes are appended (`APPEND`; an absent key becomes the appended bytes).
    Extend(&'a [u8]),
}

/// The outcome of evaluating an operation that the model accepts: the change it makes and the
/// fingerprint of the resulting state (so the cache can be consulted before mutating anything).
#[derive(Debug)]
pub(super) struct Transition<'a> {
    /// The change to the state.
    pub(super) change: Change<'a>,
    /// Fingerprint of the state after the change.
    pub(super) fp: Fingerprint,
}

/// What is needed to revert one applied transition.
#[derive(Debug)]
pub(super) struct Undo {
    /// Fingerprint before the transition.
    fp: Fingerprint,
    /// How to restore the value.
    action: UndoAction,
}

/// How to restore the value of a key.
#[derive(Debug)]
enum UndoAction {
    /// Nothing changed.
    Nothing,
    /// Put back this previous value.
    Restore(Option<Vec<u8>>),
    /// Cut an appended value back to `len` bytes, or remove it if the key was absent before.
    Truncate {
        /// Length before the append.
        len: usize,
        /// Whether the key existed before the append.
        was_present: bool,
    },
}

/// Parses a value as Redis does for `INCRBY` (`string2ll`). Deliberately not shared with the
/// engine's parser: the checker is an independent oracle of the behaviour under test: an optional `-` followed by decimal
/// digits, no leading zeros (except the string `0` itself), no `+`, no whitespace, within `i64`.
pub(super) fn parse_redis_i64(bytes: &[u8]) -> Option<i64> {
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some(_) => (false, bytes),
        None => return None,
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    // Accumulate as a negative number so that i64::MIN is representable.
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(digit - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// What the model says `op` returns in `state`, and the transition it makes.
pub(super) fn model_step<'a>(
    value: Option<&[u8]>,
    fp: Fingerprint,
    prepared: &PreparedOp<'a>,
) -> (OpOutput, Transition<'a>) {
    match prepared.op {
        // Runs where the key holds what the GET after the WATCH saw; aborts elsewhere (it may
        // also abort there: `evaluate` accepts an observed abort in every state).
        Op::Watched { seen, op } if seen.as_deref() == value => model_step(value, fp, &prepared.inner(op)),
        Op::Watched { .. } => (OpOutput::Aborted, Transition { change: Change::Keep, fp }),
        Op::Get => (OpOutput::Value(value.map(<[u8]>::to_vec)), Transition { change: Change::Keep, fp }),
        Op::Set(new) => (
            OpOutput::Ok,
            Transition {
                change: Change::Put(Some(Cow::Borrowed(new.as_slice()))),
                fp: Fingerprint::present(new.len(), prepared.arg_hash),
            },
        ),
        Op::Del => (
            OpOutput::Bool(value.is_some()),
            Transition { change: Change::Put(None), fp: Fingerprint::ABSENT },
        ),
        Op::Append(suffix) => {
            let new_len = value.map_or(0, <[u8]>::len) + suffix.len();
            (
                OpOutput::Len(new_len as u64),
                Transition {
                    change: Change::Extend(suffix.as_slice()),
                    fp: fp.appended(suffix.len(), prepared.arg_hash),
                },
            )
        }
        Op::Incr(by) => {
            let current = match value {
                None => Some(0),
                Some(bytes) => parse_redis_i64(bytes),
            };
            match current.and_then(|current| current.checked_add(*by)) {
                Some(new) => {
                    let bytes = new.to_string().into_bytes();
                    let new_fp = Fingerprint::of(Some(&bytes));
                    (
                        OpOutput::Int(new),
                        Transition { change: Change::Put(Some(Cow::Owned(bytes))), fp: new_fp },
                    )
                }
                None => (OpOutput::Error, Transition { change: Change::Keep, fp }),
            }
        }
    }
}

/// Decides whether the model accepts `prepared` in `state`: returns the transition if the
/// observed output matches what the model returns (or the output is unknown), `None` otherwise.
///
/// `GET` is special-cased so that it compares against the state without copying it; an aborted
/// [`Op::Watched`] fits every state.
pub(super) fn evaluate<'a>(state: &State, prepared: &PreparedOp<'a>) -> Option<Transition<'a>> {
    if let (Op::Watched { .. }, Some(OpOutput::Aborted)) = (prepared.op, prepared.output) {
        return Some(Transition { change: Change::Keep, fp: state.fp });
    }
    if let (Op::Get, Some(observed)) = (prepared.op, prepared.output) {
        return match observed {
            OpOutput::Value(seen) if seen.as_deref() == state.value.as_deref() => {
                Some(Transition { change: Change::Keep, fp: state.fp })
            }
            _ => None,
        };
    }
    let (expected, transition) = model_step(state.value.as_deref(), state.fp, prepared);
    match prepared.output {
        None => Some(transition),
        Some(observed) if *observed == expected => Some(transition),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_integer_parsing_follows_string2ll() {
        assert_eq!(parse_redis_i64(b"0"), Some(0));
        assert_eq!(parse_redis_i64(b"42"), Some(42));
        assert_eq!(parse_redis_i64(b"-42"), Some(-42));
        assert_eq!(parse_redis_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_redis_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
        ] {
            assert_eq!(parse_redis_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn append_fingerprint_matches_recomputed_fingerprint() {
        let base = Fingerprint::of(Some(b"hello"));
        let appended = base.appended(6, poly_hash(b" world"));
        assert_eq!(appended, Fingerprint::of(Some(b"hello world")));
        let from_absent = Fingerprint::ABSENT.appended(3, poly_hash(b"abc"));
        assert_eq!(from_absent, Fingerprint::of(Some(b"abc")));
        assert_ne!(Fingerprint::of(Some(b"")), Fingerprint::ABSENT);
        assert_ne!(Fingerprint::of(Some(b"ab")), Fingerprint::of(Some(b"ba")));
    }

    #[test]
    fn apply_then_undo_restores_value_and_fingerprint() {
        let ops = [
            Op::Set(b"12".to_vec()),
            Op::Append(b"3".to_vec()),
            Op::Incr(7),
            Op::Del,
            Op::Append(b"x".to_vec()),
            Op::Incr(1),
            Op::Get,
        ];
        let mut state = State::absent();
        let mut history = vec![state.clone()];
        let mut undos = Vec::new();
        for op in &ops {
            let prepared = PreparedOp::new(op, None);
            let transition = evaluate(&state, &prepared);
            let Some(transition) = transition else { panic!("unknown output must always be accepted") };
            undos.push(state.apply(transition));
            assert_eq!(state.fp, Fingerprint::of(state.value.as_deref()), "after {op:?}");
            history.push(state.clone());
        }
        assert_eq!(state.value.as_deref(), Some(&b"x"[..]), "INCR on \"x\" fails, state kept");
        while let Some(undo) = undos.pop() {
            history.pop();
            state.undo(undo);
            assert_eq!(Some(&state), history.last());
        }
    }
}
