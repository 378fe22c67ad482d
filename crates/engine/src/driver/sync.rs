//! Deferred syncs ([`super::DriverConfig::deferred_sync`]): the fdatasync of a batch's entries need
//! not block the thread that runs the driver. The entries are written to the OS, and the sync is
//! handed out as a [`SyncJob`] with a ticket; the host runs it wherever it likes and reports it
//! ([`crate::host::Input::Synced`]). Meanwhile the driver goes on: it receives acknowledgements,
//! commits, applies and answers, appends and sends more entries. Until the ticket is reported:
//! - the core is not told the entries are persisted (a leader does not count itself for them);
//! - the batch's log acknowledgements ([`raft::Ready::log_acks`]), and those of every later batch,
//!   are held, and leave in order once their ticket is reported. The core's other late messages
//!   depend at most on the hard state, which is always written inline, and leave at once.
//!
//! A job covers everything written before it was started, so running only the newest one covers
//! the older ones too (entries in earlier segments were synced when the segment was sealed). A
//! truncation or a log reset syncs inline and makes every job in flight stale: its report is then
//! ignored, and the messages held for it are dropped (they may acknowledge entries that are gone;
//! dropping a message is always safe in Raft).
//!
//! Invariants: tickets are issued in increasing order; `done <= issued`; `in_flight` and `held`
//! hold only tickets in `(done, issued]`, in increasing order.

use std::collections::VecDeque;

use raft::Index;
use storage::{FileSystem, LogSync, StorageError};

use super::PeerMessage;

/// A deferred fdatasync of the log (see the module docs): run it anywhere, then report it.
pub struct SyncJob<F: FileSystem> {
    /// Identifies the job in the report.
    pub(super) ticket: u64,
    /// The sync.
    pub(super) sync: LogSync<F>,
}

impl<F: FileSystem> SyncJob<F> {
    /// The ticket to report.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Runs the fdatasync.
    pub fn run(&self) -> Result<(), StorageError> {
        self.sync.run()
    }
}

/// The driver's bookkeeping of deferred syncs.
pub(super) struct SyncTickets<F: FileSystem> {
    /// The last ticket issued.
    issued: u64,
    /// The last ticket reported (or made stale).
    done: u64,
    /// The newest job not yet taken by the host (it covers the older ones).
    job: Option<SyncJob<F>>,
    /// Tickets in flight and the last log index each covers.
    in_flight: VecDeque<(u64, Index)>,
    /// Log acknowledgements waiting for a ticket, in order.
    held: VecDeque<(u64, Vec<PeerMessage>)>,
}

impl<F: FileSystem> SyncTickets<F> {
    pub(super) fn new() -> Self {
        SyncTickets { issued: 0, done: 0, job: None, in_flight: VecDeque::new(), held: VecDeque::new() }
    }

    /// True while some ticket is not reported yet.
    pub(super) fn pending(&self) -> bool {
        self.done < self.issued
    }

    /// Issues a ticket for `sync`, which makes the log durable up to `last`.
    pub(super) fn issue(&mut self, sync: LogSync<F>, last: Index) {
        self.issued += 1;
        self.in_flight.push_back((self.issued, last));
        self.job = Some(SyncJob { ticket: self.issued, sync });
    }

    /// Holds `acks` until the newest ticket issued is reported.
    pub(super) fn hold(&mut self, acks: Vec<PeerMessage>) {
        if !acks.is_empty() {
            self.held.push_back((self.issued, acks));
        }
    }

    /// The newest job for the host to run.
    pub(super) fn take_job(&mut self) -> Option<SyncJob<F>> {
        self.job.take()
    }

    /// A ticket was reported: returns the log index now durable (if this report is news) and the
    /// messages it releases, in order. Stale and unknown tickets change nothing.
    pub(super) fn finished(&mut self, ticket: u64) -> (Option<Index>, Vec<PeerMessage>) {
        if ticket <= self.done || ticket > self.issued {
            return (None, Vec::new());
        }
        self.done = ticket;
        let mut persisted = None;
        while self.in_flight.front().is_some_and(|&(t, _)| t <= ticket) {
            persisted = self.in_flight.pop_front().map(|(_, index)| index);
        }
        let mut released = Vec::new();
        while self.held.front().is_some_and(|&(t, _)| t <= ticket) {
            if let Some((_, msgs)) = self.held.pop_front() {
                released.extend(msgs);
            }
        }
        (persisted, released)
    }

    /// Drops the held messages `stale` picks.
    pub(super) fn drop_held(&mut self, stale: impl Fn(&PeerMessage) -> bool) {
        for (_, msgs) in &mut self.held {
            msgs.retain(|m| !stale(m));
        }
    }

    /// After a truncation or reset, with everything still in the log durable: every sync in flight
    /// is stale, and the messages held for them are dropped (see the module docs).
    pub(super) fn abandon(&mut self) {
        self.done = self.issued;
        self.job = None;
        self.in_flight.clear();
        self.held.clear();
    }
}
