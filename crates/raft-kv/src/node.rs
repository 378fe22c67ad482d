//! The node thread: runs the [`Driver`] (Raft core + WAL + KV state machine) on a dedicated OS thread,
//! so fsync never blocks the network tasks.
//!
//! Loop: wait for input (client requests, peer messages) until the next tick is due; drain everything
//! else already queued (this is the group commit: every request that arrived during the last fsync
//! is persisted by the next single fsync); tick if due; let the driver persist, then hand its
//! messages to the transport, then publish the status for `INFO`, then deliver the answers.
//!
//! Syncs: by default the driver fsyncs each batch on this thread (the blocking fsync is also what
//! batches the next round's requests). With `--sync-thread` it hands the fdatasync out instead
//! ([`Driver::take_sync_job`]): a `raft-sync` thread runs it and reports back through
//! [`Input::Synced`], so this thread goes on receiving acknowledgements, committing, answering and
//! appending while the disk works. The sync thread runs only the newest job it has (it covers the
//! older ones) and exits when this thread drops its sender.
//!
//! Snapshots: after every round the loop asks the driver for a snapshot job
//! ([`Driver::take_snapshot_job`]) and runs it on a background thread (`raft-snapshot`); the job
//! only serializes an immutable view of the state machine into `snapshot.tmp` and fsyncs it, so the
//! node goes on serving meanwhile. Its outcome comes back as [`Input::SnapshotDone`] and is handed to
//! [`Driver::snapshot_finished`] on this thread, which installs the file and compacts the log. The
//! driver creates at most one job at a time (it waits for `snapshot_finished`), so at most one
//! snapshot thread exists. A job thread that panics reports an I/O error instead, so the driver is
//! never left waiting for a result that cannot come.
//!
//! Shutdown waits for in-flight requests *and* a running snapshot job for at most
//! `shutdown_grace`, then returns; a job still running then is abandoned (the thread is detached and
//! dies with the process; the `snapshot.tmp` it leaves is removed at the next start).
//!
//! Invariants: answers and messages leave only when the driver lets them out (early ones from the
//! hook of [`Driver::process_with`], the rest after it returned), i.e. once the state they depend on
//! is durable; every client request gets exactly one answer (the driver's, or an error at
//! shutdown); at most one snapshot job and one sync run at a time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{
    Driver, FatalError, PeerMessage, Request, RequestError, Response, SnapshotDone, SnapshotJob,
    SnapshotStats, SyncJob,
};
use raft::{NodeId, Role};
use storage::{StdFs, StorageError, SNAPSHOT_TMP};
use tokio::sync::oneshot;

use crate::transport::Transport;

/// Input to the node thread.
pub enum Input {
    /// A client request and where to send its answer.
    Client(Request, oneshot::Sender<Response>),
    /// A message from a peer.
    Peer(PeerMessage),
    /// The outcome of the snapshot job running in the background (sent by its thread).
    SnapshotDone(Result<SnapshotDone, StorageError>),
    /// The outcome of a sync job: its ticket and result (sent by the sync thread).
    Synced(u64, Result<(), StorageError>),
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
    /// True while a snapshot is being received from the leader.
    pub snapshot_receiving: bool,
    /// Snapshot counters since this process started.
    pub snapshot_stats: SnapshotStats,
}

/// Handle to the node thread.
#[derive(Clone)]
pub struct NodeHandle {
    /// Input channel.
    pub tx: Sender<Input>,
    /// The latest published status.
    pub status: Arc<Mutex<Status>>,
}

impl NodeHandle {
    /// Submits a request; the answer arrives on the returned receiver.
    pub fn submit(&self, request: Request) -> oneshot::Receiver<Response> {
        let (tx, rx) = oneshot::channel();
        // If the node thread is gone the sender is dropped and the receiver reports it.
        let _ = self.tx.send(Input::Client(request, tx));
        rx
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
}

/// Starts the node thread. `handle` is the handle whose channel `rx` receives (snapshot threads
/// report through it).
pub fn spawn(
    driver: Driver<StdFs>,
    transport: Transport,
    rx: Receiver<Input>,
    handle: &NodeHandle,
    opts: NodeOptions,
) -> std::io::Result<JoinHandle<Result<(), FatalError>>> {
    let (tx, status) = (handle.tx.clone(), handle.status.clone());
    let syncer = if driver.deferred_sync() { Some(spawn_syncer(tx.clone())?) } else { None };
    std::thread::Builder::new().name("raft-node".into()).spawn(move || {
        NodeLoop {
            driver,
            transport,
            rx,
            tx,
            status,
            opts,
            waiters: HashMap::new(),
            next: 1,
            job: None,
            syncer,
        }
        .run()
    })
}

/// Starts the `raft-sync` thread: it runs the newest sync job it has, reports it as
/// [`Input::Synced`], and exits once `Sender` it returns is dropped.
fn spawn_syncer(report: Sender<Input>) -> std::io::Result<Sender<SyncJob<StdFs>>> {
    let (jobs, rx) = std::sync::mpsc::channel::<SyncJob<StdFs>>();
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
    driver: Driver<StdFs>,
    transport: Transport,
    rx: Receiver<Input>,
    /// A sender into `rx`, cloned into each snapshot thread. (So `rx` never reports
    /// `Disconnected`: the loop stops on [`Input::Shutdown`].)
    tx: Sender<Input>,
    status: Arc<Mutex<Status>>,
    opts: NodeOptions,
    waiters: HashMap<u64, oneshot::Sender<Response>>,
    next: u64,
    /// The running snapshot thread (None when no job runs).
    job: Option<JoinHandle<()>>,
    /// Sync jobs go to the `raft-sync` thread (only with `--sync-thread`).
    syncer: Option<Sender<SyncJob<StdFs>>>,
}

impl NodeLoop {
    fn run(mut self) -> Result<(), FatalError> {
        let mut next_tick = Instant::now() + self.opts.tick;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wait = next_tick.saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(input) => {
                    if self.handle(input)? {
                        shutdown_deadline.get_or_insert(now + self.opts.shutdown_grace);
                    }
                    for _ in 0..65_536 {
                        match self.rx.try_recv() {
                            Ok(input) => {
                                if self.handle(input)? {
                                    shutdown_deadline.get_or_insert(now + self.opts.shutdown_grace);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    shutdown_deadline.get_or_insert(now);
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.driver.tick();
                next_tick += self.opts.tick;
                if next_tick < now {
                    // We fell far behind (a long fsync): do not replay a burst of ticks.
                    next_tick = now + self.opts.tick;
                }
            }
            let (transport, status, waiters) = (&self.transport, &self.status, &mut self.waiters);
            self.driver.process_with(&mut |driver, early| {
                transport.send(early.messages);
                deliver(driver, status, waiters, early.answers);
            })?;
            if let Some(job) = self.driver.take_sync_job() {
                if self.syncer.as_ref().is_none_or(|s| s.send(job).is_err()) {
                    let e = std::io::Error::other("the sync thread is gone");
                    return Err(FatalError::Storage(StorageError::io(self.opts.data_dir.clone(), e)));
                }
            }
            self.transport.send(self.driver.take_messages());
            self.free_in_background();
            if shutdown_deadline.is_none() {
                self.start_snapshot_job()?;
            }
            let answers = self.driver.take_answers();
            deliver(&self.driver, &self.status, &mut self.waiters, answers);
            if let Some(deadline) = shutdown_deadline {
                let idle = self.waiters.is_empty() && self.job.is_none();
                if idle || Instant::now() >= deadline {
                    if self.job.take().is_some() {
                        tracing::warn!("shutting down while a snapshot is being written: abandoning it");
                    }
                    for (_, w) in self.waiters.drain() {
                        let _ = w.send(Err(RequestError::Timeout));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// After a snapshot was installed: frees the compacted log prefix (up to --snapshot-entries
    /// entries: milliseconds) and deletes the previous snapshot file and the log segments it covers
    /// (tens of milliseconds per 64 MiB) on a short-lived thread instead of this one.
    fn free_in_background(&mut self) {
        let compacted = self.driver.take_compacted_entries();
        let files = self.driver.take_files_to_delete();
        if compacted.len() < 1024 && files.is_empty() {
            return; // Nothing worth a thread (small batches are freed right here).
        }
        let work = move || {
            drop(compacted);
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

    /// Runs the driver's snapshot job, if it has one, on a background thread.
    fn start_snapshot_job(&mut self) -> Result<(), FatalError> {
        let Some(job) = self.driver.take_snapshot_job() else { return Ok(()) };
        let tx = self.tx.clone();
        let tmp = self.opts.data_dir.join(SNAPSHOT_TMP);
        let index = job.index();
        let spawned = std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
            let result = run_job(job, tmp);
            // Fails only if the node thread is gone (shutdown): nothing to report to.
            let _ = tx.send(Input::SnapshotDone(result));
        });
        match spawned {
            Ok(thread) => {
                tracing::debug!(index, "snapshot job started");
                self.job = Some(thread);
                Ok(())
            }
            Err(e) => {
                // The job went down with the closure: tell the driver at once, so that it tries
                // again when the next snapshot is due.
                let err = StorageError::io(self.opts.data_dir.join(SNAPSHOT_TMP), e);
                self.driver.snapshot_finished(Err(err))
            }
        }
    }

    /// Handles one input; returns true if it asks to shut down. An error is fatal (the node stops).
    fn handle(&mut self, input: Input) -> Result<bool, FatalError> {
        match input {
            Input::Client(request, reply) => {
                let id = self.next;
                self.next += 1;
                self.waiters.insert(id, reply);
                self.driver.submit(id, request);
            }
            Input::Peer(msg) => self.driver.receive(msg),
            Input::SnapshotDone(result) => {
                if let Some(thread) = self.job.take() {
                    // Sending the result was the thread's last act: this join returns at once.
                    let _ = thread.join();
                }
                let started = Instant::now();
                self.driver.snapshot_finished(result)?;
                // Installing (rename, directory sync, compaction) runs on this thread: say when it
                // held requests up noticeably.
                let took = started.elapsed();
                if took > Duration::from_millis(20) {
                    tracing::info!(
                        ?took,
                        "installing the snapshot and compacting the log held the node thread"
                    );
                } else {
                    tracing::debug!(?took, "snapshot installed");
                }
            }
            Input::Synced(ticket, result) => self.driver.sync_finished(ticket, result)?,
            Input::Shutdown => return Ok(true),
        }
        Ok(false)
    }
}

/// Publishes the driver's status (for `INFO`), then hands `answers` to their waiting clients. The
/// status goes first: a client that got an answer (e.g. RAFT.SNAPSHOT's) then sees an INFO at
/// least as new.
fn deliver(
    driver: &Driver<StdFs>,
    status: &Mutex<Status>,
    waiters: &mut HashMap<u64, oneshot::Sender<Response>>,
    answers: Vec<(u64, Response)>,
) {
    let answers: Vec<_> =
        answers.into_iter().filter_map(|(id, response)| Some((waiters.remove(&id)?, response))).collect();
    publish(driver, status, waiters.len());
    for (waiter, response) in answers {
        let _ = waiter.send(response);
    }
}

/// Publishes the driver's status for `INFO` and `raft-kv status`.
fn publish(driver: &Driver<StdFs>, shared: &Mutex<Status>, pending: usize) {
    let node = driver.node();
    let snapshot = driver.snapshot();
    let (sending, receiving) = driver.snapshot_transfers();
    let peers = node.peers().iter().map(|&p| (p, node.progress(p).map_or(0, |pr| pr.match_index))).collect();
    let status = Status {
        id: node.id(),
        role: node.role().as_str(),
        term: node.term(),
        leader: node.leader(),
        commit: node.commit(),
        applied: driver.kv().applied_index(),
        last_index: node.last_index(),
        keys: driver.kv().len(),
        pending,
        peers: if node.role() == Role::Leader { peers } else { Vec::new() },
        log_first_index: node.first_index(),
        snapshot_index: snapshot.map_or(0, |(m, _)| m.index),
        snapshot_term: snapshot.map_or(0, |(m, _)| m.term),
        snapshot_bytes: snapshot.map_or(0, |(_, len)| *len),
        snapshot_in_progress: driver.snapshot_in_progress(),
        snapshot_sending: sending,
        snapshot_receiving: receiving,
        snapshot_stats: driver.snapshot_stats(),
    };
    if let Ok(mut s) = shared.lock() {
        *s = status;
    }
}

/// Runs a snapshot job; a panic in it is reported as an I/O error on `tmp` rather than lost.
fn run_job(job: SnapshotJob<StdFs>, tmp: PathBuf) -> Result<SnapshotDone, StorageError> {
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
