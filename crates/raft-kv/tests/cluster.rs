//! Real processes on loopback: the seed's scenario, crashes (kill -9) under load, and bad input.
//! Every port is chosen free by the test.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run_to_end, Cluster, BIN};
use raft_kv::resp::Frame;

/// Writers that SET unique keys through random nodes until stopped; returns the acknowledged ones.
fn load(
    cluster: &Cluster,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..writers)
        .map(|w| {
            let addrs: Vec<String> = (0..cluster.names.len()).map(|k| cluster.addr(k)).collect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut conn = None;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("w{w}-{i}");
                    if conn.is_none() {
                        let addr = &addrs[(i as usize + w) % addrs.len()];
                        conn =
                            raft_kv::resp::client::Connection::connect(addr, Duration::from_millis(300)).ok();
                        if let Some(c) = &conn {
                            let _ = c.set_timeout(Some(Duration::from_secs(10)));
                        }
                    }
                    let Some(c) = conn.as_mut() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    match c.request(&["SET", key.as_str(), key.as_str()]) {
                        Ok(Frame::Simple(s)) if &s[..] == b"OK" => acked.push(key),
                        Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) => conn = None,
                    }
                }
                acked
            })
        })
        .collect()
}

/// Asserts every key is present (with itself as value) when read through node `k`.
fn assert_all_present(cluster: &Cluster, k: usize, keys: &[String]) {
    let mut c = cluster.connect(k).expect("node answers");
    for chunk in keys.chunks(500) {
        let mut args = vec!["MGET"];
        args.extend(chunk.iter().map(String::as_str));
        let reply = c.request(&args).expect("MGET answered");
        let Frame::Array(values) = reply else { panic!("MGET via {}: {reply:?}", cluster.names[k]) };
        for (key, v) in chunk.iter().zip(values) {
            assert_eq!(
                v,
                Frame::Bulk(key.clone().into()),
                "acknowledged key {key} missing on node {}",
                cluster.names[k]
            );
        }
    }
}

#[test]
fn the_seeds_scenario_three_nodes_and_the_console() {
    let c = Cluster::start(3);
    c.wait_leader(Duration::from_secs(15));
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("-gc").args(&c.group).arg("-i").arg("B").arg("-c");
    let (code, out, err) = run_to_end(cmd, "set a hello-world\nget a\nexit\n", Duration::from_secs(30));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "OK\n\"hello-world\"\n", "stderr: {err}");
    // Every node serves the value (followers through the leader's read index).
    for k in 0..3 {
        let mut conn = c.connect(k).unwrap();
        assert_eq!(conn.request(&["GET", "a"]).unwrap(), Frame::Bulk("hello-world".into()));
    }
}

#[test]
fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(Duration::from_secs(15));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&c, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(700));
    c.kill(leader);
    let killed_at = Instant::now();
    let new_leader = c.wait_leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {:?}", killed_at.elapsed());
    std::thread::sleep(Duration::from_millis(700));
    c.start_node(leader);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<String> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(acked.len() > 50, "too few writes acknowledged: {}", acked.len());
    c.wait_leader(Duration::from_secs(10));
    for k in 0..3 {
        assert_all_present(&c, k, &acked);
    }
    // The restarted node caught up: its applied index reaches the leader's commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let infos: Vec<u64> = (0..3)
            .map(|k| c.info(k).and_then(|i| Cluster::field(&i, "applied_index")?.parse().ok()).unwrap_or(0))
            .collect();
        if infos.iter().all(|&a| a == infos[0]) && infos[0] > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not converge: {infos:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killing_every_node_under_load_loses_no_acknowledged_write() {
    kill_every_node_under_load(&[]);
}

/// The same with the fdatasync inline on the node thread (`--sync-thread false`; the default runs
/// it on a thread of its own and acknowledgements wait for its report).
#[test]
fn killing_every_node_with_inline_fsync_loses_no_acknowledged_write() {
    kill_every_node_under_load(&["--sync-thread", "false"]);
}

/// The same with the former thread layout (`--io-threads 1`: network threads, and the node loop on
/// a thread of its own; the default runs both on one event loop).
#[test]
fn killing_every_node_with_network_threads_loses_no_acknowledged_write() {
    kill_every_node_under_load(&["--io-threads", "1"]);
}

fn kill_every_node_under_load(extra: &[&str]) {
    let mut c = Cluster::start_with(3, extra);
    c.wait_leader(Duration::from_secs(15));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&c, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(1000));
    for k in 0..3 {
        c.kill(k);
    }
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<String> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(acked.len() > 50, "too few writes acknowledged: {}", acked.len());
    for k in 0..3 {
        c.start_node(k);
    }
    c.wait_leader(Duration::from_secs(15));
    for k in 0..3 {
        assert_all_present(&c, k, &acked);
    }
}

fn raw(c: &Cluster, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(c.addr(0)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn bad_input_gets_errors_and_harms_nothing_else() {
    let c = Cluster::start(3);
    c.wait_leader(Duration::from_secs(15));
    let mut good = c.connect(0).unwrap();
    assert_eq!(good.request(&["SET", "k", "v"]).unwrap(), Frame::ok());
    // Malformed RESP: error, then that connection is closed.
    let out = raw(&c, b"*2\r\n$3\r\nGET\r\n$x\r\n", Duration::from_secs(2));
    assert!(String::from_utf8_lossy(&out).starts_with("-ERR Protocol error"), "{out:?}");
    // A huge bulk length is refused without allocating it.
    let out = raw(&c, b"*2\r\n$3\r\nGET\r\n$99999999999\r\n", Duration::from_secs(2));
    assert!(String::from_utf8_lossy(&out).contains("Protocol error"), "{:?}", String::from_utf8_lossy(&out));
    // Unknown commands and wrong arity: the usual Redis errors, the connection stays usable.
    let mut conn = c.connect(1).unwrap();
    let r = conn.request(&["FLY", "me"]).unwrap();
    assert_eq!(r, Frame::error("ERR unknown command 'FLY', with args beginning with: 'me' "));
    let r = conn.request(&["GET"]).unwrap();
    assert_eq!(r, Frame::error("ERR wrong number of arguments for 'get' command"));
    // Binary values round-trip exactly.
    let value: Vec<u8> = (0..=255u8).chain([0, 13, 10, 0]).collect();
    assert_eq!(conn.request(&[&b"SET"[..], b"bin\r\n\0", &value]).unwrap(), Frame::ok());
    assert_eq!(conn.request(&[&b"GET"[..], b"bin\r\n\0"]).unwrap(), Frame::Bulk(value.into()));
    // A value over the limit is refused with an error.
    let big = vec![b'x'; 9 << 20];
    let r = conn.request(&[&b"SET"[..], b"big", &big]).unwrap();
    assert!(r.is_error(), "{r:?}");
    // A client that disconnects mid-request.
    let mut s = std::net::TcpStream::connect(c.addr(2)).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nz\r\n$10\r\nabc").unwrap();
    drop(s);
    // Pipelined requests are answered in order.
    let out = raw(&c, b"SET p 1\r\nINCR p\r\nGET p\r\nPING\r\nQUIT\r\n", Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&out), "+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n+OK\r\n");
    // Everything else still works.
    assert_eq!(good.request(&["GET", "k"]).unwrap(), Frame::Bulk("v".into()));
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let ports = common::free_ports(4);
    let g = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let group = g(&format!("A,127.0.0.1,{},{} B,127.0.0.1,{},{}", ports[0], ports[1], ports[2], ports[3]));
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args);
        run_to_end(cmd, "", Duration::from_secs(20))
    };
    let base = |id: &str, d: &std::path::Path| {
        let mut a = vec!["-gc".to_string()];
        a.extend(group.clone());
        a.extend([
            "-m".into(),
            "group-member".into(),
            "-i".into(),
            id.into(),
            "-d".into(),
            d.display().to_string(),
        ]);
        a
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-gc".into(), "A,127.0.0.1,1".into(), "-i".into(), "A".into(), "-d".into(), "x".into()],
            "expected id,host",
        ),
        (
            vec![
                "-gc".into(),
                "A,h,1,2".into(),
                "A,h,3,4".into(),
                "-i".into(),
                "A".into(),
                "-d".into(),
                "x".into(),
            ],
            "appears twice",
        ),
        (base("Z", dir.path()), "not in the group"),
        (
            [base("A", &dir.path().join("c")), vec!["--snapshot-chunk-bytes".into(), "0".into()]].concat(),
            "snapshot chunk size must be 1 byte to 16 MiB",
        ),
        (
            [base("A", &dir.path().join("c")), vec!["--snapshot-log-bytes".into(), "12XB".into()]].concat(),
            "invalid size unit",
        ),
        (
            [base("A", &dir.path().join("c")), vec!["--log-segment-bytes".into(), "100".into()]].concat(),
            "--log-segment-bytes must be at least 4KiB",
        ),
    ];
    for (args, want) in cases {
        let (code, _, err) = run(args.clone());
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A port already in use.
    let busy = std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    let (code, _, err) = run(base("A", &dir.path().join("a")));
    assert_ne!(code, 0);
    assert!(err.contains("already in use"), "{err}");
    drop(busy);
    // A data directory held by a running node, and one that belongs to another node.
    let shared = dir.path().join("shared");
    let mut first = std::process::Command::new(BIN)
        .args(base("A", &shared))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.join("raft-kv.meta").exists() {
        assert!(Instant::now() < deadline, "first node did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, err) = run(base("B", &shared));
    assert_ne!(code, 0);
    assert!(err.contains("lock") || err.contains("in use"), "{err}");
    let _ = first.kill();
    let _ = first.wait();
    let (code, _, err) = run(base("B", &shared));
    assert_ne!(code, 0);
    assert!(err.contains("belongs to node 'A'"), "{err}");
}

#[test]
fn graceful_shutdown_on_sigterm_exits_zero() {
    let mut c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(15));
    let mut conn = c.connect(0).unwrap();
    assert_eq!(conn.request(&["SET", "x", "1"]).unwrap(), Frame::ok());
    let child = c.procs[0].take().unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}; log:\n{}", out.status, c.log(0));
    // It restarts from its directory with the data.
    c.start_node(0);
    c.wait_leader(Duration::from_secs(15));
    let mut conn = c.connect(0).unwrap();
    assert_eq!(conn.request(&["GET", "x"]).unwrap(), Frame::Bulk("1".into()));
}

#[test]
fn status_shows_every_member_and_down_ones() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(Duration::from_secs(15));
    let victim = (leader + 1) % 3;
    c.kill(victim);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("status").arg("--group-config").args(&c.group);
    let (code, out, err) = run_to_end(cmd, "", Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(out.contains("leader"), "{out}");
    let name = c.names[victim].clone();
    assert!(lines.iter().any(|l| l.starts_with(name.as_str()) && l.contains("down")), "{out}");
    assert_eq!(lines.iter().filter(|l| l.contains("follower")).count(), 1, "{out}");
}

#[test]
fn a_pipeline_keeps_its_order_between_writes_and_reads_on_every_node() {
    let c = Cluster::start(3);
    c.wait_leader(Duration::from_secs(15));
    for k in 0..3 {
        let mut script = Vec::new();
        let mut want = String::new();
        for i in 0..100 {
            script.extend_from_slice(format!("SET order {i}\r\nGET order\r\nINCR n{k}\r\n").as_bytes());
            want.push_str(&format!("+OK\r\n${}\r\n{i}\r\n:{}\r\n", i.to_string().len(), i + 1));
        }
        let mut s = std::net::TcpStream::connect(c.addr(k)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&script).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < want.len() {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(String::from_utf8_lossy(&got), want, "pipeline through node {}", c.names[k]);
    }
}
