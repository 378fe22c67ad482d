//! Property test: random sequences of append / truncate_suffix / compact / sync / set_hard_state /
//! reopen over MemFs, compared with an in-memory model after every step.

mod common;

use common::{entry, mem_dir, open, small_opts};
use proptest::prelude::*;
use raft::{Entry, HardState};
use storage::{LogStore, MemFs, StorageError};

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` entries with payloads of `len` bytes (varied per entry).
    Append {
        n: u64,
        len: usize,
    },
    /// Append with a wrong first index: must be refused without effect.
    AppendGap,
    /// `truncate_suffix(last + 1 - back)` (clamped to first_index); a new term follows.
    Truncate {
        back: u64,
    },
    /// `truncate_suffix(first_index - 1)`: below the compacted prefix, must be refused.
    TruncateCompacted,
    /// `compact(last - back)`.
    Compact {
        back: u64,
    },
    Sync,
    SetHardState {
        vote: Option<u64>,
    },
    /// Drop the store (losing unsynced buffered appends, like a killed process) and reopen.
    Reopen,
    /// Read one entry back at a position chosen by `pick`.
    Read {
        pick: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..8, 0usize..60).prop_map(|(n, len)| Op::Append { n, len }),
        1 => Just(Op::AppendGap),
        2 => (0u64..12).prop_map(|back| Op::Truncate { back }),
        1 => Just(Op::TruncateCompacted),
        2 => (0u64..30).prop_map(|back| Op::Compact { back }),
        3 => Just(Op::Sync),
        1 => proptest::option::of(1u64..4).prop_map(|vote| Op::SetHardState { vote }),
        2 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(|pick| Op::Read { pick }),
    ]
}

/// The model: the whole log history that is still "current" (index i at position i - 1, compacted
/// entries included so reads of a resurrected prefix could be checked), the store's first index,
/// and how far the log is durable.
struct Model {
    log: Vec<Entry>,
    first: u64,
    durable: u64,
    term: u64,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.log.len() as u64
    }
}

fn check(store: &LogStore<MemFs>, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.last_index(), m.last());
    prop_assert_eq!(store.first_index(), m.first);
    prop_assert_eq!(store.hard_state(), m.hard_state);
    let got = store.entries(0, u64::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&got[..], &m.log[(m.first - 1) as usize..]);
    Ok(())
}

fn run(ops: Vec<Op>, segment_size: u64, buffer: usize) -> Result<(), TestCaseError> {
    let fs = MemFs::new();
    let dir = mem_dir();
    // Preallocation on in every other case (derived from the sizes, so the strategy is unchanged).
    let preallocate = if segment_size.is_multiple_of(2) { 0 } else { 8 + segment_size / 4 };
    let opts = storage::LogOptions { preallocate, ..small_opts(segment_size, buffer) };
    let (mut store, rec) = open(&fs, &dir, &opts);
    prop_assert_eq!(rec.first_index, 1);
    prop_assert!(rec.entries.is_empty());
    let mut m = Model { log: Vec::new(), first: 1, durable: 0, term: 1, hard_state: HardState::default() };
    for op in ops {
        match op {
            Op::Append { n, len } => {
                let first = m.last() + 1;
                let batch: Vec<Entry> =
                    (first..first + n).map(|i| entry(i, m.term, (len * i as usize) % 61)).collect();
                store.append(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.log.extend(batch);
            }
            Op::AppendGap => {
                let bad = entry(m.last() + 2, m.term, 5);
                let err = store.append(&[bad]).unwrap_err();
                prop_assert!(matches!(err, StorageError::InvalidArgument(_)), "{err}");
            }
            Op::Truncate { back } => {
                let from = (m.last() + 1).saturating_sub(back).max(m.first);
                store.truncate_suffix(from).map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.log.truncate((from - 1) as usize);
                m.durable = m.durable.min(from - 1);
                m.term += 1;
            }
            Op::TruncateCompacted => {
                if m.first > 1 && m.last() >= m.first - 1 {
                    let err = store.truncate_suffix(m.first - 1).unwrap_err();
                    prop_assert!(matches!(err, StorageError::InvalidArgument(_)), "{err}");
                }
            }
            Op::Compact { back } => {
                let upto = m.last().saturating_sub(back);
                let before = store.first_index();
                store.compact(upto).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let after = store.first_index();
                prop_assert!(
                    after >= before && after <= upto.max(before - 1) + 1,
                    "{before} -> {after} (upto {upto})"
                );
                m.first = after;
            }
            Op::Sync => {
                store.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.durable = m.last();
            }
            Op::SetHardState { vote } => {
                m.term += 1;
                let hs = HardState { term: m.term, voted_for: vote };
                store.set_hard_state(hs).map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.hard_state = hs;
            }
            Op::Reopen => {
                drop(store);
                let (s, rec) = open(&fs, &dir, &opts);
                store = s;
                prop_assert_eq!(rec.torn_tail, None);
                prop_assert_eq!(rec.first_index, m.first);
                prop_assert_eq!(rec.hard_state, m.hard_state);
                let last = m.first - 1 + rec.entries.len() as u64;
                prop_assert!(
                    last >= m.durable && last <= m.last(),
                    "recovered up to {last}, durable {}",
                    m.durable
                );
                prop_assert_eq!(&rec.entries[..], &m.log[(m.first - 1) as usize..last as usize]);
                m.log.truncate(last as usize);
            }
            Op::Read { pick } => {
                let span = m.last() + 3;
                let index = pick % span;
                let got = store.entry(index).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want =
                    (index >= m.first && index <= m.last()).then(|| m.log[(index - 1) as usize].clone());
                prop_assert_eq!(got, want);
            }
        }
        check(&store, &m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn log_store_matches_model(
        ops in proptest::collection::vec(op(), 1..80),
        segment_size in prop_oneof![Just(40u64), 100u64..400, Just(1 << 20)],
        buffer in prop_oneof![Just(1usize), 30usize..200, Just(1 << 20)],
    ) {
        run(ops, segment_size, buffer)?;
    }
}
