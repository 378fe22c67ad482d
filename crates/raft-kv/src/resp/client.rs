//! A minimal blocking RESP client over `std::net::TcpStream`, for the console, `raft-kv status`
//! and tests. [`Connection::connect`] applies the process's client security settings
//! ([`crate::security::client_security`]): TLS over the socket and `AUTH` right after connecting.
//!
//! Sending and receiving are separate steps on purpose: a caller that must not repeat a write
//! needs to know whether a failure happened before the request left ([`Connection::send`]
//! failed: the server cannot have executed it, because a server only executes a complete
//! request) or after ([`Connection::receive`] failed: the outcome is unknown).
//!
//! After any error the connection is in an unknown state (a late reply could still arrive) and
//! must be dropped.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;

use super::{write_command, Frame, Limits, Parser, ProtocolError};

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The address could not be resolved.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The address resolved to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// Connecting, reading or writing failed (timeouts included).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before a complete reply arrived.
    #[error("connection closed by the server")]
    Closed,
    /// The server sent bytes that are not valid RESP2.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// TLS or authentication failed.
    #[error("{0}")]
    Security(String),
}

/// One blocking connection to a RESP server.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    stream: TcpStream,
    /// TLS over the socket, if used (see [`crate::security`]).
    tls: Option<Box<rustls::ClientConnection>>,
    /// Bytes received and not yet parsed.
    read_buf: BytesMut,
    /// Commands queued and not yet written.
    write_buf: BytesMut,
    /// Reply parser (keeps its progress across reads).
    parser: Parser,
    /// Scratch space for `read`.
    scratch: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` (`host:port`; every address it resolves to is tried in turn), waiting
    /// at most `timeout` for each. Sets `TCP_NODELAY`.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        Connection::connect_with(addr, timeout, crate::security::client_security())
    }

    /// [`Connection::connect`] with the given security settings instead of the process's.
    pub fn connect_with(
        addr: &str,
        timeout: Duration,
        security: &crate::security::ClientSecurity,
    ) -> Result<Connection, ClientError> {
        let addrs = addr
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve { addr: addr.to_string(), source })?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    let mut conn = Connection::from_stream(stream)?;
                    conn.secure(addr, timeout, security)?;
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => ClientError::Io(e),
            None => ClientError::NoAddress(addr.to_string()),
        })
    }

    /// Wraps an connected stream (sets `TCP_NODELAY`).
    pub fn from_stream(stream: TcpStream) -> Result<Connection, ClientError> {
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            tls: None,
            read_buf: BytesMut::with_capacity(16 << 10),
            write_buf: BytesMut::with_capacity(4 << 10),
            parser: Parser::replies(Limits::client()),
            scratch: vec![0; 64 << 10],
        })
    }

    /// TLS handshake and `AUTH`, as the process's client security settings say.
    fn secure(
        &mut self,
        addr: &str,
        timeout: Duration,
        security: &crate::security::ClientSecurity,
    ) -> Result<(), ClientError> {
        if let Some(tls) = &security.tls {
            let mut conn = tls.client_connection(addr).map_err(|e| ClientError::Security(e.to_string()))?;
            self.stream.set_read_timeout(Some(timeout))?;
            self.stream.set_write_timeout(Some(timeout))?;
            while conn.is_handshaking() {
                conn.complete_io(&mut self.stream)
                    .map_err(|e| ClientError::Security(format!("TLS handshake with {addr}: {e}")))?;
            }
            self.tls = Some(Box::new(conn));
        }
        if let Some((user, pass)) = &security.auth {
            let answer = self.request(&[b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()])?;
            crate::security::auth_answer(answer).map_err(ClientError::Security)?;
        }
        Ok(())
    }

    /// Sets the read and write timeout (`None`: block forever). A timed-out read is an
    /// [`ClientError::Io`] error of kind `WouldBlock` or `TimedOut`.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
        Ok(())
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.stream.peer_addr()?)
    }

    /// Whether the connection is known to be unusable before anything is sent on it: the server
    /// closed it (or reset it) while it was idle, or sent bytes nobody asked for. A cheap,
    /// non-blocking check (one `peek`); `false` does not promise the next request will succeed.
    ///
    /// Use it before sending a request that must not be repeated: a request written on a
    /// connection the server already closed is lost without a trace, and its outcome would look
    /// unknown although it was never executed.
    pub fn is_closed_by_peer(&self) -> bool {
        if !self.read_buf.is_empty() || !self.parser.is_idle() {
            return true;
        }
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let peeked = self.stream.peek(&mut byte);
        let restored = self.stream.set_nonblocking(false);
        match peeked {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => restored.is_err(),
            _ => true,
        }
    }

    /// Queues a command (an array of bulk strings) without writing it; see [`Connection::flush`].
    /// Queue several and flush once to pipeline.
    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        write_command(&mut self.write_buf, args);
    }

    /// Writes every queued command. On error nothing more can be said about how much of it the
    /// server received, except that the last command is incomplete there.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        let result = match &mut self.tls {
            None => self.stream.write_all(&self.write_buf),
            Some(tls) => {
                let mut s = rustls::Stream::new(tls.as_mut(), &mut self.stream);
                s.write_all(&self.write_buf).and_then(|()| s.flush())
            }
        };
        self.write_buf.clear();
        result?;
        Ok(())
    }

    /// Queues and writes one command.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), ClientError> {
        self.queue(args);
        self.flush()
    }

    /// Reads one complete reply.
    pub fn receive(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.parser.parse(&mut self.read_buf)? {
                return Ok(frame);
            }
            let n = loop {
                let read = match &mut self.tls {
                    None => self.stream.read(&mut self.scratch),
                    Some(tls) => rustls::Stream::new(tls.as_mut(), &mut self.stream).read(&mut self.scratch),
                };
                match read {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.read_buf.extend_from_slice(&self.scratch[..n]);
            // Keep no plaintext inside rustls: `is_closed_by_peer` looks only at our buffer and
            // the socket.
            if let Some(tls) = &mut self.tls {
                loop {
                    match tls.reader().read(&mut self.scratch) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => self.read_buf.extend_from_slice(&self.scratch[..k]),
                    }
                }
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn request<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        self.send(args)?;
        self.receive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn request_reply_and_peer_close_detection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || -> io::Result<Vec<u8>> {
            let (mut stream, _) = listener.accept()?;
            let mut request = vec![0u8; 27];
            stream.read_exact(&mut request)?;
            // Two replies in one write, the second split from the first mid-frame below.
            stream.write_all(b"+OK\r\n*2\r\n$1\r\na\r\n$-1\r\n")?;
            drop(stream);
            let _ = closed_tx.send(());
            Ok(request)
        });
        let mut conn = Connection::connect(&addr, Duration::from_secs(2)).expect("connect");
        conn.set_timeout(Some(Duration::from_secs(5))).expect("timeout");
        assert!(!conn.is_closed_by_peer());
        conn.queue(&["SET", "k", "v"]);
        conn.flush().expect("flush");
        let request = server.join().ok().and_then(Result::ok);
        assert_eq!(request.as_deref(), Some(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"[..]));
        assert_eq!(conn.receive().ok(), Some(Frame::ok()));
        // The second reply is already buffered: unsolicited bytes make the connection unusable.
        closed_rx.recv().expect("closed");
        assert!(conn.is_closed_by_peer());
        assert_eq!(conn.receive().ok(), Some(Frame::Array(vec![Frame::bulk_from_slice(b"a"), Frame::Null])));
        // Now idle, and the server is gone.
        assert!(conn.is_closed_by_peer());
        assert!(matches!(conn.receive(), Err(ClientError::Closed)));
    }

    #[test]
    fn connect_errors_are_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        assert!(matches!(Connection::connect(&addr, Duration::from_secs(1)), Err(ClientError::Io(_))));
        assert!(matches!(
            Connection::connect("no-port-here", Duration::from_secs(1)),
            Err(ClientError::Resolve { .. })
        ));
    }
}
