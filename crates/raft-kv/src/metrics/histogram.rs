//! A histogram cheap enough for the request path: fixed power-of-two buckets over integer
//! observations (nanoseconds, or a plain count), one relaxed atomic add for the bucket and one for
//! the sum, no lock, no float, no search. `prometheus-client` encodes it (through its
//! [`EncodeMetric`] trait) exactly like its own histogram.
//!
//! `prometheus-client`'s `Histogram` takes a mutex and walks its bucket bounds comparing floats on
//! every observation; on a request path that several runtime threads share, that was the largest
//! part of what "metrics on" cost (see bench/metrics-instructions.sh and docs/OPERATIONS.md).
//!
//! # Invariants
//! - Bucket `i` (0 <= i < BUCKETS) holds the observations `v` with `base * 2^(i-1) < v <=
//!   base * 2^i` (bucket 0: `v <= base`); the last bucket is `+Inf`. The index is computed from
//!   the bit length of `(v - 1) / base`, so an observation costs the same whatever its value.
//! - The exported `_count` is the sum of the buckets read at scrape time, so it always equals the
//!   `+Inf` bucket; `_sum` is read separately and may include an observation whose bucket was not
//!   read yet (scrapes are not atomic snapshots, as in every Prometheus client).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Finite buckets (the `+Inf` bucket comes after them).
const FINITE: usize = 20;

/// A histogram of integer observations in power-of-two buckets; clones share the counts.
#[derive(Clone, Debug)]
pub struct Log2Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bound of the first bucket, in observation units (> 0).
    base: u64,
    /// Finite buckets in use (<= FINITE).
    finite: usize,
    /// One exported unit (e.g. a second) in observation units (e.g. 1e9 for nanoseconds).
    per_unit: f64,
    /// `counts[i]` for the finite buckets, then `+Inf` at `counts[finite]`.
    counts: [AtomicU64; FINITE + 1],
    /// Sum of all observations, in observation units.
    sum: AtomicU64,
}

impl Log2Histogram {
    /// A histogram of durations, exported in seconds: `buckets` finite buckets from `first`
    /// (the first upper bound) doubling each time.
    pub fn seconds(first: Duration, buckets: usize) -> Log2Histogram {
        let base = u64::try_from(first.as_nanos()).unwrap_or(u64::MAX).max(1);
        Log2Histogram::new(base, buckets, 1e9)
    }

    /// A histogram of counts (e.g. a batch size): buckets 1, 2, 4, ... up to `2^(buckets-1)`.
    pub fn counts(buckets: usize) -> Log2Histogram {
        Log2Histogram::new(1, buckets, 1.0)
    }

    fn new(base: u64, buckets: usize, per_unit: f64) -> Log2Histogram {
        Log2Histogram {
            inner: Arc::new(Inner {
                base,
                finite: buckets.clamp(1, FINITE),
                per_unit,
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                sum: AtomicU64::new(0),
            }),
        }
    }

    /// Records a duration (for histograms made by [`Log2Histogram::seconds`]).
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one observation, in observation units.
    #[inline]
    pub fn observe(&self, v: u64) {
        let inner = &*self.inner;
        let i = Self::bucket(inner.base, inner.finite, v);
        inner.counts[i].fetch_add(1, Ordering::Relaxed);
        inner.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// The bucket of `v`: the first `i` with `v <= base * 2^i`, or `finite` (`+Inf`).
    #[inline]
    fn bucket(base: u64, finite: usize, v: u64) -> usize {
        let q = v.saturating_sub(1) / base;
        let i = (u64::BITS - q.leading_zeros()) as usize;
        i.min(finite)
    }

    /// The upper bound of finite bucket `i`, in exported units.
    fn upper_bound(&self, i: usize) -> f64 {
        (self.inner.base as f64) * 2f64.powi(i as i32) / self.inner.per_unit
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.counts[..=self.inner.finite].iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations so far, in exported units.
    pub fn sum(&self) -> f64 {
        self.inner.sum.load(Ordering::Relaxed) as f64 / self.inner.per_unit
    }
}

impl TypedMetric for Log2Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Log2Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let finite = self.inner.finite;
        let mut buckets: Vec<(f64, u64)> = (0..finite)
            .map(|i| (self.upper_bound(i), self.inner.counts[i].load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::INFINITY, self.inner.counts[finite].load(Ordering::Relaxed)));
        let count = buckets.iter().map(|&(_, c)| c).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        // base 50: bounds 50, 100, 200, 400, then +Inf (3 finite buckets here: 50, 100, 200).
        let cases = [(0, 0), (1, 0), (50, 0), (51, 1), (100, 1), (101, 2), (200, 2), (201, 3), (u64::MAX, 3)];
        for (v, want) in cases {
            assert_eq!(Log2Histogram::bucket(50, 3, v), want, "value {v}");
        }
        // Counts: 1, 2, 4, 8 ...
        for (v, want) in [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (1 << 40, 14)] {
            assert_eq!(Log2Histogram::bucket(1, 14, v), want, "value {v}");
        }
    }

    #[test]
    fn encodes_as_a_prometheus_histogram() {
        let h = Log2Histogram::seconds(Duration::from_micros(50), 3);
        for us in [10, 50, 75, 150, 150, 1000] {
            h.observe_duration(Duration::from_micros(us));
        }
        let mut registry = Registry::default();
        registry.register("request_duration_seconds", "help", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE request_duration_seconds histogram",
            "request_duration_seconds_count 6",
            "request_duration_seconds_bucket{le=\"0.00005\"} 2",
            "request_duration_seconds_bucket{le=\"0.0001\"} 3",
            "request_duration_seconds_bucket{le=\"0.0002\"} 5",
            "request_duration_seconds_bucket{le=\"+Inf\"} 6",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let sum = text.lines().find(|l| l.starts_with("request_duration_seconds_sum ")).unwrap();
        let sum: f64 = sum.split(' ').nth(1).unwrap().parse().unwrap();
        assert!((sum - 0.001435).abs() < 1e-12, "{sum}");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = Log2Histogram::counts(14);
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = h.clone();
                s.spawn(move || {
                    for v in 0..10_000u64 {
                        h.observe(v % 100 + t);
                    }
                });
            }
        });
        assert_eq!(h.count(), 40_000);
        let want: u64 = (0..4u64).map(|t| (0..10_000u64).map(|v| v % 100 + t).sum::<u64>()).sum();
        assert_eq!(h.sum(), want as f64);
    }
}
