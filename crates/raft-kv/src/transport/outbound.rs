//! The outbound side: one task per peer that owns the connection to it.
//!
//! The task loops: dial (with backoff), handshake, then pump the peer's queue into the socket until
//! something fails, then dial again. While it has nothing unwritten, senders may write into the
//! same connection directly (see [`super::lane`]); the tail of such a write that did not fit is
//! handed to the task, which writes it before anything else. Only this task reads the queue, and it writes batches in queue
//! order on a single connection at a time, so per-peer order is preserved. A batch whose write
//! fails is lost with its connection (counted in `dropped_lost`); messages still queued wait for the
//! next connection. While the peer is unreachable nothing reads the queue, so it fills up and
//! [`Transport::send`](super::Transport::send) drops what does not fit.
//!
//! After the handshake the peer sends nothing on this connection but keepalives (if both announced
//! them); the task reads it all the time, also while a write is blocked, to notice at once when the
//! peer closes it (end of stream) and to close it itself when nothing at all was heard for the idle
//! timeout (a silent partition; see the transport's module docs). It sends its own keepalive every
//! keepalive interval through the same write path as its batches.
//!
//! A failed dial marks the peer *away*: queued and held messages are discarded and later ones are
//! dropped by the senders, all counted in `dropped_away`, until a connection is established.
//!
//! # Snapshot chunks go behind everything else
//! A snapshot chunk is large (1 MiB by default, up to 16 MiB) and a leader sends a window of them at
//! once; everything else (heartbeats, appends, votes, acknowledgements) is small and urgent: a
//! heartbeat stuck behind megabytes of chunks makes the receiving follower time out and campaign.
//! So the task takes chunks out of the batch and holds them back ([`HeldChunks`]): each write carries
//! every other message taken so far, then at most [`CHUNK_BYTES_PER_WRITE`] of chunks (at least one
//! chunk), and before the next write the queue is drained again, so a heartbeat queued meanwhile
//! waits for one write of at most that many bytes, not for the whole window. Chunks keep their order
//! among themselves (the follower takes them strictly in order), and every other message keeps its
//! order too; only a chunk may be overtaken. That is harmless: a chunk carries its leader's term and
//! is ignored by a follower in another term, and the leader sends nothing that depends on a chunk
//! before the follower acknowledged it. While chunks are held back the task drains the queue without
//! waiting on it, and stops draining once [`MAX_HELD_CHUNK_BYTES`] are held (then it behaves like a
//! plain FIFO again), so memory stays bounded. Held chunks survive a reconnection like queued
//! messages do.
//!
//! What user space cannot reorder is what already sits in the kernel's socket buffer; the leader's
//! window (4 chunks by default) bounds that: at 1 Gbit/s 4 MiB drain in about 35 ms, under one
//! heartbeat interval. On a much slower link heartbeats to a follower *receiving* a snapshot can be
//! late; PreVote keeps such a follower from disrupting the leader (its log is behind, so nobody
//! grants it a vote) and it keeps accepting chunks meanwhile (it does not change term).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::PeerMessage;
use raft::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;

use super::lane::Lane;
use super::util::{shutdown_signal, Backoff, FrameReader, RateLimit, ReadError};
use super::{bump, PeerCounters};
use crate::auth::token::{self, ClusterToken, Role};
use crate::wire::{self, Handshake, WireError, MAX_HANDSHAKE_FRAME};

/// Most messages taken from the queue for one write.
const MAX_BATCH: usize = 256;
/// A write buffer that grew beyond this is released after use instead of kept.
const KEEP_BUFFER: usize = 4 << 20;
/// At most one warning per this interval while a peer stays unreachable.
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(30);
/// Most snapshot-chunk bytes in one write (one chunk at least, whatever its size).
pub(super) const CHUNK_BYTES_PER_WRITE: usize = 1 << 20;
/// While this many chunk bytes are held back, the queue is not drained ahead of them.
pub(super) const MAX_HELD_CHUNK_BYTES: usize = 32 << 20;

/// Snapshot chunks taken from the queue and not yet written, oldest first (see the module docs).
#[derive(Default)]
struct HeldChunks {
    chunks: VecDeque<PeerMessage>,
    bytes: usize,
}

impl HeldChunks {
    fn push(&mut self, msg: PeerMessage) {
        self.bytes += chunk_len(&msg);
        self.chunks.push_back(msg);
    }

    fn pop(&mut self) -> Option<PeerMessage> {
        let msg = self.chunks.pop_front()?;
        self.bytes -= chunk_len(&msg);
        Some(msg)
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// The data length of a snapshot chunk (0 for any other message).
fn chunk_len(msg: &PeerMessage) -> usize {
    match msg {
        PeerMessage::SnapshotChunk { data, .. } => data.len(),
        _ => 0,
    }
}

/// Why a dial attempt failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad handshake reply: {0}")]
    Reply(#[from] ReadError),
    #[error("connection closed before the handshake reply (refused by the peer?)")]
    Closed,
    #[error("peer refused: {0}")]
    Refused(#[from] WireError),
    #[error("peer sent unexpected data after its handshake")]
    UnexpectedData,
    #[error("dialed node {expected} but node {got} answered (peer addresses mixed up?)")]
    WrongNode { expected: NodeId, got: NodeId },
    #[error("cluster token: {0}")]
    Token(&'static str),
}

/// Why an established connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write did not complete within {0:?} (peer not reading?)")]
    WriteTimeout(Duration),
    #[error("closed by the peer")]
    ClosedByPeer,
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("peer sent unexpected data after the handshake")]
    UnexpectedData,
    #[error("nothing heard for {0:?} (peer unreachable?)")]
    Silent(Duration),
    #[error("transport stopped")]
    Stopped,
}

/// Watches the read side of an established connection: keepalives (zero bytes) refresh it, anything
/// else ends the connection, as does silence for longer than `idle` (if the peer sends keepalives).
struct Liveness {
    /// `None` if the peer announced no keepalives (an older node): silence is then never an error.
    idle: Option<Duration>,
    /// When something was last read.
    last_heard: TokioInstant,
    /// Read buffer.
    buf: [u8; 64],
}

impl Liveness {
    fn new(idle: Option<Duration>) -> Self {
        Liveness { idle, last_heard: TokioInstant::now(), buf: [0; 64] }
    }

    /// Reads until the connection must end, and says why. Cancel-safe (it only records when it last
    /// heard something), so it can be raced against writes and the queue.
    async fn watch(&mut self, stream: &TcpStream) -> ConnectionEnd {
        loop {
            let ready = match self.idle {
                Some(idle) => {
                    match tokio::time::timeout_at(self.last_heard + idle, stream.readable()).await {
                        Ok(r) => r,
                        Err(_) => return ConnectionEnd::Silent(idle),
                    }
                }
                None => stream.readable().await,
            };
            if let Err(e) = ready {
                return ConnectionEnd::Read(e);
            }
            match stream.try_read(&mut self.buf) {
                Ok(0) => return ConnectionEnd::ClosedByPeer,
                // Keepalive frames are all zeros; any other byte is not ours to accept.
                Ok(n) if self.buf[..n].iter().all(|&b| b == 0) => self.last_heard = TokioInstant::now(),
                Ok(_) => return ConnectionEnd::UnexpectedData,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return ConnectionEnd::Read(e),
            }
        }
    }
}

/// Everything one peer's outbound task needs.
pub(super) struct OutboundTask {
    /// This node.
    pub(super) id: NodeId,
    /// The cluster id.
    pub(super) cluster_id: u64,
    /// The peer.
    pub(super) peer: NodeId,
    /// The peer's `host:port`.
    pub(super) addr: String,
    /// This node's advertised core address, sent in the handshake.
    pub(super) advertised: String,
    /// Frame limit.
    pub(super) max_frame: usize,
    /// Limit for dial + handshake.
    pub(super) handshake_timeout: Duration,
    /// Limit for one batch write.
    pub(super) write_timeout: Duration,
    /// Backoff bounds.
    pub(super) backoff_min: Duration,
    /// Backoff bounds.
    pub(super) backoff_max: Duration,
    /// How often to send a keepalive (to a peer that announced them).
    pub(super) keepalive_interval: Duration,
    /// Silence after which the connection is closed.
    pub(super) idle_timeout: Duration,
    /// The peer's counters.
    pub(super) counters: Arc<PeerCounters>,
    /// The connection shared with direct senders.
    pub(super) lane: Arc<Lane>,
    /// The cluster token, if the cluster has one.
    pub(super) cluster_token: Option<ClusterToken>,
    /// Peer TLS, if used.
    pub(super) peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
}

impl OutboundTask {
    /// Runs until shutdown; then no connection is left in the lane (so nothing is written after).
    pub(super) async fn run(self, queue: mpsc::Receiver<PeerMessage>, shutdown: watch::Receiver<bool>) {
        self.run_connections(queue, shutdown).await;
        self.end_connection();
    }

    /// Gives up the lane's connection: direct senders stop using it, and a direct write's unwritten
    /// tail is lost with it (it must never continue on another connection).
    fn end_connection(&self) {
        let mut state = self.lane.lock();
        state.stream = None;
        if !state.pending.is_empty() {
            state.pending.clear();
            state.unwritten = state.unwritten.saturating_sub(1);
        }
        let lost = std::mem::take(&mut state.pending_messages);
        self.counters.dropped_lost.fetch_add(lost, Ordering::Relaxed);
    }

    async fn run_connections(&self, mut queue: mpsc::Receiver<PeerMessage>, shutdown: watch::Receiver<bool>) {
        let mut backoff =
            Backoff::new(self.backoff_min, self.backoff_max, self.id ^ self.peer.rotate_left(32));
        let mut failures: u64 = 0;
        let mut last_warn: Option<Instant> = None;
        let mut buf = BytesMut::new();
        let mut held = HeldChunks::default();
        let oversize_log = RateLimit::new(Duration::from_secs(10));
        loop {
            let dialed = tokio::select! {
                r = tokio::time::timeout(self.handshake_timeout, self.dial()) => {
                    r.unwrap_or(Err(DialError::Timeout(self.handshake_timeout)))
                }
                () = shutdown_signal(shutdown.clone()) => return,
            };
            match dialed {
                Ok((stream, peer_keepalive)) => {
                    let stream = Arc::new(stream);
                    {
                        let mut state = self.lane.lock();
                        state.stream = Some(stream.clone());
                        state.away = false;
                    }
                    backoff.reset();
                    failures = 0;
                    last_warn = None;
                    bump(&self.counters.connects);
                    self.counters.connected.store(true, Ordering::Relaxed);
                    tracing::info!(peer = self.peer, addr = %self.addr, "connected to peer");
                    // Keepalives only with a peer that announced them (see `wire`); it is given at
                    // least three of its own intervals.
                    let (keepalive, idle) = if peer_keepalive == 0 {
                        (None, None)
                    } else {
                        let theirs = Duration::from_millis(u64::from(peer_keepalive));
                        (Some(self.keepalive_interval), Some(self.idle_timeout.max(theirs * 3)))
                    };
                    let mut live = Liveness::new(idle);
                    let end = tokio::select! {
                        end = self.pump(&mut queue, &stream, &mut buf, &mut held, &oversize_log, &mut live, keepalive) => end,
                        () = shutdown_signal(shutdown.clone()) => ConnectionEnd::Stopped,
                    };
                    self.end_connection();
                    self.counters.connected.store(false, Ordering::Relaxed);
                    if let ConnectionEnd::Stopped = end {
                        return;
                    }
                    if let ConnectionEnd::Silent(_) = end {
                        bump(&self.counters.silent_closes);
                        tracing::warn!(peer = self.peer, addr = %self.addr, reason = %end,
                            "closing the silent connection to peer; dialing again");
                    } else {
                        tracing::info!(peer = self.peer, addr = %self.addr, reason = %end, "disconnected from peer");
                    }
                }
                Err(e) => {
                    bump(&self.counters.connect_failures);
                    self.go_away(&mut queue, &mut held);
                    failures += 1;
                    let warn_now = match last_warn {
                        None => true,
                        Some(t) => t.elapsed() >= UNREACHABLE_WARN_EVERY,
                    };
                    if warn_now {
                        last_warn = Some(Instant::now());
                        tracing::warn!(peer = self.peer, addr = %self.addr, attempts = failures, error = %e,
                            "cannot reach peer; retrying with backoff");
                    } else {
                        tracing::debug!(peer = self.peer, addr = %self.addr, attempts = failures, error = %e,
                            "cannot reach peer");
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown_signal(shutdown.clone()) => return,
            }
        }
    }

    /// Marks the peer away after a failed dial: discards what is queued and held (counted in
    /// `dropped_away`); senders drop what comes later until a connection is established.
    fn go_away(&self, queue: &mut mpsc::Receiver<PeerMessage>, held: &mut HeldChunks) {
        let mut state = self.lane.lock();
        if state.away {
            return; // already discarded; nothing was queued since
        }
        state.away = true;
        let mut dropped = 0usize;
        while queue.try_recv().is_ok() {
            dropped += 1;
        }
        while held.pop().is_some() {
            dropped += 1;
        }
        state.unwritten = state.unwritten.saturating_sub(dropped);
        self.counters.dropped_away.fetch_add(dropped as u64, Ordering::Relaxed);
        if dropped > 0 {
            tracing::debug!(peer = self.peer, dropped, "peer away: discarded its queued messages");
        }
    }

    /// Connects (resolving the address again), exchanges handshakes and checks the peer's answer;
    /// returns the connection and the peer's keepalive interval in milliseconds (0: none).
    async fn dial(&self) -> Result<(TcpStream, u32), DialError> {
        let stream = match &self.peer_tls {
            Some(tls) => tls.dial(self.addr.as_str()).await?,
            None => TcpStream::connect(self.addr.as_str()).await?,
        };
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut hello = BytesMut::new();
        let mut ours = Handshake::new(self.cluster_id, self.id).with_keepalive(self.keepalive_interval);
        ours.peer_id = self.peer;
        ours.core_addr = self.advertised.clone();
        if self.cluster_token.is_some() {
            ours.nonce = token::nonce();
        }
        wire::encode_frame(&ours, MAX_HANDSHAKE_FRAME, &mut hello)?;
        write.write_all(&hello).await?;
        let mut reader = FrameReader::new(read);
        let Some(frame) = reader.next_frame(MAX_HANDSHAKE_FRAME).await? else {
            return Err(DialError::Closed);
        };
        let theirs = wire::decode_handshake(frame)?;
        let got = theirs.validate(self.cluster_id)?;
        if got != self.peer {
            return Err(DialError::WrongNode { expected: self.peer, got });
        }
        match (&self.cluster_token, theirs.nonce.is_empty()) {
            (None, true) => {}
            (None, false) => {
                return Err(DialError::Token("the peer has a cluster token and this node has none"))
            }
            (Some(_), true) => {
                return Err(DialError::Token("this node has a cluster token and the peer has none"))
            }
            (Some(secret), false) => {
                // The listener proves the token first; only then do we prove ours.
                let t = token::Transcript {
                    cluster_id: self.cluster_id,
                    dialer: self.id,
                    listener: got,
                    dialer_nonce: &ours.nonce,
                    listener_nonce: &theirs.nonce,
                };
                if !secret.verify(Role::Listener, &t, &theirs.proof) {
                    return Err(DialError::Token("the peer's proof is wrong (a different cluster token?)"));
                }
                let mut proof = BytesMut::new();
                wire::encode_frame(
                    &Handshake::proof_frame(secret.proof(Role::Dialer, &t).to_vec()),
                    MAX_HANDSHAKE_FRAME,
                    &mut proof,
                )?;
                write.write_all(&proof).await?;
            }
        }
        let (read, leftover) = reader.into_parts();
        // Keepalives (zeros) may already follow the answer; nothing else may.
        if !leftover.iter().all(|&b| b == 0) {
            return Err(DialError::UnexpectedData);
        }
        // The halves of one stream always reunite.
        let stream = read
            .reunite(write)
            .map_err(|_| DialError::Io(std::io::Error::other("cannot reunite the stream")))?;
        Ok((stream, theirs.keepalive_ms))
    }

    /// Writes queued messages in batches until the connection fails or the queue is closed; a
    /// direct write's unwritten tail goes first, and snapshot chunks go behind the other messages
    /// (see the module docs). With `keepalive` set, a keepalive frame goes out at that interval.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        queue: &mut mpsc::Receiver<PeerMessage>,
        stream: &TcpStream,
        buf: &mut BytesMut,
        held: &mut HeldChunks,
        oversize_log: &RateLimit,
        live: &mut Liveness,
        keepalive: Option<Duration>,
    ) -> ConnectionEnd {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Far in the future when keepalives are off (the branch below is then disabled anyway).
        let mut next_keepalive = TokioInstant::now() + keepalive.unwrap_or(Duration::from_secs(86_400));
        loop {
            if held.is_empty() {
                // Nothing to write: wait for messages, for a direct write's tail, for the time of a
                // keepalive, or for the peer to close (or go silent on) the connection.
                tokio::select! {
                    n = queue.recv_many(&mut batch, MAX_BATCH) => {
                        if n == 0 {
                            return ConnectionEnd::Stopped; // every handle is gone
                        }
                    }
                    () = self.lane.wake.notified() => {}
                    () = tokio::time::sleep_until(next_keepalive), if keepalive.is_some() => {}
                    end = live.watch(stream) => return end,
                }
            } else if held.bytes < MAX_HELD_CHUNK_BYTES {
                // Chunks are waiting: take whatever else is queued now, without waiting.
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(msg) => batch.push(msg),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return ConnectionEnd::Stopped,
                    }
                }
            }
            buf.clear();
            // A direct write's tail first: it completes a frame already partly on the wire.
            let (mut count, mut taken) = {
                let mut state = self.lane.lock();
                let mut taken = 0;
                let mut count = 0;
                if !state.pending.is_empty() {
                    buf.extend_from_slice(&state.pending);
                    state.pending.clear();
                    count = std::mem::take(&mut state.pending_messages);
                    taken = 1;
                }
                if let Some(interval) = keepalive.filter(|_| TokioInstant::now() >= next_keepalive) {
                    // Counted as unwritten (under the lock) so that no direct write interleaves.
                    state.unwritten += 1;
                    taken += 1;
                    buf.extend_from_slice(&wire::KEEPALIVE_FRAME);
                    next_keepalive = TokioInstant::now() + interval;
                }
                (count, taken)
            };
            let mut encode = |msg: PeerMessage, buf: &mut BytesMut| {
                let kind = describe(&msg);
                match wire::encode_message(msg, self.max_frame, buf) {
                    Ok(()) => count += 1,
                    Err(e) => {
                        bump(&self.counters.dropped_lost);
                        if let Some(suppressed) = oversize_log.allow() {
                            tracing::error!(peer = self.peer, kind, error = %e, suppressed,
                                "dropping a message too large to send");
                        }
                    }
                }
            };
            for msg in batch.drain(..) {
                if matches!(msg, PeerMessage::SnapshotChunk { .. }) {
                    held.push(msg);
                } else {
                    taken += 1;
                    encode(msg, buf);
                }
            }
            let mut chunk_bytes = 0;
            while chunk_bytes < CHUNK_BYTES_PER_WRITE {
                let Some(chunk) = held.pop() else { break };
                chunk_bytes += chunk_len(&chunk);
                taken += 1;
                encode(chunk, buf);
            }
            let result = if buf.is_empty() {
                None // everything taken was too large
            } else {
                match tokio::time::timeout(self.write_timeout, write_shared(stream, buf, live)).await {
                    Ok(Ok(())) => {
                        self.counters.sent.fetch_add(count, Ordering::Relaxed);
                        self.counters.sent_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                        if count > 0 {
                            bump(&self.counters.writes); // a write of only a keepalive is not counted
                        }
                        None
                    }
                    Ok(Err(end)) => Some(end),
                    Err(_) => Some(ConnectionEnd::WriteTimeout(self.write_timeout)),
                }
            };
            {
                let mut state = self.lane.lock();
                state.unwritten = state.unwritten.saturating_sub(taken);
            }
            if buf.capacity() > KEEP_BUFFER {
                *buf = BytesMut::new();
            }
            if let Some(end) = result {
                self.counters.dropped_lost.fetch_add(count, Ordering::Relaxed);
                return end;
            }
        }
    }
}

/// Writes all of `buf` to a stream shared with direct senders (which only write while this task
/// has nothing unwritten, so the two never interleave), watching the read side meanwhile: a peer
/// that went silent or closed the connection ends a blocked write at once.
async fn write_shared(stream: &TcpStream, mut buf: &[u8], live: &mut Liveness) -> Result<(), ConnectionEnd> {
    while !buf.is_empty() {
        tokio::select! {
            r = stream.writable() => r.map_err(ConnectionEnd::Write)?,
            end = live.watch(stream) => return Err(end),
        }
        match stream.try_write(buf) {
            Ok(0) => return Err(ConnectionEnd::Write(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ConnectionEnd::Write(e)),
        }
    }
    Ok(())
}

/// A short name of a message's kind, for logs.
pub(super) fn describe(msg: &PeerMessage) -> &'static str {
    match msg {
        PeerMessage::Raft(m) => m.body.name(),
        PeerMessage::Forward { .. } => "Forward",
        PeerMessage::SnapshotChunk { .. } => "SnapshotChunk",
        PeerMessage::SnapshotAck { .. } => "SnapshotAck",
    }
}
