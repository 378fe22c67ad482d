//! The shape of one simulated run ([`SimConfig`]), drawn from its seed: cluster size, clients,
//! faults, Raft and storage settings. Every knob that can hide a bug is varied across runs.

use engine::SnapshotConfig;
use raft::Rng;

use crate::network::NetConfig;

/// The shape of one simulated run, drawn from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Cluster size (3 or 5).
    pub nodes: u64,
    /// Number of clients.
    pub clients: u64,
    /// Number of hot keys.
    pub keys: u64,
    /// Network faults while the nemesis is active.
    pub net: NetConfig,
    /// Virtual time during which faults happen.
    pub fault_ms: u64,
    /// Virtual time after the faults stop, for liveness.
    pub calm_ms: u64,
    /// Mean time between nemesis actions.
    pub nemesis_every_ms: u64,
    /// Whether nodes crash and restart.
    pub crashes: bool,
    /// Whether the network is partitioned.
    pub partitions: bool,
    /// Probability, per node and step, that the node's next fsync fails: the node then crashes
    /// after having sent its early messages (a leader's appends) but before its log was durable.
    pub disk_faults: f64,
    /// Raft PreVote on or off (it hides election bugs when always on).
    pub pre_vote: bool,
    /// Raft CheckQuorum on or off (it shortens the life of a deposed leader when on).
    pub check_quorum: bool,
    /// Most entries per AppendEntries (small values make followers acknowledge log prefixes).
    pub max_entries: usize,
    /// Probability that a new leader is crashed right after its election (with `crashes`).
    pub churn: f64,
    /// Snapshot settings (`entries` 0: no snapshots in this run).
    pub snapshot: SnapshotConfig,
    /// Longest virtual time a snapshot job takes (it completes after a random delay up to this).
    pub snapshot_job_ms: u64,
    /// Probability that a node crashes right after writing a snapshot, before installing it (and
    /// right after loading a received one, before installing it).
    pub snapshot_crash: f64,
    /// Longest virtual time a restore job (checking and loading a received snapshot) takes: it
    /// completes after a random delay up to this, while the node goes on with other inputs
    /// (appends, heartbeats, requests, more chunks). Up to beyond a leader's `abort_ticks`.
    pub restore_job_ms: u64,
    /// Nodes hand their fdatasyncs out as sync jobs (as the server does by default, on its
    /// `raft-sync` thread) instead of syncing inline (the server's `--sync-thread false`).
    pub deferred_sync: bool,
    /// Longest virtual time a sync job takes (it completes after a random delay up to this).
    pub sync_job_ms: u64,
    /// Longest time inputs queue at a node before its thread runs them as one batch.
    pub batch_ms: u64,
    /// Most work (inputs, counting carried log entries: [`engine::work`]) in one batch; the rest
    /// waits for the next run. The server's bound, or smaller ones that split batches often.
    pub batch_work: usize,
    /// Probability, per batch during the faults, that the node thread stalls for one to three
    /// election timeouts first.
    pub stall: f64,
    /// Longest time a batch that syncs keeps the node thread busy.
    pub disk_ms: u64,
    /// Probability, per batch that syncs during the faults, that the disk takes one to three
    /// election timeouts.
    pub slow_disk: f64,
    /// Most AppendEntries in flight per follower.
    pub max_inflight: usize,
    /// Most writes in flight per node ([`DriverConfig::write_window`]).
    pub write_window: usize,
    /// Lease reads ([`raft::ReadMode::Lease`]; CheckQuorum is then on) instead of ReadIndex.
    pub lease_reads: bool,
    /// The nodes' clocks drift: each node's tick period is drawn from 9, 10 or 11 ms (the lease's
    /// drift bound covers it, see `World::driver_config`).
    pub clock_drift: bool,
}

impl SimConfig {
    /// Draws a configuration from `rng`.
    pub fn random(rng: &mut Rng) -> SimConfig {
        let mut cfg = SimConfig {
            nodes: if rng.chance(0.5) { 3 } else { 5 },
            clients: rng.range(2, 7),
            keys: rng.range(1, 4),
            net: NetConfig {
                drop: [0.0, 0.01, 0.05, 0.15][rng.range(0, 4) as usize],
                duplicate: [0.0, 0.02, 0.1][rng.range(0, 3) as usize],
                min_delay: 1,
                max_delay: rng.range(2, 25),
                spike: [0.0, 0.01, 0.05][rng.range(0, 3) as usize],
                reorder: false,
            },
            fault_ms: 3_000,
            calm_ms: 3_000,
            nemesis_every_ms: rng.range(100, 600),
            crashes: rng.chance(0.8),
            partitions: rng.chance(0.8),
            disk_faults: [0.0, 0.0005, 0.003][rng.range(0, 3) as usize],
            pre_vote: rng.chance(0.5),
            check_quorum: rng.chance(0.5),
            max_entries: [1, 2, 64][rng.range(0, 3) as usize],
            churn: [0.0, 0.5, 0.9][rng.range(0, 3) as usize],
            snapshot: SnapshotConfig {
                entries: [0, 3, 8, 30, 120][rng.range(0, 5) as usize],
                log_bytes: 0,
                keep_entries: [0, 4, 25][rng.range(0, 3) as usize],
                chunk_size: [48, 300, 4096][rng.range(0, 3) as usize],
                window: rng.range(1, 9) as usize,
                retransmit_ticks: 10,
                abort_ticks: 60,
            },
            snapshot_job_ms: [0, 30, 300][rng.range(0, 3) as usize],
            snapshot_crash: [0.0, 0.1][rng.range(0, 2) as usize],
            deferred_sync: rng.chance(0.5),
            sync_job_ms: [0, 1, 5, 30][rng.range(0, 4) as usize],
            batch_ms: [0, 1, 3, 10][rng.range(0, 4) as usize],
            batch_work: [64, 512, engine::MAX_BATCH_WORK, engine::MAX_BATCH_WORK][rng.range(0, 4) as usize],
            stall: [0.0, 0.0, 0.002, 0.01][rng.range(0, 4) as usize],
            disk_ms: [0, 1, 2][rng.range(0, 3) as usize],
            slow_disk: [0.0, 0.0, 0.002, 0.01][rng.range(0, 4) as usize],
            max_inflight: [8, 64, 256][rng.range(0, 3) as usize],
            write_window: [2, 8, engine::DEFAULT_WRITE_WINDOW][rng.range(0, 3) as usize],
            lease_reads: false,
            clock_drift: false,
            restore_job_ms: 0,
        };
        if rng.chance(0.25) {
            // A snapshot storm: compaction races replication, so followers are sent snapshots while
            // entries (and late acknowledgements) are still in flight, deep pipelines included.
            cfg.snapshot.entries = rng.range(3, 6);
            cfg.snapshot.keep_entries = rng.range(0, 3);
            cfg.max_inflight = [64, 256][rng.range(0, 2) as usize];
        }
        if rng.chance(0.3) {
            // Every message takes the same time: what a node sends together arrives together.
            cfg.net.min_delay = cfg.net.max_delay;
        }
        if rng.chance(0.15) {
            // More clients on more keys, so writes queue behind a small window. (The cluster must
            // keep up once the faults stop: entries travel in batches.)
            cfg.clients = rng.range(8, 14);
            cfg.keys = cfg.clients / 3;
            cfg.max_entries = 64;
        }
        // Drawn last, so the other knobs of a seed stay what they were before leases existed.
        cfg.lease_reads = rng.chance(0.5);
        cfg.clock_drift = rng.chance(0.5);
        if cfg.lease_reads {
            cfg.check_quorum = true;
        }
        // From a side generator, so that the run's own sequence (and with it every run without
        // received snapshots) stays what it was before restore jobs existed.
        let mut side = Rng::new(rng.clone().next_u64() ^ 0x7265_7374_6f72_6531);
        cfg.restore_job_ms = [0, 20, 120, 300][side.range(0, 4) as usize];
        // A network without ordering while the faults last, in a quarter of the runs (the others
        // keep each link's order as the transport does, see `crate::network`).
        cfg.net.reorder = side.chance(0.25);
        cfg
    }
}
