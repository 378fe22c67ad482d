//! The host loop: the one place that turns a batch of inputs into a replica's work, in the order
//! the Ready contract ([`raft::ready`]) states. The server's node thread and the simulator both run
//! [`run_batch`]; only the [`Io`] behind it differs (sockets, threads and files in the server; a
//! virtual network, scheduled events and an in-memory disk in the simulator). No other copy of this
//! order exists.
//!
//! One run:
//! 1. every input takes effect in the order given: client requests are submitted, peer messages
//!    stepped (a snapshot's chunks received; the last one makes a restore job), ticks advance time,
//!    reports of background work (a sync job, a snapshot job, a restore job: a received snapshot
//!    is installed when its job's outcome arrives and still applies) are handed over;
//! 2. the driver executes the core's Readys ([`Driver::process_with`]). What may leave before this
//!    node's own fsync leaves at once through [`Io::send`] / [`Io::answer`] (a leader's appends
//!    and heartbeats, forwarded writes, answers to committed writes and to reads); then the batch
//!    is persisted (one fsync);
//! 3. a deferred sync job, if any, is handed to [`Io::start_sync`];
//! 4. the messages that depended on the persisted state leave ([`Io::send`]);
//! 5. compacted log entries and obsolete files go to [`Io::free`], replaced state machines to
//!    [`Io::retire`];
//! 6. a due snapshot job goes to [`Io::start_snapshot`], a restore job to [`Io::start_restore`];
//! 7. the remaining answers are delivered ([`Io::answer`]).
//!
//! A host forms batches the way its load does: the server takes everything queued on its channel,
//! the simulator lets inputs queue for a random while. Any batching is correct; the simulator
//! varies it because some orders (AppendEntries and the last chunk of a snapshot in one batch) only
//! occur in batches. Both bound a batch by the same [`MAX_BATCH_WORK`] (counted by [`work`]): a
//! follower catching up receives tens of thousands of entries at once, and a batch that took them
//! all kept its thread from answering anyone (heartbeats included) for hundreds of milliseconds, long
//! enough for a new leader's CheckQuorum to give up on it (seen as a 1.5-2.5 s write outage when the
//! leader was cut right after a lagging node came back).
//!
//! An error is fatal: the node must stop (its storage or state machine can no longer be trusted).
//! Output handed to the `Io` before the error stays valid (it never depended on the failed step).

use std::collections::VecDeque;
use std::path::PathBuf;

use raft::{Entry, Message, MessageBody};
use storage::{FileSystem, StorageError};

use crate::driver::{Driver, FatalError, PeerMessage, Request, RequestId, Response, SyncJob};
use crate::kv::KvStore;
use crate::snapshots::{RestoreJob, Restored, SnapshotDone, SnapshotJob};

/// One input to a replica.
#[derive(Debug)]
pub enum Input {
    /// A client request, with the host's id for its answer.
    Client(RequestId, Request),
    /// A message from a peer.
    Peer(PeerMessage),
    /// One tick of logical time passed.
    Tick,
    /// This many ticks (at least one) passed since the last tick input: the node's clock advances
    /// by all of them, its timers by one step (a host whose thread fell behind; leases are measured
    /// on this clock, see `raft::lease`). Goes first in its batch.
    Ticks(u64),
    /// The outcome of the snapshot job handed to [`Io::start_snapshot`].
    SnapshotDone(Result<SnapshotDone, StorageError>),
    /// The outcome of the sync job handed to [`Io::start_sync`]: its ticket and result.
    Synced(u64, Result<(), StorageError>),
    /// The outcome of the restore job handed to [`Io::start_restore`] (a received snapshot,
    /// checked and loaded).
    Restored(Restored),
}

/// The most work one run of the host loop takes on (see [`work`]): about 50 ms of a follower's
/// catch-up (receive, persist, apply) on the machines we measure on.
pub const MAX_BATCH_WORK: usize = 8192;

/// The work an input brings to a run: the log entries it carries (an AppendEntries or a Forward of
/// proposals), and at least one.
pub fn work(input: &Input) -> usize {
    let carried = match input {
        Input::Peer(PeerMessage::Raft(Message {
            body: MessageBody::AppendEntries { entries, .. }, ..
        })) => entries.len(),
        Input::Peer(PeerMessage::Forward { proposals, .. }) => proposals.len(),
        _ => 0,
    };
    carried.max(1)
}

/// Takes the next batch from the front of `queue`: inputs while their [`work`] stays within
/// `max_work` (the server's is [`MAX_BATCH_WORK`]; the simulator varies it), and always at least
/// one (an input is never split).
pub fn take_batch(queue: &mut VecDeque<Input>, max_work: usize) -> Vec<Input> {
    let mut total = 0;
    let mut n = 0;
    for input in queue.iter() {
        let w = work(input);
        if n > 0 && total + w > max_work {
            break;
        }
        total += w;
        n += 1;
    }
    queue.drain(..n).collect()
}

/// What a host does with a replica's output.
pub trait Io<F: FileSystem> {
    /// Sends messages to peers. Must not block on the network (a partition is silence).
    fn send(&mut self, driver: &Driver<F>, messages: Vec<PeerMessage>);
    /// Delivers answers to the requests they belong to (with the driver, so the host can publish
    /// the replica's state before the clients see the answers).
    fn answer(&mut self, driver: &Driver<F>, answers: Vec<(RequestId, Response)>);
    /// Runs a deferred sync somewhere and reports it later as [`Input::Synced`] (with the driver,
    /// so the host can choose where by the replica's state). An error stops the node.
    fn start_sync(&mut self, driver: &Driver<F>, job: SyncJob<F>) -> Result<(), FatalError>;
    /// Runs a snapshot job somewhere and reports it later as [`Input::SnapshotDone`]. If it cannot
    /// be started, the error is reported to the driver at once (it retries later).
    fn start_snapshot(&mut self, job: SnapshotJob<F>) -> Result<(), StorageError>;
    /// Runs a restore job (checking and loading a received snapshot: the better part of a second
    /// for a 100 MB one) somewhere off the host loop and reports it later as [`Input::Restored`].
    /// A host that cannot run it (it is stopping) drops it: the driver then waits for an outcome
    /// that never comes, and the file it leaves is removed at the next start.
    fn start_restore(&mut self, job: RestoreJob<F>);
    /// Frees log entries a compaction dropped and deletes files a snapshot made obsolete, ideally
    /// off the node's hot path. Files may be left behind: startup removes them.
    fn free(&mut self, entries: VecDeque<Entry>, files: Vec<PathBuf>);
    /// Drops a state machine the driver no longer uses (the one a received snapshot replaced, or
    /// a restored one that came too late), ideally off the node's hot path: freeing 1M keys takes
    /// hundreds of milliseconds. The default drops it here.
    fn retire(&mut self, state: KvStore) {
        drop(state);
    }
    /// The host's wall clock in ms since the Unix epoch, read once per batch. It reaches the
    /// state machine only as the stamp a leader puts on the entries it appends (see
    /// [`crate::kv::expiry`]). The default, for hosts without a clock, is 0: stamps then never
    /// run ahead of the log time, so relative expiry counts from the last stamp.
    fn clock_ms(&self) -> u64 {
        0
    }
}

/// Runs one batch of `inputs` through `driver`, in the order described in the module docs.
pub fn run_batch<F: FileSystem>(
    driver: &mut Driver<F>,
    inputs: impl IntoIterator<Item = Input>,
    io: &mut dyn Io<F>,
) -> Result<(), FatalError> {
    driver.set_clock(io.clock_ms());
    for input in inputs {
        match input {
            Input::Client(id, request) => driver.submit(id, request),
            Input::Peer(msg) => driver.receive(msg)?,
            Input::Tick => driver.tick(1),
            Input::Ticks(n) => driver.tick(n),
            Input::SnapshotDone(result) => driver.snapshot_finished(result)?,
            Input::Synced(ticket, result) => driver.sync_finished(ticket, result)?,
            Input::Restored(restored) => driver.restore_finished(restored)?,
        }
    }
    driver.process_with(&mut |d, early| {
        io.send(d, early.messages);
        io.answer(d, early.answers);
    })?;
    if let Some(job) = driver.take_sync_job() {
        io.start_sync(driver, job)?;
    }
    let messages = driver.take_messages();
    if !messages.is_empty() {
        io.send(driver, messages);
    }
    let (entries, files) = (driver.take_compacted_entries(), driver.take_files_to_delete());
    if !entries.is_empty() || !files.is_empty() {
        io.free(entries, files);
    }
    for state in driver.take_retired_states() {
        io.retire(state);
    }
    if let Some(job) = driver.take_snapshot_job() {
        if let Err(e) = io.start_snapshot(job) {
            driver.snapshot_finished(Err(e))?;
        }
    }
    if let Some(job) = driver.take_restore_job() {
        io.start_restore(job);
    }
    let answers = driver.take_answers();
    io.answer(driver, answers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn append(entries: u64) -> Input {
        let entries = (1..=entries).map(|i| Entry::new(1, i, Bytes::from_static(b"x"))).collect();
        let body =
            MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, entries, leader_commit: 0 };
        Input::Peer(PeerMessage::Raft(Message { from: 1, to: 2, term: 1, body }))
    }

    #[test]
    fn work_counts_carried_entries_and_at_least_one() {
        assert_eq!(work(&append(1000)), 1000);
        assert_eq!(work(&append(0)), 1, "a heartbeat is one input");
        assert_eq!(work(&Input::Tick), 1);
        let forward = Input::Peer(PeerMessage::Forward { from: 2, to: 1, proposals: vec![Bytes::new(); 7] });
        assert_eq!(work(&forward), 7);
    }

    #[test]
    fn a_batch_stays_within_its_work_and_never_splits_an_input() {
        let mut queue: VecDeque<Input> = [append(5000), append(3000), Input::Tick, append(2000)].into();
        let first = take_batch(&mut queue, 8192);
        assert_eq!(
            first.iter().map(work).sum::<usize>(),
            8001,
            "5000 + 3000 + the tick; 2000 more would exceed"
        );
        assert_eq!(queue.len(), 1);
        // An input larger than the bound still runs, alone.
        let mut queue: VecDeque<Input> = [append(10_000), Input::Tick].into();
        assert_eq!(take_batch(&mut queue, 8192).len(), 1);
        assert_eq!(take_batch(&mut queue, 8192).len(), 1);
        assert!(take_batch(&mut queue, 8192).is_empty());
    }
}
