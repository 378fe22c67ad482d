//! Prometheus metrics, served on `--metrics-listen` at `/metrics` (OpenMetrics text, encoded by
//! `prometheus-client`), with `/health` and `/ready` beside them ([`http`]).
//!
//! Two kinds of metrics:
//! - **Instruments updated where things happen** ([`Metrics`]): request latency per command and
//!   request outcomes (in the server's connection writer, when the answer is known), client
//!   connections (in the accept loop), and the node thread's timings ([`NodeMetrics`]).
//! - **Values read at scrape time** ([`collector`]): everything the node thread already publishes
//!   for `INFO` (role, term, leader, indexes, per-peer match index and lag, leader changes,
//!   snapshot counters) and the transport's counters (per-peer link state, reconnects, dropped
//!   messages by reason). Reading them costs nothing between scrapes.
//!
//! # Invariants
//! - Without `--metrics-listen` there is no [`Metrics`] at all (`None` everywhere): the request path
//!   then does no metrics work, which is what "metrics off" means in the overhead measurement.
//! - Every instrument on the request path is created once, up front: an observation is a lookup in
//!   a fixed array and one short lock inside `prometheus-client`'s histogram (no label hashing, no
//!   allocation).
//! - Names carry the `raftkv_` prefix, base units (seconds, bytes) and `_total` for counters
//!   (added by the encoder).

pub mod collector;
pub mod fs;
pub mod http;

use std::sync::Arc;
use std::time::Instant;

use engine::{RequestError, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The commands whose latency is measured separately (the ones that go through Raft).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Get,
    MGet,
    Exists,
    StrLen,
    DbSize,
    Set,
    Del,
    MSet,
    IncrBy,
    Append,
    Snapshot,
    /// Any other command submitted to the node thread.
    Other,
}

impl CommandKind {
    const ALL: [CommandKind; 12] = [
        CommandKind::Get,
        CommandKind::MGet,
        CommandKind::Exists,
        CommandKind::StrLen,
        CommandKind::DbSize,
        CommandKind::Set,
        CommandKind::Del,
        CommandKind::MSet,
        CommandKind::IncrBy,
        CommandKind::Append,
        CommandKind::Snapshot,
        CommandKind::Other,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Get => "get",
            CommandKind::MGet => "mget",
            CommandKind::Exists => "exists",
            CommandKind::StrLen => "strlen",
            CommandKind::DbSize => "dbsize",
            CommandKind::Set => "set",
            CommandKind::Del => "del",
            CommandKind::MSet => "mset",
            CommandKind::IncrBy => "incrby",
            CommandKind::Append => "append",
            CommandKind::Snapshot => "raft.snapshot",
            CommandKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&k| k == self).unwrap_or(Self::ALL.len() - 1)
    }
}

/// What became of a request (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Executed, with a normal reply.
    Ok,
    /// Executed, with an error reply (e.g. INCRBY of a non-integer).
    Error,
    /// Not executed: no leader (TRYAGAIN), or too many writes in flight (overloaded).
    NotExecuted,
    /// Timed out: a write may or may not have been applied.
    TimedOut,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Ok, Outcome::Error, Outcome::NotExecuted, Outcome::TimedOut];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::NotExecuted => "not_executed",
            Outcome::TimedOut => "timed_out",
        }
    }

    /// The outcome of an engine response.
    pub fn of(response: &Response) -> Outcome {
        match response {
            Ok(engine::kv::Reply::Error(_)) => Outcome::Error,
            Ok(_) => Outcome::Ok,
            Err(RequestError::NoLeader | RequestError::Overloaded | RequestError::NotLeader { .. }) => {
                Outcome::NotExecuted
            }
            Err(RequestError::Timeout) => Outcome::TimedOut,
        }
    }
}

/// The node thread's instruments (the host loop updates them; time is measured there, never in
/// the driver).
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// Duration of each log fsync (fdatasync), seconds.
    pub fsync_seconds: Histogram,
    /// Inputs (client requests and peer messages) taken by one turn of the node loop.
    pub batch_inputs: Histogram,
    /// Time one turn of the node loop spent in the driver (append, persist, apply, answer), seconds.
    pub process_seconds: Histogram,
    /// Duration of writing a snapshot in the background, seconds.
    pub snapshot_seconds: Histogram,
    /// Time to apply one run of committed entries to the state machine, seconds.
    pub apply_seconds: Histogram,
}

/// The instruments of one node; see the module docs.
#[derive(Debug)]
pub struct Metrics {
    /// Request latency by command: from the request's parse to its answer being known.
    latency: Vec<Histogram>,
    /// Requests by command and outcome: `[command][outcome]`.
    outcomes: Vec<Vec<Counter>>,
    /// Client connections open now.
    pub client_connections: Gauge,
    /// Client connections accepted.
    pub client_connections_accepted: Counter,
    /// Client connections refused (over `--max-connections`).
    pub client_connections_refused: Counter,
    /// The node thread's instruments.
    pub node: NodeMetrics,
    /// Everything above, plus the scrape-time collector once registered.
    registry: std::sync::Mutex<Registry>,
}

/// Request latency histograms by command.
type LatencyFamily = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

/// Seconds, from 50 µs to about 26 s in factor-2 steps.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(50e-6, 2.0, 20)
}

impl Metrics {
    /// Creates every instrument and registers it.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("raftkv");
        // Families, with every member created now and a handle kept for the request path.
        let latency_family: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(latency_buckets()));
        let outcome_family: Family<[(&'static str, &'static str); 2], Counter> = Family::default();
        let latency: Vec<Histogram> = CommandKind::ALL
            .iter()
            .map(|k| latency_family.get_or_create(&[("command", k.name())]).clone())
            .collect();
        let outcomes: Vec<Vec<Counter>> = CommandKind::ALL
            .iter()
            .map(|k| {
                Outcome::ALL
                    .iter()
                    .map(|o| {
                        outcome_family.get_or_create(&[("command", k.name()), ("outcome", o.name())]).clone()
                    })
                    .collect()
            })
            .collect();
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by command",
            latency_family,
        );
        registry.register(
            "requests",
            "Requests by command and outcome (ok, error reply, not_executed: no leader, timed_out)",
            outcome_family,
        );
        let client_connections = Gauge::default();
        let client_connections_accepted = Counter::default();
        let client_connections_refused = Counter::default();
        registry.register("client_connections", "Client connections open", client_connections.clone());
        registry.register(
            "client_connections_accepted",
            "Client connections accepted",
            client_connections_accepted.clone(),
        );
        registry.register(
            "client_connections_refused",
            "Client connections refused over --max-connections",
            client_connections_refused.clone(),
        );
        let node = NodeMetrics {
            fsync_seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 18)),
            batch_inputs: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            process_seconds: Histogram::new(exponential_buckets(10e-6, 2.0, 18)),
            snapshot_seconds: Histogram::new(exponential_buckets(1e-3, 2.0, 18)),
            apply_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 20)),
        };
        registry.register("fsync_duration_seconds", "Duration of each log fsync", node.fsync_seconds.clone());
        registry.register(
            "node_batch_inputs",
            "Inputs (client requests, peer messages) handled by one turn of the node loop",
            node.batch_inputs.clone(),
        );
        registry.register(
            "node_process_duration_seconds",
            "Time one turn of the node loop spent appending, persisting, applying and answering",
            node.process_seconds.clone(),
        );
        registry.register(
            "apply_duration_seconds",
            "Time to apply one run of committed entries (those one Ready hands over) to the state machine",
            node.apply_seconds.clone(),
        );
        registry.register(
            "snapshot_duration_seconds",
            "Time to write a snapshot in the background",
            node.snapshot_seconds.clone(),
        );
        Arc::new(Metrics {
            latency,
            outcomes,
            client_connections,
            client_connections_accepted,
            client_connections_refused,
            node,
            registry: std::sync::Mutex::new(registry),
        })
    }

    /// Adds the scrape-time collector.
    pub fn register_collector(&self, collector: collector::StatusCollector) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register_collector(Box::new(collector));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(32 * 1024);
        // Writing to a String cannot fail; a collector's error would leave a partial text.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// Measures one request from its arrival; [`RequestTimer::finish`] records latency and outcome.
#[derive(Debug)]
pub struct RequestTimer {
    metrics: Arc<Metrics>,
    kind: CommandKind,
    started: Instant,
}

impl RequestTimer {
    /// Starts measuring a request of `kind`.
    pub fn start(metrics: &Arc<Metrics>, kind: CommandKind) -> RequestTimer {
        RequestTimer { metrics: metrics.clone(), kind, started: Instant::now() }
    }

    /// Records the request's latency and outcome.
    pub fn finish(self, response: &Response) {
        let i = self.kind.index();
        self.metrics.latency[i].observe(self.started.elapsed().as_secs_f64());
        let outcome = Outcome::of(response);
        let j = Outcome::ALL.iter().position(|&o| o == outcome).unwrap_or(0);
        self.metrics.outcomes[i][j].inc();
    }
}
