//! A cluster of raft-kv containers on a private Docker network made for one test run, and the
//! faults done to it: silent partitions (iptables DROP in the receiving node's network namespace,
//! entered from the host with nsenter, so the sender sees silence, not an error), docker kill, stop,
//! start, restart, and network disconnect/connect (with a new address).
//!
//! Everything the run creates carries its run name (`rkvt-<pid>-<n>`): the image tag, the
//! network, the containers, the volumes. [`Run`]'s `Drop` removes all of them, also when the test
//! panics; a run left behind by a killed test process (its pid gone) is removed by the next one.
//! The base image `debian:bookworm-slim` is shared infrastructure and is kept.

use std::process::Command;
use std::time::{Duration, Instant};

/// The base image the Dockerfile builds on.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";
/// Label put on everything a run creates: its value is the run name.
const LABEL: &str = "raft-kv-test";

/// Runs `docker` (or another program) and returns its trimmed stdout, or stderr as the error.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `docker args...`, panicking with the error.
pub fn docker(args: &[&str]) -> String {
    sh("docker", args).unwrap_or_else(|e| panic!("{e}"))
}

/// One node of the run.
pub struct Node {
    /// Member id: A, B, C.
    pub id: String,
    /// Host name in the group configuration (and network alias): a, b, c.
    pub host: String,
    /// Container name.
    pub container: String,
    /// Volume name.
    pub volume: String,
    /// Current address on the run's network.
    pub ip: String,
}

/// A run: its image, network, containers and volumes, removed on drop.
pub struct Run {
    pub name: String,
    pub image: String,
    pub network: String,
    /// The network's /24 prefix, e.g. "10.213.7".
    pub prefix: String,
    pub nodes: Vec<Node>,
    /// Partition rules in place: (container, source ip), to delete at heal.
    rules: Vec<(String, String)>,
}

impl Run {
    /// Builds the image from `binary` (stripped into a context of its own) with the project's
    /// Dockerfile, creates the network and starts `ids.len()` nodes.
    pub fn start(binary: &str, dockerfile: &str, ids: &[&str]) -> Run {
        remove_abandoned_runs();
        assert!(
            sh("docker", &["image", "inspect", BASE_IMAGE]).is_ok(),
            "the base image {BASE_IMAGE} is missing: run deploy/make-base-image.sh (as .ci/run does)"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("rkvt-{}-{}", std::process::id(), nanos % 1000);
        let mut run = Run {
            image: format!("raft-kv-test:{name}"),
            network: name.clone(),
            name,
            prefix: String::new(),
            nodes: Vec::new(),
            rules: Vec::new(),
        };
        let ctx = tempfile::tempdir().expect("temp dir");
        let stripped = ctx.path().join("raft-kv");
        sh("strip", &["-o", stripped.to_str().expect("utf-8 path"), binary])
            .unwrap_or_else(|e| panic!("{e}"));
        let ctx_path = ctx.path().to_str().expect("utf-8 path");
        let label = format!("{LABEL}={}", run.name);
        docker(&["build", "-q", "--label", &label, "-f", dockerfile, "-t", &run.image, ctx_path]);
        run.prefix = create_network(&run.network, &label);
        let group: Vec<String> =
            ids.iter().map(|id| format!("{id},{},10001,20001", id.to_ascii_lowercase())).collect();
        for (k, id) in ids.iter().enumerate() {
            let host = id.to_ascii_lowercase();
            let node = Node {
                id: id.to_string(),
                container: format!("{}-{host}", run.name),
                volume: format!("{}-{host}", run.name),
                ip: format!("{}.{}", run.prefix, 11 + k),
                host,
            };
            docker(&["volume", "create", "--label", &label, &node.volume]);
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &node.container,
                "--hostname",
                &node.host,
                "--label",
                &label,
                "--network",
                &run.network,
                "--ip",
                &node.ip,
                "--network-alias",
                &node.host,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(["-v".into(), format!("{}:/data", node.volume), run.image.clone()]);
            args.extend(
                ["server", "--id", id, "--data-dir", "/data", "--listen", "0.0.0.0"].map(String::from),
            );
            args.push("--group-config".into());
            args.extend(group.iter().cloned());
            docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
            run.nodes.push(node);
        }
        run
    }

    /// The pid of node `k`'s container (its network namespace), if it runs.
    fn pid(&self, k: usize) -> Option<String> {
        let pid = sh("docker", &["inspect", "-f", "{{.State.Pid}}", &self.nodes[k].container]).ok()?;
        (pid != "0").then_some(pid)
    }

    /// Runs iptables in node `k`'s network namespace.
    fn iptables(&self, k: usize, args: &[&str]) -> Result<(), String> {
        let pid = self.pid(k).ok_or_else(|| format!("{} is not running", self.nodes[k].container))?;
        let mut all = vec!["-t", &pid, "-n", "iptables"];
        all.extend_from_slice(args);
        sh("nsenter", &all).map(|_| ())
    }

    /// Cuts node `k` off from every other node: each drops, where it arrives, every packet from the
    /// other side. Clients (on the host) still reach every node.
    pub fn isolate(&mut self, k: usize) {
        for j in (0..self.nodes.len()).filter(|&j| j != k) {
            for (at, from) in [(k, j), (j, k)] {
                let src = self.nodes[from].ip.clone();
                self.iptables(at, &["-I", "INPUT", "-s", &src, "-j", "DROP"])
                    .unwrap_or_else(|e| panic!("{e}"));
                self.rules.push((self.nodes[at].container.clone(), src));
            }
        }
    }

    /// Removes every partition rule.
    pub fn heal(&mut self) {
        for (container, src) in std::mem::take(&mut self.rules) {
            let Some(k) = self.nodes.iter().position(|n| n.container == container) else { continue };
            // A restarted container lost its rules already.
            let _ = self.iptables(k, &["-D", "INPUT", "-s", &src, "-j", "DROP"]);
        }
    }

    pub fn kill(&self, k: usize) {
        docker(&["kill", &self.nodes[k].container]);
    }

    /// `docker stop` with a grace period; returns the exit code and how long the stop took.
    pub fn stop(&self, k: usize) -> (i64, Duration) {
        let t = Instant::now();
        docker(&["stop", "-t", "10", &self.nodes[k].container]);
        let took = t.elapsed();
        let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &self.nodes[k].container]);
        (code.parse().unwrap_or(-1), took)
    }

    pub fn start_node(&self, k: usize) {
        docker(&["start", &self.nodes[k].container]);
    }

    pub fn restart(&self, k: usize) {
        docker(&["restart", "-t", "10", &self.nodes[k].container]);
    }

    /// Disconnects node `k` from the network (its interface disappears).
    pub fn disconnect(&self, k: usize) {
        docker(&["network", "disconnect", &self.network, &self.nodes[k].container]);
    }

    /// Connects node `k` again with a new address (`.2x`), which its peers must find by name.
    pub fn connect_new_address(&mut self, k: usize) {
        let ip = format!("{}.{}", self.prefix, 21 + k);
        let n = &self.nodes[k];
        docker(&["network", "connect", "--ip", &ip, "--alias", &n.host, &self.network, &n.container]);
        self.nodes[k].ip = ip;
    }

    /// Node `k`'s client address.
    pub fn addr(&self, k: usize) -> String {
        format!("{}:10001", self.nodes[k].ip)
    }

    /// Node `k`'s log (docker logs), for a failure report.
    pub fn logs(&self, k: usize) -> String {
        let out = Command::new("docker").args(["logs", "--timestamps", &self.nodes[k].container]).output();
        out.map(|o| String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout))
            .unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        remove_run(&self.name);
    }
}

/// Creates the run's network on a free 10.x.y.0/24 and returns its prefix.
fn create_network(name: &str, label: &str) -> String {
    let routes = sh("ip", &["-4", "route"]).unwrap_or_default();
    let mut seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66;
    for _ in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let prefix = format!("10.{}.{}", 200 + seed % 50, (seed >> 8) % 250);
        if routes.contains(&format!("{prefix}.")) {
            continue;
        }
        let subnet = format!("{prefix}.0/24");
        // Overlapping another Docker network fails: try another.
        if sh("docker", &["network", "create", "--label", label, "--subnet", &subnet, name]).is_ok() {
            return prefix;
        }
    }
    panic!("no free 10.x.y.0/24 for the test network");
}

/// Removes the containers, volumes, network and image of run `name`.
fn remove_run(name: &str) {
    let filter = format!("label={LABEL}={name}");
    let list = |what: &[&str]| -> Vec<String> {
        let mut args = what.to_vec();
        args.extend(["--filter", &filter]);
        sh("docker", &args).map(|s| s.lines().map(String::from).collect()).unwrap_or_default()
    };
    let containers = list(&["ps", "-aq"]);
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        let _ = sh("docker", &args);
    }
    for v in list(&["volume", "ls", "-q"]) {
        let _ = sh("docker", &["volume", "rm", "-f", &v]);
    }
    for n in list(&["network", "ls", "-q"]) {
        let _ = sh("docker", &["network", "rm", &n]);
    }
    for i in list(&["image", "ls", "-q"]) {
        let _ = sh("docker", &["image", "rm", "-f", &i]);
    }
}

/// Removes runs whose test process is gone (killed before its `Drop` ran).
fn remove_abandoned_runs() {
    let names =
        sh("docker", &["network", "ls", "--filter", &format!("label={LABEL}"), "--format", "{{.Name}}"])
            .unwrap_or_default();
    for name in names.lines() {
        let pid = name.strip_prefix("rkvt-").and_then(|r| r.split('-').next()).unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_run(name);
        }
    }
}
