//! The simulated world: several real replicas (real Raft core, real storage over the
//! crash-simulating [`MemFs`], real KV state machine), each run by the real host loop
//! ([`engine::run_batch`], the same code the server's node thread runs), a seeded network, a
//! nemesis and clients, advanced event by event in virtual time (1 unit = 1 ms). One u64 seed
//! determines everything.
//!
//! Node threads: inputs (messages, client requests, ticks, reports of background work) queue at
//! their node and are run as one batch when the node's thread gets to them, as the server forms
//! its batches: a batch forms for a random while (0 to `batch_ms`), the thread may stall for one
//! to three election timeouts, a batch that syncs keeps the thread busy for the disk's time (now
//! and then one to three election timeouts: a slow disk), and everything that arrives meanwhile
//! lands in the next batch. A batch takes at most `batch_work` (the server's bound
//! [`engine::MAX_BATCH_WORK`] or smaller, see [`engine::take_batch`]); what does not fit runs next,
//! as soon as the thread is free. In some runs every message takes the same time on the wire, so what a
//! leader sends together (AppendEntries and snapshot chunks) arrives together.
//!
//! Background jobs (a snapshot to write, a received snapshot to check and load, a deferred sync)
//! complete after a random virtual delay, during which their node goes on running batches:
//! a restore job (up to `restore_job_ms`, past a leader's retransmit delay) overlaps heartbeats,
//! appends from a new leader, client requests, further chunks of the same or of a newer snapshot,
//! term changes and crashes, so every re-check the driver makes when the outcome arrives is
//! exercised ([`Report::restores`] counts the jobs that overlapped other batches).
//!
//! After every event the invariants of [`crate::invariants`] are checked; every acknowledgement
//! of log entries leaving a node is checked to be covered by what its disk holds durably (or its
//! snapshot); every proposal is checked to run at most once across the cluster; every read is
//! checked to be served from a state that includes every index committed when it was issued
//! (ReadIndex); a host loop that does not settle (a spin) stops its node and fails the run; at
//! the end the history is checked for linearizability and the cluster for liveness (once the
//! faults stop, a leader is elected and every request completes).
//!
//! Membership: in every run an operator changes the cluster (add learners, promote, remove voters
//! and the leader, replace nodes, 3 -> 5 -> 3, transfer leadership) through the admin requests the
//! server submits, under all the faults; see [`crate::membership`] for the plans and the checks
//! that go with them.
//!
//! Faults: message loss, duplication and delay, on links that keep their order while their
//! connection lives, reordering across reconnections and, in some runs, everywhere while the faults
//! last (see [`crate::network`]); symmetric, isolating (usually the leader, for long) and one-way
//! partitions, each healed on its own; crashes (power failures: the disk loses unsynced data,
//! undelivered messages of the node are lost half the time), including
//! crashes in the middle of a sync (messages queued before it are out) and, in some runs, crashes of
//! most new leaders right after their election (Figure 8); stalled node threads and slow disks.
//! Runs also vary PreVote, CheckQuorum, the AppendEntries batch size and pipeline depth, snapshot
//! frequency (down to a few entries, keeping none behind), and the write window (down to a few
//! writes, so back-pressure is exercised), since each of them can hide bugs.
//!
//! Lease reads: half of the runs use [`raft::ReadMode::Lease`]. Their nodes' clocks may drift
//! (tick periods of 9 to 11 ms, within the configured drift bound), ticks that pile up while a
//! thread stalls reach the node as one `Input::Ticks(n)` (as the server does), half of the clients
//! send to a node that believes it leads, and the nemesis also stalls the leader past its lease
//! while cutting it off, and transfers leadership while the old leader hears nothing. The stale
//! read check and the linearizability checker see the reads. Mutations caught (500 seeds each):
//! a lease of twice the election timeout, and a lease kept across a transfer (see the notes of
//! issue 17; the scenario tests in `raft/tests/lease.rs` catch both directly).
//!
//! What the simulator does not run: the transport and the wire encoding (messages are delivered as
//! values), the RESP server, threads (background jobs run at a random later virtual time), and real
//! clocks. Those are covered by the real-process tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use engine::{Driver, DriverConfig, FatalError, Input, PeerMessage, RestoreJob, SnapshotJob, SyncJob};
use raft::{Membership, NodeId, Rng, Role};
use storage::{FaultOp, LogOptions, MemFs};

pub use crate::config::SimConfig;
use crate::invariants::Invariants;
use crate::io::SimIo;
use crate::linearizability::{self, CheckResult, Op, Operation};
use crate::membership::{self, Action, MembershipChecks, Operator};
use crate::network::{Lane, Network};
use crate::trace::{self, LinkTrace, Trace};
use crate::workload::Client;

mod clients;
mod faults;

/// The wall clock of virtual time 0 (1 Jan 2026), so deadlines look like real ones.
const CLOCK_EPOCH_MS: u64 = 1_767_225_600_000;

/// Ticks: one every 10 ms of virtual time.
pub const TICK_MS: u64 = 10;

/// Something scheduled to happen.
#[derive(Clone, Debug)]
enum Event {
    /// A node's tick.
    Tick(NodeId),
    /// A message arrives.
    Deliver(PeerMessage),
    /// A client issues its next request.
    ClientWake(u64),
    /// The nemesis acts.
    Nemesis,
    /// A crashed node comes back.
    Restart(NodeId),
    /// A node crashes (leader churn).
    Crash(NodeId),
    /// A partition ends: its own cuts are removed (a later partition stays).
    Heal(Vec<(NodeId, NodeId)>),
    /// Faults stop for good.
    Calm,
    /// A node's snapshot job completes (if the node's incarnation is still this one).
    SnapshotDone(NodeId, u64),
    /// A node's sync job completes (if the node's incarnation is still this one).
    SyncDone(NodeId, u64),
    /// A node's restore job completes (if the node's incarnation is still this one).
    RestoreDone(NodeId, u64),
    /// A node's thread runs the inputs queued for it as one batch (if the incarnation matches).
    Run(NodeId, u64),
    /// The membership operator acts.
    Operator,
}

/// One simulated node.
struct SimNode {
    /// The running replica; None while crashed.
    driver: Option<Driver<MemFs>>,
    /// The membership it was bootstrapped with (empty for a node added later).
    bootstrap: Membership,
    /// Its disk (survives crashes, losing what was not synced).
    fs: MemFs,
    /// Incarnation counter (for session ids).
    incarnation: u64,
    /// A sync failure is armed on this node's disk.
    fault_armed: bool,
    /// The snapshot job in progress.
    job: Option<SnapshotJob<MemFs>>,
    /// The restore job in progress (a received snapshot being checked and loaded).
    restore: Option<RestoreJob<MemFs>>,
    /// Batches the node ran while its restore job was out.
    restore_batches: u64,
    /// The newest sync job not yet run (it covers the older ones).
    sync: Option<SyncJob<MemFs>>,
    /// Inputs waiting for the node thread.
    inbox: Vec<Input>,
    /// A [`Event::Run`] is scheduled.
    run_scheduled: bool,
    /// The node thread is busy (a stall, the disk) until this time.
    busy_until: u64,
    /// This node's tick period in virtual ms (its clock's rate; see `SimConfig::clock_drift`).
    tick_ms: u64,
    /// The nemesis stalls this node's thread at its next batch.
    stall_next: bool,
}

/// Why a run failed.
#[derive(Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
}

/// Summary of a successful run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events processed.
    pub events: u64,
    /// Hash of the event sequence (same seed, same hash).
    pub trace_hash: u64,
    /// Operations in the history (completed and indeterminate).
    pub operations: usize,
    /// Completed operations.
    pub completed: usize,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Highest commit index reached.
    pub commit: u64,
    /// Leaders elected (distinct terms with a leader).
    pub terms_with_leader: usize,
    /// Snapshots taken, installed from a leader, and chunks sent (summed over incarnations).
    pub snapshots: (u64, u64, u64),
    /// What the membership operator did.
    pub membership: membership::OperatorStats,
    /// Configuration changes committed.
    pub config_changes: usize,
    /// Reads ran in lease mode ([`SimConfig::lease_reads`]).
    pub lease_reads: bool,
    /// Leader threads the nemesis stalled (lease runs).
    pub leader_stalls: u64,
    /// Leadership transfers the nemesis asked for (lease runs).
    pub transfers: u64,
    /// WATCH-guarded transactions answered: (ran, aborted).
    pub watched: (usize, usize),
    /// Restore jobs (received snapshots checked and loaded) that completed, and those during which
    /// their node ran other batches (appends, heartbeats, requests, chunks).
    pub restores: (u64, u64),
}

/// The world.
pub struct World {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    events: BTreeMap<(u64, u64), Event>,
    next_event: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    net: Network,
    calm: bool,
    clients: Vec<Client>,
    history: Vec<Operation>,
    /// Request id -> client index.
    requests: BTreeMap<u64, usize>,
    /// Read request id -> highest index committed anywhere when it was issued: ReadIndex must
    /// serve it from a state that includes that index.
    read_floor: BTreeMap<u64, u64>,
    /// Requests the nemesis submitted (leadership transfers in lease runs); answers are ignored.
    nemesis_requests: std::collections::BTreeSet<u64>,
    next_request: u64,
    invariants: Invariants,
    report: Report,
    /// Highest term in which a leader was seen (for leader churn).
    last_leader_term: u64,
    /// Time from which every request must succeed (liveness), once calm.
    must_succeed_after: u64,
    /// Changes the membership.
    operator: Operator,
    /// Checks what membership changes must not break.
    mchecks: MembershipChecks,
    /// Nodes stopped for good (decommissioned after their removal).
    retired: std::collections::BTreeSet<NodeId>,
    /// What explains elections, printed with a failure (see [`crate::trace`]).
    trace: Trace,
    /// The replication between two nodes, printed as it happens if asked for (`RAFT_SIM_LINK`).
    link_trace: LinkTrace,
}

fn data_dir() -> PathBuf {
    PathBuf::from("/data")
}

impl World {
    /// Builds the world of `seed`.
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let cfg = SimConfig::random(&mut rng);
        Self::with_config(seed, cfg, rng)
    }

    /// Builds a world with an explicit configuration.
    pub fn with_config(seed: u64, cfg: SimConfig, mut rng: Rng) -> World {
        let operator = Operator::new(&mut rng, cfg.nodes);
        let mut w = World {
            seed,
            rng,
            now: 0,
            events: BTreeMap::new(),
            next_event: 0,
            nodes: BTreeMap::new(),
            net: Network::default(),
            calm: false,
            clients: Vec::new(),
            history: Vec::new(),
            requests: BTreeMap::new(),
            read_floor: BTreeMap::new(),
            nemesis_requests: std::collections::BTreeSet::new(),
            next_request: 1,
            invariants: Invariants::default(),
            report: Report { lease_reads: cfg.lease_reads, ..Report::default() },
            must_succeed_after: u64::MAX,
            last_leader_term: 0,
            operator,
            mchecks: MembershipChecks::new(membership::bootstrap(cfg.nodes)),
            retired: std::collections::BTreeSet::new(),
            trace: Trace::new(),
            link_trace: LinkTrace::from_env(),
            cfg,
        };
        for id in 1..=w.cfg.nodes {
            let tick_ms = w.tick_period();
            w.nodes.insert(
                id,
                SimNode {
                    driver: None,
                    bootstrap: membership::bootstrap(w.cfg.nodes),
                    fs: MemFs::new(),
                    incarnation: 0,
                    fault_armed: false,
                    job: None,
                    restore: None,
                    restore_batches: 0,
                    sync: None,
                    inbox: Vec::new(),
                    run_scheduled: false,
                    busy_until: 0,
                    tick_ms,
                    stall_next: false,
                },
            );
            w.start_node(id).expect("a fresh node starts");
            let phase = w.rng.range(0, TICK_MS);
            w.schedule(phase, Event::Tick(id));
        }
        for c in 0..w.cfg.clients {
            w.clients.push(Client { id: c + 1, outstanding: None, txn: false, counter: 0, watch: None });
            let delay = w.rng.range(0, 50);
            w.schedule(delay, Event::ClientWake(c));
        }
        let first = w.rng.range(0, w.cfg.nemesis_every_ms * 2);
        w.schedule(first, Event::Nemesis);
        let first = w.rng.range(100, 600);
        w.schedule(first, Event::Operator);
        let fault_ms = w.cfg.fault_ms;
        w.schedule(fault_ms, Event::Calm);
        w
    }

    fn driver_config(&mut self, id: NodeId) -> DriverConfig {
        let incarnation = self.nodes[&id].incarnation;
        // The membership comes from the bootstrap one and the log (see `start_node`).
        let mut raft = raft::Config::new(id, Vec::new());
        raft.election_ticks = 15;
        raft.heartbeat_ticks = 3;
        raft.max_entries_per_message = self.cfg.max_entries;
        raft.pre_vote = self.cfg.pre_vote;
        raft.check_quorum = self.cfg.check_quorum;
        raft.max_inflight_messages = self.cfg.max_inflight;
        raft.max_promote_lag = membership::CAUGHT_UP;
        raft.seed = self.seed ^ (id << 32) ^ incarnation;
        if self.cfg.lease_reads {
            raft.read_mode = raft::ReadMode::Lease;
            // Tick periods of 9 to 11 ms: over an election timeout (15 ticks) a fast follower's
            // refusal lasts 14 x 9 = 126 ms after a heartbeat, a slow leader serves until
            // (lease - 1) x 11 ms after sending it: a lease of 11 ticks (110 ms) fits.
            raft.lease_drift_ticks = if self.cfg.clock_drift { 4 } else { 1 };
        }
        DriverConfig {
            raft,
            session: self.rng.next_u64().max(1),
            request_timeout_ticks: 100,
            forward_retry_ticks: 20,
            limbo_ticks: 1000,
            write_window: self.cfg.write_window,
            log: LogOptions { segment_size: 4096, ..LogOptions::default() },
            snapshot: self.cfg.snapshot.clone(),
            deferred_sync: self.cfg.deferred_sync,
            record_applies: true,
        }
    }

    fn start_node(&mut self, id: NodeId) -> Result<(), String> {
        let cfg = self.driver_config(id);
        let node = self.nodes.get_mut(&id).ok_or("no such node")?;
        node.incarnation += 1;
        node.inbox.clear();
        node.run_scheduled = false;
        node.busy_until = 0;
        let driver = Driver::open_with(node.fs.clone(), &data_dir(), cfg, node.bootstrap.clone())
            .map_err(|e| format!("node {id} failed to recover: {e}"))?;
        let recovered = driver.store().hard_state();
        self.trace.started(self.now, id, node.incarnation, node.tick_ms, driver.node());
        node.driver = Some(driver);
        self.invariants.restarted(id);
        self.mchecks.restarted(id);
        self.invariants.check_recovered(id, recovered)?;
        Ok(())
    }

    /// A new node's tick period: 9, 10 or 11 ms when clocks drift in this run, else 10 ms.
    fn tick_period(&mut self) -> u64 {
        if self.cfg.clock_drift {
            self.rng.range(TICK_MS - 1, TICK_MS + 2)
        } else {
            TICK_MS
        }
    }

    /// The link `from -> to` is redialled (its connection was closed: silence for an idle
    /// timeout, a crash): each message still in flight on the old connection is lost with
    /// probability 1/2 (unread when the new connection replaced it), the others arrive when they
    /// arrive, and what is sent from now on does not wait for them (see [`crate::network`]).
    fn reconnect(&mut self, from: NodeId, to: NodeId) {
        self.net.reconnect(from, to);
        let mut lost = Vec::new();
        for (key, event) in &self.events {
            if matches!(event, Event::Deliver(m) if m.from() == from && m.to() == to) && self.rng.chance(0.5)
            {
                lost.push(*key);
            }
        }
        for key in lost {
            self.events.remove(&key);
        }
    }

    /// Every link to and from node `id` is redialled: its thread or its disk kept it silent for
    /// longer than the peers' idle timeout (an election timeout), so they closed their connections.
    fn reconnect_node(&mut self, id: NodeId) {
        let peers: Vec<NodeId> = self.nodes.keys().copied().filter(|&p| p != id).collect();
        for p in peers {
            self.reconnect(id, p);
            self.reconnect(p, id);
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.next_event += 1;
        self.events.insert((self.now + delay, self.next_event), event);
    }

    fn fail(&self, reason: String) -> Failure {
        let from = if self.trace.verbose { 0 } else { self.now.saturating_sub(trace::FAILURE_WINDOW_MS) };
        let trace = self.trace.render(from);
        Failure { seed: self.seed, reason: format!("{reason}\n{}{trace}", self.describe()) }
    }

    /// One line per node: role, term, leader, indexes.
    fn describe(&self) -> String {
        let mut out = format!("  at {} ms; config: {:?}\n", self.now, self.cfg);
        for (id, n) in &self.nodes {
            match &n.driver {
                None => out.push_str(&format!("  node {id}: down\n")),
                Some(d) => {
                    let r = d.node();
                    out.push_str(&format!(
                        "  node {id}: snapshot {:?}, first index {}, {:?}; {}; restore job {:?}\n",
                        d.snapshot().map(|(m, _)| (m.index, m.term)),
                        r.first_index(),
                        d.snapshot_stats(),
                        d.describe_transfers(),
                        n.restore.as_ref().map(|j| j.ticket())
                    ));
                    out.push_str(&format!(
                        "  node {id}: {} term {} leader {:?} voted {:?} timer {}/{} commit {} applied {} last {} pending {}; {} (at {})\n",
                        r.role().as_str(),
                        r.term(),
                        r.leader(),
                        r.voted_for(),
                        r.election_elapsed(),
                        r.election_timeout(),
                        r.commit(),
                        d.kv().applied_index(),
                        r.last_index(),
                        d.pending(),
                        r.membership(),
                        r.membership_index()
                    ));
                    if r.role() == Role::Leader {
                        let progress: Vec<String> = r
                            .peers()
                            .iter()
                            .filter_map(|&p| {
                                r.progress(p).map(|pr| {
                                    format!("{p}: {:?} {}/{}", pr.state, pr.match_index, pr.next_index)
                                })
                            })
                            .collect();
                        out.push_str(&format!("  node {id}: progress {}\n", progress.join(", ")));
                    }
                }
            }
        }
        out
    }

    /// Runs to the end; returns a report or the first failure.
    pub fn run(mut self) -> Result<Report, Failure> {
        let end = self.cfg.fault_ms + self.cfg.calm_ms;
        while let Some(((time, _), event)) = self.events.pop_first() {
            if time > end {
                break;
            }
            self.now = time;
            self.report.events += 1;
            self.hash_event(&event);
            self.handle(event).map_err(|r| self.fail(r))?;
            let nodes: Vec<(NodeId, &Driver<MemFs>)> =
                self.nodes.iter().filter_map(|(id, n)| n.driver.as_ref().map(|d| (*id, d))).collect();
            self.invariants.check(&nodes).map_err(|r| self.fail(format!("at {} ms: {r}", self.now)))?;
            self.mchecks.check(&nodes).map_err(|r| self.fail(format!("at {} ms: {r}", self.now)))?;
            self.churn();
            if !self.retired.is_empty() {
                self.decommission();
            }
        }
        self.finish()
    }

    fn hash_event(&mut self, event: &Event) {
        let tag: u64 = match event {
            Event::Tick(id) => 1 + (id << 8),
            Event::Deliver(m) => 2 + (m.from() << 8) + (m.to() << 16),
            Event::ClientWake(c) => 3 + (c << 8),
            Event::Nemesis => 4,
            Event::Restart(id) => 5 + (id << 8),
            Event::Heal(_) => 6,
            Event::Crash(id) => 8 + (id << 8),
            Event::Calm => 7,
            Event::SnapshotDone(id, inc) => 9 + (id << 8) + (inc << 16),
            Event::SyncDone(id, inc) => 10 + (id << 8) + (inc << 16),
            Event::Run(id, inc) => 11 + (id << 8) + (inc << 16),
            Event::Operator => 12,
            Event::RestoreDone(id, inc) => 13 + (id << 8) + (inc << 16),
        };
        let h = self.report.trace_hash ^ tag ^ self.now.rotate_left(32);
        self.report.trace_hash = Rng::new(h).next_u64();
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick(id) => {
                // As the server: one tick input waits in a batch and counts every tick period
                // that passed (a thread that fell behind runs its timers once, but its clock,
                // which leases are measured on, does not fall behind).
                let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
                let period = node.tick_ms;
                let waiting = node.inbox.iter_mut().find(|i| matches!(i, Input::Tick | Input::Ticks(_)));
                match waiting {
                    Some(i) => {
                        let n = if let Input::Ticks(n) = i { *n } else { 1 };
                        *i = Input::Ticks(n + 1);
                    }
                    None => self.input(id, Input::Tick),
                }
                self.schedule(period, Event::Tick(id));
            }
            Event::Deliver(msg) => {
                if !self.net.connected(msg.from(), msg.to()) {
                    self.trace.undelivered(self.now, &msg, "cut by a partition");
                    self.link_trace.message(self.now, "cut", &msg);
                } else if self.nodes.get(&msg.to()).is_none_or(|n| n.driver.is_none()) {
                    self.trace.undelivered(self.now, &msg, "not received: the node is down");
                    self.link_trace.message(self.now, "receiver down", &msg);
                } else {
                    self.link_trace.message(self.now, "delivered", &msg);
                    self.input(msg.to(), Input::Peer(msg));
                }
            }
            Event::Run(id, incarnation) => self.run_node(id, incarnation)?,
            Event::Operator => {
                // No new change in the last stretch of the run: the end checks want a settled
                // cluster (a change takes the leader away for a moment).
                if self.now + 1500 < self.cfg.fault_ms + self.cfg.calm_ms {
                    self.operate()?;
                }
                if !self.operator.done() {
                    let next = self.rng.range(20, 200);
                    self.schedule(next, Event::Operator);
                }
            }
            Event::ClientWake(c) => self.client_issue(c as usize),
            Event::Nemesis => {
                if !self.calm {
                    self.nemesis()?;
                    let next =
                        self.rng.range(self.cfg.nemesis_every_ms / 2, self.cfg.nemesis_every_ms * 3 / 2);
                    self.schedule(next, Event::Nemesis);
                }
            }
            Event::Restart(id) => {
                if self.nodes[&id].driver.is_none() && !self.retired.contains(&id) {
                    self.start_node(id)?;
                }
            }
            Event::Crash(id) => {
                if !self.calm {
                    self.crash(id);
                    let delay = self.rng.range(20, 300);
                    self.schedule(delay, Event::Restart(id));
                }
            }
            Event::SnapshotDone(id, incarnation) => self.snapshot_done(id, incarnation),
            Event::SyncDone(id, incarnation) => self.sync_done(id, incarnation),
            Event::RestoreDone(id, incarnation) => self.restore_done(id, incarnation),
            Event::Heal(cuts) => {
                for cut in cuts {
                    if self.net.cut.remove(&cut) {
                        // The connection went silent and was closed; a new one is dialled.
                        self.reconnect(cut.0, cut.1);
                    }
                }
                self.trace.cuts(self.now, "heal", &self.net.cut);
            }
            Event::Calm => {
                self.calm = true;
                for (from, to) in std::mem::take(&mut self.net.cut) {
                    self.reconnect(from, to);
                }
                self.cfg.net.reorder = false;
                self.cfg.net.drop = 0.0;
                self.cfg.net.duplicate = 0.0;
                self.cfg.net.spike = 0.0;
                let down: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(id, n)| n.driver.is_none() && !self.retired.contains(id))
                    .map(|(id, _)| *id)
                    .collect();
                for id in down {
                    self.start_node(id)?;
                }
                // Requests may still be pending from the faulty period; new ones issued after an
                // election's worth of time must all succeed.
                self.must_succeed_after = self.now + 1500;
                let text = format!(
                    "calm: faults stop; requests from {} ms on must succeed",
                    self.must_succeed_after
                );
                self.trace.cuts(self.now, &text, &self.net.cut);
            }
        }
        Ok(())
    }

    /// Queues an input at a live node and makes sure its thread will run.
    fn input(&mut self, id: NodeId, input: Input) {
        let Some(node) = self.nodes.get_mut(&id).filter(|n| n.driver.is_some()) else { return };
        node.inbox.push(input);
        self.wake(id);
    }

    /// Schedules a run of node `id`'s thread, if none is scheduled: after the time a batch takes
    /// to form, or once the thread is no longer busy.
    fn wake(&mut self, id: NodeId) {
        self.wake_after(id, true);
    }

    /// As [`Self::wake`]; without `forming`, the inputs are already waiting (what did not fit the
    /// last batch), so the thread runs them as soon as it is free, as the server's does.
    fn wake_after(&mut self, id: NodeId, forming: bool) {
        let now = self.now;
        let Some(node) = self.nodes.get(&id) else { return };
        if node.run_scheduled || node.driver.is_none() {
            return;
        }
        let incarnation = node.incarnation;
        let busy = node.busy_until.saturating_sub(now);
        let forming = if forming { self.rng.range(0, self.cfg.batch_ms + 1) } else { 0 };
        let mut delay = busy.max(forming);
        let forced = !self.calm && node.stall_next;
        if forced || (!self.calm && self.rng.chance(self.cfg.stall)) {
            // The node thread stalls (a GC-like pause, the OS): one to three election timeouts.
            let stall = self.rng.range(150, 451);
            delay += stall;
            self.trace.note(now, id, format!("thread stalls for {stall} ms"));
            self.reconnect_node(id);
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.run_scheduled = true;
            n.stall_next = false;
        }
        self.schedule(delay, Event::Run(id, incarnation));
    }

    /// Node `id`'s thread runs what is queued for it (up to the batch bound) through the host loop,
    /// then its output goes
    /// out: messages onto the network, answers to the clients, background jobs onto the schedule.
    fn run_node(&mut self, id: NodeId, incarnation: u64) -> Result<(), String> {
        let now = self.now;
        if !self.calm && self.cfg.crashes && self.rng.chance(self.cfg.disk_faults) {
            if let Some(n) = self.nodes.get_mut(&id).filter(|n| n.driver.is_some() && !n.fault_armed) {
                n.fs.fail_next(FaultOp::Sync, 1);
                n.fault_armed = true;
                self.trace.note(now, id, "disk fault armed: its next fsync fails");
            }
        }
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
        if node.incarnation != incarnation {
            return Ok(());
        }
        node.run_scheduled = false;
        if node.busy_until > now {
            self.wake(id);
            return Ok(());
        }
        let armed = node.fault_armed;
        node.restore_batches += u64::from(node.restore.is_some());
        let syncs_before = node.fs.stats().file_syncs;
        // As the server: a batch takes at most so much work; the rest waits for the next run.
        let mut inbox: std::collections::VecDeque<Input> = std::mem::take(&mut node.inbox).into();
        let inputs = engine::take_batch(&mut inbox, self.cfg.batch_work);
        node.inbox = inbox.into();
        let Some(d) = node.driver.as_mut() else { return Ok(()) };
        let mut io = SimIo::new(node.fs.clone());
        // Wall clocks disagree between nodes (by up to 3 s, some behind, some ahead of virtual
        // time): stamps must stay monotonic across leaders anyway (see engine::kv::expiry).
        io.clock_ms = CLOCK_EPOCH_MS + now + (id * 1237) % 3000 - 1500;
        let result = engine::run_batch(d, inputs, &mut io);
        self.trace.observe(now, id, incarnation, d.node());
        self.link_trace.leader(now, id, d.node());
        let records = d.take_apply_records();
        let syncs = node.fs.stats().file_syncs - syncs_before;
        if let Some(v) = io.violation.take() {
            return Err(format!("node {id}: {v}"));
        }
        self.invariants.applied(id, &records)?;
        let died = match result {
            Ok(()) => false,
            // The injected fsync failure: the node dies mid-batch. What it handed out before is
            // out, answers included.
            Err(FatalError::Storage(_)) if armed => true,
            Err(e) => return Err(format!("node {id} stopped: {e}")),
        };
        for m in io.messages {
            if let PeerMessage::Raft(r) = &m {
                self.invariants.sent(r)?;
            }
            let lane =
                if matches!(m, PeerMessage::SnapshotChunk { .. }) { Lane::Chunk } else { Lane::Ordered };
            let times = self.net.send(&self.cfg.net, &mut self.rng, now, (m.from(), m.to()), lane);
            if times.is_empty() {
                self.trace.undelivered(now, &m, "lost by the network");
                self.link_trace.message(now, "sent, lost", &m);
            } else {
                self.link_trace.message(now, "sent", &m);
            }
            for at in times {
                self.schedule(at - now, Event::Deliver(m.clone()));
            }
        }
        let mut removed = Vec::new();
        for (request, response) in io.answers {
            if self.operator.owns(request) {
                self.trace.note(now, id, format!("answers admin request {request}: {response:?}"));
                removed.extend(self.operator.answered(request, &response));
            } else if self.nemesis_requests.remove(&request) {
                self.trace.note(now, id, format!("answers the nemesis's transfer {request}: {response:?}"));
                // A transfer the nemesis asked for: its outcome does not matter.
            } else {
                self.client_answer(request, response)?;
            }
        }
        for id in removed {
            self.removed(id);
        }
        if died {
            self.die_of_injected_fault(id);
            return Ok(());
        }
        if let Some(sync) = io.sync {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.sync = Some(sync);
            }
            let delay = self.rng.range(0, self.cfg.sync_job_ms + 1);
            self.schedule(delay, Event::SyncDone(id, incarnation));
        }
        if let Some(job) = io.snapshot {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.job = Some(job);
            }
            let delay = self.rng.range(0, self.cfg.snapshot_job_ms + 1);
            self.schedule(delay, Event::SnapshotDone(id, incarnation));
        }
        if let Some(job) = io.restore {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.restore = Some(job);
                node.restore_batches = 0;
            }
            let delay = self.rng.range(0, self.cfg.restore_job_ms + 1);
            self.schedule(delay, Event::RestoreDone(id, incarnation));
        }
        // The thread is busy while the disk works.
        let mut busy = 0;
        if syncs > 0 {
            busy = self.rng.range(0, self.cfg.disk_ms + 1);
            if !self.calm && self.rng.chance(self.cfg.slow_disk) {
                busy = self.rng.range(150, 451);
                self.trace.note(now, id, format!("slow disk: the thread waits {busy} ms for its fsync"));
                self.reconnect_node(id);
            }
        }
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
        node.busy_until = now + busy;
        if !node.inbox.is_empty() {
            self.wake_after(id, false);
        }
        Ok(())
    }

    /// Runs a node's pending sync job (it "took" the virtual time since it started); its report
    /// is an input of the node's next batch. An injected fsync failure kills the node there, as
    /// an inline one does.
    fn sync_done(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.incarnation != incarnation || node.driver.is_none() {
            return;
        }
        let Some(sync) = node.sync.take() else { return };
        let result = sync.run();
        self.input(id, Input::Synced(sync.ticket(), result));
    }

    /// The node hit the fsync failure armed on its disk: it crashes (the fault is spent) and
    /// restarts later.
    fn die_of_injected_fault(&mut self, id: NodeId) {
        self.trace.note(self.now, id, "fsync failed (injected disk fault): the node dies");
        self.crash(id);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.fault_armed = false;
        }
        let downtime = self.rng.range(20, 300);
        self.schedule(downtime, Event::Restart(id));
    }

    /// Runs a node's snapshot job (it "took" the virtual time since it started); its outcome is an
    /// input of the node's next batch. Sometimes the node crashes between writing and installing it.
    fn snapshot_done(&mut self, id: NodeId, incarnation: u64) {
        let crash = !self.calm && self.cfg.crashes && self.rng.chance(self.cfg.snapshot_crash);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.incarnation != incarnation || node.driver.is_none() {
            return;
        }
        let Some(job) = node.job.take() else { return };
        let result = job.run();
        if result.is_err() && node.fault_armed {
            // The job consumed the injected fsync failure; the driver just logs it.
            node.fault_armed = false;
        }
        if crash {
            self.crash(id);
            let downtime = self.rng.range(20, 300);
            self.schedule(downtime, Event::Restart(id));
            return;
        }
        self.input(id, Input::SnapshotDone(result));
    }

    /// Runs a node's restore job (it "took" the virtual time since it started: meanwhile the node
    /// ran whatever arrived); its outcome is an input of the node's next batch. Sometimes the node
    /// crashes between loading the snapshot and installing it.
    fn restore_done(&mut self, id: NodeId, incarnation: u64) {
        let crash = !self.calm && self.cfg.crashes && self.rng.chance(self.cfg.snapshot_crash);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.incarnation != incarnation || node.driver.is_none() {
            return;
        }
        let Some(job) = node.restore.take() else { return };
        let restored = job.run();
        self.report.restores.0 += 1;
        self.report.restores.1 += u64::from(node.restore_batches > 0);
        if !restored.is_ok() && node.fault_armed {
            // The job may have consumed the injected fsync failure (the driver refuses the file);
            // disarm it either way, so that no later sync fails unexpected.
            node.fs.fail_next(FaultOp::Sync, 0);
            node.fault_armed = false;
        }
        if crash {
            self.crash(id);
            let downtime = self.rng.range(20, 300);
            self.schedule(downtime, Event::Restart(id));
            return;
        }
        self.input(id, Input::Restored(restored));
    }

    /// The membership operator acts on the leader of the newest term (see [`crate::membership`]).
    fn operate(&mut self) -> Result<(), String> {
        let leader = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.driver.as_ref().map(|d| (*id, d)))
            .filter(|(_, d)| d.node().role() == Role::Leader)
            .max_by_key(|(_, d)| d.node().term());
        let actions = self.operator.act(leader, &mut self.next_request, &mut self.rng);
        for action in actions {
            match action {
                Action::StartNode(id) => self.add_node(id)?,
                Action::Submit(node, request, req) => {
                    self.trace.note(
                        self.now,
                        node,
                        format!("operator submits admin request {request}: {req:?}"),
                    );
                    self.input(node, Input::Client(request, req))
                }
                Action::Removed(id) => self.removed(id),
            }
        }
        Ok(())
    }

    /// The operator removed node `id`. Without PreVote and CheckQuorum a removed node that missed
    /// its removal disrupts the cluster with every election it starts (thesis §4.2.3; the server
    /// always runs with both): such runs decommission removed nodes; the others keep them running.
    fn removed(&mut self, id: NodeId) {
        if !self.cfg.pre_vote && !self.cfg.check_quorum {
            self.retired.insert(id);
            self.decommission();
        }
    }

    /// Stops the retired nodes that still run, as an operator does: gracefully, once a node no
    /// longer leads (a removed leader hands leadership over first, as the server's shutdown does).
    /// Stopping a removed leader at once would be a leader crash after the faults stopped; found
    /// by the simulator (the election it forced ran into the liveness window).
    fn decommission(&mut self) {
        let stop: Vec<NodeId> = self
            .retired
            .iter()
            .copied()
            .filter(|id| {
                self.nodes
                    .get(id)
                    .and_then(|n| n.driver.as_ref())
                    .is_some_and(|d| d.node().role() != Role::Leader)
            })
            .collect();
        for id in stop {
            self.trace.note(self.now, id, "decommissioned (removed, no longer leading): stopped");
            self.crash(id);
        }
    }

    /// Starts a new, empty node `id` (it waits to be added: it knows no membership).
    fn add_node(&mut self, id: NodeId) -> Result<(), String> {
        let tick_ms = self.tick_period();
        self.nodes.insert(
            id,
            SimNode {
                driver: None,
                bootstrap: Membership::new(),
                fs: MemFs::new(),
                incarnation: 0,
                fault_armed: false,
                job: None,
                restore: None,
                restore_batches: 0,
                sync: None,
                inbox: Vec::new(),
                run_scheduled: false,
                busy_until: 0,
                tick_ms,
                stall_next: false,
            },
        );
        self.start_node(id)?;
        let phase = self.rng.range(0, TICK_MS);
        self.schedule(phase, Event::Tick(id));
        Ok(())
    }

    fn finish(mut self) -> Result<Report, Failure> {
        if self.trace.verbose {
            eprintln!("seed {}:\n{}", self.seed, self.trace.render(0));
        }
        // Liveness: there is a leader that every live node follows.
        let leaders: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.driver.as_ref().map(|d| (*id, d)))
            .filter(|(_, d)| d.node().role() == Role::Leader)
            .map(|(id, d)| (id, d.node().term()))
            .collect();
        if leaders.len() != 1 {
            return Err(self.fail(format!("liveness: {} leaders at the end: {leaders:?}", leaders.len())));
        }
        // Every node converges to the same state machine when caught up.
        let nodes: Vec<(NodeId, &Driver<MemFs>)> =
            self.nodes.iter().filter_map(|(id, n)| n.driver.as_ref().map(|d| (*id, d))).collect();
        self.invariants.check_final(&nodes).map_err(|r| Failure { seed: self.seed, reason: r })?;
        for (_, d) in &nodes {
            let st = d.snapshot_stats();
            self.report.snapshots.0 += st.taken;
            self.report.snapshots.1 += st.installed;
            self.report.snapshots.2 += st.chunks_sent;
        }
        self.report.commit = self.invariants.max_commit();
        self.report.membership = self.operator.stats;
        self.report.config_changes = self.mchecks.committed_changes();
        self.report.terms_with_leader = self.invariants.terms_with_leader();
        // Linearizability of everything the clients saw.
        self.history.retain(|op| op.call != u64::MAX);
        self.report.operations = self.history.len();
        for op in self.history.iter().filter(|op| matches!(op.op, Op::Watched { .. })) {
            match op.output {
                Some(linearizability::OpOutput::Aborted) => self.report.watched.1 += 1,
                Some(_) => self.report.watched.0 += 1,
                None => {}
            }
        }
        match linearizability::check(&self.history, linearizability::DEFAULT_MAX_STEPS_PER_KEY) {
            Ok(CheckResult::Linearizable) => Ok(self.report),
            Ok(CheckResult::NotLinearizable { key, explanation }) => Err(self.fail(format!(
                "history not linearizable on key {}:\n{explanation}",
                String::from_utf8_lossy(&key)
            ))),
            Ok(CheckResult::Inconclusive { key }) => Err(self.fail(format!(
                "linearizability check inconclusive on key {}",
                String::from_utf8_lossy(&key)
            ))),
            Err(e) => Err(self.fail(format!("malformed history: {e}"))),
        }
    }
}
