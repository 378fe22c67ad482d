//! The leader reclaims expired keys through sweeps that are small and paced (`driver::clock`): at
//! most [`engine::SWEEP_BATCH`] keys per sweep and at most one sweep proposed per tick, however
//! many keys are due, so expiry holds every replica's node thread for about a millisecond at a
//! time and for a bounded share of its time; and it keeps sweeping until every due key is gone.

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
fn due_keys_are_swept_one_batch_per_tick_until_none_is_left() {
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

    // Their deadline passes. Batches without a tick (the node thread woken by other inputs) do
    // not sweep again; each tick sweeps at most one batch more.
    let later = T0 + 2_000;
    common::run_at(&mut d, vec![], later).0.expect("batch");
    let first = KEYS - d.kv().expires_count() as u64;
    assert_eq!(first, SWEEP_BATCH as u64, "one sweep of SWEEP_BATCH keys once the deadline passed");
    for _ in 0..5 {
        common::run_at(&mut d, vec![], later).0.expect("batch");
    }
    assert_eq!(KEYS - d.kv().expires_count() as u64, first, "no second sweep within the same tick");
    let mut ticks = 0;
    while d.kv().expires_count() > 0 {
        let before = d.kv().expires_count();
        common::run_at(&mut d, vec![Input::Tick], later).0.expect("tick");
        common::run_at(&mut d, vec![], later).0.expect("batch");
        let swept = before - d.kv().expires_count();
        assert!(swept <= SWEEP_BATCH as usize, "{swept} keys swept in one tick");
        ticks += 1;
        assert!(
            ticks <= KEYS / SWEEP_BATCH as u64 + 2,
            "sweeping stalled with {} keys due",
            d.kv().expires_count()
        );
    }
    assert_eq!(d.kv().len(), 0, "every expired key is gone");
}
