//! Measurements of one run: an HDR latency histogram per client (merged at the end), counters of
//! successes and errors, and the [`Report`] printed as text or one JSON object.
//!
//! Invariants: latencies are recorded in microseconds, clamped to `1..=MAX_LATENCY_US` so that no
//! value is ever refused by the histogram; only successful operations enter the histogram;
//! `ops_per_sec = ops / elapsed_s` over the measured phase (warm-up excluded).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency the histogram tracks exactly (one hour, in microseconds).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Error kinds kept apart in the report; further kinds are counted under `other`.
const MAX_ERROR_KINDS: usize = 16;

/// What one client measured.
#[derive(Clone, Debug)]
pub struct ClientStats {
    /// Latency of every successful operation, in microseconds.
    pub histogram: Histogram<u64>,
    /// Failed operations (error replies, timeouts, broken connections).
    pub errors: u64,
    /// Failed operations by kind (e.g. `TRYAGAIN`, `timeout`).
    pub error_kinds: BTreeMap<String, u64>,
}

impl Default for ClientStats {
    fn default() -> Self {
        ClientStats::new()
    }
}

impl ClientStats {
    /// Empty statistics.
    pub fn new() -> ClientStats {
        // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, 3 digits):
        // this cannot fail at run time.
        let histogram =
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid");
        ClientStats { histogram, errors: 0, error_kinds: BTreeMap::new() }
    }

    /// Records a successful operation that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US).clamp(1, MAX_LATENCY_US);
        self.histogram.saturating_record(us);
    }

    /// Records a failed operation of the given kind.
    pub fn record_error(&mut self, kind: &str) {
        self.errors += 1;
        self.add_error_kind(kind, 1);
    }

    /// Counts `n` errors of `kind` in the bounded map of kinds.
    fn add_error_kind(&mut self, kind: &str, n: u64) {
        let key = if self.error_kinds.len() < MAX_ERROR_KINDS || self.error_kinds.contains_key(kind) {
            kind
        } else {
            "other"
        };
        *self.error_kinds.entry(key.to_string()).or_insert(0) += n;
    }

    /// Adds another client's measurements to these.
    pub fn merge(&mut self, other: &ClientStats) {
        // Both histograms have the same bounds, so adding cannot fail; saturate if it ever did.
        if self.histogram.add(&other.histogram).is_err() {
            for v in other.histogram.iter_recorded() {
                self.histogram.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.errors += other.errors;
        for (kind, n) in &other.error_kinds {
            self.add_error_kind(kind, *n);
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest latency recorded.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Latency {
    /// The summary of a histogram (all zeros when it is empty).
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0.0 };
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The result of one run: what `--json` prints as one object.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `raft-kv` or `etcd`.
    pub target: String,
    /// `write`, `read`, `mixed` or `incr`.
    pub workload: String,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Connections the clients shared.
    pub connections: usize,
    /// Endpoints the connections were spread over.
    pub endpoints: Vec<String>,
    /// Size of the key space.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// `uniform` or `zipfian`.
    pub distribution: String,
    /// Probability of a read in a `mixed` workload.
    pub read_ratio: f64,
    /// Length of the measured phase, in seconds.
    pub elapsed_s: f64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency of successful operations, in microseconds.
    pub latency_us: Latency,
}

impl Report {
    /// Fills in the measured fields of `self` from the merged statistics of all clients.
    pub fn with_stats(mut self, stats: &ClientStats, elapsed: Duration) -> Report {
        self.elapsed_s = elapsed.as_secs_f64();
        self.ops = stats.histogram.len();
        self.errors = stats.errors;
        self.error_kinds = stats.error_kinds.clone();
        self.ops_per_sec = if self.elapsed_s > 0.0 { self.ops as f64 / self.elapsed_s } else { 0.0 };
        self.latency_us = Latency::of(&stats.histogram);
        self
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and maps with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "target {}, workload {}, {} clients over {} connections to {}",
            self.target,
            self.workload,
            self.clients,
            self.connections,
            self.endpoints.join(",")
        )?;
        writeln!(
            f,
            "keys {} ({}), value {} B{}",
            self.keys,
            self.distribution,
            self.value_size,
            if self.workload == "mixed" {
                format!(", read ratio {}", self.read_ratio)
            } else {
                String::new()
            }
        )?;
        writeln!(f, "elapsed     {:.2} s", self.elapsed_s)?;
        writeln!(f, "ops         {} ({:.1} ops/s)", self.ops, self.ops_per_sec)?;
        write!(f, "errors      {}", self.errors)?;
        for (kind, n) in &self.error_kinds {
            write!(f, "  [{kind}: {n}]")?;
        }
        writeln!(f)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.mean / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            target: "raft-kv".into(),
            workload: "write".into(),
            clients: 4,
            connections: 2,
            endpoints: vec!["127.0.0.1:1".into()],
            keys: 10,
            value_size: 8,
            distribution: "uniform".into(),
            read_ratio: 0.9,
            elapsed_s: 0.0,
            ops: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            ops_per_sec: 0.0,
            latency_us: Latency::of(&ClientStats::new().histogram),
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s = ClientStats::new();
        // 1..=1000 ms, one each: p50 ~500 ms, p99 ~990 ms, max 1000 ms (3 significant digits).
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms));
        }
        let l = Latency::of(&s.histogram);
        let near = |got: u64, want: u64| got.abs_diff(want) <= want / 500 + 1;
        assert!(near(l.p50, 500_000), "{l:?}");
        assert!(near(l.p90, 900_000), "{l:?}");
        assert!(near(l.p99, 990_000), "{l:?}");
        assert!(near(l.p999, 999_000), "{l:?}");
        assert!(near(l.max, 1_000_000), "{l:?}");
        assert!((l.mean - 500_500.0).abs() < 1_000.0, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    }

    #[test]
    fn extreme_latencies_are_clamped_not_refused() {
        let mut s = ClientStats::new();
        s.record(Duration::ZERO);
        s.record(Duration::from_secs(100_000));
        assert_eq!(s.histogram.len(), 2);
        assert!(Latency::of(&s.histogram).max >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
        assert_eq!(Latency::of(&ClientStats::new().histogram).p99, 0, "empty histogram reads as zeros");
    }

    #[test]
    fn merge_adds_counts_and_error_kinds() {
        let mut a = ClientStats::new();
        let mut b = ClientStats::new();
        a.record(Duration::from_micros(100));
        b.record(Duration::from_micros(300));
        b.record(Duration::from_micros(500));
        a.record_error("timeout");
        b.record_error("timeout");
        b.record_error("TRYAGAIN");
        a.merge(&b);
        assert_eq!(a.histogram.len(), 3);
        assert_eq!(a.errors, 3);
        assert_eq!(a.error_kinds.get("timeout"), Some(&2));
        assert_eq!(a.error_kinds.get("TRYAGAIN"), Some(&1));
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut s = ClientStats::new();
        for i in 0..100 {
            s.record_error(&format!("kind{i}"));
        }
        assert_eq!(s.errors, 100);
        assert_eq!(s.error_kinds.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(s.error_kinds.get("other"), Some(&(100 - MAX_ERROR_KINDS as u64)));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut s = ClientStats::new();
        for _ in 0..10 {
            s.record(Duration::from_millis(2));
        }
        s.record_error("timeout");
        let r = report().with_stats(&s, Duration::from_secs(2));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["target"], "raft-kv");
        assert_eq!(v["workload"], "write");
        assert_eq!(v["clients"], 4);
        assert_eq!(v["connections"], 2);
        assert_eq!(v["ops"], 10);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["error_kinds"]["timeout"], 1);
        assert_eq!(v["ops_per_sec"], 5.0);
        assert_eq!(v["elapsed_s"], 2.0);
        for p in ["p50", "p90", "p99", "p999", "max"] {
            let us = v["latency_us"][p].as_u64().unwrap();
            assert!((1998..=2002).contains(&us), "{p} = {us}");
        }
        assert!(v["latency_us"]["mean"].is_f64());
        assert!(r.to_json().lines().count() == 1, "one line");
        let text = r.to_string();
        assert!(text.contains("5.0 ops/s") && text.contains("p99.9 2.0"), "{text}");
    }
}
