//! The cluster token: a shared secret every member holds (`--cluster-token-file`), proven in the
//! peer handshake without ever being sent.
//!
//! Protocol (both sides hold the same token; `N_d`, `N_l` are 16 random bytes):
//! 1. the dialer sends its handshake with `nonce = N_d`;
//! 2. the listener answers with its handshake carrying `nonce = N_l` and
//!    `proof = HMAC-SHA256(token, "raft-kv listener" | cluster | dialer id | listener id | N_d | N_l)`;
//! 3. the dialer checks that proof (an impostor listener cannot make it), then sends a proof frame
//!    `HMAC-SHA256(token, "raft-kv dialer" | ...the same...)` before any message; the listener
//!    checks it before reading a single message.
//!
//! Each side's proof covers the other's fresh nonce, so a recorded proof is useless on another
//! connection; the role labels keep a listener's proof from being replayed as a dialer's. The
//! token never crosses the network, and comparisons are constant-time. A node with a token refuses
//! a peer without one and the other way round (the mismatch is logged on both sides), so a
//! cluster is either wholly protected or not at all; with no token anywhere the handshake is the
//! one older nodes speak (the fields are absent and no proof frame is sent).

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Shortest accepted token, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;
/// Length of a nonce.
pub const NONCE_LEN: usize = 16;

/// The secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterToken(Vec<u8>);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

/// Which end of a connection a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node that dialled.
    Dialer,
    /// The node that accepted.
    Listener,
}

/// What the two proofs cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript<'a> {
    /// The cluster id both sides agreed on.
    pub cluster_id: u64,
    /// The dialer's node id.
    pub dialer: u64,
    /// The listener's node id.
    pub listener: u64,
    /// The dialer's nonce.
    pub dialer_nonce: &'a [u8],
    /// The listener's nonce.
    pub listener_nonce: &'a [u8],
}

impl ClusterToken {
    /// A token from its bytes (at least [`MIN_TOKEN_LEN`]).
    pub fn new(secret: &[u8]) -> Result<ClusterToken, String> {
        if secret.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "a cluster token needs at least {MIN_TOKEN_LEN} bytes, this one has {}",
                secret.len()
            ));
        }
        Ok(ClusterToken(secret.to_vec()))
    }

    /// The first line of `path` (surrounding whitespace removed).
    pub fn from_file(path: &Path) -> Result<ClusterToken, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ClusterToken::new(text.lines().next().unwrap_or("").trim().as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The proof `role` sends.
    pub fn proof(&self, role: Role, t: &Transcript<'_>) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(match role {
            Role::Dialer => b"raft-kv dialer\0",
            Role::Listener => b"raft-kv listener",
        });
        mac.update(&t.cluster_id.to_be_bytes());
        mac.update(&t.dialer.to_be_bytes());
        mac.update(&t.listener.to_be_bytes());
        for nonce in [t.dialer_nonce, t.listener_nonce] {
            mac.update(&(nonce.len() as u64).to_be_bytes());
            mac.update(nonce);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `proof` is what `role` should have sent (constant-time).
    pub fn verify(&self, role: Role, t: &Transcript<'_>, proof: &[u8]) -> bool {
        proof.len() == 32 && bool::from(self.proof(role, t).ct_eq(proof))
    }
}

/// A fresh nonce.
pub fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; NONCE_LEN];
    rand::fill(&mut n[..]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_the_token_the_role_the_ids_and_both_nonces() {
        let token = ClusterToken::new(b"0123456789abcdef-secret").unwrap();
        let (nd, nl) = (nonce(), nonce());
        assert_ne!(nd, nl);
        let t = Transcript { cluster_id: 9, dialer: 1, listener: 2, dialer_nonce: &nd, listener_nonce: &nl };
        let p = token.proof(Role::Dialer, &t);
        assert!(token.verify(Role::Dialer, &t, &p));
        assert!(!token.verify(Role::Listener, &t, &p), "a dialer's proof is not a listener's");
        assert!(!token.verify(Role::Dialer, &t, &p[..31]));
        let other = ClusterToken::new(b"0123456789abcdef-other!").unwrap();
        assert!(!other.verify(Role::Dialer, &t, &p));
        let fresh = nonce();
        for changed in [
            Transcript { cluster_id: 8, ..t },
            Transcript { dialer: 3, ..t },
            Transcript { listener: 3, ..t },
            Transcript { dialer_nonce: &fresh, ..t },
            Transcript { listener_nonce: &fresh, ..t },
        ] {
            assert!(!token.verify(Role::Dialer, &changed, &p), "{changed:?}");
        }
        assert!(ClusterToken::new(b"short").is_err());
        assert_eq!(format!("{token:?}"), "ClusterToken(<redacted>)");
    }
}
