//! The direct lane: the sender writes small messages straight into an idle peer connection.
//!
//! Going through the peer's outbound task costs a thread wake-up per batch: the node thread queues
//! the messages, a tokio worker wakes, encodes and writes them. On an idle 2-vCPU machine each such
//! wake-up costs tens of microseconds, and a replicated write crosses two of them (the leader's
//! appends, the follower's acknowledgement). So [`Transport::send`](super::Transport::send) writes a
//! peer's messages itself, with a non-blocking `try_write` on the connection, whenever nothing is
//! ahead of them: the connection is up and the outbound task holds nothing unwritten. Otherwise
//! they go through the queue as before.
//!
//! # Invariants (all state under one mutex, never held across an `.await`)
//! - `unwritten` counts the messages handed to the outbound task (queued, held back, or in a batch
//!   being written) plus one for `pending` bytes, until each is written or counted lost. The direct
//!   path is taken only when it is zero, so a message never overtakes an earlier one to the same
//!   peer: per-peer order is kept exactly as the queue keeps it.
//! - A direct write that does not fit in the socket buffer leaves its unwritten tail in `pending`
//!   (whole frames must go out contiguously); the task writes it before anything else, under its
//!   write timeout, so a stuck peer is handled like before.
//! - Snapshot chunks never take the direct path (the task holds them behind other messages).
//! - While `away` is set (by the task, after a failed dial; cleared when it connects) nothing is
//!   queued: messages are counted as `dropped_away` and dropped.
//! - `stream` is set by the task after the handshake and cleared by it when the connection ends or
//!   the task stops, so nothing is written on a connection after it was given up or after shutdown.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use engine::PeerMessage;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use super::{bump, PeerCounters};

/// Shared state of one peer's connection between the senders and its outbound task.
#[derive(Debug, Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
    /// Wakes the task when `pending` was filled.
    pub(super) wake: Notify,
}

#[derive(Debug, Default)]
pub(super) struct LaneState {
    /// The established connection (after the handshake), if any.
    pub(super) stream: Option<Arc<TcpStream>>,
    /// Messages (and a `pending` tail) handed to the task and not yet written or lost.
    pub(super) unwritten: usize,
    /// The tail of a direct write that did not fit, to be written by the task first.
    pub(super) pending: BytesMut,
    /// Messages in `pending` (counted as sent once it is written, as lost if the connection ends).
    pub(super) pending_messages: u64,
    /// The peer is away (a dial failed, no connection since): messages are dropped, not queued.
    pub(super) away: bool,
}

impl Lane {
    pub(super) fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msgs` (all to this peer, in order): directly if the lane is idle, else through
    /// `queue` (see the module docs). `encode` appends one message's frame to the buffer and
    /// returns false if it had to drop it (too large; it counts and logs that).
    pub(super) fn send(
        &self,
        msgs: Vec<PeerMessage>,
        queue: &mpsc::Sender<PeerMessage>,
        counters: &PeerCounters,
        mut encode: impl FnMut(PeerMessage, &mut BytesMut) -> bool,
    ) {
        let mut state = self.lock();
        if state.away {
            counters.dropped_away.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            return;
        }
        let direct = state.stream.clone().filter(|_| {
            state.unwritten == 0 && !msgs.iter().any(|m| matches!(m, PeerMessage::SnapshotChunk { .. }))
        });
        let Some(stream) = direct else {
            // Counted as unwritten under the lock, so the task (which decrements under it as it
            // writes) can never see the count lag behind the queue.
            for msg in msgs {
                match queue.try_send(msg) {
                    Ok(()) => state.unwritten += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.dropped_full),
                    Err(mpsc::error::TrySendError::Closed(_)) => bump(&counters.dropped_lost),
                }
            }
            return;
        };
        let mut buf = BytesMut::new();
        let mut count = 0u64;
        for msg in msgs {
            if encode(msg, &mut buf) {
                count += 1;
            }
        }
        if buf.is_empty() {
            return;
        }
        let mut written = 0;
        while written < buf.len() {
            match stream.try_write(&buf[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The rest goes out through the task, ahead of anything queued later.
                    state.pending = buf.split_off(written);
                    state.pending_messages = count;
                    state.unwritten += 1;
                    drop(state);
                    self.wake.notify_one();
                    return;
                }
                Err(e) => {
                    // The connection is broken; the task notices by itself (its read fails) and
                    // dials again. These messages are lost with the connection.
                    tracing::debug!(error = %e, "direct write to a peer failed");
                    state.stream = None;
                    counters.dropped_lost.fetch_add(count, Ordering::Relaxed);
                    return;
                }
            }
        }
        counters.sent.fetch_add(count, Ordering::Relaxed);
        counters.sent_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        bump(&counters.writes);
    }
}
