//! Real-process test harness: starts `raft-kv server` processes on loopback ports chosen free by the
//! test, talks to them over RESP, kills (-9) and restarts them.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft_kv::resp::client::Connection;
use raft_kv::resp::Frame;

pub const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// Ports the OS says are free right now, never one this process was given before: the tests of a
/// binary run at once, and the OS may hand a port released by one test's call to another test's
/// (two servers on one port: one fails to bind, and its test talks to the other's server).
pub fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut listeners: Vec<TcpListener> = Vec::new();
    while listeners.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            listeners.push(l); // Held until all are picked, so no two of this call are equal.
        }
    }
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub struct Cluster {
    pub names: Vec<String>,
    pub server_ports: Vec<u16>,
    pub group: Vec<String>,
    pub dir: tempfile::TempDir,
    pub procs: Vec<Option<Child>>,
    pub extra_args: Vec<String>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let ports = free_ports(2 * n);
        let names: Vec<String> = (0..n).map(|k| ((b'A' + k as u8) as char).to_string()).collect();
        let group = names
            .iter()
            .enumerate()
            .map(|(k, name)| format!("{name},127.0.0.1,{},{}", ports[k], ports[n + k]))
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

    pub fn data_dir(&self, k: usize) -> PathBuf {
        self.dir.path().join(&self.names[k])
    }

    pub fn node_command(&self, k: usize) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("-gc")
            .args(&self.group)
            .arg("-m")
            .arg("group-member")
            .arg("-i")
            .arg(&self.names[k])
            .arg("-d");
        cmd.arg(self.data_dir(k));
        cmd.args(&self.extra_args);
        cmd
    }

    pub fn start_node(&mut self, k: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", self.names[k])))
            .unwrap();
        let child = self
            .node_command(k)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs[k] = Some(child);
    }

    pub fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.procs[k].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn addr(&self, k: usize) -> String {
        format!("127.0.0.1:{}", self.server_ports[k])
    }

    pub fn connect(&self, k: usize) -> Option<Connection> {
        let c = Connection::connect(&self.addr(k), Duration::from_millis(500)).ok()?;
        c.set_timeout(Some(Duration::from_secs(10))).ok()?;
        Some(c)
    }

    pub fn info(&self, k: usize) -> Option<String> {
        let mut c = self.connect(k)?;
        match c.request(&["INFO", "raft"]).ok()? {
            Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).to_string()),
            _ => None,
        }
    }

    pub fn field(info: &str, key: &str) -> Option<String> {
        info.lines().find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
    }

    /// Waits until some live node is leader and all live nodes know it; returns its index.
    pub fn wait_leader(&self, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let live: Vec<usize> = (0..self.names.len()).filter(|&k| self.procs[k].is_some()).collect();
            let infos: Vec<(usize, Option<String>)> = live.iter().map(|&k| (k, self.info(k))).collect();
            let leaders: Vec<usize> = infos
                .iter()
                .filter(|(_, i)| {
                    i.as_deref().and_then(|i| Self::field(i, "role")).as_deref() == Some("leader")
                })
                .map(|(k, _)| *k)
                .collect();
            if leaders.len() == 1 {
                let name = &self.names[leaders[0]];
                let agreed = infos.iter().all(|(_, i)| {
                    i.as_deref().and_then(|i| Self::field(i, "leader")).as_deref() == Some(name.as_str())
                });
                if agreed {
                    return leaders[0];
                }
            }
            assert!(
                start.elapsed() < limit,
                "no leader within {limit:?}; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads the node's log file.
    pub fn log(&self, k: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.names[k]))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 0..self.procs.len() {
            self.kill(k);
        }
        if std::thread::panicking() {
            // A failing test names this directory: keep the nodes' logs and data for whoever reads it.
            self.dir.disable_cleanup(true);
            eprintln!("kept {} (nodes' logs and data)", self.dir.path().display());
        }
    }
}

/// Runs a command to completion with a timeout; returns (exit code, stdout, stderr).
pub fn run_to_end(mut cmd: Command, input: &str, limit: Duration) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("command did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

pub fn is_dir_empty(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}
