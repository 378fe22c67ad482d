//! `raft-kv local`: starts a 3-node cluster on this machine (children of this process, running
//! `raft-kv server`), with data and logs under one directory, and opens the console on it. When the
//! console exits the nodes are stopped with SIGTERM (unless `--keep`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::cli::LocalArgs;
use crate::console;

/// Runs the local cluster and the console; returns the console's exit code.
pub fn run(args: LocalArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the raft-kv executable")?;
    let names = ["A", "B", "C"];
    let base = args.base_port;
    if u32::from(base) + 10_003 > 65_535 {
        return Err(anyhow!("--base-port {base} is too high: core ports are base+10000.."));
    }
    let group: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(k, n)| format!("{n},127.0.0.1,{},{}", base + k as u16, base + 10_000 + k as u16))
        .collect();
    // Flags for the nodes are checked here, so that a typo is one clear error and not three logs.
    let mut probe = vec!["raft-kv".to_string(), "server".into(), "--id".into(), "A".into()];
    probe.extend(["--data-dir".into(), args.dir.join("A").display().to_string()]);
    probe.extend(args.server_args.iter().cloned());
    probe.push("--group-config".into());
    probe.extend(group.iter().cloned());
    if let Err(e) = <crate::cli::Cli as clap::Parser>::try_parse_from(probe) {
        return Err(anyhow!(
            "bad server flags after `--` (local sets --id, --data-dir and --group-config itself):\n{e}"
        ));
    }
    crate::app::ensure_dir(&args.dir)?;
    let mut children: Vec<Child> = Vec::new();
    for name in names {
        let dir = args.dir.join(name);
        let log_path = args.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("server").arg("--id").arg(name).arg("--data-dir").arg(&dir);
        // Before --group-config, whose list of members runs to the end of the line.
        cmd.args(&args.server_args);
        cmd.arg("--group-config").args(&group);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("cannot start node {name}"))?;
        children.push(child);
    }
    eprintln!(
        "raft-kv: 3 nodes starting (data and logs in {}; clients on 127.0.0.1:{}-{})",
        args.dir.display(),
        base,
        base + 2
    );
    let members: Vec<console::Member> = names
        .iter()
        .enumerate()
        .map(|(k, n)| console::Member { id: n.to_string(), addr: format!("127.0.0.1:{}", base + k as u16) })
        .collect();
    let ready = wait_ready(&members, &mut children, Duration::from_secs(20));
    let code = match ready {
        Ok(()) => console::run(members, 0, &console::Options::default())
            .map(|s| s.exit_code())
            .map_err(|e| anyhow!("{e}")),
        Err(e) => Err(e),
    };
    if args.keep {
        eprintln!(
            "raft-kv: nodes left running (pids {:?})",
            children.iter().map(Child::id).collect::<Vec<_>>()
        );
    } else {
        stop(&mut children);
    }
    code
}

/// Waits until every node answers PING and one of them leads.
fn wait_ready(members: &[console::Member], children: &mut [Child], limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        for (child, m) in children.iter_mut().zip(members) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(anyhow!("node {} exited at start ({status}); see its log", m.id));
            }
        }
        let leaders = members
            .iter()
            .filter_map(|m| {
                let mut c =
                    crate::resp::client::Connection::connect(&m.addr, Duration::from_millis(200)).ok()?;
                let info = c.request(&["INFO", "raft"]).ok()?;
                let text = String::from_utf8_lossy(info.as_bytes()?).to_string();
                Some(text.contains("role:leader"))
            })
            .collect::<Vec<bool>>();
        if leaders.len() == members.len() && leaders.iter().any(|&l| l) {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(anyhow!("the cluster did not elect a leader within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the nodes: SIGTERM, then SIGKILL after 5 s.
fn stop(children: &mut [Child]) {
    for c in children.iter() {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(c.id() as i32).expect("child pid is positive"),
            rustix::process::Signal::TERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}
