//! `raft-kv certs`: makes a cluster CA and certificates signed by it (rcgen, ECDSA P-256), for
//! tests, for trying TLS out, and for small deployments (see SECURITY.md).
//!
//! ```text
//! raft-kv certs --dir tls a=localhost,127.0.0.1 b=localhost,127.0.0.1 c=localhost,127.0.0.1
//! ```
//! writes `tls/ca.pem` and `tls/ca-key.pem` (made once; later runs sign with the CA already in the
//! directory, so nodes and clients can be added), and `tls/NAME.pem` + `tls/NAME-key.pem` per
//! name. Every name's certificate carries its hosts as subject alternative names (IP addresses as
//! IP names) and may serve both ends of a connection (server and client authentication), so one
//! certificate per node is its client-port certificate, its peer certificate and what it presents
//! when it dials a peer. Key files are created readable by their owner only. Existing files of a
//! name are never overwritten unless `--force` is given.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// `raft-kv certs`.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory for the files (created if missing).
    #[arg(long, default_value = "tls")]
    pub dir: PathBuf,
    /// Days the new certificates are valid (the CA: ten times as long).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Overwrite a name's existing certificate and key.
    #[arg(long)]
    pub force: bool,
    /// Certificates to make: `NAME=HOST[,HOST...]` (e.g. `a=localhost,127.0.0.1`), or `NAME` alone
    /// for a client certificate without hosts.
    #[arg(value_name = "NAME=HOSTS")]
    pub names: Vec<String>,
}

/// Civil date (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// The CA of `dir`, made if missing; returns its issuer and whether it was made now.
fn ca(dir: &Path, days: u32) -> Result<(Issuer<'static, KeyPair>, bool)> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)
                .with_context(|| format!("{}: not a usable key", key_path.display()))?;
            let pem = std::fs::read_to_string(&cert_path)?;
            let issuer = Issuer::from_ca_cert_pem(&pem, key)
                .with_context(|| format!("{}: not a usable CA certificate", cert_path.display()))?;
            Ok((issuer, false))
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, "raft-kv cluster CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, days.saturating_mul(10));
            let cert = params.self_signed(&key)?;
            write_file(&key_path, &key.serialize_pem(), true)?;
            write_file(&cert_path, &cert.pem(), false)?;
            Ok((Issuer::new(params, key), true))
        }
        _ => bail!(
            "{} has one of ca.pem and ca-key.pem but not the other: restore the missing one or remove both",
            dir.display()
        ),
    }
}

/// Makes the files; returns the paths written.
pub fn make(args: &CertsArgs) -> Result<Vec<PathBuf>> {
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let mut wanted = Vec::new();
    for spec in &args.names {
        let (name, hosts) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name == "ca"
        {
            bail!("'{name}' cannot name a certificate (letters, digits, - _ . ; not 'ca')");
        }
        let hosts: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_matches(['[', ']']).to_string())
            .collect();
        let (cert, key) = (args.dir.join(format!("{name}.pem")), args.dir.join(format!("{name}-key.pem")));
        if !args.force && (cert.exists() || key.exists()) {
            bail!("{} or {} exists (use --force to replace it)", cert.display(), key.display());
        }
        wanted.push((name.to_string(), hosts, cert, key));
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let (issuer, made) = ca(&args.dir, args.days)?;
    let mut written = Vec::new();
    if made {
        written.push(args.dir.join("ca.pem"));
        written.push(args.dir.join("ca-key.pem"));
    }
    for (name, hosts, cert_path, key_path) in wanted {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(hosts.clone()).with_context(|| format!("hosts of '{name}'"))?;
        params.distinguished_name.push(DnType::CommonName, name.clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, args.days);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&key_path, &key.serialize_pem(), true)?;
        write_file(&cert_path, &cert.pem(), false)?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn a_ca_is_made_once_and_reused_and_certificates_verify_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let args = |names: &[&str]| CertsArgs {
            dir: dir.path().to_path_buf(),
            days: 30,
            force: false,
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        let written = make(&args(&["a=localhost,127.0.0.1", "client"])).unwrap();
        assert_eq!(written.len(), 6);
        let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        make(&args(&["b=localhost"])).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before, "the CA is reused");
        assert!(make(&args(&["a=localhost"])).is_err(), "no silent overwrite");
        assert!(make(&args(&["ca=x"])).is_err());
        assert!(make(&args(&["bad/name=x"])).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key files are private");
        // Both certificates chain to the CA: a rustls server and client accept them.
        for name in ["a", "b"] {
            let files = crate::tls::ServerFiles {
                cert: dir.path().join(format!("{name}.pem")),
                key: dir.path().join(format!("{name}-key.pem")),
                client_ca: Some(dir.path().join("ca.pem")),
            };
            files.load().unwrap();
        }
        crate::tls::ClientTls::new(
            &dir.path().join("ca.pem"),
            Some((&dir.path().join("client.pem"), &dir.path().join("client-key.pem"))),
        )
        .unwrap();
    }
}
