//! Test support: a host [`Io`] that records everything a batch hands out, for tests that drive
//! drivers by hand through the one host loop ([`engine::run_batch`]).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;

use engine::{
    Driver, FatalError, Input, Io, PeerMessage, RequestId, Response, RestoreJob, SnapshotJob, SyncJob,
};
use raft::Entry;
use storage::{FileSystem, StorageError};

/// Everything one run of the host loop handed out, in order.
pub struct Recorder<F: FileSystem> {
    /// Messages, in the order they left.
    pub messages: Vec<PeerMessage>,
    /// Answers, in the order they were delivered.
    pub answers: Vec<(RequestId, Response)>,
    /// Sync jobs handed out (not run).
    pub syncs: Vec<SyncJob<F>>,
    /// Snapshot jobs handed out (not run).
    pub snapshots: Vec<SnapshotJob<F>>,
    /// Restore jobs handed out (not run).
    pub restores: Vec<RestoreJob<F>>,
    /// The wall clock the host reports ([`Io::clock_ms`]; 0: none).
    pub clock_ms: u64,
}

impl<F: FileSystem> Default for Recorder<F> {
    fn default() -> Self {
        Recorder {
            messages: Vec::new(),
            answers: Vec::new(),
            syncs: Vec::new(),
            snapshots: Vec::new(),
            restores: Vec::new(),
            clock_ms: 0,
        }
    }
}

impl<F: FileSystem> Io<F> for Recorder<F> {
    fn send(&mut self, _: &Driver<F>, messages: Vec<PeerMessage>) {
        self.messages.extend(messages);
    }

    fn answer(&mut self, _: &Driver<F>, answers: Vec<(RequestId, Response)>) {
        self.answers.extend(answers);
    }

    fn start_sync(&mut self, _: &Driver<F>, job: SyncJob<F>) -> Result<(), FatalError> {
        self.syncs.push(job);
        Ok(())
    }

    fn start_snapshot(&mut self, job: SnapshotJob<F>) -> Result<(), StorageError> {
        self.snapshots.push(job);
        Ok(())
    }

    fn start_restore(&mut self, job: RestoreJob<F>) {
        self.restores.push(job);
    }

    fn free(&mut self, _: VecDeque<Entry>, _: Vec<PathBuf>) {}

    fn clock_ms(&self) -> u64 {
        self.clock_ms
    }
}

/// Runs one batch of `inputs` through `driver`; returns its outcome and what it handed out (also
/// what it handed out before failing).
pub fn run<F: FileSystem>(
    driver: &mut Driver<F>,
    inputs: Vec<Input>,
) -> (Result<(), FatalError>, Recorder<F>) {
    let mut rec = Recorder::default();
    let result = engine::run_batch(driver, inputs, &mut rec);
    (result, rec)
}

/// [`run`] with the host's wall clock at `clock_ms`.
pub fn run_at<F: FileSystem>(
    driver: &mut Driver<F>,
    inputs: Vec<Input>,
    clock_ms: u64,
) -> (Result<(), FatalError>, Recorder<F>) {
    let mut rec = Recorder { clock_ms, ..Recorder::default() };
    let result = engine::run_batch(driver, inputs, &mut rec);
    (result, rec)
}
