//! `raft-kv member list|add|promote|remove` and `raft-kv transfer-leader`: the operator's side of
//! membership changes, over the same RESP commands any Redis client can send (`RAFT.MEMBER`,
//! `RAFT.TRANSFER`; see [`crate::admin`]).
//!
//! The command finds the leader from any reachable member of `--group-config`: it asks members in
//! turn and follows a `NOTLEADER ... ask B at host:port` answer to the leader. Answers that only
//! mean "not now" (no leader yet, the leader has not committed an entry of its term, a transfer in
//! progress) are retried until `--timeout-ms`; every other error is printed as the cluster gave
//! it and the command fails (exit status 1). `member add --voter` adds a learner, then promotes it
//! as soon as it has caught up (retrying the promotion while the leader says it is behind).
//!
//! Invariant: a change is sent at most once per leader answer, and a command whose outcome is
//! unknown (a timeout) says so instead of retrying, so a change is never applied twice.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};

use crate::cli::GroupArgs;
use crate::cluster::{parse_member_entry, Group};
use crate::resp::client::Connection;
use crate::resp::Frame;

/// `raft-kv member ...`.
#[derive(Args, Debug, Clone)]
pub struct MemberArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: MemberAction,
}

/// The member subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum MemberAction {
    /// One row per member: name, id, kind (voter / learner), addresses, match index and lag.
    List(Target),
    /// Add a node (started with `-m standby`) as a learner; with --voter, promote it once caught up.
    Add {
        /// The new member as a `-gc` entry: `name,host,clientPort,corePort`.
        entry: String,
        /// Promote it to voter as soon as it has caught up.
        #[arg(long)]
        voter: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// The learner's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a member (the leader too: it hands leadership over first).
    Remove {
        /// The member's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `raft-kv transfer-leader --to B ...`.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// The voter that should lead.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub target: Target,
}

/// Where to send the command.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[command(flatten)]
    pub group: GroupArgs,
    /// Give up after this long (a change may still complete after a timeout).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub security: crate::security::ClientSecurityArgs,
}

/// Runs `raft-kv member ...`.
pub fn run_member(args: MemberArgs) -> Result<i32> {
    match args.action {
        MemberAction::List(t) => {
            let mut leader = Leader::new(&t)?;
            let rows = leader.call(&["RAFT.MEMBER", "LIST"])?;
            let Frame::Array(rows) = rows else { bail!("unexpected answer {rows:?}") };
            let rows: Vec<String> = rows
                .into_iter()
                .filter_map(|f| match f {
                    Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    _ => None,
                })
                .collect();
            print!("{}", render_list(&rows));
            Ok(0)
        }
        MemberAction::Add { entry, voter, target } => {
            let member = parse_member_entry(&entry).map_err(|e| anyhow!(e))?;
            let mut leader = Leader::new(&target)?;
            let port = |p: u16| p.to_string();
            let (cp, kp) = (port(member.server_port), port(member.core_port));
            let id = leader.call(&["RAFT.MEMBER", "ADD", &member.name, &member.host, &cp, &kp])?;
            println!("added {} as a learner (node id {})", member.name, int(&id));
            if voter {
                let started = Instant::now();
                leader.call_until_caught_up(&["RAFT.MEMBER", "PROMOTE", &member.name])?;
                println!("promoted {} to voter (caught up in {:?})", member.name, started.elapsed());
            }
            Ok(0)
        }
        MemberAction::Promote { name, target } => {
            Leader::new(&target)?.call(&["RAFT.MEMBER", "PROMOTE", &name])?;
            println!("promoted {name} to voter");
            Ok(0)
        }
        MemberAction::Remove { name, target } => {
            Leader::new(&target)?.call(&["RAFT.MEMBER", "REMOVE", &name])?;
            println!("removed {name}");
            Ok(0)
        }
    }
}

/// Runs `raft-kv transfer-leader`.
pub fn run_transfer(args: TransferArgs) -> Result<i32> {
    let started = Instant::now();
    Leader::new(&args.target)?.call(&["RAFT.TRANSFER", &args.to])?;
    println!("{} leads now (transfer took {:?})", args.to, started.elapsed());
    Ok(0)
}

fn int(f: &Frame) -> String {
    match f {
        Frame::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// `RAFT.MEMBER LIST` lines (`key=value ...`) as a table.
pub fn render_list(rows: &[String]) -> String {
    let cols = ["name", "id", "kind", "client", "core", "match", "lag"];
    let mut table: Vec<Vec<String>> = vec![cols.iter().map(|c| c.to_uppercase()).collect()];
    for row in rows {
        let fields: std::collections::BTreeMap<&str, &str> =
            row.split(' ').filter_map(|w| w.split_once('=')).collect();
        table.push(cols.iter().map(|c| fields.get(c).copied().unwrap_or("-").to_string()).collect());
    }
    let widths: Vec<usize> =
        (0..cols.len()).map(|k| table.iter().map(|r| r[k].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &table {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A connection to whichever node leads.
struct Leader {
    addrs: Vec<String>,
    deadline: Instant,
    conn: Option<(String, Connection)>,
}

/// What an answer means for the caller.
enum Outcome {
    Done(Frame),
    /// Ask this address instead.
    Redirect(String),
    /// Not now: ask again shortly.
    Retry(String),
    Fail(String),
}

fn classify(reply: Frame) -> Outcome {
    let Frame::Error(e) = &reply else { return Outcome::Done(reply) };
    let e = String::from_utf8_lossy(e).into_owned();
    if let Some(rest) = e.strip_prefix("NOTLEADER") {
        if let Some((_, addr)) = rest.split_once(" at ") {
            let addr = addr.split(';').next().unwrap_or("").trim();
            if !addr.is_empty() {
                return Outcome::Redirect(addr.to_string());
            }
        }
        return Outcome::Retry(e);
    }
    let transient = ["retry shortly", "is in progress", "TRYAGAIN", "no leader"];
    if transient.iter().any(|t| e.contains(t)) {
        return Outcome::Retry(e);
    }
    Outcome::Fail(e)
}

impl Leader {
    fn new(t: &Target) -> Result<Leader> {
        t.security.install()?;
        let group = Group::parse(&t.group.group).map_err(|e| anyhow!(e))?;
        Ok(Leader {
            addrs: group.members.iter().map(|m| m.server_addr()).collect(),
            deadline: Instant::now() + Duration::from_millis(t.timeout_ms.max(1)),
            conn: None,
        })
    }

    /// Sends `args` to the leader and returns its answer (see the module docs).
    fn call(&mut self, args: &[&str]) -> Result<Frame> {
        self.call_retrying(args, |_| false)
    }

    /// Like `call`, also retrying while the leader says the learner is behind.
    fn call_until_caught_up(&mut self, args: &[&str]) -> Result<Frame> {
        self.call_retrying(args, |e| e.contains("not caught up"))
    }

    fn call_retrying(&mut self, args: &[&str], also_retry: impl Fn(&str) -> bool) -> Result<Frame> {
        let mut next = 0usize;
        let mut last = String::from("no member answered");
        loop {
            if Instant::now() >= self.deadline {
                bail!("gave up after the timeout: {last}");
            }
            let (addr, mut conn) = match self.conn.take() {
                Some(c) => c,
                None => {
                    let addr = self.addrs[next % self.addrs.len()].clone();
                    next += 1;
                    match Connection::connect(&addr, Duration::from_millis(1000)) {
                        Ok(c) => (addr, c),
                        Err(e) => {
                            last = format!("{addr}: {e}");
                            if next.is_multiple_of(self.addrs.len()) {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            continue;
                        }
                    }
                }
            };
            let left = self.deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let _ = conn.set_timeout(Some(left));
            let reply = match conn.request(args) {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            match classify(reply) {
                Outcome::Done(f) => {
                    self.conn = Some((addr, conn));
                    return Ok(f);
                }
                Outcome::Redirect(to) => {
                    last = format!("{addr} is not the leader");
                    match Connection::connect(&to, Duration::from_millis(1000)) {
                        Ok(c) => self.conn = Some((to, c)),
                        Err(e) => {
                            last = format!("leader {to}: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
                Outcome::Retry(e) => {
                    last = e;
                    self.conn = Some((addr, conn));
                    std::thread::sleep(Duration::from_millis(50));
                }
                Outcome::Fail(e) if also_retry(&e) => {
                    last = e;
                    self.conn = Some((addr, conn));
                    std::thread::sleep(Duration::from_millis(50));
                }
                Outcome::Fail(e) => bail!("{e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_into_done_redirect_retry_and_fail() {
        let e = |s: &str| Frame::error(s.to_string());
        assert!(matches!(classify(Frame::Integer(4)), Outcome::Done(_)));
        match classify(e("NOTLEADER only the leader does this: ask B at localhost:10002; nothing was done")) {
            Outcome::Redirect(a) => assert_eq!(a, "localhost:10002"),
            _ => panic!("not a redirect"),
        }
        assert!(matches!(
            classify(e("NOTLEADER only the leader does this and no leader is known now; retry shortly")),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(e("ERR the leader has not committed an entry of its term yet; retry shortly")),
            Outcome::Retry(_)
        ));
        assert!(matches!(classify(e("ERR a member named 'D' exists already")), Outcome::Fail(_)));
    }

    #[test]
    fn the_list_renders_as_a_table() {
        let out = render_list(&["name=A id=1 kind=voter client=h:1 core=h:2 match=9 lag=0".into()]);
        assert!(out.starts_with("NAME  ID  KIND"), "{out}");
        assert!(out.contains("A     1   voter  h:1"), "{out}");
    }
}
