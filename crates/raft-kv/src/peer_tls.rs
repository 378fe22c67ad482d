//! Mutual TLS on the core (peer) port against a cluster CA (`--peer-tls-ca --peer-tls-cert
//! --peer-tls-key`).
//!
//! Every peer connection, both ways, is a TLS connection on which both ends present a certificate
//! signed by the cluster CA: the listener refuses a dialer without one (or with one from another CA)
//! in the TLS handshake, before a byte of the peer protocol is read, and the dialer checks the
//! listener's certificate against the CA and the host it dialled. The node's own certificate (with
//! server and client authentication, as `raft-kv certs` makes them) serves both ends. SIGHUP
//! reloads the files for new connections.
//!
//! How it joins the transport: as a pipe. The transport works on plain `TcpStream`s (its direct
//! lane writes into the socket from the sending thread); [`PeerTls::dial`] and
//! [`PeerTls::accept`] do the TLS handshake on the real socket and hand the transport the loopback
//! end of a private TCP pair whose other end a task copies to and from the TLS stream. The
//! transport's framing, handshake (and cluster token), keepalives and idle timeouts run unchanged
//! over it, end to end; when either side of the pipe ends, both are closed. The cost is two more
//! system calls and a task hand-off per batch each way (measured in bench/tls-overhead.sh); a
//! transport that speaks TLS itself would avoid them.
//!
//! Invariant: the loopback pair is private: the listening socket is bound to an ephemeral port on
//! 127.0.0.1 for one accept only, and the accepted connection must come from the socket we
//! connected (checked by address), so another local process cannot take its place.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{read_certs, read_key, read_roots, ClientTls, ServerFiles, ServerTls, TlsError};

/// The peer port's TLS: a server side (client certificates required) and a client side (presenting
/// the same certificate), both against the cluster CA.
#[derive(Debug)]
pub struct PeerTls {
    server: ServerTls,
    files: (PathBuf, PathBuf, PathBuf),
    client: std::sync::RwLock<Arc<ClientConfig>>,
}

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots: RootCertStore = read_roots(ca)?;
    let config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

impl PeerTls {
    /// Loads the CA, the node's certificate and key.
    pub fn new(ca: PathBuf, cert: PathBuf, key: PathBuf) -> Result<PeerTls, TlsError> {
        let server = ServerTls::new(ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(ca.clone()),
        })?;
        let client = std::sync::RwLock::new(client_config(&ca, &cert, &key)?);
        Ok(PeerTls { server, files: (ca, cert, key), client })
    }

    /// Reads the files again (SIGHUP); on error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (ca, cert, key) = &self.files;
        let fresh = client_config(ca, cert, key)?;
        self.server.reload()?;
        match self.client.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Connects to a peer's core address over TLS; returns the plain end of the pipe.
    pub async fn dial(&self, addr: &str) -> io::Result<TcpStream> {
        let name = ClientTls::server_name(addr).map_err(io::Error::other)?;
        let config = match self.client.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("peer TLS handshake with {addr}: {e}")))?;
        pipe(tls).await
    }

    /// The TLS handshake of an accepted peer connection, within `timeout`; returns the plain end of
    /// the pipe. Fails for a peer without a certificate signed by the cluster CA.
    pub async fn accept(&self, tcp: TcpStream, timeout: Duration) -> io::Result<TcpStream> {
        tcp.set_nodelay(true)?;
        let tls = match tokio::time::timeout(timeout, self.server.acceptor().accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(io::Error::new(e.kind(), format!("peer TLS handshake refused: {e}"))),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "peer TLS handshake timed out")),
        };
        pipe(tls).await
    }
}

/// A private loopback TCP pair; a task copies between its outer end and `tls` until either side
/// ends, then closes both. Returns the inner end.
async fn pipe<S>(tls: S) -> io::Result<TcpStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let inner = TcpStream::connect(listener.local_addr()?).await?;
    let expected = inner.local_addr()?;
    let outer = loop {
        let (s, from) = listener.accept().await?;
        if from == expected {
            break s;
        }
        // Someone else raced to the port: not ours.
        drop(s);
    };
    drop(listener);
    inner.set_nodelay(true)?;
    outer.set_nodelay(true)?;
    tokio::spawn(async move {
        let (mut tls_rd, mut tls_wr) = tokio::io::split(tls);
        let (mut out_rd, mut out_wr) = outer.into_split();
        tokio::select! {
            _ = tokio::io::copy(&mut out_rd, &mut tls_wr) => {}
            _ = tokio::io::copy(&mut tls_rd, &mut out_wr) => {}
        }
        // Dropping both ends closes the pipe and the TLS connection.
    });
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn certs(dir: &std::path::Path, names: &[&str]) {
        let args = crate::certs::CertsArgs {
            dir: dir.to_path_buf(),
            days: 30,
            force: true,
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        crate::certs::make(&args).unwrap();
    }

    fn peer(dir: &std::path::Path, name: &str) -> PeerTls {
        PeerTls::new(dir.join("ca.pem"), dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")))
            .unwrap()
    }

    #[tokio::test]
    async fn peers_of_one_ca_talk_and_strangers_are_refused() {
        let ours = tempfile::tempdir().unwrap();
        certs(ours.path(), &["a=127.0.0.1", "b=127.0.0.1"]);
        let theirs = tempfile::tempdir().unwrap();
        certs(theirs.path(), &["x=127.0.0.1"]);
        let (a, b, x) = (peer(ours.path(), "a"), Arc::new(peer(ours.path(), "b")), peer(theirs.path(), "x"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for _ in 0..3 {
                    let (tcp, _) = listener.accept().await.unwrap();
                    results.push(match b.accept(tcp, Duration::from_secs(5)).await {
                        Ok(mut plain) => {
                            let mut buf = [0u8; 5];
                            plain.read_exact(&mut buf).await.unwrap();
                            plain.write_all(&buf).await.unwrap();
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    });
                }
                results
            })
        };
        // A member of the CA: an echo through both pipes.
        let mut plain = a.dial(&addr).await.unwrap();
        plain.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        plain.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        // A certificate of another CA: refused (by both ends).
        assert!(x.dial(&addr).await.is_err());
        // No TLS at all: the listener refuses the handshake.
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&[0, 0, 0, 4, 1, 2, 3, 4]).await.unwrap();
        let results = server.await.unwrap();
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().unwrap_err().contains("peer TLS handshake refused"), "{results:?}");
        assert!(results[2].is_err(), "{results:?}");
    }
}
