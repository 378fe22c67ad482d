//! The node's security settings (`raft-kv server` flags) and what the clients of the binary
//! (`client`, `status`, `bench`) need to reach a protected node: the flags, loading them at start,
//! the loud warning for an unprotected node on a non-loopback address, SIGHUP reloads, and
//! `raft-kv passwd`. See SECURITY.md for the threat model.
//!
//! Invariant: nothing here logs or prints a password or a key; errors about a users file name the
//! line, never the rule's text past its first character.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::auth::Users;
use crate::tls::{ClientTls, ServerFiles, ServerTls};

/// Security flags of `raft-kv server`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Security (see SECURITY.md)")]
pub struct SecurityArgs {
    /// Password of the `default` user: clients must `AUTH password` first. Visible to other local
    /// users in the process list: prefer --requirepass-file.
    #[arg(long, value_name = "PASSWORD")]
    pub requirepass: Option<String>,
    /// File whose first line is the `default` user's password.
    #[arg(long, value_name = "FILE")]
    pub requirepass_file: Option<PathBuf>,
    /// Users with passwords, command categories and key patterns (ACL-lite; see SECURITY.md):
    /// `user alice on #<hash from raft-kv passwd> ~app:* +@read +@write`.
    #[arg(long, value_name = "FILE")]
    pub users_file: Option<PathBuf>,
    /// A connection that must authenticate and has not within this many milliseconds is closed
    /// (so idle strangers cannot hold connection slots).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub auth_timeout_ms: u64,
    /// File whose first line is the cluster token (at least 16 bytes; the same on every member):
    /// peers prove it to each other in the handshake (an HMAC over fresh nonces; the token is never
    /// sent), and a peer without it is refused. Every member needs it, or none.
    #[arg(long, value_name = "FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Mutual TLS on the core (peer) port: the cluster CA (PEM); peers without a certificate it
    /// signed are refused in the TLS handshake. Needs --peer-tls-cert and --peer-tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["peer_tls_cert", "peer_tls_key"])]
    pub peer_tls_ca: Option<PathBuf>,
    /// This node's peer certificate (PEM, signed by --peer-tls-ca; used both to accept and to dial).
    #[arg(long, value_name = "FILE", requires = "peer_tls_ca")]
    pub peer_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --peer-tls-cert.
    #[arg(long, value_name = "FILE", requires = "peer_tls_ca")]
    pub peer_tls_key: Option<PathBuf>,
    /// Serve clients over TLS with this certificate chain (PEM). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on the client port.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl SecurityArgs {
    /// The users database the flags describe.
    pub fn users(&self) -> Result<Users> {
        Users::load(self.requirepass.as_deref(), self.requirepass_file.as_deref(), self.users_file.as_deref())
            .map_err(|e| anyhow!("{e}"))
    }

    /// The cluster token, if one is configured.
    pub fn cluster_token(&self) -> Result<Option<crate::auth::token::ClusterToken>> {
        self.cluster_token_file
            .as_deref()
            .map(crate::auth::token::ClusterToken::from_file)
            .transpose()
            .map_err(|e| anyhow!("{e}"))
    }

    /// The peer port's mutual TLS, if asked for.
    pub fn peer_tls(&self) -> Result<Option<Arc<crate::peer_tls::PeerTls>>> {
        let (Some(ca), Some(cert), Some(key)) = (&self.peer_tls_ca, &self.peer_tls_cert, &self.peer_tls_key)
        else {
            return Ok(None);
        };
        let tls = crate::peer_tls::PeerTls::new(ca.clone(), cert.clone(), key.clone())
            .context("cannot use the peer TLS files")?;
        Ok(Some(Arc::new(tls)))
    }

    /// The client port's TLS, if asked for.
    pub fn client_tls(&self) -> Result<Option<Arc<ServerTls>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files =
            ServerFiles { cert: cert.clone(), key: key.clone(), client_ca: self.tls_client_ca.clone() };
        Ok(Some(Arc::new(ServerTls::new(files).context("cannot use the client-port TLS files")?)))
    }
}

/// Whether `host` (a bind host) is only reachable from this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Logs the start-up facts about security, loudly when a node any other machine can reach lets
/// every client in (Redis' protected mode is the anchor; raft-kv warns rather than refuses).
pub fn announce(bind_host: &str, users: &Users, tls: bool, cluster_token: bool, peer_tls: bool) {
    let auth = if users.required() { "required" } else { "off" };
    tracing::info!(
        authentication = auth,
        users = users.users().count(),
        client_tls = tls,
        cluster_token,
        peer_tls,
        "client security: authentication {auth}, TLS {}; peers: cluster token {}, mutual TLS {}",
        if tls { "on" } else { "off" },
        if cluster_token { "required" } else { "off" },
        if peer_tls { "on" } else { "off" }
    );
    if !cluster_token && !peer_tls && !is_loopback_host(bind_host) {
        tracing::warn!(
            "SECURITY WARNING: the core (peer) port on {bind_host} is not authenticated: anyone who can reach it \
             and knows the member list can join the peer conversation. Set --cluster-token-file on every member \
             and keep core ports on a private network. See SECURITY.md."
        );
    }
    if !users.required() && !is_loopback_host(bind_host) {
        tracing::warn!(
            "SECURITY WARNING: this node listens on {bind_host}, which other machines may reach, and NO PASSWORD \
             is set: anyone who can connect can read, overwrite and delete every key and run administrative \
             commands. Set --requirepass-file or --users-file (and --tls-cert/--tls-key), or listen on 127.0.0.1 \
             only. See SECURITY.md."
        );
    }
}

/// Client-side settings of `raft-kv client`, `status` and `bench`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "Connection security")]
pub struct ClientSecurityArgs {
    /// Connect with TLS.
    #[arg(long)]
    pub tls: bool,
    /// CA certificate (PEM) to check the server's certificate against (with --tls).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) to present (with --tls and --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// User to authenticate as (default: `default`).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Password (visible in the process list: prefer --pass-file or RAFT_KV_PASSWORD).
    #[arg(long = "pass", value_name = "PASSWORD")]
    pub pass: Option<String>,
    /// File whose first line is the password.
    #[arg(long, value_name = "FILE")]
    pub pass_file: Option<PathBuf>,
}

/// What a client connection does after connecting: TLS and `AUTH`.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// TLS, if used.
    pub tls: Option<ClientTls>,
    /// (user, password) to `AUTH` with, if any.
    pub auth: Option<(String, String)>,
}

static CLIENT_SECURITY: OnceLock<ClientSecurity> = OnceLock::new();

impl ClientSecurityArgs {
    /// Builds the settings (reads the files; the password from --pass, --pass-file or the
    /// environment variable RAFT_KV_PASSWORD, in that order).
    pub fn build(&self) -> Result<ClientSecurity> {
        let tls = if self.tls {
            let ca = self.cacert.as_deref().ok_or_else(|| {
                anyhow!("--tls needs --cacert FILE (the CA that signed the servers' certificates)")
            })?;
            let pair = self.cert.as_deref().zip(self.key.as_deref());
            Some(ClientTls::new(ca, pair).map_err(|e| anyhow!("{e}"))?)
        } else {
            None
        };
        let pass = match (&self.pass, &self.pass_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            (None, None) => std::env::var("RAFT_KV_PASSWORD").ok(),
        };
        let auth = pass.map(|p| (self.user.clone().unwrap_or_else(|| crate::auth::DEFAULT_USER.into()), p));
        Ok(ClientSecurity { tls, auth })
    }

    /// Builds the settings and makes them the process's ([`client_security`]).
    pub fn install(&self) -> Result<()> {
        let s = self.build()?;
        let _ = CLIENT_SECURITY.set(s);
        Ok(())
    }
}

/// The process's client-side settings (none unless a command installed them).
pub fn client_security() -> &'static ClientSecurity {
    CLIENT_SECURITY.get_or_init(ClientSecurity::default)
}

/// Wraps a connected socket in TLS for `addr` (`host:port`; the host is the name checked),
/// waiting at most [`crate::tls::HANDSHAKE_TIMEOUT`].
pub async fn tls_connect(
    tls: &ClientTls,
    addr: &str,
    stream: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let name = ClientTls::server_name(addr).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(tls.config());
    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TLS handshake with {addr}: {e}")),
        Err(_) => Err(format!("TLS handshake with {addr} timed out")),
    }
}

/// Sends `AUTH user password` on a fresh connection when the settings have a password, and
/// checks the answer is `+OK` (the error text otherwise; never the password).
pub async fn authenticate_async<S>(stream: &mut S, security: &ClientSecurity) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((user, pass)) = &security.auth else {
        return Ok(());
    };
    let mut out = bytes::BytesMut::new();
    crate::resp::write_command(&mut out, &[b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()]);
    stream.write_all(&out).await.map_err(|e| format!("AUTH: {e}"))?;
    let mut parser = crate::resp::Parser::replies(crate::resp::Limits::client());
    let mut buf = bytes::BytesMut::with_capacity(256);
    loop {
        match parser.parse(&mut buf).map_err(|e| format!("AUTH: {e}"))? {
            Some(frame) => return auth_answer(frame),
            None => {
                if stream.read_buf(&mut buf).await.map_err(|e| format!("AUTH: {e}"))? == 0 {
                    return Err("AUTH: connection closed by the server".into());
                }
            }
        }
    }
}

/// `Ok` for `+OK`, the server's error text otherwise.
pub fn auth_answer(frame: crate::resp::Frame) -> Result<(), String> {
    match frame {
        crate::resp::Frame::Simple(s) if &s[..] == b"OK" => Ok(()),
        crate::resp::Frame::Error(e) => Err(format!("AUTH refused: {}", String::from_utf8_lossy(&e))),
        other => Err(format!("AUTH: unexpected answer {other:?}")),
    }
}

/// `raft-kv passwd`: reads a password from stdin (first line) and prints its Argon2id hash for a
/// users file.
pub fn run_passwd() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password from stdin")?;
    let pass = line.trim_end_matches(['\n', '\r']);
    if pass.is_empty() {
        return Err(anyhow!("empty password (give it on stdin: echo -n 'secret' | raft-kv passwd)"));
    }
    let hash = crate::auth::hash_password(pass).map_err(|e| anyhow!(e))?;
    println!("#{hash}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["0.0.0.0", "::", "10.0.0.1", "node-a", "192.168.1.1"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
