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
//!   a fixed array and relaxed atomic adds ([`Log2Histogram`], counters): no lock, no label
//!   hashing, no allocation, no reference counting per request.
//! - Names carry the `raftkv_` prefix, base units (seconds, bytes) and `_total` for counters
//!   (added by the encoder).

pub mod collector;
pub mod fs;
pub mod histogram;
pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{RequestError, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use histogram::Log2Histogram;

/// The commands whose latency is measured separately (the ones that go through Raft). The
/// discriminants are the positions in [`CommandKind::ALL`] (the instruments' index).
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
}

/// What became of a request (the `outcome` label). The discriminants are the positions in
/// [`Outcome::ALL`].
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
    pub fsync_seconds: Log2Histogram,
    /// Inputs (client requests and peer messages) taken by one turn of the node loop.
    pub batch_inputs: Log2Histogram,
    /// Time one turn of the node loop spent in the driver (append, persist, apply, answer), seconds.
    pub process_seconds: Log2Histogram,
    /// Duration of writing a snapshot in the background, seconds.
    pub snapshot_seconds: Log2Histogram,
    /// Time to apply one run of committed entries to the state machine, seconds.
    pub apply_seconds: Log2Histogram,
}

/// The instruments of one node; see the module docs.
#[derive(Debug)]
pub struct Metrics {
    /// Request latency by command: from the request's parse to its answer being known.
    latency: Vec<Log2Histogram>,
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
type LatencyFamily = Family<[(&'static str, &'static str); 1], Log2Histogram, fn() -> Log2Histogram>;

/// Seconds, from 50 µs to about 26 s in factor-2 steps.
fn latency_histogram() -> Log2Histogram {
    Log2Histogram::seconds(Duration::from_micros(50), 20)
}

impl Metrics {
    /// Creates every instrument and registers it.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("raftkv");
        // Families, with every member created now and a handle kept for the request path.
        let latency_family: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let outcome_family: Family<[(&'static str, &'static str); 2], Counter> = Family::default();
        let latency: Vec<Log2Histogram> = CommandKind::ALL
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
            fsync_seconds: Log2Histogram::seconds(Duration::from_micros(25), 18),
            batch_inputs: Log2Histogram::counts(14),
            process_seconds: Log2Histogram::seconds(Duration::from_micros(10), 18),
            snapshot_seconds: Log2Histogram::seconds(Duration::from_millis(1), 18),
            apply_seconds: Log2Histogram::seconds(Duration::from_micros(1), 20),
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

/// Measures one request from its arrival; [`RequestTimer::finish`] records latency and outcome
/// in the connection's [`Metrics`] (the timer holds no reference: it is two words).
#[derive(Debug)]
pub struct RequestTimer {
    kind: CommandKind,
    started: Instant,
}

impl RequestTimer {
    /// Starts measuring a request of `kind`.
    pub fn start(kind: CommandKind) -> RequestTimer {
        RequestTimer { kind, started: Instant::now() }
    }

    /// Records the request's latency and outcome in `metrics`.
    pub fn finish(self, metrics: &Metrics, response: &Response) {
        let i = self.kind as usize;
        metrics.latency[i].observe_duration(self.started.elapsed());
        metrics.outcomes[i][Outcome::of(response) as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discriminants_index_the_instruments() {
        for (i, k) in CommandKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
    }

    #[test]
    fn a_request_is_counted_once_with_its_latency_and_outcome() {
        let m = Metrics::new();
        RequestTimer::start(CommandKind::Set).finish(&m, &Ok(engine::kv::Reply::Ok));
        RequestTimer::start(CommandKind::Set).finish(&m, &Err(RequestError::Timeout));
        RequestTimer::start(CommandKind::Get).finish(&m, &Err(RequestError::NoLeader));
        let text = m.encode();
        for line in [
            "raftkv_request_duration_seconds_count{command=\"set\"} 2",
            "raftkv_request_duration_seconds_count{command=\"get\"} 1",
            "raftkv_requests_total{command=\"set\",outcome=\"ok\"} 1",
            "raftkv_requests_total{command=\"set\",outcome=\"timed_out\"} 1",
            "raftkv_requests_total{command=\"get\",outcome=\"not_executed\"} 1",
            "raftkv_requests_total{command=\"del\",outcome=\"ok\"} 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
