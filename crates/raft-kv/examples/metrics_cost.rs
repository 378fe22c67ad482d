//! What the metrics cost on the request path, in nanoseconds per operation, measured in a loop:
//! a request's timer (start at arrival, finish with its response: one latency observation and one
//! outcome count), and one timed observation (two clock reads and a histogram observation: what an
//! fsync and a node-loop turn each add).
//!
//! `cargo run --release -p raft-kv --example metrics_cost`

use std::time::Instant;

use engine::kv::Reply;
use raft_kv::metrics::{CommandKind, Metrics, RequestTimer};

fn main() {
    let metrics = Metrics::new();
    let response: engine::Response = Ok(Reply::Ok);
    const N: u32 = 2_000_000;
    for round in 0..3 {
        let started = Instant::now();
        for _ in 0..N {
            RequestTimer::start(CommandKind::Set).finish(&metrics, &response);
        }
        let per_request = started.elapsed().as_nanos() as f64 / f64::from(N);
        let h = metrics.node.fsync_seconds.clone();
        let started = Instant::now();
        for _ in 0..N {
            let t = Instant::now();
            h.observe_duration(t.elapsed());
        }
        let per_observation = started.elapsed().as_nanos() as f64 / f64::from(N);
        println!("round {round}: request timer {per_request:.0} ns/request; timed observation {per_observation:.0} ns");
    }
}
