//! The node loop ("node thread"): runs the host loop ([`engine::run_batch`]: Raft core + WAL + KV
//! state machine).
//!
//! Where it runs ([`Placement`], `--io-threads`): by default as a task of a current-thread tokio
//! runtime that also runs the node's client connections and peer links: one event loop per node.
//! A client's request is read, run through the host loop and answered, and a peer's message read
//! and acknowledged, on one thread: handing an input over costs a push on the runtime's own run
//! queue instead of waking another thread (a leader's write crossed about eight thread hand-offs
//! before, each tens of microseconds of scheduling on a small VM). Only the fdatasync (the sync
//! thread), snapshot jobs (writing one, and checking and loading one received from the leader) and
//! password hashing run on other threads. After every batch the loop
//! yields: the runtime then polls the sockets, the connections' writers send the batch's answers,
//! and their readers queue what arrived meanwhile, which the next batch takes whole. The price: a
//! long turn of the loop (a slow script, a query over millions of keys) delays the network of this
//! node too, as it delayed its requests before: its own links read what arrived before their idle
//! timers count (tokio's timeout polls the read first), but its keepalives stop, so a turn longer
//! than the peer idle timeout makes the other nodes close their links to it and dial again. A
//! received snapshot no longer makes such a turn: its restore job runs on a thread (below). With
//! `--io-threads N > 0` the loop runs on a thread of its own (`raft-node`) and N threads serve the
//! network (the layout before), for machines with cores to spare.
//!
//! Loop: wait for input (client requests, peer messages, reports of background work) until the
//! next tick is due; take everything else already queued, up to [`engine::MAX_BATCH_WORK`] (inputs,
//! counting the log entries a peer message carries; what does not fit runs in the next batch). This
//! is the group commit: every request that arrived during the last fsync is persisted by the next
//! single fsync. Put the ticks that are due first (every elapsed tick period: the core's
//! clock, which lease reads are measured on, never falls behind); run the batch through the host loop, whose [`Io`] here is
//! the transport (messages), the waiting clients (answers, after publishing the status for `INFO`)
//! and background threads (syncs, snapshots, freeing). The order inside a batch is the host
//! loop's, the same one the simulator runs.
//!
//! Syncs: by default (`--sync-thread true`) the driver hands each batch's fdatasync out: a
//! `raft-sync` thread runs it and reports back through [`Input::Synced`], so this thread goes on
//! receiving acknowledgements, committing, answering and appending while the disk works (a write
//! commits once the fastest majority synced it; this node's own sync is not on that path). The sync
//! thread runs only the newest job it has (it covers the older ones) and exits when this thread
//! drops its sender. A node that is not the leader and has no request of its own clients waiting
//! runs its sync job on this thread instead, at once: it has nothing else to do meanwhile, and the
//! two hand-offs to the sync thread and back were on the path of every write it acknowledges. Its
//! report goes into a batch of its own right after (so the acknowledgements it releases leave
//! before anything newer is synced); for the driver this is a deferred sync reported at once (the
//! simulator reports syncs after random delays, zero included; any batching is correct). With `--sync-thread false` the driver fsyncs each batch on this
//! thread (the blocking fsync then also batches the next round's requests).
//!
//! Snapshots: a snapshot job handed out by the driver runs on a background thread
//! (`raft-snapshot`); the job only serializes an immutable view of the state machine into
//! `snapshot.tmp` and fsyncs it, so the node goes on serving meanwhile. Its outcome comes back as
//! [`Input::SnapshotDone`]. The driver creates at most one job at a time, so at most one snapshot
//! thread exists. A job thread that panics reports an I/O error instead, so the driver is never
//! left waiting for a result that cannot come. Likewise a snapshot received from the leader: once
//! its last chunk is in, the driver hands out a restore job, which a `raft-restore` thread runs
//! (fsync `snapshot.restore`, read it back and verify it, decode the image into a new state
//! machine: 0.5-1 s for 1M keys); its outcome comes back as [`Input::Restored`], and the driver
//! installs it (a rename and a directory sync) if nothing changed meanwhile. Meanwhile this loop
//! goes on: heartbeats, keepalives and the leader's further chunks are answered (the driver holds
//! the transfer open). At most one restore job, so at most one such thread; a panic in it is
//! reported as a refused snapshot.
//!
//! Back-pressure: the input channel is bounded ([`INPUT_CAPACITY`]). Connection tasks and peer
//! links wait (asynchronously) for room, so a node thread that falls behind slows its clients and
//! peers down through TCP instead of growing a queue without bound; reports of background work use
//! the same channel (their threads block briefly on a full one). The driver bounds its own writes in
//! flight (`write_window`), and each client connection its pipeline.
//!
//! Shutdown waits for in-flight requests *and* a running snapshot job for at most
//! `shutdown_grace`, then returns; a job still running then is abandoned (the thread is detached and
//! dies with the process; the `snapshot.tmp` it leaves is removed at the next start). A running
//! restore job is not waited for: it is abandoned the same way (its `snapshot.restore` is removed
//! at the next start, and the leader sends the snapshot again), and none starts while stopping.
//!
//! Invariants: answers and messages leave only when the host loop lets them out, i.e. once the
//! state they depend on is durable; every client request gets exactly one answer (the driver's, or
//! an error at shutdown); at most one snapshot job, one restore job and one sync run at a time.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{
    Driver, FatalError, Io, PeerMessage, Request, RequestError, RequestId, Response, RestoreJob, Restored,
    SnapshotDone, SnapshotJob, SnapshotStats, SyncJob,
};
use raft::{Entry, NodeId, Role};
use storage::{StorageError, SNAPSHOT_TMP};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle as TaskHandle;

use crate::metrics::fs::MeteredFs;
use crate::metrics::NodeMetrics;
use crate::transport::Transport;

/// A turn of the node thread longer than this is logged (at debug level): nobody is answered
/// while it runs.
const SLOW_TURN: Duration = Duration::from_millis(100);

/// Most client requests and peer messages queued for the node thread at once (see the module docs).
pub const INPUT_CAPACITY: usize = 65_536;

/// Input to the node thread.
pub enum Input {
    /// A client request, where to send its answer, and its place in the bounded queue (released
    /// when the node thread takes the request).
    Client(Request, oneshot::Sender<Response>, OwnedSemaphorePermit),
    /// A message from a peer, with its place in the bounded queue.
    Peer(PeerMessage, OwnedSemaphorePermit),
    /// The outcome of the snapshot job running in the background (sent by its thread).
    SnapshotDone(Result<SnapshotDone, StorageError>),
    /// The outcome of a sync job: its ticket and result (sent by the sync thread).
    Synced(u64, Result<(), StorageError>),
    /// The outcome of the restore job running in the background (sent by its thread).
    Restored(Restored),
    /// Stop: answer what can be answered within the grace period, then exit.
    Shutdown,
}

/// A snapshot of the node's state, for `INFO` and `raft-kv status`.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// This node's Raft id.
    pub id: NodeId,
    /// Role name.
    pub role: &'static str,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Number of keys.
    pub keys: usize,
    /// Keys with a deadline (expired ones not yet swept included).
    pub expires: usize,
    /// Requests waiting for an answer.
    pub pending: usize,
    /// Leader only: (peer, match index).
    pub peers: Vec<(NodeId, u64)>,
    /// First index held in the log (entries before it are compacted into the snapshot).
    pub log_first_index: u64,
    /// Last index covered by the durable snapshot (0: none).
    pub snapshot_index: u64,
    /// Term of that entry.
    pub snapshot_term: u64,
    /// Size of the snapshot file in bytes.
    pub snapshot_bytes: u64,
    /// True while a snapshot is being written in the background.
    pub snapshot_in_progress: bool,
    /// Followers a snapshot is being sent to (leader).
    pub snapshot_sending: usize,
    /// True while a snapshot is being received from the leader (or checked and loaded: a restore job).
    pub snapshot_receiving: bool,
    /// Snapshot counters since this process started.
    pub snapshot_stats: SnapshotStats,
    /// Times the known leader changed to another known leader since this process started (for
    /// metrics; counted when the status is published).
    pub leader_changes: u64,
    /// Writes routed to a leader again since the start ([`engine::Driver::writes_retried`]).
    pub writes_retried: u64,
    /// The last leader known, kept while none is known (so that a node elected again after an
    /// election is not counted as a change).
    pub last_leader: Option<NodeId>,
    /// The members of the latest configuration in the log (committed or not), by id.
    pub members: Vec<MemberStatus>,
    /// The index of the configuration entry the membership comes from (0: the bootstrap one).
    pub membership_index: u64,
    /// The id the next member added gets.
    pub next_id: NodeId,
    /// True while a standby waits to be added to a cluster (it serves nothing but `INFO`).
    pub standby: bool,
}

/// One member as the node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// Raft node id.
    pub id: NodeId,
    /// Its record (the `-gc` entry `name,host,clientPort,corePort`).
    pub record: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// The leader's match index for it (leader only; the leader itself: its last index).
    pub match_index: Option<u64>,
}

impl MemberStatus {
    /// The member's name (its record up to the first comma).
    pub fn name(&self) -> &str {
        self.record.split(',').next().unwrap_or("")
    }
}

impl Status {
    /// The name of member `id` (its id as text if it is not a member).
    pub fn name_of(&self, id: NodeId) -> String {
        self.members.iter().find(|m| m.id == id).map_or_else(|| id.to_string(), |m| m.name().to_string())
    }

    /// The member called `name`.
    pub fn member_named(&self, name: &str) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.name() == name)
    }
}

/// Handle to the node thread.
#[derive(Clone)]
pub struct NodeHandle {
    /// Input channel.
    pub tx: UnboundedSender<Input>,
    /// Places in the input queue (see the module docs).
    pub room: Arc<Semaphore>,
    /// The latest published status.
    pub status: Arc<Mutex<Status>>,
    /// [`MEMBER`], [`STANDBY`] or [`REMOVED`] (read on every request, so not behind the mutex).
    pub state: Arc<std::sync::atomic::AtomicU8>,
}

/// [`NodeHandle::state`]: a member (or a node that has not joined yet).
pub const MEMBER: u8 = 0;
/// [`NodeHandle::state`]: a standby waiting to be added; serves only `INFO`.
pub const STANDBY: u8 = 1;
/// [`NodeHandle::state`]: this process saw the node removed from the cluster (the latest
/// configuration in its log does not list it); it refuses client requests, which no member would
/// serve for it any more.
pub const REMOVED: u8 = 2;

impl NodeHandle {
    /// A handle around `tx` with [`INPUT_CAPACITY`] places.
    pub fn new(tx: UnboundedSender<Input>) -> Self {
        NodeHandle {
            tx,
            room: Arc::new(Semaphore::new(INPUT_CAPACITY)),
            status: Arc::new(Mutex::new(Status::default())),
            state: Arc::new(std::sync::atomic::AtomicU8::new(MEMBER)),
        }
    }

    /// Waits for a place in the input queue (back-pressure: the node thread is behind).
    pub async fn reserve(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring only waits.
        match self.room.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the input semaphore is never closed"),
        }
    }

    /// Submits a request in the place `permit` holds; the answer arrives on the returned receiver.
    pub fn submit(&self, request: Request, permit: OwnedSemaphorePermit) -> oneshot::Receiver<Response> {
        let (tx, rx) = oneshot::channel();
        // If the node thread is gone the sender is dropped and the receiver reports it.
        let _ = self.tx.send(Input::Client(request, tx, permit));
        rx
    }

    /// Hands a peer message to the node thread, waiting for a place first. Returns false if the
    /// node thread is gone.
    pub async fn deliver(&self, msg: PeerMessage) -> bool {
        let permit = self.reserve().await;
        self.tx.send(Input::Peer(msg, permit)).is_ok()
    }

    /// True while this node is a standby waiting to be added (see [`Status::standby`]).
    pub fn is_standby(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Relaxed) == STANDBY
    }

    /// True once this node has seen itself removed from the cluster (see [`REMOVED`]).
    pub fn is_removed(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Relaxed) == REMOVED
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Node thread settings.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Length of one tick.
    pub tick: Duration,
    /// How long shutdown waits for in-flight requests and a running snapshot job.
    pub shutdown_grace: Duration,
    /// The data directory (named in the error reported if a snapshot thread panics).
    pub data_dir: PathBuf,
    /// Timings of the loop, if metrics are on (the log's fsyncs are timed by the file system).
    pub metrics: Option<NodeMetrics>,
}

/// Where the node loop runs (`--io-threads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// As a task of the current runtime, which must be a current-thread runtime that also runs
    /// the client connections and peer links: one event loop per node (see the module docs).
    Task,
    /// On a thread of its own (`raft-node`, running a current-thread runtime for its timer), beside
    /// a multi-threaded runtime that serves the network.
    Thread,
}

/// Starts the node loop where `placement` says. `handle` is the handle whose channel `rx`
/// receives (the sync and snapshot threads report through it). The returned handle ends with
/// the loop; a panic in the loop comes out of it as the join error.
pub fn spawn(
    driver: Driver<MeteredFs>,
    transport: Transport,
    rx: UnboundedReceiver<Input>,
    handle: &NodeHandle,
    opts: NodeOptions,
    placement: Placement,
) -> std::io::Result<TaskHandle<Result<(), FatalError>>> {
    let (tx, status, state) = (handle.tx.clone(), handle.status.clone(), handle.state.clone());
    let syncer = if driver.deferred_sync() { Some(spawn_syncer(tx.clone())?) } else { None };
    let mut driver = driver;
    if opts.metrics.is_some() {
        driver.measure_apply_time(Instant::now);
    }
    let node_loop = NodeLoop {
        driver,
        rx,
        host: ServerIo {
            transport,
            tx,
            status,
            data_dir: opts.data_dir.clone(),
            waiters: HashMap::new(),
            job: None,
            restore: None,
            syncer,
            reports: Vec::new(),
            notices: Vec::new(),
            carried: Vec::new(),
            defer_notices: placement == Placement::Task,
            shutting_down: false,
            snapshot_seconds: opts.metrics.as_ref().map(|m| m.snapshot_seconds.clone()),
            peers_from: None,
            state,
            was_member: false,
        },
        opts,
        next: 1,
        shares_thread: placement == Placement::Task,
    };
    match placement {
        Placement::Task => Ok(tokio::spawn(node_loop.run())),
        Placement::Thread => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
            let thread = std::thread::Builder::new()
                .name("raft-node".into())
                .spawn(move || runtime.block_on(node_loop.run()))?;
            Ok(tokio::task::spawn_blocking(move || match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }))
        }
    }
}

/// Starts the `raft-sync` thread: it runs the newest sync job it has, reports it as
/// [`Input::Synced`], and exits once `Sender` it returns is dropped.
fn spawn_syncer(report: UnboundedSender<Input>) -> std::io::Result<Sender<SyncJob<MeteredFs>>> {
    let (jobs, rx) = std::sync::mpsc::channel::<SyncJob<MeteredFs>>();
    std::thread::Builder::new().name("raft-sync".into()).spawn(move || {
        while let Ok(mut job) = rx.recv() {
            // Jobs queued meanwhile: the newest covers them all.
            while let Ok(newer) = rx.try_recv() {
                job = newer;
            }
            let result = job.run();
            if report.send(Input::Synced(job.ticket(), result)).is_err() {
                return; // The node thread is gone.
            }
        }
    })?;
    Ok(jobs)
}

struct NodeLoop {
    driver: Driver<MeteredFs>,
    rx: UnboundedReceiver<Input>,
    /// What the host loop's output goes to.
    host: ServerIo,
    opts: NodeOptions,
    /// Next request id.
    next: RequestId,
    /// The loop shares its thread with the network tasks ([`Placement::Task`]): it yields to them
    /// after every batch.
    shares_thread: bool,
}

impl NodeLoop {
    async fn run(mut self) -> Result<(), FatalError> {
        let mut next_tick = Instant::now() + self.opts.tick;
        let mut shutdown_deadline: Option<Instant> = None;
        // Inputs taken off the channel and not yet run (what did not fit the last batch).
        let mut queued: VecDeque<engine::Input> = VecDeque::new();
        loop {
            if self.shares_thread {
                // The connections and links run now: their writers send the answers and messages
                // of the last batch, their readers add what arrived meanwhile to the channel (the
                // runtime polls the sockets before it runs this task again).
                tokio::task::yield_now().await;
                if queued.is_empty() && self.rx.is_empty() {
                    // Going idle: the commit notices go now.
                    self.host.send_notices();
                } else {
                    // They ride with the next batch: an append it sends to the same follower
                    // carries the commit index too; the rest leave after it.
                    self.host.carry_notices();
                }
            }
            let now = Instant::now();
            if queued.is_empty() {
                match tokio::time::timeout_at(next_tick.into(), self.rx.recv()).await {
                    Ok(Some(input)) => self.take(input, &mut queued, &mut shutdown_deadline, now),
                    Ok(None) => {
                        shutdown_deadline.get_or_insert(now);
                    }
                    Err(_elapsed) => {}
                }
            }
            let mut work: usize = queued.iter().map(engine::work).sum();
            while work < engine::MAX_BATCH_WORK {
                match self.rx.try_recv() {
                    Ok(input) => {
                        let before = queued.len();
                        self.take(input, &mut queued, &mut shutdown_deadline, now);
                        work += queued.iter().skip(before).map(engine::work).sum::<usize>();
                    }
                    Err(_) => break,
                }
            }
            let mut batch = engine::take_batch(&mut queued, engine::MAX_BATCH_WORK);
            let now = Instant::now();
            let mut ticks = None;
            if now >= next_tick {
                // Every tick period that passed, also after a long fsync or a stall: the core's
                // clock must not fall behind (lease reads are measured on it). Its timers run once.
                // First in the batch, so the batch's reads are checked against the current time.
                let tick = self.opts.tick.as_nanos().max(1);
                let due = 1 + (now - next_tick).as_nanos() / tick;
                next_tick += self.opts.tick * u32::try_from(due).unwrap_or(u32::MAX);
                let due = u64::try_from(due).unwrap_or(u64::MAX);
                ticks = Some(if due == 1 { engine::Input::Tick } else { engine::Input::Ticks(due) });
            }
            self.host.shutting_down = shutdown_deadline.is_some();
            let inputs = batch.len();
            let started = Instant::now();
            if let Err(e) =
                engine::run_batch(&mut self.driver, ticks.into_iter().chain(batch.drain(..)), &mut self.host)
            {
                self.host.fail_waiters();
                return Err(e);
            }
            if !self.host.reports.is_empty() {
                // Syncs run on this thread: their reports in a batch of their own, at once, so the
                // acknowledgements they release leave before anything else is synced.
                let reports = std::mem::take(&mut self.host.reports);
                if let Err(e) = engine::run_batch(&mut self.driver, reports, &mut self.host) {
                    self.host.fail_waiters();
                    return Err(e);
                }
                // (A sync that batch started: reported in the next one, before any new input.)
                for report in self.host.reports.drain(..).rev() {
                    queued.push_front(report);
                }
            }
            self.host.send_carried_notices();
            let took = started.elapsed();
            if took > SLOW_TURN {
                tracing::debug!(inputs, ?took, "a slow turn of the node thread");
            }
            if let Some(m) = &self.opts.metrics {
                for (_, d) in self.driver.take_apply_timings() {
                    m.apply_seconds.observe_duration(d);
                }
                m.process_seconds.observe_duration(took);
                if inputs > 0 {
                    m.batch_inputs.observe(inputs as u64);
                }
            }
            if let Some(deadline) = shutdown_deadline {
                let idle = self.host.waiters.is_empty() && self.host.job.is_none();
                if idle || Instant::now() >= deadline {
                    if self.host.job.take().is_some() {
                        tracing::warn!("shutting down while a snapshot is being written: abandoning it");
                    }
                    if self.host.restore.take().is_some() {
                        tracing::warn!(
                            "shutting down while a received snapshot is being loaded: abandoning it"
                        );
                    }
                    self.host.fail_waiters();
                    return Ok(());
                }
            }
        }
    }

    /// Turns one input of the channel into an input of the batch (or a shutdown request).
    fn take(
        &mut self,
        input: Input,
        batch: &mut VecDeque<engine::Input>,
        shutdown_deadline: &mut Option<Instant>,
        now: Instant,
    ) {
        match input {
            Input::Client(request, reply, _permit) => {
                let id = self.next;
                self.next += 1;
                self.host.waiters.insert(id, reply);
                batch.push_back(engine::Input::Client(id, request));
            }
            Input::Peer(msg, _permit) => batch.push_back(engine::Input::Peer(msg)),
            Input::SnapshotDone(result) => {
                if let Some(thread) = self.host.job.take() {
                    // Sending the result was the thread's last act: this join returns at once.
                    let _ = thread.join();
                }
                batch.push_back(engine::Input::SnapshotDone(result));
            }
            Input::Synced(ticket, result) => batch.push_back(engine::Input::Synced(ticket, result)),
            Input::Restored(restored) => {
                if let Some(thread) = self.host.restore.take() {
                    // As for a snapshot job: the report was the thread's last act.
                    let _ = thread.join();
                }
                batch.push_back(engine::Input::Restored(restored));
            }
            Input::Shutdown => {
                shutdown_deadline.get_or_insert(now + self.opts.shutdown_grace);
            }
        }
    }
}

/// The server's side of the host loop: the transport, the waiting clients, background threads.
struct ServerIo {
    transport: Transport,
    /// A sender into the node thread's channel, cloned into each snapshot thread. (So the channel
    /// never reports `Disconnected`: the loop stops on [`Input::Shutdown`].)
    tx: UnboundedSender<Input>,
    status: Arc<Mutex<Status>>,
    data_dir: PathBuf,
    /// Clients waiting for an answer, by request id.
    waiters: HashMap<RequestId, oneshot::Sender<Response>>,
    /// The running snapshot thread (None when no job runs).
    job: Option<JoinHandle<()>>,
    /// The running restore thread (None when no received snapshot is being loaded).
    restore: Option<JoinHandle<()>>,
    /// Sync jobs go to the `raft-sync` thread (unless `--sync-thread false`).
    syncer: Option<Sender<SyncJob<MeteredFs>>>,
    /// Reports of sync jobs run on this thread, for a batch of their own right after the one
    /// that started them.
    reports: Vec<engine::Input>,
    /// Empty AppendEntries that only tell followers the new commit index, held back until the
    /// connections have written the answers of the batch that produced them (see [`Io::send`]).
    notices: Vec<PeerMessage>,
    /// Notices of the previous batch, riding with this one (sent at its end unless an append to
    /// the same follower made them useless).
    carried: Vec<PeerMessage>,
    /// Hold commit notices back ([`Placement::Task`]: the loop yields to the connections after
    /// every batch and sends them then).
    defer_notices: bool,
    /// No new snapshot job starts while shutting down.
    shutting_down: bool,
    /// Times snapshot jobs (metrics).
    snapshot_seconds: Option<crate::metrics::Log2Histogram>,
    /// The configuration index the transport's peers were last set from, and whether it was
    /// committed then.
    peers_from: Option<(u64, bool)>,
    /// The handle's [`NodeHandle::state`].
    state: Arc<std::sync::atomic::AtomicU8>,
    /// This node was in a configuration it knew, in this process.
    was_member: bool,
}

impl ServerIo {
    /// Points the transport at the members of the latest configuration whenever it changes (a new
    /// member is dialled as soon as the entry that adds it is in the log; see `transport`).
    fn follow_membership(&mut self, driver: &Driver<MeteredFs>) {
        let node = driver.node();
        let index = (node.membership_index(), node.commit() >= node.membership_index());
        if self.peers_from == Some(index) {
            return;
        }
        self.peers_from = Some(index);
        let learning = !node.membership().contains(node.id());
        // The latest configuration decides: a follower often never learns that its removal
        // committed (the leader stops talking to it), so it refuses clients as soon as the entry
        // that removes it is in its log (and serves again if a leader change cuts that entry).
        let member = node.membership().contains(node.id());
        if member {
            self.was_member = true;
            self.state.store(MEMBER, std::sync::atomic::Ordering::Relaxed);
        } else if self.was_member && self.state.swap(REMOVED, std::sync::atomic::Ordering::Relaxed) != REMOVED
        {
            tracing::warn!("this node was removed from the cluster: it refuses client requests now; stop it");
        }
        // The members of the latest configuration and of the committed one (as the core's peers):
        // a member being removed still acknowledges the entry that removes it, and a leader that
        // removes itself must hear those acknowledgements to commit it.
        let mut peers = peer_addresses(node.committed_membership());
        peers.extend(peer_addresses(node.membership()));
        self.transport.set_peers(&peers, learning);
    }

    /// Sends the commit notices held back (see [`Io::send`]).
    fn send_notices(&mut self) {
        let mut all = std::mem::take(&mut self.carried);
        all.append(&mut self.notices);
        if !all.is_empty() {
            self.transport.send(all);
        }
    }

    /// The notices held back go with the next batch (see [`Io::send`]).
    fn carry_notices(&mut self) {
        self.carried.append(&mut self.notices);
    }

    /// Sends the notices that rode with this batch and are still needed.
    fn send_carried_notices(&mut self) {
        if !self.carried.is_empty() {
            self.transport.send(std::mem::take(&mut self.carried));
        }
    }

    /// Answers every waiting client with a timeout (the node is stopping).
    fn fail_waiters(&mut self) {
        for (_, w) in self.waiters.drain() {
            let _ = w.send(Err(RequestError::Timeout));
        }
    }
}

impl Io<MeteredFs> for ServerIo {
    /// Sends at once, except commit notices when the loop shares its thread with the connections.
    /// A leader that learns a write committed answers it and sends each follower an empty
    /// AppendEntries with the new commit index. Sent at once, the notices put two `sendto`s on the
    /// path of every answer while no other write is in flight (the single-client case). So they
    /// wait for the loop's next turn, after the yield in which the connections write the answers:
    /// if the loop is going idle then, they leave at once; if input arrived, they ride with the
    /// next batch, where an AppendEntries to the same follower makes a notice useless (it carries
    /// the commit index too: the follower commits at least as far) and the rest leave at the end
    /// of that batch. A follower learns a commit at most one batch later. Per follower order is
    /// kept: any other message to a follower takes its waiting notice along, ahead.
    fn send(&mut self, _: &Driver<MeteredFs>, mut messages: Vec<PeerMessage>) {
        if self.defer_notices && !messages.is_empty() && messages.iter().all(is_commit_notice) {
            for notice in messages {
                // A newer notice replaces a waiting one to the same follower.
                self.notices.retain(|n| n.to() != notice.to());
                self.carried.retain(|n| n.to() != notice.to());
                self.notices.push(notice);
            }
            return;
        }
        if !self.notices.is_empty() || !self.carried.is_empty() {
            let superseded = |n: &PeerMessage| {
                messages.iter().any(|m| {
                    m.to() == n.to()
                        && matches!(
                            m,
                            PeerMessage::Raft(raft::Message {
                                body: raft::MessageBody::AppendEntries { .. },
                                ..
                            })
                        )
                })
            };
            self.carried.retain(|n| !superseded(n));
            self.notices.retain(|n| !superseded(n));
            // Anything else to a follower with a waiting notice: the notice goes first.
            let mut ahead = Vec::new();
            for waiting in [&mut self.carried, &mut self.notices] {
                let (goes, stays): (Vec<_>, Vec<_>) =
                    waiting.drain(..).partition(|n| messages.iter().any(|m| m.to() == n.to()));
                ahead.extend(goes);
                *waiting = stays;
            }
            if !ahead.is_empty() {
                ahead.append(&mut messages);
                messages = ahead;
            }
        }
        self.transport.send(messages);
    }

    /// The system clock (a leader stamps its entries with it; see `engine::kv::expiry`).
    fn clock_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// Publishes the driver's status (for `INFO`), then hands `answers` to their waiting clients.
    /// The status goes first: a client that got an answer (e.g. RAFT.SNAPSHOT's) then sees an INFO
    /// at least as new.
    fn answer(&mut self, driver: &Driver<MeteredFs>, answers: Vec<(RequestId, Response)>) {
        let answers: Vec<_> = answers
            .into_iter()
            .filter_map(|(id, response)| Some((self.waiters.remove(&id)?, response)))
            .collect();
        publish(driver, &self.status, self.waiters.len());
        self.follow_membership(driver);
        for (waiter, response) in answers {
            let _ = waiter.send(response);
        }
    }

    /// A leader's syncs, and those of a node some of whose clients wait for an answer, run on the
    /// `raft-sync` thread: its node thread goes on counting acknowledgements, forwarding writes and
    /// learning commits meanwhile. Any other node has nothing to do but sync and acknowledge: it
    /// runs the sync here, which saves two thread hand-offs (and their wake-ups) on the path of
    /// every write it acknowledges. Its report goes into a batch of its own right after this one.
    fn start_sync(&mut self, driver: &Driver<MeteredFs>, job: SyncJob<MeteredFs>) -> Result<(), FatalError> {
        if driver.node().role() != Role::Leader && driver.pending() == 0 {
            let result = job.run();
            self.reports.push(engine::Input::Synced(job.ticket(), result));
            return Ok(());
        }
        if self.syncer.as_ref().is_none_or(|s| s.send(job).is_err()) {
            let e = std::io::Error::other("the sync thread is gone");
            return Err(FatalError::Storage(StorageError::io(self.data_dir.clone(), e)));
        }
        Ok(())
    }

    /// Runs the snapshot job on a background thread.
    fn start_snapshot(&mut self, job: SnapshotJob<MeteredFs>) -> Result<(), StorageError> {
        if self.shutting_down {
            return Ok(()); // Abandoned with the process; its leftovers are removed at the next start.
        }
        let tx = self.tx.clone();
        let tmp = self.data_dir.join(SNAPSHOT_TMP);
        let index = job.index();
        let histogram = self.snapshot_seconds.clone();
        let thread = std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                let result = run_job(job, tmp);
                if let (Some(h), Ok(_)) = (&histogram, &result) {
                    h.observe_duration(started.elapsed());
                }
                // Fails only if the node thread is gone (shutdown): nothing to report to.
                let _ = tx.send(Input::SnapshotDone(result));
            })
            .map_err(|e| StorageError::io(self.data_dir.join(SNAPSHOT_TMP), e))?;
        tracing::debug!(index, "snapshot job started");
        self.job = Some(thread);
        Ok(())
    }

    /// Runs the restore job (fsync, read back and verify the received snapshot, decode its image:
    /// the better part of a second for a 100 MB one) on a `raft-restore` thread, so this loop, and
    /// with it the node's sockets and keepalives, go on meanwhile. Not started while shutting down
    /// (its file is removed at the next start); if no thread can be started it runs here.
    fn start_restore(&mut self, job: RestoreJob<MeteredFs>) {
        if self.shutting_down {
            return;
        }
        let tx = self.tx.clone();
        let (index, ticket) = (job.index(), job.ticket());
        // The job is moved into the thread only once it exists (a failed spawn gives it back).
        let slot = Arc::new(Mutex::new(Some(job)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new().name("raft-restore".into()).spawn(move || {
            let Some(job) = theirs.lock().ok().and_then(|mut j| j.take()) else { return };
            let _ = tx.send(Input::Restored(run_restore(job)));
        });
        match spawned {
            Ok(thread) => {
                tracing::debug!(index, ticket, "restore job started");
                self.restore = Some(thread);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to load the received snapshot: loading it here");
                if let Some(job) = slot.lock().ok().and_then(|mut j| j.take()) {
                    let _ = self.tx.send(Input::Restored(run_restore(job)));
                }
            }
        }
    }

    /// Drops a replaced state machine (1M keys: hundreds of milliseconds of freeing) on a
    /// short-lived thread instead of this one.
    fn retire(&mut self, state: engine::kv::KvStore) {
        if state.len() < 10_000 {
            return; // Dropped here: not worth a thread.
        }
        let free = move || {
            let (keys, started) = (state.len(), Instant::now());
            drop(state);
            tracing::info!(keys, elapsed = ?started.elapsed(), "freed a replaced state machine");
        };
        if let Err(e) = std::thread::Builder::new().name("raft-free".into()).spawn(free) {
            tracing::debug!(error = %e, "could not start a thread to free a replaced state machine");
        }
    }

    /// Frees the compacted log prefix (up to --snapshot-entries entries: milliseconds) and deletes
    /// the previous snapshot file and the log segments it covers (tens of milliseconds per 64 MiB)
    /// on a short-lived thread instead of this one.
    fn free(&mut self, entries: VecDeque<Entry>, files: Vec<PathBuf>) {
        if entries.len() < 1024 && files.is_empty() {
            return; // Nothing worth a thread (small batches are freed right here).
        }
        let work = move || {
            drop(entries);
            for path in files {
                // A leftover is harmless: startup removes what a snapshot covers.
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::debug!(path = %path.display(), error = %e, "could not delete an obsolete file");
                }
            }
        };
        if let Err(e) = std::thread::Builder::new().name("raft-free".into()).spawn(work) {
            tracing::debug!(error = %e, "could not start a thread to free the compacted log");
        }
    }
}

/// An AppendEntries without entries: it only tells a follower the leader's commit index.
fn is_commit_notice(msg: &PeerMessage) -> bool {
    matches!(msg, PeerMessage::Raft(raft::Message { body: raft::MessageBody::AppendEntries { entries, .. }, .. }) if entries.is_empty())
}

/// The core address of every member of `m` whose record is a `-gc` entry (raft-kv writes no other).
pub fn peer_addresses(m: &raft::Membership) -> std::collections::BTreeMap<NodeId, String> {
    m.members()
        .iter()
        .filter_map(|(&id, rec)| {
            let member = crate::cluster::Member::from_context(&rec.context).ok()?;
            Some((id, member.core_addr()))
        })
        .collect()
}

/// Publishes the driver's status for `INFO` and `raft-kv status`.
///
/// Runs before every delivery of answers (twice per batch of the host loop), so it updates the
/// shared status in place: the member list (a string per member) is rebuilt only when the
/// membership differs from the one published, and the peer list reuses its allocation. Measured
/// with `bench/write-instructions.sh` (64-client writes): rebuilding it every time cost 1-2 % of
/// the cluster's instructions per write.
fn publish(driver: &Driver<MeteredFs>, shared: &Mutex<Status>, pending: usize) {
    let node = driver.node();
    let snapshot = driver.snapshot();
    let (sending, receiving) = driver.snapshot_transfers();
    let leader = node.role() == Role::Leader;
    let Ok(mut s) = shared.lock() else { return };
    let (role, term) = (node.role().as_str(), node.term());
    if (role, term, node.leader()) != (s.role, s.term, s.leader) {
        // An operator reads elections from the log: every change of role, term or known leader.
        tracing::info!(role, term, leader = ?node.leader(), "raft state changed");
    }
    let changed = node.leader().is_some() && node.leader() != s.last_leader;
    s.leader_changes += u64::from(changed && s.last_leader.is_some());
    s.last_leader = node.leader().or(s.last_leader);
    s.id = node.id();
    s.role = role;
    s.term = term;
    s.leader = node.leader();
    s.commit = node.commit();
    s.applied = driver.kv().applied_index();
    s.last_index = node.last_index();
    s.keys = driver.kv().len();
    s.expires = driver.kv().expires_count();
    s.pending = pending;
    s.peers.clear();
    if leader {
        s.peers.extend(node.peers().iter().map(|&p| (p, node.progress(p).map_or(0, |pr| pr.match_index))));
    }
    s.log_first_index = node.first_index();
    s.snapshot_index = snapshot.map_or(0, |(m, _)| m.index);
    s.snapshot_term = snapshot.map_or(0, |(m, _)| m.term);
    s.snapshot_bytes = snapshot.map_or(0, |(_, len)| *len);
    s.snapshot_in_progress = driver.snapshot_in_progress();
    s.snapshot_sending = sending;
    s.snapshot_receiving = receiving;
    s.snapshot_stats = driver.snapshot_stats();
    s.writes_retried = driver.writes_retried();
    let members = node.membership().members();
    let same_members = s.members.len() == members.len()
        && s.members
            .iter()
            .zip(members.iter())
            .all(|(m, (&id, rec))| m.id == id && m.record.as_bytes() == &rec.context[..]);
    if !same_members {
        s.members = members
            .iter()
            .map(|(&id, m)| MemberStatus {
                id,
                record: String::from_utf8_lossy(&m.context).into_owned(),
                voter: false,
                match_index: None,
            })
            .collect();
    }
    for (m, (&id, rec)) in s.members.iter_mut().zip(members.iter()) {
        m.voter = rec.suffrage == raft::Suffrage::Voter;
        m.match_index = match node.role() {
            Role::Leader if id == node.id() => Some(node.last_index()),
            Role::Leader => node.progress(id).map(|p| p.match_index),
            _ => None,
        };
    }
    s.membership_index = node.membership_index();
    s.next_id = node.membership().next_id();
    s.standby = false;
}

/// Runs a restore job; a panic in it is reported as a refused snapshot rather than lost (the
/// driver would wait for it forever).
fn run_restore(job: RestoreJob<MeteredFs>) -> Restored {
    let started = Instant::now();
    let (index, ticket) = (job.index(), job.ticket());
    let restored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()))
        .unwrap_or_else(|_| Restored::failed(ticket, "the restore thread panicked".into()));
    tracing::info!(index, ok = restored.is_ok(), elapsed = ?started.elapsed(), "received snapshot checked and loaded");
    restored
}

/// Runs a snapshot job; a panic in it is reported as an I/O error on `tmp` rather than lost.
fn run_job(job: SnapshotJob<MeteredFs>, tmp: PathBuf) -> Result<SnapshotDone, StorageError> {
    // Serializing competes for the CPU with the threads that serve requests: run it at a lower
    // priority (on Linux `setpriority` with a thread id applies to that thread alone).
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(error = %e, "could not lower the snapshot thread's priority");
    }
    let started = Instant::now();
    let index = job.index();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())).unwrap_or_else(|_| {
        Err(StorageError::io(tmp, std::io::Error::other("the snapshot thread panicked")))
    });
    if let Ok(done) = &result {
        tracing::info!(index, bytes = done.len, elapsed = ?started.elapsed(), "snapshot written");
    }
    result
}
