//! Tests of the linearizability checker: hand-written histories with known verdicts, large
//! histories, budgets, and property tests against generated executions and a brute-force oracle.

use proptest::prelude::*;

use std::collections::BTreeMap;

use super::model::parse_redis_i64;
use super::*;

const KEY: &[u8] = b"k";

fn done(client: u64, op: Op, call: u64, ret: u64, output: OpOutput) -> Operation {
    Operation { client, key: KEY.to_vec(), op, call, ret: Some(ret), output: Some(output) }
}

fn pending(client: u64, op: Op, call: u64) -> Operation {
    Operation { client, key: KEY.to_vec(), op, call, ret: None, output: None }
}

fn set(client: u64, call: u64, ret: u64, value: &str) -> Operation {
    done(client, Op::Set(value.into()), call, ret, OpOutput::Ok)
}

fn get(client: u64, call: u64, ret: u64, value: Option<&str>) -> Operation {
    done(client, Op::Get, call, ret, OpOutput::Value(value.map(Into::into)))
}

fn incr(client: u64, call: u64, ret: u64, by: i64, result: i64) -> Operation {
    done(client, Op::Incr(by), call, ret, OpOutput::Int(result))
}

fn on_key(key: &str, mut operation: Operation) -> Operation {
    operation.key = key.into();
    operation
}

fn verdict(history: &[Operation]) -> CheckResult {
    match check(history, DEFAULT_MAX_STEPS_PER_KEY) {
        Ok(result) => result,
        Err(error) => panic!("well-formed history rejected: {error}"),
    }
}

#[track_caller]
fn assert_linearizable(history: &[Operation]) {
    let result = verdict(history);
    assert_eq!(result, CheckResult::Linearizable, "{result:#?}");
}

#[track_caller]
fn assert_violation(history: &[Operation]) -> String {
    match verdict(history) {
        CheckResult::NotLinearizable { key, explanation } => {
            assert_eq!(key, KEY);
            explanation
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

// ---- reads and writes -------------------------------------------------------------------------

#[test]
fn sequential_set_then_get_sees_the_value() {
    assert_linearizable(&[get(1, 0, 1, None), set(1, 2, 3, "a"), get(2, 4, 5, Some("a"))]);
}

#[test]
fn stale_read_after_acknowledged_write_is_a_violation() {
    let history = [set(1, 0, 1, "a"), set(1, 2, 3, "b"), get(2, 4, 5, Some("a"))];
    let explanation = assert_violation(&history);
    assert!(explanation.contains("#2 client 2 GET -> \"a\" [call 4, ret 5]"), "{explanation}");
    assert!(explanation.contains("the model would return \"b\""), "{explanation}");
    assert!(explanation.contains("State after that prefix: \"b\""), "{explanation}");
}

#[test]
fn read_of_a_value_never_written_is_a_violation() {
    assert_violation(&[set(1, 0, 1, "a"), get(2, 0, 5, Some("zzz"))]);
    assert_violation(&[get(2, 0, 5, Some(""))]);
}

#[test]
fn read_of_absent_key_before_any_write_is_fine_but_not_after() {
    assert_linearizable(&[get(1, 0, 1, None), set(1, 2, 3, "a")]);
    assert_violation(&[set(1, 0, 1, "a"), get(1, 2, 3, None)]);
}

#[test]
fn overlapping_writes_may_be_observed_in_either_order() {
    let writes = [set(1, 0, 10, "a"), set(2, 0, 10, "b")];
    for (during, after) in [("a", "b"), ("b", "a")] {
        let mut history = writes.to_vec();
        history.push(get(3, 1, 9, Some(during)));
        history.push(get(3, 11, 12, Some(after)));
        history.push(get(4, 13, 14, Some(after)));
        assert_linearizable(&history);
    }
}

#[test]
fn reads_after_both_writes_that_disagree_are_a_violation() {
    let history =
        [set(1, 0, 10, "a"), set(2, 0, 10, "b"), get(3, 11, 12, Some("a")), get(4, 13, 14, Some("b"))];
    assert_violation(&history);
}

#[test]
fn value_cannot_come_back_after_being_overwritten() {
    // a, then b, then a again with a single write of each: impossible.
    let history = [
        set(1, 0, 10, "a"),
        set(2, 0, 10, "b"),
        get(3, 1, 9, Some("a")),
        get(3, 1, 9, Some("b")),
        get(4, 2, 8, Some("a")),
    ];
    // Concurrent reads may see a, b, a only if a is written twice.
    let mut reads_in_order = history.to_vec();
    reads_in_order[3] = get(3, 3, 4, Some("b"));
    reads_in_order[4] = get(4, 5, 6, Some("a"));
    reads_in_order[2] = get(3, 1, 2, Some("a"));
    assert_violation(&reads_in_order);
    // The same reads, all concurrent, can be ordered a, a, b.
    assert_linearizable(&history);
}

#[test]
fn touching_intervals_may_be_ordered_either_way() {
    // The read starts exactly when the write returns: closed intervals allow read-then-write.
    assert_linearizable(&[set(1, 0, 10, "a"), get(2, 10, 20, None)]);
    // One tick later the write must come first.
    assert_violation(&[set(1, 0, 10, "a"), get(2, 11, 20, None)]);
}

#[test]
fn same_operations_in_another_order_give_another_state() {
    // Trying "a then b" first reaches {a, b} with state "b", which the read refutes; the search
    // must still try "b then a", which reaches the same set of operations with state "a".
    assert_linearizable(&[set(1, 0, 10, "a"), set(2, 0, 10, "b"), get(3, 11, 12, Some("a"))]);
    assert_linearizable(&[set(1, 0, 10, "a"), set(2, 0, 10, "b"), get(3, 11, 12, Some("b"))]);
}

#[test]
fn keys_are_independent_and_the_failing_key_is_named() {
    let history = [
        on_key("x", set(1, 0, 1, "a")),
        on_key("y", get(2, 2, 3, None)),
        on_key("y", set(1, 4, 5, "b")),
        on_key("x", get(2, 6, 7, Some("a"))),
        on_key("z", set(1, 0, 1, "c")),
        on_key("z", get(1, 2, 3, Some("a"))),
    ];
    match verdict(&history) {
        CheckResult::NotLinearizable { key, .. } => assert_eq!(key, b"z"),
        other => panic!("expected a violation on z, got {other:?}"),
    }
    assert_linearizable(&history[..4]);
}

// ---- indeterminate operations -----------------------------------------------------------------

#[test]
fn indeterminate_write_that_shows_up_later_is_fine() {
    let history = [
        set(1, 0, 1, "old"),
        pending(2, Op::Set("new".into()), 2),
        get(3, 10, 11, Some("old")),
        get(3, 100, 101, Some("new")),
        get(4, 102, 103, Some("new")),
    ];
    assert_linearizable(&history);
}

#[test]
fn indeterminate_write_that_never_shows_up_is_fine() {
    let history = [
        set(1, 0, 1, "old"),
        pending(2, Op::Set("new".into()), 2),
        get(3, 10, 11, Some("old")),
        get(3, 100, 101, Some("old")),
    ];
    assert_linearizable(&history);
}

#[test]
fn indeterminate_write_cannot_take_effect_before_its_call() {
    let history = [set(1, 0, 1, "old"), get(3, 2, 3, Some("new")), pending(2, Op::Set("new".into()), 4)];
    assert_violation(&history);
}

#[test]
fn indeterminate_write_called_when_another_operation_returns_may_precede_it() {
    // The read returns at 10, exactly when the indeterminate write is called: closed intervals
    // let the write take effect at 10, just before the read.
    let history = [set(1, 0, 1, "a"), get(3, 0, 10, Some("b")), pending(2, Op::Set("b".into()), 10)];
    assert_linearizable(&history);
    let history = [set(1, 0, 1, "a"), get(3, 0, 10, Some("b")), pending(2, Op::Set("b".into()), 11)];
    assert_violation(&history);
}

#[test]
fn any_subset_of_indeterminate_operations_may_take_effect() {
    let lost = |client, by| pending(client, Op::Incr(by), 0);
    let history = |seen: &str| [lost(1, 1), lost(2, 10), lost(3, 100), get(4, 5, 6, Some(seen))];
    for seen in ["0", "1", "10", "100", "11", "101", "110", "111"] {
        assert_linearizable(&history(seen)[..3 + usize::from(seen != "0")]);
        if seen != "0" {
            assert_linearizable(&history(seen));
        }
    }
    assert_violation(&history("2"));
    assert_violation(&history("112"));
}

#[test]
fn indeterminate_write_that_shows_up_then_disappears_is_a_violation() {
    let history = [
        set(1, 0, 1, "old"),
        pending(2, Op::Set("new".into()), 2),
        get(3, 10, 11, Some("new")),
        get(3, 20, 21, Some("old")),
    ];
    assert_violation(&history);
}

#[test]
fn indeterminate_reads_are_ignored() {
    let history = [set(1, 0, 1, "a"), pending(2, Op::Get, 2), get(3, 5, 6, Some("a"))];
    assert_linearizable(&history);
}

#[test]
fn many_lost_writes_in_a_long_history_are_cheap() {
    // 200 clients crash with a write in flight that never takes effect, interleaved with a long
    // sequential history whose reads never see those writes.
    let mut history = Vec::new();
    for i in 0..4_000u64 {
        let t = 10 * i;
        if i % 20 == 0 {
            history.push(pending(1_000 + i, Op::Set(format!("lost{i}").into_bytes()), t));
        }
        history.push(set(1, t, t + 3, &format!("v{i}")));
        history.push(get(2, t + 4, t + 6, Some(&format!("v{i}"))));
    }
    assert_eq!(check(&history, 200_000), Ok(CheckResult::Linearizable));
}

// ---- INCRBY -----------------------------------------------------------------------------------

#[test]
fn concurrent_increments_with_unique_results_are_fine() {
    let history =
        [incr(1, 0, 10, 1, 2), incr(2, 0, 10, 1, 3), incr(3, 0, 10, 1, 1), get(4, 11, 12, Some("3"))];
    assert_linearizable(&history);
}

#[test]
fn increment_applied_twice_is_a_violation() {
    // Duplicate result: two increments both claim to have produced 2.
    assert_violation(&[incr(1, 0, 10, 1, 1), incr(2, 0, 10, 1, 2), incr(3, 0, 10, 1, 2)]);
    // Skipped value: a retried increment applied twice shows as 1 then 3.
    assert_violation(&[incr(1, 0, 1, 1, 1), incr(2, 2, 3, 1, 3)]);
    // A read sees a value from a double application.
    assert_violation(&[incr(1, 0, 1, 5, 5), get(2, 2, 3, Some("10"))]);
}

#[test]
fn indeterminate_increment_observed_by_a_later_increment_is_fine() {
    let history = [incr(1, 0, 1, 1, 1), pending(2, Op::Incr(1), 2), incr(3, 5, 6, 1, 3)];
    assert_linearizable(&history);
    // ... or not applied at all.
    let history = [incr(1, 0, 1, 1, 1), pending(2, Op::Incr(1), 2), incr(3, 5, 6, 1, 2)];
    assert_linearizable(&history);
    // But it cannot be applied twice.
    let history = [incr(1, 0, 1, 1, 1), pending(2, Op::Incr(1), 2), incr(3, 5, 6, 1, 4)];
    assert_violation(&history);
}

#[test]
fn increment_errors_follow_redis() {
    let error = |client, call, ret, by| done(client, Op::Incr(by), call, ret, OpOutput::Error);
    // Not an integer: error, value unchanged.
    assert_linearizable(&[set(1, 0, 1, "x"), error(1, 2, 3, 1), get(1, 4, 5, Some("x"))]);
    assert_linearizable(&[set(1, 0, 1, "007"), error(1, 2, 3, 1)]);
    assert_violation(&[set(1, 0, 1, "7"), error(1, 2, 3, 1)]);
    // Overflow: error, value unchanged.
    let max = i64::MAX.to_string();
    assert_linearizable(&[set(1, 0, 1, &max), error(1, 2, 3, 1), get(1, 4, 5, Some(&max))]);
    assert_violation(&[set(1, 0, 1, &max), error(1, 2, 3, -1)]);
    // Negative increments and the stored representation.
    assert_linearizable(&[incr(1, 0, 1, -3, -3), get(1, 2, 3, Some("-3")), incr(1, 4, 5, 3, 0)]);
    assert_linearizable(&[incr(1, 0, 1, 0, 0), get(1, 2, 3, Some("0"))]);
}

// ---- DEL and APPEND ---------------------------------------------------------------------------

#[test]
fn del_reports_existence_and_removes_the_key() {
    let del = |client, call, ret, existed| done(client, Op::Del, call, ret, OpOutput::Bool(existed));
    assert_linearizable(&[
        del(1, 0, 1, false),
        set(1, 2, 3, "a"),
        del(1, 4, 5, true),
        get(1, 6, 7, None),
        del(1, 8, 9, false),
        incr(1, 10, 11, 1, 1),
    ]);
    assert_violation(&[del(1, 0, 1, true)]);
    assert_violation(&[set(1, 0, 1, "a"), del(1, 2, 3, false)]);
    assert_violation(&[set(1, 0, 1, "a"), del(1, 2, 3, true), get(1, 4, 5, Some("a"))]);
    // Two concurrent deletes of an existing key: exactly one sees it.
    assert_linearizable(&[set(1, 0, 1, "a"), del(1, 2, 9, false), del(2, 2, 9, true)]);
    assert_violation(&[set(1, 0, 1, "a"), del(1, 2, 9, true), del(2, 2, 9, true)]);
}

#[test]
fn append_returns_the_new_length_and_concatenates() {
    let append = |client, call, ret, bytes: &str, len| {
        done(client, Op::Append(bytes.into()), call, ret, OpOutput::Len(len))
    };
    assert_linearizable(&[
        append(1, 0, 1, "ab", 2),
        append(1, 2, 3, "c", 3),
        get(1, 4, 5, Some("abc")),
        set(1, 6, 7, "1"),
        append(1, 8, 9, "2", 2),
        incr(1, 10, 11, 1, 13),
    ]);
    assert_violation(&[append(1, 0, 1, "ab", 3)]);
    assert_violation(&[append(1, 0, 1, "ab", 2), append(1, 2, 3, "c", 3), get(1, 4, 5, Some("cab"))]);
    // Concurrent appends: the read fixes their order, the lengths must agree with it.
    assert_linearizable(&[append(1, 0, 10, "x", 3), append(2, 0, 10, "yy", 2), get(3, 11, 12, Some("yyx"))]);
    assert_violation(&[append(1, 0, 10, "x", 1), append(2, 0, 10, "yy", 3), get(3, 11, 12, Some("yyx"))]);
}

// ---- size, budget, malformed input ------------------------------------------------------------

/// A sequential history of `n` operations on one key cycling through every kind of operation,
/// with outputs computed by the reference model, and slightly overlapping intervals.
fn long_history(n: u64) -> Vec<Operation> {
    let mut value: Option<Vec<u8>> = None;
    let mut history = Vec::new();
    for i in 0..n {
        let op = match i % 7 {
            0 => Op::Set((i % 13).to_string().into_bytes()),
            1 | 4 => Op::Incr(i as i64 % 5 - 2),
            2 | 5 => Op::Get,
            3 => Op::Append(b"7".to_vec()),
            _ => {
                if i % 3 == 0 {
                    Op::Del
                } else {
                    Op::Get
                }
            }
        };
        let output = reference_apply(&mut value, &op);
        // Linearization point at 10 * i; neighbours overlap by a few ticks.
        history.push(done(i % 4, op, 10 * i, 10 * i + 7, output));
    }
    history
}

#[test]
fn long_sequential_history_is_checked() {
    let mut history = long_history(10_000);
    assert_eq!(check(&history, 200_000), Ok(CheckResult::Linearizable));
    // The same history with its last read made stale must fail.
    let last_get = history.iter().rposition(|op| op.op == Op::Get).unwrap_or(0);
    history[last_get].output = Some(OpOutput::Value(Some(b"stale".to_vec())));
    match check(&history, 200_000) {
        Ok(CheckResult::NotLinearizable { explanation, .. }) => {
            assert!(explanation.contains(&format!("#{last_get} ")), "{explanation}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn tiny_budget_on_a_concurrent_history_is_inconclusive() {
    let mut history: Vec<Operation> = (0..30).map(|i| incr(i, 0, 100, 1, 30 - i as i64)).collect();
    history.push(get(99, 101, 102, Some("30")));
    assert_eq!(check(&history, 10), Ok(CheckResult::Inconclusive { key: KEY.to_vec() }));
    assert_eq!(check(&history, DEFAULT_MAX_STEPS_PER_KEY), Ok(CheckResult::Linearizable));
}

#[test]
fn violation_on_one_key_wins_over_inconclusive_on_another() {
    let mut history: Vec<Operation> =
        (0..30).map(|i| on_key("a", incr(i, 0, 100, 1, 30 - i as i64))).collect();
    history.push(on_key("b", set(1, 0, 1, "x")));
    history.push(on_key("b", get(1, 2, 3, Some("y"))));
    match check(&history, 10) {
        Ok(CheckResult::NotLinearizable { key, .. }) => assert_eq!(key, b"b"),
        other => panic!("expected a violation on b, got {other:?}"),
    }
}

#[test]
fn exhaustive_refutation_of_a_concurrent_history_finishes() {
    // 14 concurrent increments whose results skip 14 and claim 15: every order must be refuted.
    let mut history: Vec<Operation> = (0..13).map(|i| incr(i, 0, 100, 1, i as i64 + 1)).collect();
    history.push(incr(13, 0, 100, 1, 15));
    assert_violation(&history);
}

#[test]
fn malformed_histories_are_rejected() {
    let mut backwards = set(1, 10, 5, "a");
    assert_eq!(
        check(&[backwards.clone()], 100),
        Err(HistoryError::ReturnBeforeCall { index: 0, call: 10, ret: 5 })
    );
    backwards.output = None;
    assert_eq!(check(&[backwards], 100), Err(HistoryError::MissingOutput { index: 0 }));
    let mut orphan = pending(1, Op::Get, 0);
    orphan.output = Some(OpOutput::Ok);
    assert_eq!(check(&[set(1, 0, 1, "a"), orphan], 100), Err(HistoryError::OutputWithoutReturn { index: 1 }));
}

#[test]
fn empty_history_and_only_pending_operations_are_linearizable() {
    assert_eq!(check(&[], 0), Ok(CheckResult::Linearizable));
    assert_eq!(check(&[pending(1, Op::Incr(1), 0)], 0), Ok(CheckResult::Linearizable));
}

#[test]
fn explanation_shows_the_prefix_and_the_blocked_operations() {
    let history = [
        set(1, 0, 1, "a"),
        pending(7, Op::Append(b"!".to_vec()), 1),
        get(2, 2, 3, Some("a")),
        done(3, Op::Incr(2), 4, 6, OpOutput::Int(2)),
        get(2, 5, 9, Some("a!")),
    ];
    let explanation = assert_violation(&history);
    for expected in [
        "key \"k\": no linearization exists for its 5 operations (4 completed, 1 indeterminate)",
        "#0 client 1 SET \"a\" -> OK [call 0, ret 1]",
        "#2 client 2 GET -> \"a\" [call 2, ret 3]",
        "#3 client 3 INCRBY 2 -> (integer) 2 [call 4, ret 6]",
        "#4 client 2 GET -> \"a!\" [call 5, ret 9]",
    ] {
        assert!(explanation.contains(expected), "missing {expected:?} in:\n{explanation}");
    }
}

#[test]
fn explanation_prefers_the_prefix_with_most_completed_operations() {
    // Found by the property test: the deepest prefix (SET, INCRBY, APPEND, DEL: 4 operations)
    // explains less than INCRBY, GET, APPEND (2 completed operations), which reaches the read
    // that cannot be explained.
    let history = [
        pending(0, Op::Set(b"1".to_vec()), 100),
        pending(0, Op::Del, 110),
        pending(0, Op::Incr(-2), 109),
        get(0, 140, 140, Some("-2")),
        done(0, Op::Append(vec![]), 140, 150, OpOutput::Len(2)),
        get(0, 200, 200, Some("\u{1}never")),
    ];
    let explanation = assert_violation(&history);
    assert!(explanation.contains("(2 of the 3 completed ones)"), "{explanation}");
    assert!(explanation.contains("#5 client 0 GET"), "{explanation}");
}

// ---- property tests ---------------------------------------------------------------------------

/// An independent statement of the model (the checker's is optimised for the search).
fn reference_apply(value: &mut Option<Vec<u8>>, op: &Op) -> OpOutput {
    match op {
        // Runs on what its GET saw; aborts elsewhere (the checker also allows an abort anywhere,
        // see `brute_force_linearizable`).
        Op::Watched { seen, op } if value == seen => reference_apply(value, op),
        Op::Watched { .. } => OpOutput::Aborted,
        Op::Get => OpOutput::Value(value.clone()),
        Op::Set(new) => {
            *value = Some(new.clone());
            OpOutput::Ok
        }
        Op::Del => OpOutput::Bool(value.take().is_some()),
        Op::Append(suffix) => {
            let current = value.get_or_insert_with(Vec::new);
            current.extend_from_slice(suffix);
            OpOutput::Len(current.len() as u64)
        }
        Op::Incr(by) => {
            let current = match value.as_deref() {
                None => Some(0),
                Some(bytes) => parse_redis_i64(bytes),
            };
            match current.and_then(|current| current.checked_add(*by)) {
                Some(new) => {
                    *value = Some(new.to_string().into_bytes());
                    OpOutput::Int(new)
                }
                None => OpOutput::Error,
            }
        }
    }
}

/// Values the generators use; none contains the byte 0xff.
const VALUES: [&[u8]; 7] = [b"", b"0", b"1", b"-5", b"a", b"10", b"007"];

fn arb_plain_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Get),
        2 => (0..VALUES.len()).prop_map(|i| Op::Set(VALUES[i].to_vec())),
        2 => (-2i64..=3).prop_map(Op::Incr),
        1 => Just(Op::Del),
        1 => (0..VALUES.len()).prop_map(|i| Op::Append(VALUES[i].to_vec())),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let seen = prop::option::of((0..VALUES.len()).prop_map(|i| VALUES[i].to_vec()));
    prop_oneof![
        9 => arb_plain_op(),
        1 => (seen, arb_plain_op()).prop_map(|(seen, op)| Op::Watched { seen, op: Box::new(op) }),
    ]
}

/// How one generated operation ends.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// The client saw the reply.
    Completed,
    /// The reply was lost but the operation took effect.
    LostAfterEffect,
    /// The operation never took effect (and the client never learned).
    NeverApplied,
}

fn arb_fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        18 => Just(Fate::Completed),
        1 => Just(Fate::LostAfterEffect),
        1 => Just(Fate::NeverApplied),
    ]
}

/// A history produced by a real sequential execution: each operation takes effect at its
/// linearization point `10 * i`, inside an interval that may overlap its neighbours'.
fn arb_linearizable_history() -> impl Strategy<Value = Vec<Operation>> {
    prop::collection::vec((0..3u8, arb_op(), arb_fate(), 0..4u64, 0..45u64, 0..45u64), 1..80).prop_map(
        |specs| {
            let mut values: [Option<Vec<u8>>; 3] = Default::default();
            let mut history = Vec::new();
            for (i, (key, op, fate, client, before, after)) in specs.into_iter().enumerate() {
                let point = 100 + 10 * i as u64;
                let key_index = usize::from(key);
                let (ret, output) = match fate {
                    Fate::Completed => {
                        let output = reference_apply(&mut values[key_index], &op);
                        (Some(point + after), Some(output))
                    }
                    Fate::LostAfterEffect => {
                        reference_apply(&mut values[key_index], &op);
                        (None, None)
                    }
                    Fate::NeverApplied => (None, None),
                };
                history.push(Operation {
                    client,
                    key: vec![b'a' + key],
                    op,
                    call: point - before,
                    ret,
                    output,
                });
            }
            history
        },
    )
}

/// Every way to order the completed operations (and a subset of the indeterminate ones) that
/// respects real time, tried without memoization: the specification of the search.
fn brute_force_linearizable(ops: &[Operation]) -> bool {
    fn extend(ops: &[Operation], used: &mut Vec<bool>, value: &mut Option<Vec<u8>>) -> bool {
        if ops.iter().zip(used.iter()).all(|(op, &used)| used || op.ret.is_none()) {
            return true;
        }
        for next in 0..ops.len() {
            if used[next] {
                continue;
            }
            // Everything that returned strictly before `next` was called must precede it.
            let blocked = ops
                .iter()
                .enumerate()
                .any(|(other, op)| !used[other] && op.ret.is_some_and(|ret| ret < ops[next].call));
            if blocked {
                continue;
            }
            let saved = value.clone();
            let output = reference_apply(value, &ops[next].op);
            // A watched transaction may abort in any state, changing nothing.
            let aborted = matches!(ops[next].op, Op::Watched { .. })
                && ops[next].output == Some(OpOutput::Aborted)
                && output != OpOutput::Aborted;
            if aborted {
                *value = saved.clone();
            }
            if aborted
                || match &ops[next].output {
                    None => true,
                    Some(seen) => *seen == output,
                }
            {
                used[next] = true;
                if extend(ops, used, value) {
                    return true;
                }
                used[next] = false;
            }
            *value = saved;
        }
        false
    }
    let ops: Vec<Operation> =
        ops.iter().filter(|op| !(op.op == Op::Get && op.ret.is_none())).cloned().collect();
    extend(&ops, &mut vec![false; ops.len()], &mut None)
}

/// An arbitrary output of any kind, from a small domain.
fn arb_output() -> impl Strategy<Value = OpOutput> {
    prop_oneof![
        (0..VALUES.len()).prop_map(|i| OpOutput::Value(Some(VALUES[i].to_vec()))),
        Just(OpOutput::Value(None)),
        Just(OpOutput::Ok),
        (-3i64..=4).prop_map(OpOutput::Int),
        any::<bool>().prop_map(OpOutput::Bool),
        (0u64..6).prop_map(OpOutput::Len),
        Just(OpOutput::Error),
        Just(OpOutput::Aborted),
    ]
}

/// Small single-key histories on the edge of linearizability: a real execution with overlapping
/// intervals (times in a small range, so that ties are frequent), some indeterminate operations,
/// and possibly one output replaced by an arbitrary one.
fn arb_small_history() -> impl Strategy<Value = Vec<Operation>> {
    let spec = (arb_op(), arb_fate(), 0..4u64, 0..4u64, prop::bool::weighted(0.25));
    (prop::collection::vec(spec, 0..8), prop::option::of((any::<prop::sample::Index>(), arb_output())))
        .prop_map(|(specs, corruption)| {
            let mut value = None;
            let mut history: Vec<Operation> = specs
                .into_iter()
                .enumerate()
                .map(|(i, (op, fate, before, after, lost))| {
                    let point = 4 + 2 * i as u64;
                    // Indeterminate operations appear more often here than in long histories.
                    let fate = if lost { Fate::LostAfterEffect } else { fate };
                    let (ret, output) = match fate {
                        Fate::Completed => (Some(point + after), Some(reference_apply(&mut value, &op))),
                        Fate::LostAfterEffect => {
                            reference_apply(&mut value, &op);
                            (None, None)
                        }
                        Fate::NeverApplied => (None, None),
                    };
                    Operation { client: i as u64, key: KEY.to_vec(), op, call: point - before, ret, output }
                })
                .collect();
            if let Some((pick, output)) = corruption {
                if !history.is_empty() {
                    let victim = pick.index(history.len());
                    if history[victim].ret.is_some() {
                        history[victim].output = Some(output);
                    }
                }
            }
            history
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn generated_executions_are_linearizable(history in arb_linearizable_history()) {
        prop_assert_eq!(verdict(&history), CheckResult::Linearizable);
        let mut reversed = history.clone();
        reversed.reverse();
        prop_assert_eq!(verdict(&reversed), CheckResult::Linearizable);
    }

    #[test]
    fn a_read_of_a_never_written_value_is_caught(
        history in arb_linearizable_history(),
        pick in any::<prop::sample::Index>(),
    ) {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].op == Op::Get && history[i].ret.is_some())
            .collect();
        prop_assume!(!reads.is_empty());
        let victim = reads[pick.index(reads.len())];
        let mut history = history;
        history[victim].output = Some(OpOutput::Value(Some(b"\xffnever".to_vec())));
        match verdict(&history) {
            CheckResult::NotLinearizable { key, explanation } => {
                prop_assert_eq!(&key, &history[victim].key);
                let needle = format!("#{victim} ");
                prop_assert!(explanation.contains(&needle), "{}", explanation);
            }
            other => prop_assert!(false, "expected a violation, got {:?}", other),
        }
    }

    #[test]
    fn verdict_matches_brute_force(history in arb_small_history()) {
        let expected = brute_force_linearizable(&history);
        let result = verdict(&history);
        prop_assert_eq!(result.is_linearizable(), expected, "{:?}", result);
        let inconclusive = matches!(result, CheckResult::Inconclusive { .. });
        prop_assert!(!inconclusive, "budget exhausted on a tiny history");
    }
}

// ---- realistic concurrent histories -----------------------------------------------------------

/// A tiny deterministic generator for the tests below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = super::model::splitmix64(self.0);
        self.0 % bound.max(1)
    }
}

/// A history of `clients` closed-loop clients issuing `total` operations on `keys` keys, each
/// taking effect at a random instant inside its interval; a fraction `lost_per_mille` of the
/// operations lose their reply (half of those still take effect). Written values are unique if
/// `unique_values`, else drawn from 50 values (which makes many orders look alike).
fn concurrent_history(
    seed: u64,
    clients: u64,
    total: usize,
    keys: u64,
    lost_per_mille: u64,
    unique_values: bool,
) -> Vec<Operation> {
    let mut rng = Rng(seed);
    let mut next_call: Vec<u64> = (0..clients).map(|_| rng.below(20)).collect();
    // (linearization point, operation, takes effect)
    let mut planned: Vec<(u64, Operation, bool)> = Vec::with_capacity(total);
    for _ in 0..total {
        let client = rng.below(clients);
        let call = next_call[client as usize];
        let ret = call + 1 + rng.below(60);
        let point = call + rng.below(ret - call + 1);
        next_call[client as usize] = ret + rng.below(10);
        let value = if unique_values { 1_000 + planned.len() as u64 } else { rng.below(50) };
        let value = value.to_string().into_bytes();
        let op = match rng.below(10) {
            0..=3 => Op::Get,
            4..=5 => Op::Set(value),
            6..=7 => Op::Incr(rng.below(5) as i64 - 1),
            8 => Op::Append(value),
            _ => Op::Del,
        };
        let key = format!("key{}", rng.below(keys)).into_bytes();
        let lost = rng.below(1000) < lost_per_mille;
        let takes_effect = !lost || rng.below(2) == 0;
        let operation = Operation { client, key, op, call, ret: (!lost).then_some(ret), output: None };
        planned.push((point, operation, takes_effect));
    }
    planned.sort_by_key(|(point, _, _)| *point);
    let mut values: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    planned
        .into_iter()
        .map(|(_, mut operation, takes_effect)| {
            if takes_effect {
                let output = reference_apply(values.entry(operation.key.clone()).or_default(), &operation.op);
                if operation.ret.is_some() {
                    operation.output = Some(output);
                }
            }
            operation
        })
        .collect()
}

#[test]
fn simulator_sized_concurrent_histories_are_linearizable() {
    for seed in 0..300 {
        let history = concurrent_history(seed, 5, 300, 3, 20, false);
        assert_eq!(check(&history, 1_000_000), Ok(CheckResult::Linearizable), "seed {seed}");
    }
}

#[test]
fn real_test_sized_concurrent_history_is_linearizable_and_a_stale_read_is_caught() {
    let mut history = concurrent_history(42, 10, 10_000, 4, 3, false);
    assert_eq!(check(&history, DEFAULT_MAX_STEPS_PER_KEY), Ok(CheckResult::Linearizable));
    // Make the last completed read of a key that was written return a value it never had.
    let victim = history
        .iter()
        .rposition(|op| op.op == Op::Get && matches!(op.output, Some(OpOutput::Value(Some(_)))))
        .unwrap_or(0);
    history[victim].output = Some(OpOutput::Value(Some(b"never written".to_vec())));
    match check(&history, DEFAULT_MAX_STEPS_PER_KEY) {
        Ok(CheckResult::NotLinearizable { key, .. }) => assert_eq!(key, history[victim].key),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn saturated_clients_on_one_key_are_checked_within_a_modest_budget() {
    // 12 closed-loop clients on one key with a small value domain: about 12 operations in
    // flight at any time. About 0.5M steps with the observer rule, about 4M without.
    for seed in [7, 8, 9] {
        let history = concurrent_history(seed, 12, 2_000, 1, 0, false);
        assert_eq!(check(&history, 2_000_000), Ok(CheckResult::Linearizable), "seed {seed}");
    }
}

/// Not a test: prints how long typical checks take. Run with
/// `cargo test -p sim --release --lib linearizability::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a test"]
fn measure() {
    use std::time::Instant;
    let report = |name: &str, history: &[Operation]| {
        let start = Instant::now();
        let verdict = match check(history, DEFAULT_MAX_STEPS_PER_KEY) {
            Ok(CheckResult::Linearizable) => "linearizable".to_string(),
            Ok(CheckResult::NotLinearizable { .. }) => "not linearizable".to_string(),
            Ok(CheckResult::Inconclusive { .. }) => "inconclusive".to_string(),
            Err(error) => error.to_string(),
        };
        println!("{name}: {} ops, {verdict}, {:?}", history.len(), start.elapsed());
    };
    report("sequential, 1 key", &long_history(10_000));
    report("sequential, 1 key", &long_history(100_000));
    let start = Instant::now();
    for seed in 0..1_000 {
        let history = concurrent_history(seed, 5, 300, 3, 20, false);
        assert_eq!(check(&history, 1_000_000), Ok(CheckResult::Linearizable), "seed {seed}");
    }
    println!("1000 simulator-sized histories (5 clients, 300 ops, 3 keys, 2% lost): {:?}", start.elapsed());
    report("10 clients, 4 keys, 1% lost", &concurrent_history(42, 10, 10_000, 4, 10, false));
    for lost in [2, 10] {
        let mut stale = concurrent_history(42, 10, 10_000, 4, lost, false);
        if let Some(victim) = stale.iter().rposition(|op| op.op == Op::Get && op.ret.is_some()) {
            stale[victim].output = Some(OpOutput::Value(Some(b"never written".to_vec())));
        }
        report(&format!("10 clients, 4 keys, {lost} per mille lost, last read corrupted"), &stale);
    }
    for unique in [false, true] {
        let values = if unique { "unique values" } else { "50 values" };
        for (clients, lost) in [(10, 10), (15, 0), (20, 0), (20, 10)] {
            let name = format!("{clients} clients, 1 key, {values}, {lost} per mille lost");
            report(&name, &concurrent_history(7, clients, 10_000, 1, lost, unique));
        }
        for lost in [0, 2, 5, 10] {
            let mut stale = concurrent_history(42, 10, 10_000, 1, lost, unique);
            if let Some(victim) = stale.iter().rposition(|op| op.op == Op::Get && op.ret.is_some()) {
                stale[victim].output = Some(OpOutput::Value(Some(b"never written".to_vec())));
            }
            report(
                &format!("10 clients, 1 key, {values}, {lost} per mille lost, last read corrupted"),
                &stale,
            );
        }
    }
}

// ---- WATCH-guarded transactions ----------------------------------------------------------------

fn watched(seen: Option<&str>, op: Op) -> Op {
    Op::Watched { seen: seen.map(Into::into), op: Box::new(op) }
}

#[test]
fn watched_exec_runs_when_nothing_changed_in_between() {
    let history = [
        set(1, 0, 1, "a"),
        get(2, 2, 3, Some("a")),
        done(2, watched(Some("a"), Op::Set("b".into())), 4, 5, OpOutput::Ok),
        get(1, 6, 7, Some("b")),
    ];
    assert_linearizable(&history);
}

#[test]
fn watched_exec_that_ran_after_a_write_it_watched_is_a_violation() {
    // Another client's SET completed after the GET and before the EXEC was sent: the EXEC
    // must have aborted.
    let history = [
        set(1, 0, 1, "a"),
        get(2, 2, 3, Some("a")),
        set(1, 4, 5, "c"),
        done(2, watched(Some("a"), Op::Set("b".into())), 6, 7, OpOutput::Ok),
    ];
    let explanation = assert_violation(&history);
    assert!(explanation.contains("WATCH+GET \"a\" EXEC SET \"b\""), "{explanation}");
    // The same run with the EXEC aborted is fine, and so is a spurious abort.
    let mut aborted = history.clone();
    aborted[3].output = Some(OpOutput::Aborted);
    assert_linearizable(&aborted);
    let spurious = [
        get(2, 2, 3, None),
        done(2, watched(None, Op::Incr(2)), 6, 7, OpOutput::Aborted),
        get(1, 8, 9, None),
    ];
    assert_linearizable(&spurious);
}

#[test]
fn watched_exec_may_precede_an_overlapping_write() {
    // The SET overlaps the EXEC, so the EXEC can come first; the later read decides.
    let ran_first = [
        get(2, 0, 1, None),
        set(1, 2, 6, "c"),
        done(2, watched(None, Op::Incr(3)), 3, 5, OpOutput::Int(3)),
        get(1, 7, 8, Some("c")),
    ];
    assert_linearizable(&ran_first);
    let mut ran_last = ran_first.clone();
    ran_last[3].output = Some(OpOutput::Value(Some(b"3".to_vec())));
    assert_violation(&ran_last);
}

#[test]
fn watched_exec_output_is_the_inner_operations() {
    let history = [
        set(1, 0, 1, "7"),
        get(2, 2, 3, Some("7")),
        done(2, watched(Some("7"), Op::Incr(2)), 4, 5, OpOutput::Int(10)),
    ];
    assert_violation(&history);
    let wrong_seen = [
        set(1, 0, 1, "7"),
        get(2, 2, 3, Some("7")),
        done(2, watched(Some("8"), Op::Del), 4, 5, OpOutput::Bool(true)),
    ];
    assert_violation(&wrong_seen);
}

#[test]
fn indeterminate_watched_exec_runs_only_on_what_it_saw() {
    // Lost answer: it may have run (the key held what the GET saw) ...
    let ran = [
        set(1, 0, 1, "a"),
        get(2, 2, 3, Some("a")),
        pending(2, watched(Some("a"), Op::Set("b".into())), 4),
        get(1, 6, 7, Some("b")),
    ];
    assert_linearizable(&ran);
    // ... but not after a write it watched completed.
    let late = [
        set(1, 0, 1, "a"),
        get(2, 2, 3, Some("a")),
        set(1, 4, 5, "c"),
        pending(2, watched(Some("a"), Op::Set("b".into())), 6),
        get(1, 8, 9, Some("b")),
    ];
    assert_violation(&late);
}
