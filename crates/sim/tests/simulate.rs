//! Runs the simulator over many seeds. `RAFT_SIM_SEEDS=N` sets the number of seeds (default 500),
//! `RAFT_SIM_SEED=S` runs seed S alone (and prints its report).

use sim::{replay_command, run_seed};

const SHARDS: u64 = 4;

fn seeds_for(shard: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("RAFT_SIM_SEED") {
        let seed: u64 = seed.parse().expect("RAFT_SIM_SEED must be a number");
        return if shard == 0 { vec![seed] } else { vec![] };
    }
    let count: u64 = std::env::var("RAFT_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let base: u64 = std::env::var("RAFT_SIM_BASE").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (0..count).filter(|i| i % SHARDS == shard).map(|i| base + i).collect()
}

fn run_shard(shard: u64) {
    let single = std::env::var("RAFT_SIM_SEED").is_ok();
    let mut failures = Vec::new();
    for seed in seeds_for(shard) {
        match run_seed(seed) {
            Ok(report) => {
                if single {
                    println!("seed {seed}: {report:?}");
                }
            }
            Err(f) => {
                eprintln!("seed {} FAILED: {}\n  replay: {}", f.seed, f.reason, replay_command(f.seed));
                failures.push(f.seed);
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn seeds_shard_0() {
    run_shard(0);
}

#[test]
fn seeds_shard_1() {
    run_shard(1);
}

#[test]
fn seeds_shard_2() {
    run_shard(2);
}

#[test]
fn seeds_shard_3() {
    run_shard(3);
}

#[test]
fn seeds_that_once_failed_pass() {
    // Liveness failures of a network that reordered every message, also after the faults stopped
    // (one entry per AppendEntries, 1-24 ms delays: appends overtook each other, followers
    // rejected the gaps, leaders kept probing and a follower fell behind its clients).
    for seed in [303232, 703472] {
        if let Err(f) = run_seed(seed) {
            panic!("seed {} FAILED: {}\n  replay: {}", f.seed, f.reason, replay_command(f.seed));
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run_seed(12345).expect("seed 12345 passes");
    let b = run_seed(12345).expect("seed 12345 passes");
    assert_eq!(a, b);
    assert!(a.events > 1000 && a.completed > 50, "{a:?}");
}

#[test]
fn the_simulator_exercises_snapshots_and_install_snapshot() {
    // Snapshots, log compaction and InstallSnapshot must actually happen under the faults, not
    // just be configured: count them over a fixed set of seeds.
    let (mut taken, mut installed, mut chunks, mut runs_with_install) = (0, 0, 0, 0);
    let (mut restores, mut interleaved) = (0, 0);
    for seed in 1_000_000..1_000_060 {
        let r = run_seed(seed).unwrap_or_else(|f| panic!("seed {} failed: {}", f.seed, f.reason));
        taken += r.snapshots.0;
        installed += r.snapshots.1;
        chunks += r.snapshots.2;
        runs_with_install += u64::from(r.snapshots.1 > 0);
        restores += r.restores.0;
        interleaved += r.restores.1;
    }
    println!("60 seeds: {taken} snapshots taken, {installed} installed from a leader ({runs_with_install} runs), {chunks} chunks sent; {restores} restore jobs, {interleaved} with other batches of their node meanwhile");
    // Every install goes through a restore job, and most jobs overlap other work of their node.
    assert!(restores >= installed, "restore jobs {restores} < installs {installed}");
    assert!(
        interleaved * 3 >= restores && interleaved >= 50,
        "restore jobs with other batches meanwhile: {interleaved} of {restores}"
    );
    assert!(taken >= 100, "snapshots taken: {taken}");
    assert!(
        runs_with_install >= 10,
        "runs where a follower installed a leader's snapshot: {runs_with_install}"
    );
}

#[test]
fn the_simulator_exercises_membership_changes() {
    // Every run changes the membership; over a fixed set of seeds, every kind of change must
    // actually commit under the faults, the leader's own removal and transfers included.
    let mut total = sim::membership::OperatorStats::default();
    let (mut changes, mut runs_with_change) = (0, 0);
    for seed in 2_000_000..2_000_060 {
        let r = run_seed(seed).unwrap_or_else(|f| panic!("seed {} failed: {}", f.seed, f.reason));
        changes += r.config_changes;
        runs_with_change += u64::from(r.config_changes > 0);
        let m = r.membership;
        total.added += m.added;
        total.promoted += m.promoted;
        total.removed += m.removed;
        total.leaders_removed += m.leaders_removed;
        total.transfers += m.transfers;
        total.retries += m.retries;
    }
    println!(
        "60 seeds: {changes} configuration changes committed ({runs_with_change} runs); operator: {total:?}"
    );
    assert!(runs_with_change >= 50, "runs with a committed change: {runs_with_change}");
    assert!(total.added >= 30 && total.promoted >= 20 && total.removed >= 20, "{total:?}");
    assert!(total.leaders_removed >= 5 && total.transfers >= 10, "{total:?}");
}

#[test]
fn the_simulator_runs_and_aborts_watched_transactions() {
    // WATCH-guarded transactions must both run and abort under the faults (an EXEC that never
    // runs checks nothing; one that never aborts never met a concurrent write).
    let (mut ran, mut aborted, mut runs_with_both) = (0, 0, 0);
    for seed in 3_000_000..3_000_020 {
        let r = run_seed(seed).unwrap_or_else(|f| panic!("seed {} failed: {}", f.seed, f.reason));
        ran += r.watched.0;
        aborted += r.watched.1;
        runs_with_both += u64::from(r.watched.0 > 0 && r.watched.1 > 0);
    }
    println!("20 seeds: {ran} watched transactions ran, {aborted} aborted ({runs_with_both} runs with both)");
    assert!(
        ran >= 40 && aborted >= 40 && runs_with_both >= 10,
        "ran {ran} aborted {aborted} runs {runs_with_both}"
    );
}
