//! Addresses and flags for real hosts: an IPv6 cluster, `--listen` binding another address than the
//! advertised one, and `raft-kv local` passing server flags through to its nodes. Real processes on
//! loopback (127.0.0.1 and ::1), ports picked free by the test.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_ports, run_to_end, Cluster, BIN};
use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;

/// Ports free on both 127.0.0.1 and ::1 right now.
fn free_ports_v4_v6(n: usize) -> Vec<u16> {
    loop {
        let ports = free_ports(n);
        let v6: Vec<_> = ports.iter().filter_map(|&p| TcpListener::bind(("::1", p)).ok()).collect();
        if v6.len() == n {
            return ports;
        }
    }
}

/// A 3-node cluster whose group uses `host` for every member, started with `extra` flags.
fn cluster_on(host: &str, extra: &[&str]) -> Cluster {
    let n = 3;
    let ports = free_ports_v4_v6(2 * n);
    let names: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
    let group = names
        .iter()
        .enumerate()
        .map(|(k, name)| format!("{name},{host},{},{}", ports[k], ports[n + k]))
        .collect();
    let mut c = Cluster {
        names,
        server_ports: ports[..n].to_vec(),
        group,
        dir: tempfile::tempdir().unwrap(),
        procs: (0..n).map(|_| None).collect(),
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
    };
    for k in 0..n {
        c.start_node(k);
    }
    c
}

/// Sends one command to `addr`, retrying TRYAGAIN and refused connections until `limit`.
fn request(addr: &str, args: &[&str], limit: Duration) -> Frame {
    let start = Instant::now();
    loop {
        let reply = Connection::connect(addr, Duration::from_millis(300)).ok().and_then(|mut c| {
            c.set_timeout(Some(Duration::from_secs(5))).ok()?;
            c.request(args).ok()
        });
        match reply {
            Some(Frame::Error(e)) if e.starts_with(b"TRYAGAIN") => {}
            Some(reply) => return reply,
            None => {}
        }
        assert!(start.elapsed() < limit, "{args:?} via {addr} not answered within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes through one node and reads the value back through every node at `addrs`.
fn write_and_read_everywhere(addrs: &[String]) {
    let limit = Duration::from_secs(20);
    assert_eq!(request(&addrs[0], &["SET", "k", "v6"], limit), Frame::Simple("OK".into()));
    for addr in addrs {
        assert_eq!(request(addr, &["GET", "k"], limit), Frame::Bulk("v6".into()), "via {addr}");
    }
}

#[test]
fn an_ipv6_cluster_works() {
    let c = cluster_on("[::1]", &[]);
    let addrs: Vec<String> = c.server_ports.iter().map(|p| format!("[::1]:{p}")).collect();
    write_and_read_everywhere(&addrs);
    // Nothing listens on the IPv4 loopback: the nodes bound the advertised IPv6 address.
    assert!(
        Connection::connect(&format!("127.0.0.1:{}", c.server_ports[0]), Duration::from_millis(300)).is_err()
    );
}

#[test]
fn an_unbracketed_ipv6_member_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--id", "A", "--data-dir"])
        .arg(dir.path())
        .args(["--group-config", "A,::1,10001,20001"]);
    let (code, _, err) = run_to_end(cmd, "", Duration::from_secs(10));
    assert_ne!(code, 0);
    assert!(err.contains("in brackets (A,[::1],10001,20001)"), "{err}");
}

#[test]
fn listen_binds_another_address_than_the_advertised_one() {
    // Advertised: 127.0.0.1 (peers dial it); bound: :: (every IPv6 and IPv4 address).
    let c = cluster_on("127.0.0.1", &["--listen", "::"]);
    let v4: Vec<String> = c.server_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    write_and_read_everywhere(&v4);
    // Reachable on ::1 too, which only the wildcard bind explains.
    let v6 = format!("[::1]:{}", c.server_ports[1]);
    assert_eq!(request(&v6, &["GET", "k"], Duration::from_secs(10)), Frame::Bulk("v6".into()));
}

#[test]
fn local_passes_server_flags_to_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    // `local` uses base..base+2 and base+10000..base+10002.
    let base = loop {
        let p = free_ports(1)[0];
        if p < 50_000
            && (0..3).all(|k| {
                TcpListener::bind(("127.0.0.1", p + k)).is_ok()
                    && TcpListener::bind(("127.0.0.1", p + 10_000 + k)).is_ok()
            })
        {
            break p;
        }
    };
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path()).args([
        "local",
        "--base-port",
        &base.to_string(),
        "--",
        "--snapshot-entries",
        "5",
    ]);
    let mut input: String = (0..12).map(|i| format!("set k{i} v\n")).collect();
    input.push_str("info raft\nexit\n");
    let (code, out, err) = run_to_end(cmd, &input, Duration::from_secs(60));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    // 12 writes applied on the console's node with a threshold of 5: a snapshot was started (the
    // default threshold is 100,000 entries).
    let field = |name: &str| -> u64 {
        out.split("\\r\\n")
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    assert!(field("snapshots_taken") + field("snapshot_in_progress") >= 1, "{out}");

    // A bad flag is one clear error before anything starts.
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path()).args(["local", "--base-port", &base.to_string(), "--", "--no-such-flag"]);
    let (code, _, err) = run_to_end(cmd, "", Duration::from_secs(10));
    assert_ne!(code, 0);
    assert!(err.contains("bad server flags") && err.contains("--no-such-flag"), "{err}");
}
