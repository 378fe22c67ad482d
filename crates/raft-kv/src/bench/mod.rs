//! `raft-kv bench`: a closed-loop load generator for raft-kv (Redis protocol) and etcd (v3 gRPC),
//! so that one tool measures both on the same machine.
//!
//! How a run goes:
//! 1. `--connections M` connections are opened lazily, connection `j` to endpoint `j mod E`.
//!    `--clients N` clients share them, client `i` using connection `i mod M`: a raft-kv
//!    connection pipelines the requests of its clients on one TCP stream ([`redis::RedisConn`];
//!    replies come back in order), an etcd connection multiplexes them as HTTP/2 streams
//!    ([`etcd::EtcdConn`]).
//! 2. Warm-up (read and mixed workloads): every key is written once so that reads find a value.
//!    Not measured.
//! 3. Each client loops: draw an operation ([`workload::OpGenerator`]), send it, wait for the
//!    answer, record its latency ([`stats::ClientStats`]); a client has at most one request
//!    outstanding (closed loop), so the offered load is set by `N`, not by a rate.
//!    The run stops at `--duration` or after `--requests` operations in total.
//! 4. The per-client histograms are merged and printed ([`stats::Report`]), as text or one JSON
//!    object (`--json`).
//!
//! Errors (error replies such as `-TRYAGAIN`, timeouts, broken connections) are counted by kind,
//! never fatal; after an error a client pauses [`ERROR_PAUSE`] so that a node that refuses
//! connections is not hammered in a tight loop. Only successful operations are in the latency
//! histogram and in the throughput.
//!
//! Consistency: raft-kv `GET` is linearizable (ReadIndex); the etcd `Range` sent here is too
//! (`serializable = false`). Writes are acknowledged by both only once a majority has fsynced them.

pub mod etcd;
pub mod redis;
pub mod stats;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::resp::Frame;
use etcd::EtcdConn;
use redis::RedisConn;
use stats::{ClientStats, Latency, Report};
use workload::{Op, OpGenerator};

/// How long a client waits after a failed operation before its next one.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How many times the warm-up tries to write one key before the run is abandoned.
const WARMUP_ATTEMPTS: u32 = 100;
/// Pause between two warm-up attempts at one key (100 attempts cover a leader election).
const WARMUP_PAUSE: Duration = Duration::from_millis(100);

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// raft-kv over the Redis protocol (`SET`, `GET`, `INCR`).
    RaftKv,
    /// etcd over its v3 gRPC API (`Put`, linearizable `Range`).
    Etcd,
}

/// The operations a run issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Writes only.
    Write,
    /// Linearizable reads only (keys are preloaded first).
    Read,
    /// Reads with probability `--read-ratio`, writes otherwise (keys are preloaded first).
    Mixed,
    /// Increments of counter keys (raft-kv only: etcd has no increment).
    Incr,
}

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key `i` with probability proportional to `1/(i+1)^theta` (`--zipf-theta`).
    Zipfian,
}

/// `raft-kv bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The system under test.
    #[arg(long, value_enum, default_value = "raft-kv")]
    pub target: Target,
    /// Comma-separated `host:port` list: Redis ports for raft-kv, client (gRPC) ports for etcd.
    /// Default: 127.0.0.1:10001,10002,10003 (raft-kv, as `raft-kv local`), 127.0.0.1:2379 (etcd).
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,
    /// Concurrent closed-loop clients (each has one request outstanding at a time).
    #[arg(long, short = 'c', default_value_t = 16)]
    pub clients: usize,
    /// Connections the clients share (default: min(clients, 16)); spread over the endpoints.
    #[arg(long)]
    pub connections: Option<usize>,
    /// How long to measure (e.g. `10s`, `500ms`, `1m`); ignored with `--requests`.
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many operations in total instead of after `--duration`.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Which operations.
    #[arg(long, short = 'w', value_enum, default_value = "write")]
    pub workload: Workload,
    /// Probability of a read in the `mixed` workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// Exponent of the zipfian distribution (YCSB uses 0.99).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,
    /// A request not answered within this time counts as an error (`timeout`).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Skip preloading the keys before a read or mixed workload.
    #[arg(long)]
    pub no_warmup: bool,
    /// Seed of the clients' random number generators (client i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Do not draw the progress bar (it is drawn on stderr only when stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub security: crate::security::ClientSecurityArgs,
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("invalid duration {text:?} (e.g. 10s, 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("invalid duration unit {other:?} in {text:?} (use us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

/// Runs the benchmark; returns the process exit code (1 if no operation succeeded).
pub fn run(args: BenchArgs) -> Result<i32> {
    args.security.install()?;
    let plan = Plan::new(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(plan.execute())?;
    if plan.args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(if report.ops == 0 { 1 } else { 0 })
}

/// A validated run.
struct Plan {
    /// The arguments, with `endpoints` defaulted.
    args: BenchArgs,
    /// Connections to open.
    connections: usize,
    /// The operation generator shared by all clients.
    generator: Arc<OpGenerator>,
}

impl Plan {
    /// Validates the arguments.
    fn new(mut args: BenchArgs) -> Result<Plan> {
        if args.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if args.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        if args.target == Target::Etcd && args.workload == Workload::Incr {
            bail!("etcd has no increment: the incr workload is for raft-kv only");
        }
        if args.endpoints.is_empty() {
            args.endpoints = match args.target {
                Target::RaftKv => {
                    ["127.0.0.1:10001", "127.0.0.1:10002", "127.0.0.1:10003"].map(String::from).to_vec()
                }
                Target::Etcd => vec!["127.0.0.1:2379".to_string()],
            };
        }
        if let Some(bad) = args
            .endpoints
            .iter()
            .find(|e| !matches!(e.rsplit_once(':'), Some((h, p)) if !h.is_empty() && !p.is_empty()))
        {
            bail!("endpoint {bad:?} is not host:port");
        }
        let connections = args.connections.unwrap_or(args.clients.min(16)).clamp(1, args.clients);
        let generator = OpGenerator::new(
            args.workload,
            args.read_ratio,
            args.distribution,
            args.keys,
            args.zipf_theta,
            args.value_size,
        )?;
        Ok(Plan { args, connections, generator: Arc::new(generator) })
    }

    /// Opens the connections, warms up, runs the clients and builds the report.
    async fn execute(&self) -> Result<Report> {
        let a = &self.args;
        let connect_timeout = a.timeout.min(Duration::from_secs(5));
        let mut conns = Vec::with_capacity(self.connections);
        for j in 0..self.connections {
            let endpoint = &a.endpoints[j % a.endpoints.len()];
            conns.push(match a.target {
                Target::RaftKv => Conn::Redis(RedisConn::spawn(endpoint.clone(), connect_timeout)),
                Target::Etcd => Conn::Etcd(EtcdConn::new(endpoint, connect_timeout)?),
            });
        }
        if matches!(a.workload, Workload::Read | Workload::Mixed) && !a.no_warmup {
            let started = Instant::now();
            self.warm_up(&conns).await?;
            eprintln!("warm-up: wrote {} keys in {:.2} s", a.keys, started.elapsed().as_secs_f64());
        }

        let stop = Arc::new(match a.requests {
            Some(n) => Stop::Budget { total: n, issued: AtomicU64::new(0) },
            None => Stop::Deadline(Instant::now() + a.duration),
        });
        let done = Arc::new(AtomicU64::new(0));
        let progress = self.progress_bar();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(a.clients);
        for i in 0..a.clients {
            let client = Client {
                conn: conns[i % conns.len()].clone(),
                generator: Arc::clone(&self.generator),
                stop: Arc::clone(&stop),
                done: Arc::clone(&done),
                timeout: a.timeout,
                rng: SmallRng::seed_from_u64(a.seed.wrapping_add(i as u64)),
            };
            tasks.push(tokio::spawn(client.run()));
        }
        let ticker = tokio::spawn(tick_progress(progress.clone(), Arc::clone(&done), a.requests.is_some()));
        let mut total = ClientStats::new();
        for t in tasks {
            total.merge(&t.await.context("a client task failed")?);
        }
        let elapsed = started.elapsed();
        ticker.abort();
        progress.finish_and_clear();
        Ok(self.empty_report().with_stats(&total, elapsed))
    }

    /// Writes every key once, `max(clients, 32)` at a time, retrying each through elections.
    async fn warm_up(&self, conns: &[Conn]) -> Result<()> {
        let keys = self.generator.key_count();
        let workers = self.args.clients.max(32).min(keys.max(1));
        let mut tasks = Vec::with_capacity(workers);
        for w in 0..workers {
            let conn = conns[w % conns.len()].clone();
            let generator = Arc::clone(&self.generator);
            let timeout = self.args.timeout;
            tasks.push(tokio::spawn(async move {
                let mut index = w;
                while let Some(op) = generator.preload(index) {
                    let mut attempt = 0;
                    while let Err(kind) = conn.execute(&op, timeout).await {
                        attempt += 1;
                        if attempt >= WARMUP_ATTEMPTS {
                            return Err(anyhow::anyhow!("warm-up write of key {index} failed: {kind}"));
                        }
                        tokio::time::sleep(WARMUP_PAUSE).await;
                    }
                    index += workers;
                }
                Ok(())
            }));
        }
        for t in tasks {
            t.await.context("a warm-up task failed")??;
        }
        Ok(())
    }

    /// The progress bar: time-based for `--duration`, count-based for `--requests`.
    fn progress_bar(&self) -> ProgressBar {
        let a = &self.args;
        let (len, template) = match a.requests {
            Some(n) => (n, "{elapsed_precise} [{wide_bar}] {pos}/{len} requests  {msg}"),
            None => (a.duration.as_millis() as u64, "{elapsed_precise} [{wide_bar}] {msg}"),
        };
        let target = if a.no_progress { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    /// The report's description of the run (measurements filled in later).
    fn empty_report(&self) -> Report {
        let a = &self.args;
        let name = |v: &dyn ValueEnumName| v.name();
        Report {
            target: name(&a.target),
            workload: name(&a.workload),
            clients: a.clients,
            connections: self.connections,
            endpoints: a.endpoints.clone(),
            keys: a.keys,
            value_size: a.value_size,
            distribution: name(&a.distribution),
            read_ratio: a.read_ratio,
            elapsed_s: 0.0,
            ops: 0,
            errors: 0,
            error_kinds: Default::default(),
            ops_per_sec: 0.0,
            latency_us: Latency::of(&ClientStats::new().histogram),
        }
    }
}

/// The command-line name of a value-enum value.
trait ValueEnumName {
    fn name(&self) -> String;
}

impl<T: ValueEnum> ValueEnumName for T {
    fn name(&self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// Updates the progress bar four times a second until aborted.
async fn tick_progress(bar: ProgressBar, done: Arc<AtomicU64>, by_count: bool) {
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    loop {
        interval.tick().await;
        let n = done.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        bar.set_position(if by_count { n } else { started.elapsed().as_millis() as u64 });
        bar.set_message(format!("{n} requests, {:.0}/s", if secs > 0.0 { n as f64 / secs } else { 0.0 }));
    }
}

/// When the clients stop.
enum Stop {
    /// At this instant.
    Deadline(Instant),
    /// After this many operations have been issued in total.
    Budget {
        /// Operations to issue.
        total: u64,
        /// Operations issued so far.
        issued: AtomicU64,
    },
}

impl Stop {
    /// Whether a client may issue one more operation (consumes one from the budget).
    fn admit(&self) -> bool {
        match self {
            Stop::Deadline(at) => Instant::now() < *at,
            Stop::Budget { total, issued } => issued.fetch_add(1, Ordering::Relaxed) < *total,
        }
    }
}

/// One connection of either kind.
#[derive(Clone, Debug)]
enum Conn {
    /// A pipelined RESP connection.
    Redis(RedisConn),
    /// An HTTP/2 gRPC connection.
    Etcd(EtcdConn),
}

impl Conn {
    /// Executes one operation; on failure returns the error's kind for the counters.
    async fn execute(&self, op: &Op, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.execute_inner(op)).await {
            Ok(result) => result,
            Err(_) => Err("timeout".to_string()),
        }
    }

    async fn execute_inner(&self, op: &Op) -> Result<(), String> {
        match self {
            Conn::Redis(c) => {
                let reply = match op {
                    Op::Read(k) => c.request(&[&b"GET"[..], k]).await,
                    Op::Write(k, v) => c.request(&[&b"SET"[..], k, v]).await,
                    Op::Incr(k) => c.request(&[&b"INCR"[..], k]).await,
                };
                match reply {
                    Ok(Frame::Error(msg)) => Err(error_code(&msg)),
                    Ok(_) => Ok(()),
                    Err(e) => Err(match e {
                        redis::ConnError::Connect(_) => "connect".to_string(),
                        redis::ConnError::Lost => "connection lost".to_string(),
                        redis::ConnError::Closed => "closed".to_string(),
                    }),
                }
            }
            Conn::Etcd(c) => {
                let result = match op {
                    Op::Read(k) => c.get(k.clone()).await.map(drop),
                    Op::Write(k, v) => c.put(k.clone(), v.clone()).await.map(drop),
                    Op::Incr(_) => return Err("unsupported".to_string()),
                };
                result.map_err(|e| e.kind())
            }
        }
    }
}

/// The code of a Redis error reply: its first word (`TRYAGAIN`, `ERR`, `MOVED`...).
fn error_code(message: &[u8]) -> String {
    let word = message.split(|&b| b == b' ').next().unwrap_or_default();
    let word = if word.is_empty() { b"ERR".as_slice() } else { word };
    String::from_utf8_lossy(&word[..word.len().min(32)]).into_owned()
}

/// One closed-loop client.
struct Client {
    /// Its (shared) connection.
    conn: Conn,
    /// What to ask.
    generator: Arc<OpGenerator>,
    /// When to stop.
    stop: Arc<Stop>,
    /// Operations completed by all clients (for the progress bar).
    done: Arc<AtomicU64>,
    /// Per-request timeout.
    timeout: Duration,
    /// Its own random numbers.
    rng: SmallRng,
}

impl Client {
    /// Issues operations one at a time until told to stop; returns what it measured.
    async fn run(mut self) -> ClientStats {
        let mut stats = ClientStats::new();
        while self.stop.admit() {
            let op = self.generator.next(&mut self.rng);
            let start = Instant::now();
            match self.conn.execute(&op, self.timeout).await {
                Ok(()) => stats.record(start.elapsed()),
                Err(kind) => {
                    stats.record_error(&kind);
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        stats
    }
}

#[cfg(test)]
mod tests;
