//! TLS with rustls (over `ring`; no OpenSSL): the server side of the client port, and the client
//! side used by `raft-kv client`, `status` and `bench`.
//!
//! Server: [`ServerTls`] holds the certificate chain and key given with `--tls-cert` /
//! `--tls-key` (PEM), and with `--tls-client-ca` requires every client to present a certificate
//! signed by that CA (refused in the handshake otherwise). [`ServerTls::reload`] reads the files
//! again (on SIGHUP): connections accepted afterwards use the new certificate; a reload that
//! fails keeps the old one and says why. A connection that does not complete its handshake within
//! [`HANDSHAKE_TIMEOUT`] (plaintext sent to the TLS port, a stalled client) is closed; it never
//! reaches the RESP layer and costs nothing but its socket meanwhile.
//!
//! Client: [`ClientTls`] trusts the CA given with `--cacert` (PEM) and optionally presents a
//! client certificate (`--cert` / `--key`); the server name checked is the host the client dials.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS file or setting that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// ring as the crypto provider: it builds with the C compiler alone (aws-lc-rs, rustls' default,
/// needs cmake); rustls marks it deprecated because it lacks post-quantum key exchange.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate (expected PEM 'BEGIN CERTIFICATE')"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, format!("no usable private key ({e})")))
}

/// A root store holding every certificate of a PEM file.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The files of a TLS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFiles {
    /// Certificate chain (PEM), the node's certificate first.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// If set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    /// Builds the rustls configuration from the files.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider())
                        .build()
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(e.to_string()))?;
        // No session tickets: RESP clients keep their connections, and an idle connection then
        // carries nothing the server did not ask for (a blocking client tells a closed
        // connection by any byte arriving unasked, see `resp::client`).
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

/// A TLS server configuration that can be reloaded while the node runs.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files (an error here stops the node from starting).
    pub fn new(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let current = RwLock::new(files.load()?);
        Ok(ServerTls { files, current })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Reads the files again; on error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// The files.
    pub fn files(&self) -> &ServerFiles {
        &self.files
    }
}

/// Client-side TLS settings.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts the CAs in `ca` (PEM); presents `cert`/`key` if given.
    pub fn new(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(read_roots(ca)?);
        let config = match cert_key {
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { config: Arc::new(config) })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name to check the server's certificate against, from `host:port` or `host`.
    pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
        let host = match addr.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
            _ => addr,
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        ServerName::try_from(host.to_string())
            .map_err(|e| TlsError::Config(format!("'{host}' is not a usable server name: {e}")))
    }

    /// A blocking TLS connection over `stream` to `addr` (`host:port`), handshake not yet done
    /// (it happens on the first read or write).
    pub fn client_connection(&self, addr: &str) -> Result<rustls::ClientConnection, TlsError> {
        rustls::ClientConnection::new(self.config.clone(), ClientTls::server_name(addr)?)
            .map_err(|e| TlsError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_dialled_host() {
        assert_eq!(ClientTls::server_name("localhost:10001").unwrap().to_str(), "localhost");
        assert_eq!(ClientTls::server_name("127.0.0.1:10001").unwrap().to_str(), "127.0.0.1");
        assert_eq!(ClientTls::server_name("[::1]:10001").unwrap().to_str(), "::1");
        assert_eq!(ClientTls::server_name("node-a").unwrap().to_str(), "node-a");
        assert!(ClientTls::server_name("bad name:1").is_err());
    }

    #[test]
    fn missing_or_wrong_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let files = ServerFiles { cert: junk.clone(), key: junk.clone(), client_ca: None };
        let e = files.load().unwrap_err().to_string();
        assert!(e.starts_with(&junk.display().to_string()), "{e}");
        let missing = ServerFiles { cert: dir.path().join("nope"), key: junk, client_ca: None };
        assert!(missing.load().is_err());
    }
}
