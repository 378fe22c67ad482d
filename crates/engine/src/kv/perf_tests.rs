//! Release-mode timings of the state machine, `#[ignore]`d so that the normal test run stays
//! fast. Run them with
//! `cargo test -p engine --release --lib kv::perf_tests -- --ignored --nocapture --test-threads 1`.
//!
//! Workload: 1M distinct 16-byte keys (a bijective mix of the counter, so insertion order is
//! random) with 100-byte values, written by `SET` proposals of one session that acknowledges
//! every previous reply (the steady state of a raft-kv server).

use std::time::Instant;

use bytes::Bytes;

use super::*;

const N: u64 = 1_000_000;
const VALUE_LEN: usize = 100;

/// A bijection on u64 (SplitMix64's finaliser), so the keys are distinct and unordered.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key(i: u64) -> Bytes {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    Bytes::copy_from_slice(&k)
}

fn value(i: u64) -> Bytes {
    let mut v = vec![b'v'; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

/// The `i`-th SET, from session 7 (acknowledging every earlier reply) or without a session.
fn set_proposal(i: u64, session: bool) -> Bytes {
    let command = Command::Set { key: key(i), value: value(i), condition: SetCondition::Always, get: false };
    let (session, seq) = if session { (7, i + 1) } else { (NO_SESSION, 0) };
    encode_proposal(&Proposal { session, seq, ack_below: seq, command })
}

/// Applies `N` SETs (timing only `apply`, not the encoding) and returns the store.
fn apply_n(session: bool, print: bool) -> KvStore {
    const CHUNK: u64 = 100_000;
    let mut store = KvStore::new();
    let mut spent = std::time::Duration::ZERO;
    for start in (0..N).step_by(CHUNK as usize) {
        let entries: Vec<Bytes> = (start..start + CHUNK).map(|i| set_proposal(i, session)).collect();
        let t = Instant::now();
        for (i, e) in (start..).zip(&entries) {
            store.apply(i + 1, e).expect("valid entry");
        }
        spent += t.elapsed();
    }
    if print {
        println!(
            "apply (session: {session}): {N} SETs in {:.3} s = {:.0} ns/apply ({:.0} applies/s)",
            spent.as_secs_f64(),
            spent.as_nanos() as f64 / N as f64,
            N as f64 / spent.as_secs_f64()
        );
    }
    assert_eq!(store.len(), N as usize);
    store
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn apply_throughput_1m_sets() {
    apply_n(false, true);
    apply_n(true, true);
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn snapshot_and_restore_1m_keys() {
    let store = apply_n(true, false);
    let t = Instant::now();
    let image = store.snapshot();
    println!("snapshot(): {} bytes in {:.3} s", image.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let restored = KvStore::restore(&image).expect("restore");
    println!("restore(): {} keys in {:.3} s", restored.len(), t.elapsed().as_secs_f64());
    assert_eq!(restored.len(), N as usize);
    assert_eq!(restored.applied_index(), N);
    let t = Instant::now();
    drop(restored);
    println!("drop of the restored store: {:.3} s", t.elapsed().as_secs_f64());
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn snapshot_view_and_streaming_1m_keys() {
    let mut store = apply_n(true, false);
    let t = Instant::now();
    let view = store.snapshot_view();
    println!("snapshot_view() with 1M keys: {:.1} us", t.elapsed().as_secs_f64() * 1e6);
    let t = Instant::now();
    let n = view.write_to(&mut std::io::sink()).expect("sink");
    println!("write_to(sink): {n} bytes in {:.3} s", t.elapsed().as_secs_f64());

    // Writes while the view is alive pay the copy-on-write of the paths they touch (session-less
    // SETs of existing keys, so that the comparison is about the map alone).
    const M: u64 = 100_000;
    let overwrite: Vec<Bytes> = (0..M).map(|i| set_proposal(i * 7, false)).collect();
    let t = Instant::now();
    for (j, e) in overwrite.iter().enumerate() {
        store.apply(N + 1 + j as u64, e).expect("valid entry");
    }
    let shared = t.elapsed();
    drop(view);
    let overwrite: Vec<Bytes> = (0..M).map(|i| set_proposal(i * 7 + 3, false)).collect();
    let t = Instant::now();
    for (j, e) in overwrite.iter().enumerate() {
        store.apply(N + M + 1 + j as u64, e).expect("valid entry");
    }
    let unshared = t.elapsed();
    println!(
        "{M} overwriting SETs: {:.0} ns/apply while a view shares the map, {:.0} ns/apply after it is dropped",
        shared.as_nanos() as f64 / M as f64,
        unshared.as_nanos() as f64 / M as f64
    );
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn snapshot_view_with_full_session_table() {
    for replies in [1u64, 16, 256] {
        let mut store = KvStore::new();
        let mut index = 0;
        for session in 1..=MAX_SESSIONS as u64 {
            for seq in 1..=replies {
                index += 1;
                let command = Command::IncrBy { key: key(session), by: 1 };
                let e = encode_proposal(&Proposal { session, seq, ack_below: 1, command });
                store.apply(index, &e).expect("valid entry");
            }
        }
        assert_eq!(store.cached_reply_count() as u64, MAX_SESSIONS as u64 * replies);
        let t = Instant::now();
        let view = store.snapshot_view();
        let took = t.elapsed();
        println!(
            "snapshot_view() with {} sessions x {replies} cached replies: {:.1} us",
            view.session_count(),
            took.as_secs_f64() * 1e6
        );
    }
}

/// The session bookkeeping dominates here: 1M `INCR`s of one key from 4 interleaved sessions,
/// each keeping 32 replies cached (its proposer's window).
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn apply_throughput_sessions_small_state() {
    const WINDOW: u64 = 32;
    let entries: Vec<Bytes> = (0..N)
        .map(|i| {
            let seq = i / 4 + 1;
            let command = Command::IncrBy { key: Bytes::from_static(b"counter"), by: 1 };
            encode_proposal(&Proposal {
                session: 1 + i % 4,
                seq,
                ack_below: seq.saturating_sub(WINDOW).max(1),
                command,
            })
        })
        .collect();
    let mut store = KvStore::new();
    let t = Instant::now();
    for (i, e) in (1..).zip(&entries) {
        store.apply(i, e).expect("valid entry");
    }
    let spent = t.elapsed();
    assert_eq!(store.cached_reply_count() as u64, 4 * (WINDOW + 1));
    println!(
        "apply: {N} INCRs of one key from 4 sessions in {:.3} s = {:.0} ns/apply",
        spent.as_secs_f64(),
        spent.as_nanos() as f64 / N as f64
    );
}

/// 1M keys whose deadlines fall in a 5 s window, removed by sweeps of
/// [`crate::SWEEP_BATCH`] keys: the apply time of one sweep is how long it holds a
/// replica's node thread (and so every write behind it). `PERF_SWEEP_VIEW=1` holds a snapshot view
/// while sweeping (copy-on-write of every path touched).
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn sweep_apply_time_1m_keys() {
    const AT: i64 = 1_800_000_000_000;
    const WINDOW: i64 = 5_000;
    let mut store = KvStore::new();
    for i in 0..N {
        let command = Command::SetEx {
            key: key(i),
            value: value(i),
            condition: SetCondition::Always,
            get: false,
            expiry: SetExpiry::At(AT + (i as i64 % WINDOW)),
            origin: ExpiryOrigin::Set,
        };
        let p = encode_proposal(&Proposal { session: NO_SESSION, seq: 0, ack_below: 0, command });
        store.apply(i + 1, &stamp_entry(&p, AT as u64 - 10_000)).expect("valid entry");
    }
    let view = std::env::var("PERF_SWEEP_VIEW").is_ok().then(|| store.snapshot_view());
    let sweep = encode_proposal(&Proposal {
        session: NO_SESSION,
        seq: 0,
        ack_below: 0,
        command: Command::Sweep { max: crate::SWEEP_BATCH },
    });
    let mut times = Vec::new();
    let mut index = N + 1;
    let t0 = Instant::now();
    while store.expires_count() > 0 {
        let entry = stamp_entry(&sweep, (AT + WINDOW) as u64);
        let t = Instant::now();
        store.apply(index, &entry).expect("valid entry");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        index += 1;
    }
    let total = t0.elapsed().as_secs_f64();
    drop(view);
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "{} sweeps of {} keys (view held: {}): per sweep p50 {:.2} p99 {:.2} max {:.2} ms; {:.2} s in all",
        times.len(),
        crate::SWEEP_BATCH,
        std::env::var("PERF_SWEEP_VIEW").is_ok(),
        q(0.5),
        q(0.99),
        q(1.0),
        total
    );
}
