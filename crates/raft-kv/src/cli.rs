//! Command-line interface: subcommands with long options (`raft-kv server ...`, `client`, `status`,
//! `local`), and the seed's original command line, accepted exactly:
//!
//! ```text
//! raft-kv -gc A,localhost,10001,20001 B,localhost,10002,20002 C,localhost,10003,20003 -m group-member -i A -d DIR
//! raft-kv -gc A,localhost,10001,20001 B,localhost,10002,20002 C,localhost,10003,20003 -i A -c
//! ```
//!
//! (`-gc` takes every following argument up to the next flag; `-m` is `group-member` or
//! `standalone`; `-c` runs the client console instead of a node.)

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// raft-kv: a replicated, linearizable key-value store with its own Raft, speaking the Redis protocol.
#[derive(Parser, Debug)]
#[command(name = "raft-kv", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node.
    Server(ServerArgs),
    /// Open the interactive client console (reads commands from stdin when it is not a terminal).
    Client(ClientArgs),
    /// Print the state of every member of the cluster.
    Status(StatusArgs),
    /// Build-and-try: start a local 3-node cluster (data in ./raft-kv-data) and open a console on it.
    Local(LocalArgs),
    /// Closed-loop load generator against raft-kv (Redis protocol) or etcd (v3 gRPC).
    Bench(crate::bench::BenchArgs),
}

/// How a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A member of the group given by `--group-config`.
    GroupMember,
    /// A one-node cluster made of `--id` alone.
    Standalone,
}

/// The group, as in the seed: `id,host,serverPort,corePort` per member.
#[derive(Args, Debug, Clone)]
pub struct GroupArgs {
    /// Members: `id,host,serverPort,corePort` each (e.g. `A,localhost,10001,20001 B,localhost,10002,20002`).
    #[arg(long = "group-config", short = 'g', num_args = 1.., required = true, value_name = "MEMBER")]
    pub group: Vec<String>,
}

/// `raft-kv server`.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// This node's id (a member of the group).
    #[arg(long, short = 'i')]
    pub id: String,
    /// This node's data directory (one per node; created if missing).
    #[arg(long = "data-dir", short = 'd')]
    pub data_dir: PathBuf,
    /// Cluster membership mode.
    #[arg(long, short = 'm', value_enum, default_value = "group-member")]
    pub mode: Mode,
    /// Length of one Raft tick in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Leader heartbeat interval, in ticks.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_ticks: u32,
    /// Minimum election timeout, in ticks (each election draws from [T, 2T)).
    #[arg(long, default_value_t = 25)]
    pub election_ticks: u32,
    /// How long a request may wait (e.g. for a leader) before it fails, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// UNSAFE: never fsync. Acknowledged writes can be lost on power failure or OS crash.
    #[arg(long)]
    pub unsafe_no_fsync: bool,
}

/// `raft-kv client`.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// The member to talk to first (default: the first one).
    #[arg(long, short = 'i')]
    pub id: Option<String>,
}

/// `raft-kv status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub group: GroupArgs,
}

/// `raft-kv local`.
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Where the nodes keep their data (one subdirectory per node) and logs.
    #[arg(long, default_value = "raft-kv-data")]
    pub dir: PathBuf,
    /// Server port of the first node; node k uses base+k and core port base+10000+k.
    #[arg(long, default_value_t = 10001)]
    pub base_port: u16,
    /// Leave the nodes running when the console exits.
    #[arg(long)]
    pub keep: bool,
}

/// Parses the process arguments, accepting the seed's command line too.
pub fn parse(args: Vec<String>) -> Result<Cli, clap::Error> {
    match rewrite_seed_args(&args) {
        Some(rewritten) => Cli::try_parse_from(rewritten),
        None => Cli::try_parse_from(args),
    }
}

/// Rewrites the seed's flags (`-gc`, `-m`, `-i`, `-d`, `-c`) into a subcommand line; None if the
/// line does not use them.
fn rewrite_seed_args(args: &[String]) -> Option<Vec<String>> {
    if !args.iter().skip(1).any(|a| a == "-gc") {
        return None;
    }
    let program = args.first().cloned().unwrap_or_else(|| "raft-kv".into());
    let mut group = Vec::new();
    let mut rest = Vec::new();
    let mut client = false;
    let mut seen_gc = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "-gc" => {
                seen_gc = true;
                i += 1;
                while i < args.len() && !args[i].starts_with('-') {
                    group.push(args[i].clone());
                    i += 1;
                }
                continue;
            }
            "-c" | "--client" => client = true,
            "-m" => rest.push("--mode".into()),
            "-i" => rest.push("--id".into()),
            "-d" => rest.push("--data-dir".into()),
            other => rest.push(other.to_string()),
        }
        i += 1;
    }
    if !seen_gc {
        return None;
    }
    let mut out = vec![program, if client { "client".into() } else { "server".into() }];
    if client {
        // The client ignores the node-only flags of the seed's line (-m, -d).
        let mut j = 0;
        while j < rest.len() {
            match rest[j].as_str() {
                "--mode" | "--data-dir" => j += 2,
                _ => {
                    out.push(rest[j].clone());
                    j += 1;
                }
            }
        }
    } else {
        out.extend(rest);
    }
    out.push("--group-config".into());
    out.extend(group);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_seed_node_line_runs_a_server() {
        let cli = parse(argv(
            "raft-kv -gc A,localhost,10001,20001 B,localhost,10002,20002 C,localhost,10003,20003 -m group-member -i A -d /tmp/a",
        ))
        .unwrap();
        let Command::Server(s) = cli.command else { panic!("not a server") };
        assert_eq!(s.id, "A");
        assert_eq!(s.mode, Mode::GroupMember);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/a"));
        assert_eq!(s.group.group.len(), 3);
    }

    #[test]
    fn the_seed_client_line_runs_the_console() {
        let cli = parse(argv(
            "raft-kv -gc A,localhost,10001,20001 B,localhost,10002,20002 -m group-member -i B -d /x -c",
        ))
        .unwrap();
        let Command::Client(c) = cli.command else { panic!("not a client") };
        assert_eq!(c.id.as_deref(), Some("B"));
        assert_eq!(c.group.group.len(), 2);
    }

    #[test]
    fn standalone_mode_and_subcommands_parse() {
        let cli = parse(argv("raft-kv -gc A,localhost,10001,20001 -m standalone -i A -d d")).unwrap();
        let Command::Server(s) = cli.command else { panic!() };
        assert_eq!(s.mode, Mode::Standalone);
        let cli = parse(argv("raft-kv status --group-config A,h,1,2 B,h,3,4")).unwrap();
        assert!(matches!(cli.command, Command::Status(_)));
        assert!(parse(argv("raft-kv -gc A,h,1,2 -m bogus -i A -d d")).is_err());
        assert!(parse(argv("raft-kv server -i A -d d")).is_err(), "group config is required");
    }
}
