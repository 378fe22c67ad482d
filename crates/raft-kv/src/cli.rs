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
    /// List, add, promote or remove cluster members (`member add D,host,clientPort,corePort`).
    Member(crate::member_cli::MemberArgs),
    /// Hand leadership to another voter (`--to B`).
    TransferLeader(crate::member_cli::TransferArgs),
    /// Closed-loop load generator against raft-kv (Redis protocol) or etcd (v3 gRPC).
    Bench(crate::bench::BenchArgs),
    /// Make a cluster CA and node/client certificates for TLS (see SECURITY.md).
    Certs(crate::certs::CertsArgs),
    /// Read a password from stdin and print its hash for a users file (`#$argon2id$...`).
    Passwd,
}

/// How a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A member of the group given by `--group-config`.
    GroupMember,
    /// A one-node cluster made of `--id` alone.
    Standalone,
    /// An empty node that waits to be added to a running cluster (`raft-kv member add` on a
    /// member); it serves only INFO until then.
    Standby,
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
    /// Start as a standby (same as `-m standby`): an empty node that waits to be added to a running
    /// cluster (`raft-kv member add` on a member) and serves only INFO until then. `-gc` needs only
    /// this node's own entry.
    #[arg(long)]
    pub standby: bool,
    /// Address to bind the server (client) and core (peer) ports on, e.g. 0.0.0.0, :: (IPv6 and
    /// IPv4) or a host name. Default: this node's host in the group configuration. The ports
    /// always come from the group configuration, whose host is what peers and clients are told to
    /// dial (the advertised address): behind NAT or in a container the two differ.
    #[arg(long, value_name = "HOST")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics on this address (`host:port`, e.g. 0.0.0.0:9100 or [::]:9100) at
    /// /metrics, with /health (live) and /ready (knows a leader, has applied what it knows
    /// committed). Off by default: without it no metrics are collected at all.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Length of one Raft tick in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Leader heartbeat interval, in ticks.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_ticks: u32,
    /// Minimum election timeout, in ticks (each election draws from [T, 2T)).
    #[arg(long, default_value_t = 25)]
    pub election_ticks: u32,
    /// How the leader confirms linearizable reads: `read-index` (one heartbeat round per batch of
    /// reads; safe whatever the clocks do) or `lease` (served locally while a majority answered a
    /// heartbeat within the election timeout minus --lease-drift-ms; needs clocks that advance at
    /// about the same rate and a node thread that is not frozen without noticing, e.g. by a VM
    /// pause).
    #[arg(long, default_value = "read-index")]
    pub read_mode: raft::ReadMode,
    /// Lease reads: the clock drift and tick jitter allowed between nodes over one election
    /// timeout, in milliseconds; a lease lasts the minimum election timeout minus this.
    #[arg(long, default_value_t = 50)]
    pub lease_drift_ms: u64,
    /// How long a request may wait (e.g. for a leader) before it fails, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Threads serving the network (client connections, peer links). 0, the default: none of their
    /// own; one event loop runs the node (Raft, log, state machine), its client connections and its
    /// peer links, so a request is read, run and answered on one thread without a hand-off (only
    /// the fdatasync runs elsewhere). N > 0: N network threads, and the node on a thread of its
    /// own; for machines with many cores, where one thread cannot parse every client's requests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub io_threads: u16,
    /// UNSAFE: never fsync. Acknowledged writes can be lost on power failure or OS crash.
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// Where the log's fdatasync runs (equally safe either way). `true`, the default: on a thread
    /// of its own, so the node thread goes on receiving acknowledgements, committing and answering
    /// while the disk works, and a write commits once the fastest majority of replicas synced it
    /// (1.3-2x the writes/s where fsyncs take milliseconds and vary); a follower none of whose
    /// clients waits syncs on its node thread (two hand-offs fewer). `false`: inline, each
    /// batch's fsync blocking the node thread (fewer, larger batches; about equal on a fast disk,
    /// ~0.05 ms lower single-client latency there). See docs/BENCHMARKS.md.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub sync_thread: bool,
    /// Size at which the write-ahead log starts a new segment file (at least 4KiB). Compaction after
    /// a snapshot deletes whole segments, so a segment's entries leave the disk only once all of
    /// them are covered. Plain bytes or with a unit: 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "BYTES")]
    pub log_segment_bytes: u64,
    /// Zeros kept written ahead of the log's records, so that an fsync rarely has to record a new
    /// file size (one disk write instead of two). 0 disables it. Plain bytes or with a unit.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "BYTES")]
    pub log_preallocate_bytes: u64,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

/// Snapshot and log-compaction settings of `raft-kv server` (checked by
/// [`engine::SnapshotConfig::validate`] at start).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Snapshots (log compaction)")]
pub struct SnapshotArgs {
    /// Take a snapshot once this many log entries were applied since the last one (0: never by
    /// count). Snapshots are written in the background; the log before them is then dropped.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub snapshot_entries: u64,
    /// Take a snapshot once this many bytes of log entries were applied since the last one (0: never
    /// by size). Plain bytes or with a unit: 64MiB, 512K, 1GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "BYTES")]
    pub snapshot_log_bytes: u64,
    /// Log entries kept behind a snapshot, so that a follower a little behind catches up from the
    /// log rather than by receiving the whole snapshot.
    #[arg(long, default_value_t = 5_000, value_name = "N")]
    pub snapshot_keep_entries: u64,
    /// Bytes per chunk when a snapshot is sent to a follower (1 byte to 16 MiB). Plain bytes or with
    /// a unit: 1MiB, 64K.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "BYTES")]
    pub snapshot_chunk_bytes: u64,
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        let d = engine::SnapshotConfig::default();
        SnapshotArgs {
            snapshot_entries: d.entries,
            snapshot_log_bytes: d.log_bytes,
            snapshot_keep_entries: d.keep_entries,
            snapshot_chunk_bytes: d.chunk_size as u64,
        }
    }
}

impl SnapshotArgs {
    /// The engine's settings, with the transfer timeouts given in milliseconds converted to ticks
    /// of `tick_ms`; validated.
    pub fn to_config(&self, tick_ms: u64) -> Result<engine::SnapshotConfig, String> {
        let ticks = |ms: u64| ms.div_ceil(tick_ms.max(1)).max(1);
        let chunk_size = usize::try_from(self.snapshot_chunk_bytes)
            .map_err(|_| format!("--snapshot-chunk-bytes {} is too large", self.snapshot_chunk_bytes))?;
        let config = engine::SnapshotConfig {
            entries: self.snapshot_entries,
            log_bytes: self.snapshot_log_bytes,
            keep_entries: self.snapshot_keep_entries,
            chunk_size,
            retransmit_ticks: ticks(SNAPSHOT_RETRANSMIT_MS),
            abort_ticks: ticks(SNAPSHOT_ABORT_MS),
            ..engine::SnapshotConfig::default()
        };
        config.validate().map_err(|e| format!("invalid snapshot settings: {e}"))?;
        Ok(config)
    }
}

/// A snapshot transfer with no acknowledgement for this long resends from the last acknowledged
/// byte (like a forwarded write, which is retried after 1 s).
pub const SNAPSHOT_RETRANSMIT_MS: u64 = 1_000;
/// A snapshot transfer with no acknowledgement for this long is abandoned (the leader starts over
/// later); a follower drops a partial snapshot that stopped arriving for this long.
pub const SNAPSHOT_ABORT_MS: u64 = 10_000;

/// Parses a byte size: a plain number of bytes, or a number with a unit — `K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB` (powers of 1024; case-insensitive; `B` alone means bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 =
        number.parse().map_err(|_| format!("invalid size {text:?} (e.g. 1048576, 64KiB, 256MiB, 1GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        other => return Err(format!("invalid size unit {other:?} in {text:?} (use B, KiB, MiB, GiB)")),
    };
    value.checked_mul(1 << shift).ok_or_else(|| format!("size {text:?} is too large"))
}

/// `raft-kv client`.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    /// The member to talk to first (default: the first one).
    #[arg(long, short = 'i')]
    pub id: Option<String>,
    #[command(flatten)]
    pub security: crate::security::ClientSecurityArgs,
}

/// `raft-kv status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub group: GroupArgs,
    #[command(flatten)]
    pub security: crate::security::ClientSecurityArgs,
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
    /// Flags passed to every node's `raft-kv server` (after `--`), e.g.
    /// `raft-kv local -- --snapshot-entries 1000 --tick-ms 20`. See `raft-kv server --help`.
    #[arg(last = true, value_name = "SERVER_FLAGS")]
    pub server_args: Vec<String>,
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
    fn the_sync_thread_is_the_default_and_can_be_turned_off() {
        let sync_thread = |line: &str| match parse(argv(line)).unwrap().command {
            Command::Server(s) => s.sync_thread,
            _ => panic!("not a server"),
        };
        assert!(sync_thread("raft-kv server -g A,h,1,2 -i A -d d"));
        assert!(sync_thread("raft-kv server -g A,h,1,2 --sync-thread -i A -d d"), "the old flag form");
        assert!(sync_thread("raft-kv server -g A,h,1,2 -i A -d d --sync-thread true"));
        assert!(!sync_thread("raft-kv server -g A,h,1,2 -i A -d d --sync-thread false"));
        assert!(!sync_thread("raft-kv server -g A,h,1,2 --sync-thread=false -i A -d d"));
    }

    #[test]
    fn listen_and_local_passthrough_parse() {
        let cli = parse(argv("raft-kv server -g A,node-a,1,2 -i A -d d --listen 0.0.0.0")).unwrap();
        let Command::Server(s) = cli.command else { panic!("not a server") };
        assert_eq!(s.listen.as_deref(), Some("0.0.0.0"));
        let cli = parse(argv("raft-kv local --keep -- --snapshot-entries 1000 --tick-ms 20")).unwrap();
        let Command::Local(l) = cli.command else { panic!("not local") };
        assert!(l.keep);
        assert_eq!(l.server_args, argv("--snapshot-entries 1000 --tick-ms 20"));
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

    #[test]
    fn snapshot_flags_parse_on_both_command_lines_with_engine_defaults() {
        let cli = parse(argv("raft-kv server -g A,h,1,2 -i A -d d")).unwrap();
        let Command::Server(s) = cli.command else { panic!() };
        assert_eq!(s.snapshot, SnapshotArgs::default());
        let config = s.snapshot.to_config(s.tick_ms).unwrap();
        let d = engine::SnapshotConfig::default();
        assert_eq!(
            (config.entries, config.log_bytes, config.keep_entries, config.chunk_size),
            (d.entries, d.log_bytes, d.keep_entries, d.chunk_size)
        );
        // 10 ms ticks: resend after 1 s of silence, give up after 10 s.
        assert_eq!((config.retransmit_ticks, config.abort_ticks), (100, 1000));

        let line = "raft-kv -gc A,localhost,10001,20001 -m standalone -i A -d d --snapshot-entries 200 \
                    --snapshot-log-bytes 64MiB --snapshot-keep-entries 20 --snapshot-chunk-bytes 4096";
        let Command::Server(s) = parse(argv(line)).unwrap().command else { panic!("not a server") };
        assert_eq!(
            s.snapshot,
            SnapshotArgs {
                snapshot_entries: 200,
                snapshot_log_bytes: 64 << 20,
                snapshot_keep_entries: 20,
                snapshot_chunk_bytes: 4096
            }
        );
        let config = s.snapshot.to_config(25).unwrap();
        assert_eq!((config.chunk_size, config.retransmit_ticks, config.abort_ticks), (4096, 40, 400));

        let Command::Server(s) =
            parse(argv("raft-kv server -g A,h,1,2 -i A -d d --snapshot-chunk-bytes 0")).unwrap().command
        else {
            panic!()
        };
        let err = s.snapshot.to_config(10).unwrap_err();
        assert!(err.contains("snapshot chunk size"), "{err}");
        assert!(parse(argv("raft-kv server -g A,h,1,2 -i A -d d --snapshot-log-bytes 1XB")).is_err());
        assert!(parse(argv("raft-kv server -g A,h,1,2 -i A -d d --snapshot-entries -1")).is_err());
    }

    #[test]
    fn sizes_parse_as_bytes_or_with_binary_units() {
        assert_eq!(parse_size("268435456"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("12b"), Ok(12));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "MiB", "1.5MiB", "-1", "12XB", "99999999999999999999", "17179869184GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
