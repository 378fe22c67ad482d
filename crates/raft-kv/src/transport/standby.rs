//! A standby node's core port while it waits to be added to a cluster.
//!
//! A standby (`-m standby`, `--standby`) starts with a data directory that records its name only:
//! it has no node id and no cluster id, so it cannot run a [`super::Transport`]. Instead its core
//! port runs [`wait_to_be_adopted`]: the first dialer that presents a valid handshake (right magic
//! and protocol version, a cluster id, its own node id, and `peer_id`: the id it wants to reach)
//! and, if this node has a cluster token, proves the same token, *adopts* the node: the function
//! returns that cluster id and node id, which the caller records in the data directory before it
//! starts the node proper. Only a member of a cluster whose latest configuration lists this node
//! dials it, and with a token (or peer TLS) only a genuine member of that cluster gets through.
//!
//! The adopting connection is closed after the handshake: the dialer dials again a moment later and
//! by then reaches the node's transport. Messages it sent meanwhile are lost; Raft resends.
//!
//! Invariants: nothing but a complete, checked handshake adopts the node; a dialer that does not
//! say which node it wants (an older version) or presents cluster id or node id 0 is refused with
//! the reason logged; a slow or bad connection costs only itself (each handshake is bounded by
//! `handshake_timeout` and runs on its own task).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raft::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::util::{FrameReader, ReadError};
use crate::auth::token::{self, ClusterToken, Role};
use crate::wire::{self, Handshake, MAGIC, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION};

/// Who adopted the standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adoption {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This node's id in that cluster.
    pub node_id: NodeId,
    /// The node that dialled (the leader that added this one, normally).
    pub by: NodeId,
}

/// Accepts connections on `listener` until one adopts this node (see the module docs).
pub async fn wait_to_be_adopted(
    listener: &TcpListener,
    cluster_token: Option<ClusterToken>,
    peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
    handshake_timeout: Duration,
) -> Adoption {
    let mut attempts = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let (token, tls) = (cluster_token.clone(), peer_tls.clone());
                    attempts.spawn(async move {
                        let attempt = tokio::time::timeout(handshake_timeout, adopt(stream, token, tls)).await;
                        match attempt {
                            Ok(Ok(adoption)) => Some(adoption),
                            Ok(Err(reason)) => {
                                tracing::warn!(%remote, %reason, "standby: refused a connection on the core port");
                                None
                            }
                            Err(_) => {
                                tracing::warn!(%remote, "standby: no complete handshake within {handshake_timeout:?}");
                                None
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "standby: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                if let Ok(Some(adoption)) = done {
                    return adoption;
                }
            }
        }
    }
}

/// One connection's handshake.
async fn adopt(
    stream: TcpStream,
    cluster_token: Option<ClusterToken>,
    peer_tls: Option<Arc<crate::peer_tls::PeerTls>>,
) -> Result<Adoption, String> {
    let stream = match &peer_tls {
        Some(tls) => tls.accept(stream, Duration::from_secs(10)).await.map_err(|e| e.to_string())?,
        None => stream,
    };
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let frame = |r: Result<Option<bytes::Bytes>, ReadError>| match r {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err("closed before the handshake".to_string()),
        Err(e) => Err(format!("not a raft-kv peer: {e}")),
    };
    let first = frame(reader.next_frame(MAX_HANDSHAKE_FRAME).await)?;
    let theirs = wire::decode_handshake(first).map_err(|e| format!("not a raft-kv peer: {e}"))?;
    if theirs.magic != MAGIC {
        return Err(format!("not a raft-kv peer (magic {:#x})", theirs.magic));
    }
    if theirs.version != PROTOCOL_VERSION {
        return Err(format!("protocol version {} (this node speaks {PROTOCOL_VERSION})", theirs.version));
    }
    if theirs.cluster_id == 0 || theirs.node_id == 0 {
        return Err("the dialer presented cluster id or node id 0".into());
    }
    if theirs.peer_id == 0 {
        return Err(format!(
            "node {} did not say which node it dials (an older version?): cannot be adopted by it",
            theirs.node_id
        ));
    }
    let adoption = Adoption { cluster_id: theirs.cluster_id, node_id: theirs.peer_id, by: theirs.node_id };
    let mut ours = Handshake::new(adoption.cluster_id, adoption.node_id);
    let transcript_nonce = match (&cluster_token, theirs.nonce.is_empty()) {
        (Some(secret), false) if theirs.nonce.len() <= 64 => {
            ours.nonce = token::nonce();
            let t = token::Transcript {
                cluster_id: adoption.cluster_id,
                dialer: adoption.by,
                listener: adoption.node_id,
                dialer_nonce: &theirs.nonce,
                listener_nonce: &ours.nonce,
            };
            ours.proof = secret.proof(Role::Listener, &t).to_vec();
            Some(ours.nonce.clone())
        }
        _ => None,
    };
    let mut answer = BytesMut::new();
    wire::encode_frame(&ours, MAX_HANDSHAKE_FRAME, &mut answer).map_err(|e| e.to_string())?;
    write.write_all(&answer).await.map_err(|e| e.to_string())?;
    match (&cluster_token, transcript_nonce) {
        (None, _) if theirs.nonce.is_empty() => {}
        (None, _) => return Err("the dialer has a cluster token and this node has none".into()),
        (Some(_), None) => return Err("this node has a cluster token and the dialer has none".into()),
        (Some(secret), Some(our_nonce)) => {
            let proof_frame = frame(reader.next_frame(MAX_HANDSHAKE_FRAME).await)?;
            let proof = wire::decode_handshake(proof_frame).map(|h| h.proof).unwrap_or_default();
            let t = token::Transcript {
                cluster_id: adoption.cluster_id,
                dialer: adoption.by,
                listener: adoption.node_id,
                dialer_nonce: &theirs.nonce,
                listener_nonce: &our_nonce,
            };
            if !secret.verify(Role::Dialer, &t, &proof) {
                return Err("wrong cluster token proof (a different cluster token?)".into());
            }
        }
    }
    Ok(adoption)
}
