//! Real processes on loopback: passwords and users (AUTH, HELLO AUTH, NOAUTH, NOPERM, failed
//! attempts logged and limited, no secret in logs or INFO), TLS on the client port (TLS clients
//! served, plaintext and strangers' certificates refused while the node keeps serving, a
//! certificate reloaded on SIGHUP), `raft-kv certs` / `passwd` / `status --tls`, and redis-cli
//! with `--tls --cacert` against every node (ignored: needs redis-cli), and a standby joining a cluster
//! that has a cluster token, peer mutual TLS and a password (an impostor standby is not adopted).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_to_end, Cluster, BIN};
use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;
use raft_kv::security::ClientSecurity;
use raft_kv::tls::ClientTls;

fn ok() -> Frame {
    Frame::ok()
}

fn err_starts(f: &Frame, prefix: &str) -> bool {
    matches!(f, Frame::Error(e) if e.starts_with(prefix.as_bytes()))
}

fn connect(c: &Cluster, k: usize, sec: &ClientSecurity) -> Option<Connection> {
    let conn = Connection::connect_with(&c.addr(k), Duration::from_secs(2), sec).ok()?;
    conn.set_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(conn)
}

/// Waits until every node names the same leader, talking with `sec`.
fn wait_leader(c: &Cluster, sec: &ClientSecurity, limit: Duration) {
    let start = Instant::now();
    loop {
        let leaders: Vec<Option<String>> = (0..c.names.len())
            .map(|k| {
                let mut conn = connect(c, k, sec)?;
                match conn.request(&["INFO", "raft"]).ok()? {
                    Frame::Bulk(b) => Cluster::field(&String::from_utf8_lossy(&b), "leader"),
                    _ => None,
                }
            })
            .collect();
        if leaders.iter().all(|l| l.as_deref().is_some_and(|l| !l.is_empty()) && *l == leaders[0]) {
            return;
        }
        assert!(start.elapsed() < limit, "no leader within {limit:?}; logs in {}", c.dir.path().display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn as_user(user: &str, pass: &str) -> ClientSecurity {
    ClientSecurity { tls: None, auth: Some((user.into(), pass.into())) }
}

/// `raft-kv passwd` with `pass` on stdin: the `#...` rule it prints.
fn passwd(pass: &str) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("passwd");
    let (code, out, err) = run_to_end(cmd, &format!("{pass}\n"), Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let rule = out.trim().to_string();
    assert!(rule.starts_with("#$argon2id$"), "{rule}");
    rule
}

#[test]
fn passwords_users_and_permissions_on_a_three_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.acl");
    let reader_hash = passwd("read-only-pw");
    std::fs::write(
        &users,
        format!(
            "# test users\nuser admin on >admin-pw allkeys +@all\nuser app on >app-pw ~app:* +@read +@write\nuser reader on {reader_hash} ~* +@read\nuser old off >old-pw allkeys +@all\n"
        ),
    )
    .unwrap();
    let users_arg = users.display().to_string();
    let c = Cluster::start_with(3, &["--users-file", &users_arg]);
    let admin = as_user("admin", "admin-pw");
    wait_leader(&c, &admin, Duration::from_secs(20));

    for k in 0..3 {
        // Unauthenticated: NOAUTH for everything but AUTH/HELLO/QUIT.
        let mut anon = connect(&c, k, &ClientSecurity::default()).expect("connect");
        let r = anon.request(&["GET", "app:1"]).unwrap();
        assert!(err_starts(&r, "NOAUTH"), "{r:?}");
        let r = anon.request(&["INFO"]).unwrap();
        assert!(err_starts(&r, "NOAUTH"), "{r:?}");
        // Wrong password, unknown user, disabled user: the same WRONGPASS.
        for (u, p) in [("app", "nope"), ("ghost", "app-pw"), ("old", "old-pw")] {
            let r = anon.request(&["AUTH", u, p]).unwrap();
            assert!(err_starts(&r, "WRONGPASS"), "{u}: {r:?}");
        }
        // HELLO AUTH with the right password authenticates (and names the connection).
        let r = anon.request(&["HELLO", "2", "AUTH", "app", "app-pw", "SETNAME", "t"]).unwrap();
        assert!(matches!(r, Frame::Array(_)), "{r:?}");
        assert_eq!(anon.request(&["ACL", "WHOAMI"]).unwrap(), Frame::bulk("app"));
        assert_eq!(anon.request(&["CLIENT", "GETNAME"]).unwrap(), Frame::bulk("t"));
    }
    // HELLO 3 AUTH switches to RESP3 (a map) in the same step; a failed one does not switch.
    let mut raw = std::net::TcpStream::connect(c.addr(0)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    raw.write_all(b"HELLO 3 AUTH app wrong\r\n").unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"-WRONGPASS"), "{}", String::from_utf8_lossy(&buf[..n]));
    raw.write_all(b"HELLO 3 AUTH app app-pw\r\n").unwrap();
    let n = raw.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"%"), "{}", String::from_utf8_lossy(&buf[..n]));

    // A writer within its key patterns; outside them, and admin commands, refused.
    let mut app = connect(&c, 1, &as_user("app", "app-pw")).expect("app connects");
    assert_eq!(app.request(&["SET", "app:1", "v1"]).unwrap(), ok());
    let r = app.request(&["SET", "other", "v"]).unwrap();
    assert_eq!(r, Frame::error("NOPERM No permissions to access a key"));
    let r = app.request(&["MSET", "app:2", "x", "other", "y"]).unwrap();
    assert!(err_starts(&r, "NOPERM"), "{r:?}");
    let r = app.request(&["RAFT.SNAPSHOT"]).unwrap();
    assert!(err_starts(&r, "NOPERM User app has no permissions to run the 'raft.snapshot' command"), "{r:?}");
    let r = app.request(&["ACL", "LIST"]).unwrap();
    assert!(err_starts(&r, "NOPERM"), "{r:?}");

    // The read-only user (Argon2 hash from `raft-kv passwd`) reads but cannot write.
    let mut reader = connect(&c, 2, &as_user("reader", "read-only-pw")).expect("reader connects");
    assert_eq!(reader.request(&["GET", "app:1"]).unwrap(), Frame::bulk("v1"));
    let r = reader.request(&["SET", "app:1", "changed"]).unwrap();
    assert!(err_starts(&r, "NOPERM User reader has no permissions to run the 'set' command"), "{r:?}");
    let r = reader.request(&["DEL", "app:1"]).unwrap();
    assert!(err_starts(&r, "NOPERM"), "{r:?}");
    assert_eq!(reader.request(&["GET", "app:1"]).unwrap(), Frame::bulk("v1"), "nothing changed");

    // The admin may snapshot and list users; the list shows no secret.
    let mut adm = connect(&c, 0, &admin).expect("admin connects");
    assert!(matches!(adm.request(&["RAFT.SNAPSHOT"]).unwrap(), Frame::Integer(_)));
    let Frame::Array(lines) = adm.request(&["ACL", "LIST"]).unwrap() else { panic!("ACL LIST") };
    let text: Vec<String> =
        lines.iter().map(|l| String::from_utf8_lossy(l.as_bytes().expect("bulk")).into_owned()).collect();
    assert!(text.contains(&"user reader on #<redacted> ~* +@read".to_string()), "{text:?}");
    let Frame::Bulk(info) = adm.request(&["INFO"]).unwrap() else { panic!("INFO") };
    let info = String::from_utf8_lossy(&info).into_owned();

    // Failed attempts are logged without the password; after a few, the address is blocked.
    let mut guesser = connect(&c, 0, &ClientSecurity::default()).expect("connect");
    let mut blocked = false;
    for i in 0..8 {
        let r = guesser.request(&["AUTH", "admin", &format!("guess-{i}")]).unwrap();
        blocked |= err_starts(&r, "WRONGPASS too many failed authentication attempts");
    }
    assert!(blocked, "the guesser was never blocked");
    let r = guesser.request(&["AUTH", "admin", "admin-pw"]).unwrap();
    assert!(err_starts(&r, "WRONGPASS too many"), "blocked even with the right password: {r:?}");
    let log = c.log(0);
    assert!(log.contains("authentication failed"), "no failure logged");
    assert!(log.contains("authentication refused: too many failures"), "no block logged");
    for secret in ["admin-pw", "app-pw", "read-only-pw", "guess-1", "argon2"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!info.contains(secret), "{secret} in INFO");
    }
    // Another address is not blocked (a client bound to 127.0.0.2, loopback too).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.connect(&c.addr(0).parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let mut other = Connection::from_stream(sock.into()).unwrap();
    other.set_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(other.request(&["AUTH", "admin", "admin-pw"]).unwrap(), ok());
}

/// Redis 7.2's texts for a call a script's caller may not make.
const SCRIPT_KEY_DENIED: &str = "ERR ACL failure in script: No permissions to access a key";

fn err_text(f: &Frame) -> String {
    match f {
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn scripts_run_with_the_callers_rules_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.acl");
    std::fs::write(
        &users,
        "user admin on >admin-pw allkeys +@all\nuser app on >app-pw ~app:* +@read +@write\nuser reader on >reader-pw ~* +@read\n",
    )
    .unwrap();
    let users_arg = users.display().to_string();
    let mut c = Cluster::start_with(3, &["--users-file", &users_arg]);
    let admin = as_user("admin", "admin-pw");
    wait_leader(&c, &admin, Duration::from_secs(20));
    let mut adm = connect(&c, 0, &admin).expect("admin connects");
    assert_eq!(adm.request(&["SET", "secret", "s"]).unwrap(), ok());
    let Frame::Bulk(sha) = adm.request(&["SCRIPT", "LOAD", "return redis.call('get', ARGV[1])"]).unwrap()
    else {
        panic!("SCRIPT LOAD")
    };
    let sha = String::from_utf8_lossy(&sha).into_owned();

    for k in 0..3 {
        let mut app = connect(&c, k, &as_user("app", "app-pw")).expect("app connects");
        let mine = format!("app:{k}");
        // Inside its patterns: allowed.
        let r =
            app.request(&["EVAL", "return redis.call('set', KEYS[1], ARGV[1])", "1", &mine, "v"]).unwrap();
        assert_eq!(r, ok());
        // Reading or writing outside them through a script: refused by redis.call ...
        let r = app.request(&["EVAL", "return redis.call('get', 'secret')", "0"]).unwrap();
        assert!(err_text(&r).starts_with(&format!("{SCRIPT_KEY_DENIED} script: ")), "{r:?}");
        let r = app.request(&["EVALSHA", &sha, "0", "secret"]).unwrap();
        assert!(err_text(&r).starts_with(SCRIPT_KEY_DENIED), "{r:?}");
        let r = app.request(&["EVAL_RO", "return redis.call('get', 'secret')", "0"]).unwrap();
        assert!(err_text(&r).starts_with(SCRIPT_KEY_DENIED), "{r:?}");
        // ... which ends the script and undoes what it wrote before ...
        let body = "redis.call('set', KEYS[1], 'x') return redis.call('set', 'secret', 'pwned')";
        let r = app.request(&["EVAL", body, "1", &format!("app:w{k}")]).unwrap();
        assert!(err_text(&r).starts_with(SCRIPT_KEY_DENIED), "{r:?}");
        // ... and returned by redis.pcall, the script going on.
        let body = "local r = redis.pcall('del', 'secret') redis.call('set', KEYS[1], r.err) return r";
        let r = app.request(&["EVAL", body, "1", &format!("app:p{k}")]).unwrap();
        assert_eq!(r, Frame::error(SCRIPT_KEY_DENIED));
        // The same inside MULTI (the transaction entry carries the script and its rules).
        assert_eq!(app.request(&["MULTI"]).unwrap(), ok());
        assert_eq!(
            app.request(&["EVAL", "return redis.call('incr', 'secret')", "0"]).unwrap(),
            Frame::simple("QUEUED")
        );
        let Frame::Array(items) = app.request(&["EXEC"]).unwrap() else { panic!("EXEC") };
        assert!(err_text(&items[0]).starts_with(SCRIPT_KEY_DENIED), "{items:?}");
        // A declared key outside the patterns is refused at the door, as before.
        let r = app.request(&["EVAL", "return 1", "1", "secret"]).unwrap();
        assert_eq!(r, Frame::error("NOPERM No permissions to access a key"));

        // A read-only user: reads through EVAL_RO, no write through any script.
        let mut reader = connect(&c, k, &as_user("reader", "reader-pw")).expect("reader connects");
        let r = reader.request(&["EVAL_RO", "return redis.call('get', 'secret')", "0"]).unwrap();
        assert_eq!(r, Frame::bulk("s"));
        let denied = "ERR ACL failure in script: User reader has no permissions to run the 'set' command";
        let r = reader.request(&["EVAL_RO", "return redis.call('SET', 'secret', 'w')", "0"]).unwrap();
        assert!(err_text(&r).starts_with(denied), "{r:?}");
        let r =
            reader.request(&["EVAL", "#!lua flags=no-writes\nreturn redis.pcall('set', 'secret', 'w')", "0"]);
        assert_eq!(r.unwrap(), Frame::error(denied));
        let r = reader.request(&["EVAL", "return redis.call('set', 'secret', 'w')", "0"]).unwrap();
        assert!(err_starts(&r, "NOPERM User reader has no permissions to run the 'eval' command"), "{r:?}");
    }

    // Every node applied the same entries to the same state, also after a restart replays them.
    let check = |c: &Cluster, k: usize| {
        let mut adm = connect(c, k, &admin).expect("admin connects");
        assert_eq!(adm.request(&["GET", "secret"]).unwrap(), Frame::bulk("s"), "node {k}");
        for j in 0..3 {
            assert_eq!(adm.request(&["GET", &format!("app:{j}")]).unwrap(), Frame::bulk("v"), "node {k}");
            assert_eq!(adm.request(&["GET", &format!("app:w{j}")]).unwrap(), Frame::Null, "node {k}");
            let p = adm.request(&["GET", &format!("app:p{j}")]).unwrap();
            assert_eq!(p, Frame::bulk(SCRIPT_KEY_DENIED), "node {k}");
        }
    };
    for k in 0..3 {
        check(&c, k);
    }
    c.kill(2);
    c.start_node(2);
    wait_leader(&c, &admin, Duration::from_secs(20));
    check(&c, 2);
}

#[test]
fn requirepass_file_protects_the_default_user_and_status_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "s3cret-pass\n").unwrap();
    let pass_arg = pass.display().to_string();
    let c = Cluster::start_with(3, &["--requirepass-file", &pass_arg]);
    let sec = as_user("default", "s3cret-pass");
    wait_leader(&c, &sec, Duration::from_secs(20));
    let mut anon = connect(&c, 0, &ClientSecurity::default()).unwrap();
    assert!(err_starts(&anon.request(&["SET", "k", "v"]).unwrap(), "NOAUTH"));
    assert!(err_starts(&anon.request(&["AUTH", "wrong"]).unwrap(), "WRONGPASS"));
    assert_eq!(anon.request(&["AUTH", "s3cret-pass"]).unwrap(), ok());
    assert_eq!(anon.request(&["SET", "k", "v"]).unwrap(), ok());

    // `raft-kv status` with and without the password file.
    let mut status = Command::new(BIN);
    status.arg("status").arg("--group-config").args(&c.group);
    let (code, out, _) = run_to_end(status, "", Duration::from_secs(30));
    assert_ne!(code, 0, "status without a password should not see the nodes: {out}");
    let mut status = Command::new(BIN);
    status.arg("status").arg("--pass-file").arg(&pass).arg("--group-config").args(&c.group);
    let (code, out, err) = run_to_end(status, "", Duration::from_secs(30));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("leader"), "{out}");
    assert!(!out.contains("s3cret") && !err.contains("s3cret"));
    // The console authenticates too.
    let mut console = Command::new(BIN);
    console.arg("client").arg("--pass-file").arg(&pass).arg("--group-config").args(&c.group);
    let (code, out, err) = run_to_end(console, "get k\nexit\n", Duration::from_secs(30));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"v\""), "{out}");
}

/// `raft-kv certs` into `dir` for `names` (all on 127.0.0.1 / localhost).
fn certs(dir: &Path, names: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.arg("certs").arg("--dir").arg(dir).arg("--force");
    for n in names {
        cmd.arg(format!("{n}=localhost,127.0.0.1"));
    }
    let (code, out, err) = run_to_end(cmd, "", Duration::from_secs(30));
    assert_eq!(code, 0, "{out}{err}");
}

fn tls_to(ca: &Path) -> ClientSecurity {
    ClientSecurity { tls: Some(ClientTls::new(ca, None).unwrap()), auth: None }
}

struct TlsCluster {
    cluster: Cluster,
    dir: tempfile::TempDir,
    ca: PathBuf,
}

fn tls_cluster() -> TlsCluster {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["node"]);
    let cert = dir.path().join("node.pem").display().to_string();
    let key = dir.path().join("node-key.pem").display().to_string();
    let cluster = Cluster::start_with(3, &["--tls-cert", &cert, "--tls-key", &key]);
    let ca = dir.path().join("ca.pem");
    wait_leader(&cluster, &tls_to(&ca), Duration::from_secs(20));
    TlsCluster { cluster, dir, ca }
}

#[test]
fn tls_clients_are_served_and_plaintext_or_strangers_are_refused() {
    let t = tls_cluster();
    let c = &t.cluster;
    let sec = tls_to(&t.ca);
    let mut good = connect(c, 0, &sec).expect("TLS client");
    assert_eq!(good.request(&["SET", "k", "over-tls"]).unwrap(), ok());

    for k in 0..3 {
        // Plaintext RESP to the TLS port: no RESP answer, the connection is closed.
        let mut plain = std::net::TcpStream::connect(c.addr(k)).unwrap();
        plain.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf);
        assert!(!buf.windows(4).any(|w| w == b"PONG"), "plaintext answered on node {k}");
        // The node keeps serving TLS clients meanwhile.
        let mut other = connect(c, k, &sec).expect("TLS client after plaintext");
        assert_eq!(other.request(&["GET", "k"]).unwrap(), Frame::bulk("over-tls"));
    }
    // A client that trusts another CA refuses the node's certificate.
    let stranger = tempfile::tempdir().unwrap();
    certs(stranger.path(), &["x"]);
    assert!(connect(c, 1, &tls_to(&stranger.path().join("ca.pem"))).is_none());
    // A plaintext client gets nothing usable.
    assert!(connect(c, 1, &ClientSecurity::default())
        .and_then(|mut conn| conn.request(&["PING"]).ok())
        .is_none());
    // The first connection still works.
    assert_eq!(good.request(&["GET", "k"]).unwrap(), Frame::bulk("over-tls"));
    // `raft-kv status --tls --cacert` sees every node.
    let mut status = Command::new(BIN);
    status.arg("status").arg("--tls").arg("--cacert").arg(&t.ca).arg("--group-config").args(&c.group);
    let (code, out, err) = run_to_end(status, "", Duration::from_secs(30));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.matches("follower").count() + out.matches("leader").count() >= 3, "{out}");
}

#[test]
fn a_certificate_is_reloaded_on_sighup() {
    let t = tls_cluster();
    let c = &t.cluster;
    let old_ca = t.dir.path().join("old-ca.pem");
    std::fs::copy(&t.ca, &old_ca).unwrap();
    // A new CA and node certificate replace the files in place.
    let fresh = tempfile::tempdir().unwrap();
    certs(fresh.path(), &["node"]);
    for f in ["node.pem", "node-key.pem"] {
        std::fs::copy(fresh.path().join(f), t.dir.path().join(f)).unwrap();
    }
    let new_ca = fresh.path().join("ca.pem");
    let before = connect(c, 0, &tls_to(&old_ca));
    assert!(before.is_some(), "before SIGHUP the old certificate is served");
    let pid = c.procs[0].as_ref().unwrap().id();
    let status = Command::new("kill").arg("-HUP").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    while connect(c, 0, &tls_to(&new_ca)).is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "new certificate not served; log: {}", c.log(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(connect(c, 0, &tls_to(&old_ca)).is_none(), "the old certificate is still served");
    // The connection made before the reload goes on working.
    let mut before = before.unwrap();
    assert!(matches!(before.request(&["PING"]).unwrap(), Frame::Simple(_)));
    assert!(c.log(0).contains("certificate reloaded"));
    // A broken file on the next SIGHUP keeps the current certificate.
    std::fs::write(t.dir.path().join("node.pem"), "garbage").unwrap();
    let status = Command::new("kill").arg("-HUP").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    while !c.log(0).contains("certificate reload failed") {
        assert!(start.elapsed() < Duration::from_secs(10), "no reload failure logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(connect(c, 0, &tls_to(&new_ca)).is_some(), "still serving the good certificate");
}

#[test]
#[ignore = "needs redis-cli"]
fn redis_cli_with_tls_and_cacert_works_against_every_node() {
    let t = tls_cluster();
    let c = &t.cluster;
    for k in 0..3 {
        let port = c.server_ports[k].to_string();
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&t.ca)
            .args(["-h", "127.0.0.1", "-p", &port, "SET", &format!("cli-{k}"), "tls"])
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "node {k}: {out:?}");
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&t.ca)
            .args(["-h", "127.0.0.1", "-p", &port, "GET", "cli-0"])
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tls", "node {k}: {out:?}");
    }
    // Without --tls redis-cli gets no answer.
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &c.server_ports[0].to_string(), "PING"])
        .output()
        .expect("redis-cli runs");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PONG"), "{out:?}");
}

#[test]
#[ignore = "needs python3 with redis-py"]
fn redis_py_with_ssl_and_users() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["node"]);
    let users = dir.path().join("users.acl");
    std::fs::write(&users, "user app on >app-pw ~* +@read +@write\nuser ro on >ro-pw ~* +@read\n").unwrap();
    let arg = |f: &str| dir.path().join(f).display().to_string();
    let c = Cluster::start_with(
        3,
        &[
            "--tls-cert",
            &arg("node.pem"),
            "--tls-key",
            &arg("node-key.pem"),
            "--users-file",
            &arg("users.acl"),
        ],
    );
    let ca = dir.path().join("ca.pem");
    let sec = ClientSecurity {
        tls: Some(ClientTls::new(&ca, None).unwrap()),
        auth: Some(("app".into(), "app-pw".into())),
    };
    wait_leader(&c, &sec, Duration::from_secs(20));
    let script = r#"
import sys, redis
port, ca = int(sys.argv[1]), sys.argv[2]
for proto in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, username="app", password="app-pw", protocol=proto)
    assert r.set(f"py{proto}", "tls") is True
    assert r.get(f"py{proto}") == b"tls"
    assert r.acl_whoami() == "app" or r.acl_whoami() == b"app", r.acl_whoami()
ro = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, username="ro", password="ro-pw")
assert ro.get("py2") == b"tls"
try:
    ro.set("py2", "no")
    sys.exit("a read-only user wrote")
except redis.exceptions.NoPermissionError:
    pass
try:
    redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, username="app", password="bad").ping()
    sys.exit("a wrong password was accepted")
except redis.exceptions.AuthenticationError:
    pass
print("ok")
"#;
    for k in 0..3 {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(c.server_ports[k].to_string())
            .arg(&ca)
            .output()
            .expect("python3 runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "node {k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn slow_and_idle_clients_do_not_starve_others() {
    let c = Cluster::start(3);
    let open = ClientSecurity::default();
    wait_leader(&c, &open, Duration::from_secs(20));
    let pid = c.procs[0].as_ref().unwrap().id();
    let rss_before = rss_kib(pid);
    // 3,000 idle connections and 200 slowloris connections dribbling a request a byte at a time.
    let idle: Vec<std::net::TcpStream> =
        (0..3000).map(|_| std::net::TcpStream::connect(c.addr(0)).expect("idle connection")).collect();
    let mut slow: Vec<std::net::TcpStream> =
        (0..200).map(|_| std::net::TcpStream::connect(c.addr(0)).expect("slow connection")).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let request = b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$1\r\nx\r\n";
            let mut at = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && at < request.len() - 1 {
                for s in &mut slow {
                    let _ = s.write_all(&request[at..at + 1]);
                }
                at += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            slow
        })
    };
    // Meanwhile a normal client, and new connections, are served promptly.
    let mut worst = Duration::ZERO;
    let mut normal = connect(&c, 0, &open).expect("a normal client connects");
    for i in 0..300 {
        let t = Instant::now();
        assert_eq!(normal.request(&["SET", &format!("n{i}"), "v"]).unwrap(), ok());
        assert_eq!(normal.request(&["GET", &format!("n{i}")]).unwrap(), Frame::bulk("v"));
        worst = worst.max(t.elapsed());
        if i % 50 == 0 {
            let t = Instant::now();
            let mut fresh = connect(&c, 0, &open).expect("a new client connects");
            assert!(matches!(fresh.request(&["PING"]).unwrap(), Frame::Simple(_)));
            worst = worst.max(t.elapsed());
        }
    }
    let rss_during = rss_kib(pid);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slow = dribbler.join().unwrap();
    eprintln!(
        "3,000 idle + 200 slow connections: worst SET+GET (or connect+PING) {worst:?}; node RSS {rss_before} KiB before, {rss_during} KiB with them"
    );
    assert!(worst < Duration::from_secs(2), "a normal client waited {worst:?}");
    // Bounded memory: well under 64 KiB per held connection.
    assert!(rss_during.saturating_sub(rss_before) < 3200 * 64, "{rss_before} -> {rss_during} KiB");
    assert_eq!(normal.request(&["GET", "slow"]).unwrap(), Frame::Null, "no slow request completed");
    drop((idle, slow));
}

#[test]
fn connections_that_do_not_authenticate_in_time_are_closed() {
    let c = Cluster::start_with(3, &["--requirepass", "pw", "--auth-timeout-ms", "1500"]);
    let sec = as_user("default", "pw");
    wait_leader(&c, &sec, Duration::from_secs(20));
    let mut idle = std::net::TcpStream::connect(c.addr(0)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let authed = connect(&c, 0, &sec).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(buf.starts_with(b"-ERR authentication timeout"), "{}", String::from_utf8_lossy(&buf));
    assert!(waited >= Duration::from_millis(1000) && waited < Duration::from_secs(8), "{waited:?}");
    // An authenticated connection idle as long is kept.
    let mut authed = authed;
    assert!(matches!(authed.request(&["PING"]).unwrap(), Frame::Simple(_)));
}

/// Reads `INFO raft` of node `k` as `field`.
fn info_field(c: &Cluster, k: usize, sec: &ClientSecurity, field: &str) -> Option<String> {
    let mut conn = connect(c, k, sec)?;
    match conn.request(&["INFO", "raft"]).ok()? {
        Frame::Bulk(b) => Cluster::field(&String::from_utf8_lossy(&b), field),
        _ => None,
    }
}

#[test]
fn a_peer_with_a_wrong_cluster_token_or_none_is_refused_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("token"), dir.path().join("other-token"));
    std::fs::write(&good, "the-cluster-token-of-this-test\n").unwrap();
    std::fs::write(&bad, "a-different-token-of-a-stranger\n").unwrap();
    let mut c = Cluster::start_with(3, &["--cluster-token-file", &good.display().to_string()]);
    let open = ClientSecurity::default();
    wait_leader(&c, &open, Duration::from_secs(20));
    let mut w = connect(&c, 0, &open).unwrap();
    assert_eq!(w.request(&["SET", "before", "1"]).unwrap(), ok());
    let token_of_the_good = std::fs::read_to_string(&good).unwrap();

    // C is replaced by an impostor with C's name and a fresh data directory: once with another
    // token, once with none. Neither may join: the others refuse it, it gets no entries.
    for (label, args) in [
        ("wrong token", vec!["--cluster-token-file".to_string(), bad.display().to_string()]),
        ("no token", vec![]),
    ] {
        c.kill(2);
        let refusals_before = c.log(0).matches("cluster token").count();
        let impostor_dir = dir.path().join(format!("impostor-{}", label.replace(' ', "-")));
        let mut cmd = Command::new(BIN);
        cmd.arg("-gc")
            .args(&c.group)
            .args(["-m", "group-member", "-i", "C", "-d"])
            .arg(&impostor_dir)
            .args(&args);
        let log_path = dir.path().join(format!("impostor-{}.log", label.replace(' ', "-")));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut impostor = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        // Writes go on through the majority (A, B); the impostor never learns them.
        for i in 0..20 {
            assert_eq!(w.request(&["SET", &format!("{label}-{i}"), "x"]).unwrap(), ok());
        }
        let start = Instant::now();
        let refused_by_a = |c: &Cluster| c.log(0).matches("cluster token").count();
        while refused_by_a(&c) <= refusals_before
            || !std::fs::read_to_string(&log_path).unwrap().contains("cluster token")
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no refusal logged ({label}); A: {}",
                c.log(0)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let applied = info_field(&c, 2, &open, "applied_index").and_then(|v| v.parse::<u64>().ok());
        assert_eq!(applied, Some(0), "the impostor ({label}) applied entries");
        let _ = impostor.kill();
        let _ = impostor.wait();
    }
    // The log names the refusal, never the token.
    let log_a = c.log(0);
    assert!(log_a.contains("refused a connection on the peer port"), "{log_a}");
    assert!(!log_a.contains(token_of_the_good.trim()));
    // The real C comes back and catches up.
    c.start_node(2);
    let start = Instant::now();
    loop {
        let mut r = connect(&c, 2, &open);
        if let Some(Frame::Bulk(v)) = r.as_mut().and_then(|r| r.request(&["GET", "no token-19"]).ok()) {
            assert_eq!(&v[..], b"x");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "C did not catch up: {}", c.log(2));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unprotected_node_on_a_non_loopback_address_warns_loudly() {
    let open = ClientSecurity::default();
    // Bound on every address (nothing but loopback is dialled), no password, no token.
    let c = Cluster::start_with(1, &["--listen", "0.0.0.0"]);
    wait_leader(&c, &open, Duration::from_secs(20));
    let log = c.log(0);
    assert!(log.contains("SECURITY WARNING: this node listens on 0.0.0.0"), "{log}");
    assert!(log.contains("SECURITY WARNING: the core (peer) port on 0.0.0.0 is not authenticated"), "{log}");
    // On loopback with the defaults there is no warning.
    let quiet = Cluster::start(1);
    wait_leader(&quiet, &open, Duration::from_secs(20));
    assert!(!quiet.log(0).contains("SECURITY WARNING"), "{}", quiet.log(0));
}

#[test]
fn peers_use_mutual_tls_and_a_peer_with_another_cas_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["node"]);
    let stranger = tempfile::tempdir().unwrap();
    certs(stranger.path(), &["node"]);
    let arg = |d: &Path, f: &str| d.join(f).display().to_string();
    let peer_args = |d: &Path| {
        vec![
            "--peer-tls-ca".to_string(),
            arg(d, "ca.pem"),
            "--peer-tls-cert".to_string(),
            arg(d, "node.pem"),
            "--peer-tls-key".to_string(),
            arg(d, "node-key.pem"),
        ]
    };
    let ours = peer_args(dir.path());
    let mut c = Cluster::start_with(3, &ours.iter().map(String::as_str).collect::<Vec<_>>());
    let open = ClientSecurity::default();
    wait_leader(&c, &open, Duration::from_secs(20));
    let mut w = connect(&c, 0, &open).unwrap();
    for i in 0..50 {
        assert_eq!(w.request(&["SET", &format!("k{i}"), "v"]).unwrap(), ok());
    }
    // Every node has every write (replicated over the TLS links).
    for k in 0..3 {
        let start = Instant::now();
        while info_field(&c, k, &open, "applied_index").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) < 50
        {
            assert!(start.elapsed() < Duration::from_secs(10), "node {k} did not apply: {}", c.log(k));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(c.log(0).contains("mutual TLS on"), "{}", c.log(0));

    // C replaced by an impostor with a certificate of another CA, then by one without TLS.
    for (label, args) in [("other CA", peer_args(stranger.path())), ("no TLS", Vec::new())] {
        c.kill(2);
        let refusals_before = c.log(0).matches("peer TLS handshake refused").count();
        let slug = label.replace(' ', "-");
        let mut cmd = Command::new(BIN);
        cmd.arg("-gc").args(&c.group).args(["-m", "group-member", "-i", "C", "-d"]);
        cmd.arg(dir.path().join(format!("impostor-{slug}"))).args(&args);
        let log = std::fs::File::create(dir.path().join(format!("impostor-{slug}.log"))).unwrap();
        let mut impostor = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        for i in 0..20 {
            assert_eq!(w.request(&["SET", &format!("{slug}-{i}"), "x"]).unwrap(), ok());
        }
        let start = Instant::now();
        while c.log(0).matches("peer TLS handshake refused").count() <= refusals_before {
            assert!(start.elapsed() < Duration::from_secs(15), "no refusal logged ({label}): {}", c.log(0));
            std::thread::sleep(Duration::from_millis(100));
        }
        let applied = info_field(&c, 2, &open, "applied_index").and_then(|v| v.parse::<u64>().ok());
        assert_eq!(applied, Some(0), "the impostor ({label}) applied entries");
        let _ = impostor.kill();
        let _ = impostor.wait();
    }
    // The real C comes back over TLS and catches up.
    c.start_node(2);
    let start = Instant::now();
    loop {
        let got = connect(&c, 2, &open).and_then(|mut r| r.request(&["GET", "no-TLS-19"]).ok());
        if got == Some(Frame::bulk("x")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "C did not catch up: {}", c.log(2));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process killed when dropped (also when a test panics).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `raft-kv member <args> --group-config <group>` with `extra`; returns (exit code, stdout+stderr).
fn member_cli(group: &[String], args: &[&str], extra: &[String]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("member").args(args).args(extra).arg("--group-config").args(group);
    let (code, out, err) = run_to_end(cmd, "", Duration::from_secs(60));
    (code, format!("{out}{err}"))
}

#[test]
fn a_standby_joins_a_cluster_with_a_token_peer_tls_and_a_password_and_an_impostor_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["node"]);
    let p = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(dir.path().join("token"), "the-token-of-the-secured-cluster\n").unwrap();
    std::fs::write(dir.path().join("other-token"), "the-token-of-somebody-else-entirely\n").unwrap();
    std::fs::write(dir.path().join("pass"), "joining-pass\n").unwrap();
    let secured = |token: &str| -> Vec<String> {
        [
            "--cluster-token-file",
            &p(token),
            "--peer-tls-ca",
            &p("ca.pem"),
            "--peer-tls-cert",
            &p("node.pem"),
            "--peer-tls-key",
            &p("node-key.pem"),
            "--requirepass-file",
            &p("pass"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let ours = secured("token");
    let mut c = Cluster::start_with(3, &ours.iter().map(String::as_str).collect::<Vec<_>>());
    let sec = as_user("default", "joining-pass");
    wait_leader(&c, &sec, Duration::from_secs(20));
    let mut w = connect(&c, 0, &sec).unwrap();
    for i in 0..30 {
        assert_eq!(w.request(&["SET", &format!("before-{i}"), "b"]).unwrap(), ok());
    }

    // Two standbys on ports of their own: D with the cluster's token, E with another one.
    let ports = common::free_ports(4);
    let entry = |name: &str, k: usize| format!("{name},127.0.0.1,{},{}", ports[k], ports[k + 1]);
    let (d_entry, e_entry) = (entry("D", 0), entry("E", 2));
    let standby = |name: &str, entry: &str, args: &[String]| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("-gc").arg(entry).args(["-m", "standby", "-i", name, "-d"]);
        cmd.arg(dir.path().join(name)).args(args);
        Killed(cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap())
    };
    let _d = standby("D", &d_entry, &ours);
    let _e = standby("E", &e_entry, &secured("other-token"));
    // A standby serves INFO once it listens on both ports (both are bound before it serves).
    for k in [0, 2] {
        let start = Instant::now();
        let info = || {
            let mut r = Connection::connect_with(
                &format!("127.0.0.1:{}", ports[k]),
                Duration::from_millis(300),
                &sec,
            )
            .ok()?;
            r.request(&["INFO"]).ok()
        };
        while !matches!(info(), Some(Frame::Bulk(_))) {
            assert!(start.elapsed() < Duration::from_secs(10), "standby on port {} did not start", ports[k]);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let pass_args =
        vec!["--pass-file".to_string(), p("pass"), "--timeout-ms".to_string(), "40000".to_string()];

    // Without the password the CLI is refused; with it, D is added, catches up and is promoted.
    let (code, out) = member_cli(&c.group, &["add", &d_entry, "--voter"], &[]);
    assert_ne!(code, 0, "member add without a password succeeded: {out}");
    let (code, out) = member_cli(&c.group, &["add", &d_entry, "--voter"], &pass_args);
    assert_eq!(code, 0, "{out}; logs in {}", dir.path().display());
    assert!(out.contains("promoted D to voter"), "{out}");
    let d_addr = format!("127.0.0.1:{}", ports[0]);
    let mut rd = Connection::connect_with(&d_addr, Duration::from_secs(2), &sec).unwrap();
    rd.set_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(rd.request(&["GET", "before-29"]).unwrap(), Frame::bulk("b"));
    let d_log = std::fs::read_to_string(dir.path().join("D.log")).unwrap();
    assert!(d_log.contains("mutual TLS on"), "{d_log}");
    let mut anon = Connection::connect(&d_addr, Duration::from_secs(2)).unwrap();
    assert!(err_starts(&anon.request(&["GET", "before-29"]).unwrap(), "NOAUTH"));

    // E has the wrong token: the leader may list it as a learner, but it is never adopted.
    let (code, out) = member_cli(&c.group, &["add", &e_entry], &pass_args);
    assert_eq!(code, 0, "{out}");
    for i in 0..20 {
        assert_eq!(w.request(&["SET", &format!("after-{i}"), "a"]).unwrap(), ok());
    }
    let start = Instant::now();
    while !c.log(0).contains("cluster token")
        && !c.log(1).contains("cluster token")
        && !c.log(2).contains("cluster token")
    {
        assert!(start.elapsed() < Duration::from_secs(15), "no node logged a refused token");
        std::thread::sleep(Duration::from_millis(100));
    }
    let e_addr = format!("127.0.0.1:{}", ports[2]);
    let e_info = Connection::connect_with(&e_addr, Duration::from_secs(2), &sec)
        .ok()
        .and_then(|mut r| r.request(&["INFO"]).ok());
    match e_info {
        Some(Frame::Bulk(b)) => {
            let text = String::from_utf8_lossy(&b).to_string();
            assert!(text.contains("standby"), "E left standby: {text}");
        }
        other => panic!("E does not answer INFO as a standby: {other:?}"),
    }
    let (code, out) = member_cli(&c.group, &["remove", "E"], &pass_args);
    assert_eq!(code, 0, "{out}");

    // D is a voter that counts: with one of the first three down, 3 of 4 voters remain and writes
    // need D's acknowledgement to commit.
    let leader = (0..3)
        .find(|&k| {
            connect(&c, k, &sec).and_then(|mut r| r.request(&["INFO", "raft"]).ok()).is_some_and(
                |f| matches!(f, Frame::Bulk(b) if String::from_utf8_lossy(&b).contains("role:leader")),
            )
        })
        .expect("a leader among A, B, C");
    let down = (leader + 1) % 3;
    c.kill(down);
    let mut w = connect(&c, leader, &sec).unwrap();
    for i in 0..20 {
        assert_eq!(w.request(&["SET", &format!("with-d-{i}"), "d"]).unwrap(), ok());
    }
    let start = Instant::now();
    loop {
        if rd.request(&["GET", "with-d-19"]).ok() == Some(Frame::bulk("d")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "D did not apply the last write");
        std::thread::sleep(Duration::from_millis(50));
    }
}
