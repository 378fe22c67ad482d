//! The inbound side: the accept loop and one task per accepted connection.
//!
//! A connection first has to present a handshake within the handshake timeout. Anything that is not
//! a raft-kv handshake (too long a first frame, undecodable, wrong magic) is closed without an answer
//! and logged as a stranger with its first bytes. A peer with the right magic gets our handshake in
//! return, then is refused if its protocol version, cluster id or node id is wrong, so that both ends
//! log the reason. Once accepted, the connection is read-only: frames are decoded and handed to the
//! inbound channel, waiting for room (backpressure).
//!
//! After the handshake:
//! - a frame that is too large or not valid protobuf closes the connection (the stream can no
//!   longer be trusted);
//! - a valid frame of an unknown kind (a newer peer) or with the wrong `from`/`to` is dropped with
//!   a rate-limited warning, and the connection carries on.
//!
//! At most one connection per peer is live: a newly accepted one closes the previous one.
//!
//! With a peer that announced keepalives in its handshake, the connection also writes a keepalive
//! every keepalive interval, and is closed when no frame at all (keepalives included) arrived for
//! the idle timeout while it was waiting to read (time spent waiting for room in the inbound
//! channel does not count): the dialer then sees silence too and dials again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use raft::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::util::{shutdown_signal, FrameReader, RateLimit, ReadError};
use super::{bump, InboundContext, PeerCounters};
use crate::auth::token::{self, Role};
use crate::wire::{self, Handshake, WireError, FRAME_HEADER_LEN, MAGIC, MAX_HANDSHAKE_FRAME};

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The live connection of each peer: (connection number, signal that closes it).
type Registry = Arc<Mutex<BTreeMap<NodeId, (u64, Arc<Notify>)>>>;

/// Why a connection was refused during the handshake.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("not a raft-kv peer ({error}); first bytes: \"{preview}\"")]
    Stranger { error: String, preview: String },
    #[error("no handshake within {timeout:?}; first bytes: \"{preview}\"")]
    Timeout { timeout: Duration, preview: String },
    #[error("closed before the handshake")]
    ClosedEarly,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(#[from] WireError),
    #[error("node {0} is not a configured peer")]
    UnknownPeer(NodeId),
    #[error("a node with this node's own id {0} connected (duplicate node id?)")]
    OwnId(NodeId),
    #[error("cluster token: {0}")]
    Token(&'static str),
}

/// Why an accepted connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("closed by the peer")]
    Closed,
    #[error("read failed: {0}")]
    Io(std::io::Error),
    #[error("protocol violation: {0}")]
    Bad(ReadError),
    #[error("replaced by a newer connection from the same peer")]
    Superseded,
    #[error("the inbound channel is closed")]
    ConsumerGone,
    #[error("nothing heard for {0:?} (peer unreachable?)")]
    Silent(Duration),
    #[error("writing a keepalive failed: {0}")]
    Keepalive(std::io::Error),
}

/// Accepts connections until shutdown, then closes them all.
pub(super) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<InboundContext>,
    shutdown: watch::Receiver<bool>,
) {
    let registry: Registry = Arc::default();
    let mut conns = JoinSet::new();
    let mut next_conn = 0u64;
    let accept_errors = RateLimit::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    next_conn += 1;
                    conns.spawn(connection(stream, remote, ctx.clone(), registry.clone(), next_conn));
                }
                Err(e) => {
                    if let Some(suppressed) = accept_errors.allow() {
                        tracing::warn!(error = %e, suppressed, "accepting a peer connection failed");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_RETRY) => {}
                        () = shutdown_signal(shutdown.clone()) => break,
                    }
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "peer connection task failed");
                }
            }
            () = shutdown_signal(shutdown.clone()) => break,
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Removes a connection from the registry when it ends (unless a newer one replaced it).
struct Registered {
    registry: Registry,
    peer: NodeId,
    conn: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if reg.get(&self.peer).is_some_and(|(conn, _)| *conn == self.conn) {
            reg.remove(&self.peer);
        }
    }
}

/// Serves one accepted connection.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<InboundContext>,
    registry: Registry,
    conn: u64,
) {
    // With peer TLS, a dialer without a certificate of the cluster CA ends here.
    let stream = match &ctx.peer_tls {
        Some(tls) => match tls.accept(stream, ctx.handshake_timeout).await {
            Ok(plain) => plain,
            Err(e) => {
                bump(&ctx.global.rejected_connections);
                tracing::warn!(%remote, reason = %e, "refused a connection on the peer port");
                return;
            }
        },
        None => stream,
    };
    // Best effort: only our small handshake answer and keepalives are written on this connection.
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let handshake =
        tokio::time::timeout(ctx.handshake_timeout, handshake(&mut reader, &mut write, &ctx)).await;
    let (peer, peer_keepalive) = match handshake {
        Ok(Ok(peer)) => peer,
        Ok(Err(Refusal::ClosedEarly)) => {
            bump(&ctx.global.rejected_connections);
            tracing::debug!(%remote, "connection closed before any handshake");
            return;
        }
        Ok(Err(reason)) => {
            bump(&ctx.global.rejected_connections);
            tracing::warn!(%remote, %reason, "refused a connection on the peer port");
            return;
        }
        Err(_) => {
            bump(&ctx.global.rejected_connections);
            let reason = Refusal::Timeout { timeout: ctx.handshake_timeout, preview: reader.preview() };
            tracing::warn!(%remote, %reason, "refused a connection on the peer port");
            return;
        }
    };
    let Some(counters) = ctx.peers.read().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned() else {
        return; // the peer left the membership since its handshake
    };

    let closed = Arc::new(Notify::new());
    let _registered = {
        let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, previous)) = reg.insert(peer, (conn, closed.clone())) {
            previous.notify_one();
        }
        Registered { registry: registry.clone(), peer, conn }
    };
    tracing::info!(peer, %remote, "accepted connection from peer");
    // Keepalives only with a peer that announced them; it is given three of its own intervals.
    let idle = (peer_keepalive > 0)
        .then(|| ctx.idle_timeout.max(Duration::from_millis(u64::from(peer_keepalive)) * 3));
    let end = tokio::select! {
        end = receive(&mut reader, peer, &counters, &ctx, idle) => end,
        end = send_keepalives(&mut write, ctx.keepalive_interval), if idle.is_some() => end,
        () = closed.notified() => End::Superseded,
    };
    match &end {
        End::Bad(_) => tracing::warn!(peer, %remote, reason = %end, "closed connection from peer"),
        End::Silent(_) => {
            bump(&counters.silent_closes);
            tracing::warn!(peer, %remote, reason = %end, "closed the silent connection from peer");
        }
        _ => tracing::info!(peer, %remote, reason = %end, "connection from peer ended"),
    }
}

/// Writes a keepalive every `interval` until a write fails.
async fn send_keepalives(write: &mut OwnedWriteHalf, interval: Duration) -> End {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A write that cannot complete (the peer is not reading) blocks here; the read side's
        // idle timeout then closes the connection if the peer is silent too.
        if let Err(e) = write.write_all(&wire::KEEPALIVE_FRAME).await {
            return End::Keepalive(e);
        }
    }
}

/// Reads and checks the dialer's handshake, answers it, and returns the peer's id and its keepalive
/// interval in milliseconds (0: none).
async fn handshake(
    reader: &mut FrameReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
    ctx: &InboundContext,
) -> Result<(NodeId, u32), Refusal> {
    let stranger = |error: String, reader: &FrameReader<OwnedReadHalf>| Refusal::Stranger {
        error,
        preview: reader.preview(),
    };
    let frame = match reader.next_frame(MAX_HANDSHAKE_FRAME).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Refusal::ClosedEarly),
        Err(ReadError::Io(e)) => return Err(Refusal::Io(e)),
        Err(e) => return Err(stranger(e.to_string(), reader)),
    };
    let theirs = match wire::decode_handshake(frame.clone()) {
        Ok(h) if h.magic == MAGIC => h,
        Ok(h) => return Err(stranger(WireError::BadMagic { got: h.magic }.to_string(), reader)),
        Err(e) => {
            let preview = frame[..frame.len().min(16)].escape_ascii().to_string();
            return Err(Refusal::Stranger { error: e.to_string(), preview });
        }
    };
    // The right magic: answer even if we refuse below, so that the dialer can log why.
    let mut answer = BytesMut::new();
    let mut ours = Handshake::new(ctx.cluster_id, ctx.id).with_keepalive(ctx.keepalive_interval);
    // With a token, prove it over the dialer's nonce and ours (only to a dialer that has one).
    let transcript_nonce = match (&ctx.cluster_token, theirs.nonce.is_empty()) {
        (Some(secret), false) if theirs.nonce.len() <= 64 => {
            ours.nonce = token::nonce();
            let t = token::Transcript {
                cluster_id: ctx.cluster_id,
                dialer: theirs.node_id,
                listener: ctx.id,
                dialer_nonce: &theirs.nonce,
                listener_nonce: &ours.nonce,
            };
            ours.proof = secret.proof(Role::Listener, &t).to_vec();
            Some(ours.nonce.clone())
        }
        _ => None,
    };
    wire::encode_frame(&ours, MAX_HANDSHAKE_FRAME, &mut answer)?;
    write.write_all(&answer).await?;
    let peer = theirs.validate(ctx.cluster_id)?;
    if peer == ctx.id {
        return Err(Refusal::OwnId(peer));
    }
    let known = ctx.peers.read().unwrap_or_else(|e| e.into_inner()).contains_key(&peer);
    if !known {
        // A node that just joined learns the peers that dial it (see `Transport::set_peers`).
        let learned =
            ctx.learner.get().and_then(|w| w.upgrade()).is_some_and(|t| t.learn(peer, &theirs.core_addr));
        if !learned {
            return Err(Refusal::UnknownPeer(peer));
        }
    }
    match (&ctx.cluster_token, transcript_nonce) {
        (None, _) if theirs.nonce.is_empty() => {}
        (None, _) => return Err(Refusal::Token("the peer has a cluster token and this node has none")),
        (Some(_), None) => {
            return Err(Refusal::Token(
                "this node has a cluster token and the peer has none (or a bad nonce)",
            ))
        }
        (Some(secret), Some(our_nonce)) => {
            // The dialer's proof comes before any message.
            let frame = match reader.next_frame(MAX_HANDSHAKE_FRAME).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(Refusal::Token("closed before proving the cluster token")),
                Err(ReadError::Io(e)) => return Err(Refusal::Io(e)),
                Err(e) => return Err(stranger(e.to_string(), reader)),
            };
            let proof = wire::decode_handshake(frame).map(|h| h.proof).unwrap_or_default();
            let t = token::Transcript {
                cluster_id: ctx.cluster_id,
                dialer: peer,
                listener: ctx.id,
                dialer_nonce: &theirs.nonce,
                listener_nonce: &our_nonce,
            };
            if !secret.verify(Role::Dialer, &t, &proof) {
                return Err(Refusal::Token("wrong proof (a different cluster token?)"));
            }
        }
    }
    Ok((peer, theirs.keepalive_ms))
}

/// Decodes frames and hands the messages on until the connection ends.
async fn receive(
    reader: &mut FrameReader<OwnedReadHalf>,
    peer: NodeId,
    counters: &PeerCounters,
    ctx: &InboundContext,
    idle: Option<Duration>,
) -> End {
    let invalid_log = RateLimit::new(Duration::from_secs(10));
    loop {
        let next = match idle {
            // `next_frame` is cancel-safe: a timeout loses no bytes (the connection ends anyway).
            Some(idle) => match tokio::time::timeout(idle, reader.next_frame(ctx.max_frame)).await {
                Ok(next) => next,
                Err(_) => return End::Silent(idle),
            },
            None => reader.next_frame(ctx.max_frame).await,
        };
        let frame = match next {
            Ok(Some(frame)) if frame.is_empty() => continue, // a keepalive
            Ok(Some(frame)) => frame,
            Ok(None) => return End::Closed,
            Err(ReadError::Io(e)) => return End::Io(e),
            Err(e) => {
                bump(&ctx.global.closed_bad_frames);
                return End::Bad(e);
            }
        };
        counters
            .received_bytes
            .fetch_add((FRAME_HEADER_LEN + frame.len()) as u64, std::sync::atomic::Ordering::Relaxed);
        let problem = match wire::decode_message(frame) {
            Ok(msg) if msg.from() == peer && msg.to() == ctx.id => {
                // Counted before the hand-off, so a consumer that got the message sees it counted.
                bump(&counters.received);
                if ctx.inbound.send(msg).await.is_err() {
                    return End::ConsumerGone;
                }
                continue;
            }
            Ok(msg) => format!(
                "message from {} to {} on the connection of peer {peer} to {}",
                msg.from(),
                msg.to(),
                ctx.id
            ),
            Err(e @ WireError::Decode(_)) => {
                bump(&ctx.global.closed_bad_frames);
                return End::Bad(e.into());
            }
            Err(e) => e.to_string(),
        };
        bump(&ctx.global.invalid_messages);
        if let Some(suppressed) = invalid_log.allow() {
            tracing::warn!(peer, %problem, suppressed, "dropped an invalid message from peer");
        }
    }
}
