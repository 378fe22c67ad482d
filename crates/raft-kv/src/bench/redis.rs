//! A pipelined RESP connection shared by several clients: requests from any client are written to
//! one TCP connection as they come (several outstanding at once), and replies, which a Redis server
//! sends in request order, are matched to requests by their position.
//!
//! Invariants:
//! - the writer enqueues a request's reply slot *before* writing its bytes, and the reader pops a
//!   slot per reply frame, so the n-th reply always goes to the n-th request written;
//! - when the connection breaks (read or write error, protocol error, EOF), every request waiting
//!   on it fails (its reply slot is dropped) and the next request reconnects; a request that
//!   arrives while the server cannot be reached fails at once with a connect error;
//! - a request that times out on the caller's side leaves its slot in place: the late reply is
//!   read and discarded, so ordering is kept.

use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::resp::{write_command, Frame, Limits, Parser};

/// Most requests one connection's queue holds before callers wait.
const QUEUE_DEPTH: usize = 4096;
/// Most bytes written in one batch of pipelined requests.
const MAX_BATCH_BYTES: usize = 256 << 10;

/// Why a request got no reply.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The server could not be reached.
    #[error("connect: {0}")]
    Connect(String),
    /// The connection broke before the reply came.
    #[error("connection lost")]
    Lost,
    /// The connection task is gone (the pool was dropped).
    #[error("connection closed")]
    Closed,
}

/// A request queued on a connection: its encoded bytes and where its reply goes.
struct Pending {
    /// One RESP command.
    bytes: BytesMut,
    /// Receives the reply.
    reply: oneshot::Sender<Result<Frame, ConnError>>,
}

/// A handle to one pipelined connection; cheap to clone and share between clients.
#[derive(Clone, Debug)]
pub struct RedisConn {
    /// Requests to the connection task.
    tx: mpsc::Sender<Pending>,
}

impl RedisConn {
    /// Starts the task of a connection to `addr` (it connects on the first request).
    /// Must be called within a tokio runtime.
    pub fn spawn(addr: String, connect_timeout: Duration) -> RedisConn {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(addr, connect_timeout, rx));
        RedisConn { tx }
    }

    /// Sends one command and waits for its reply (an error reply is an `Ok(Frame::Error)`).
    pub async fn request<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Frame, ConnError> {
        let mut bytes = BytesMut::new();
        write_command(&mut bytes, args);
        let (reply, rx) = oneshot::channel();
        self.tx.send(Pending { bytes, reply }).await.map_err(|_| ConnError::Closed)?;
        rx.await.map_err(|_| ConnError::Lost)?
    }
}

/// The connection task: (re)connects and writes queued requests in batches until every handle is
/// dropped.
async fn run(addr: String, connect_timeout: Duration, mut rx: mpsc::Receiver<Pending>) {
    // A request taken from the queue but not written because the connection had just broken.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = first.reply.send(Err(ConnError::Connect(e.to_string())));
                continue;
            }
            Err(_) => {
                let _ = first.reply.send(Err(ConnError::Connect("timed out".into())));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // TLS and AUTH when `raft-kv bench --tls/--pass` asked for them.
        let security = crate::security::client_security();
        let (slots_tx, slots_rx) = mpsc::unbounded_channel();
        let mut reader;
        match &security.tls {
            None => {
                let mut stream = stream;
                if let Err(e) = crate::security::authenticate_async(&mut stream, security).await {
                    let _ = first.reply.send(Err(ConnError::Connect(e)));
                    continue;
                }
                let (rd, wr) = stream.into_split();
                reader = tokio::spawn(read_replies(rd, slots_rx));
                carried = write_requests(first, &mut rx, wr, slots_tx, &mut reader).await;
            }
            Some(tls) => {
                let mut stream = match crate::security::tls_connect(tls, &addr, stream).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = first.reply.send(Err(ConnError::Connect(e)));
                        continue;
                    }
                };
                if let Err(e) = crate::security::authenticate_async(&mut stream, security).await {
                    let _ = first.reply.send(Err(ConnError::Connect(e)));
                    continue;
                }
                let (rd, wr) = tokio::io::split(stream);
                reader = tokio::spawn(read_replies(rd, slots_rx));
                carried = write_requests(first, &mut rx, wr, slots_tx, &mut reader).await;
            }
        }
        // Dropping the reader drops the slots still queued: their requests fail with `Lost`.
        reader.abort();
    }
}

/// The reply slots of the requests written and not yet answered, oldest first.
type Slots = mpsc::UnboundedSender<oneshot::Sender<Result<Frame, ConnError>>>;

/// Writes requests until the connection breaks or every handle is dropped. Returns a request that
/// was taken from the queue but not written (the reader had already stopped), to be sent on the
/// next connection.
async fn write_requests<W: AsyncWrite + Unpin>(
    first: Pending,
    rx: &mut mpsc::Receiver<Pending>,
    mut wr: W,
    slots: Slots,
    reader: &mut JoinHandle<()>,
) -> Option<Pending> {
    let mut next = Some(first);
    let mut buf = BytesMut::new();
    loop {
        let p = match next.take() {
            Some(p) => p,
            None => tokio::select! {
                biased;
                _ = &mut *reader => return None,
                p = rx.recv() => p?,
            },
        };
        buf.clear();
        let Pending { bytes, reply } = p;
        if let Err(e) = slots.send(reply) {
            return Some(Pending { bytes, reply: e.0 });
        }
        buf.extend_from_slice(&bytes);
        // Let the other clients of this connection that were woken with this one (their replies
        // came in the same read) queue their next requests, then batch them into the same write.
        tokio::task::yield_now().await;
        while buf.len() < MAX_BATCH_BYTES {
            let Ok(Pending { bytes, reply }) = rx.try_recv() else { break };
            if let Err(e) = slots.send(reply) {
                // The reader stopped: what is already in `buf` fails with it; this one is carried.
                return Some(Pending { bytes, reply: e.0 });
            }
            buf.extend_from_slice(&bytes);
        }
        if wr.write_all(&buf).await.is_err() {
            return None;
        }
    }
}

/// Reads replies and hands each to the oldest waiting slot, until the connection breaks.
async fn read_replies<R: AsyncRead + Unpin>(
    mut rd: R,
    mut slots: mpsc::UnboundedReceiver<oneshot::Sender<Result<Frame, ConnError>>>,
) {
    let mut parser = Parser::replies(Limits::client());
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(frame)) => {
                    // A reply with no request waiting means the server is out of step: stop.
                    let Ok(slot) = slots.try_recv() else { return };
                    let _ = slot.send(Ok(frame));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers `ECHO x` with the bulk string `x`, replying in batches so that
    /// several requests are outstanding at once; it closes the connection after `close_after`
    /// replies.
    async fn echo_server(close_after: usize) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut parser = Parser::requests(Limits::server());
                let mut buf = BytesMut::new();
                let mut answered = 0;
                'conn: loop {
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let mut out = BytesMut::new();
                    while let Ok(Some(Frame::Array(args))) = parser.parse(&mut buf) {
                        if answered == close_after {
                            break 'conn;
                        }
                        let arg = args.get(1).and_then(Frame::as_bytes).cloned().unwrap_or_default();
                        crate::resp::write_bulk(&mut out, &arg);
                        answered += 1;
                    }
                    if s.write_all(&out).await.is_err() {
                        break;
                    }
                }
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn pipelined_replies_reach_the_right_callers() {
        let (addr, server) = echo_server(usize::MAX).await;
        let conn = RedisConn::spawn(addr, Duration::from_secs(5));
        let mut tasks = Vec::new();
        for c in 0..32 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let msg = format!("{c}-{i}");
                    let reply = conn.request(&["ECHO", &msg]).await.unwrap();
                    assert_eq!(reply, Frame::bulk(msg.into_bytes()));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_broken_connection_fails_its_requests_and_the_next_one_reconnects() {
        let (addr, server) = echo_server(1).await;
        let conn = RedisConn::spawn(addr, Duration::from_secs(5));
        assert_eq!(conn.request(&["ECHO", "a"]).await, Ok(Frame::bulk("a")));
        // The server closes instead of answering the second request.
        assert_eq!(conn.request(&["ECHO", "b"]).await, Err(ConnError::Lost));
        // A new connection is made for the next request.
        assert_eq!(conn.request(&["ECHO", "c"]).await, Ok(Frame::bulk("c")));
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let conn = RedisConn::spawn(addr, Duration::from_secs(5));
        assert!(matches!(conn.request(&["PING"]).await, Err(ConnError::Connect(_))));
    }
}
