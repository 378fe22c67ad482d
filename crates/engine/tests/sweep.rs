//! The leader reclaims expired keys through sweeps that are small and paced (`driver::clock`): at
//! most [`engine::SWEEP_BATCH`] keys per sweep and, while requests wait, at most one sweep
//! proposed per tick, however many keys are due, so expiry holds every replica's node thread for
//! about a millisecond at a time and for a bounded share of its time; with no request waiting, one
//! sweep per batch (reclaiming faster), never two in one batch; and it keeps sweeping until every
//! due key is gone.

mod common;

use std::path::Path;

use bytes::Bytes;
use engine::kv::{Command, ExpiryOrigin, SetCondition, SetExpiry};
use engine::{Driver, DriverConfig, Input, Request, SnapshotConfig, SWEEP_BATCH};
use raft::Role;
use storage::{LogOptions, MemFs};

const T0: u64 = 1_800_000_000_000;
const KEYS: u64 = 1_000;

fn config() -> DriverConfig {
    let mut raft = raft::Config::new(1, vec![1]);
    raft.election_ticks = 10;
    raft.heartbeat_ticks = 2;
    raft.seed = 11;
    DriverConfig {
        raft,
        session: 71,
        request_timeout_ticks: 500,
        forward_retry_ticks: 10_000,
        limbo_ticks: 10_000,
        write_window: 4096,
        log: LogOptions::default(),
        snapshot: SnapshotConfig { entries: 0, ..SnapshotConfig::default() },
        deferred_sync: false,
        record_applies: false,
    }
}

#[test]
fn due_keys_are_swept_one_batch_per_tick_while_busy_and_per_batch_while_idle() {
    assert!(KEYS > 3 * SWEEP_BATCH as u64, "enough keys for several sweeps");
    let mut d = Driver::open(MemFs::new(), Path::new("/d"), config()).expect("opens");
    for _ in 0..100 {
        if d.node().role() == Role::Leader {
            break;
        }
        common::run_at(&mut d, vec![Input::Tick], T0).0.expect("tick");
    }
    assert_eq!(d.node().role(), Role::Leader);
    // KEYS keys that expire 1 s from now.
    let writes: Vec<Input> = (0..KEYS)
        .map(|i| {
            Input::Client(
                i,
                Request::Write(Command::SetEx {
                    key: Bytes::from(format!("k{i}")),
                    value: Bytes::from_static(b"v"),
                    condition: SetCondition::Always,
                    get: false,
                    expiry: SetExpiry::In(1_000),
                    origin: ExpiryOrigin::Set,
                }),
            )
        })
        .collect();
    let (result, rec) = common::run_at(&mut d, writes, T0);
    result.expect("writes");
    assert_eq!(rec.answers.len() as u64, KEYS, "a single voter commits at once");
    assert_eq!(d.kv().expires_count() as u64, KEYS);

    // Their deadline passes. A batch sweeps once, never twice (a single voter commits and
    // applies the sweep within the batch).
    let later = T0 + 2_000;
    let swept_by = |d: &mut Driver<MemFs>, inputs: Vec<Input>| {
        let before = d.kv().expires_count();
        let (result, _) = common::run_at(d, inputs, later);
        result.expect("batch");
        before - d.kv().expires_count()
    };
    assert_eq!(swept_by(&mut d, vec![]), SWEEP_BATCH as usize, "one sweep once the deadline passed");
    // While requests wait (each batch brings a write), batches within the same tick do not sweep.
    let busy = |i: u64| {
        Input::Client(
            KEYS + i,
            Request::Write(Command::Set {
                key: Bytes::from(format!("busy{i}")),
                value: Bytes::from_static(b"v"),
                condition: SetCondition::Always,
                get: false,
            }),
        )
    };
    for i in 0..5 {
        assert_eq!(swept_by(&mut d, vec![busy(i)]), 0, "a second sweep within the tick while busy");
    }
    // A tick allows the next sweep even while busy.
    assert_eq!(swept_by(&mut d, vec![Input::Tick, busy(5)]), SWEEP_BATCH as usize, "the next tick sweeps");
    assert_eq!(swept_by(&mut d, vec![busy(6)]), 0, "and only once while busy");
    // With nothing waiting, every batch sweeps once more, within the same tick, until none is due.
    let mut batches = 0;
    while d.kv().expires_count() > 0 {
        let swept = swept_by(&mut d, vec![]);
        assert!(swept > 0 && swept <= SWEEP_BATCH as usize, "{swept} keys swept by an idle batch");
        batches += 1;
        assert!(
            batches <= KEYS / SWEEP_BATCH as u64,
            "sweeping stalled with {} keys due",
            d.kv().expires_count()
        );
    }
    assert_eq!(d.kv().len(), 7, "every expired key is gone, the 7 busy keys stay");
}
