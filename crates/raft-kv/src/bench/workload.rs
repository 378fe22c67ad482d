//! What each client asks for: the key distribution (uniform or zipfian) and the operation mix.
//!
//! Invariants:
//! - every key index drawn is in `0..keys`, for both distributions and every `keys >= 1`;
//! - the zipfian distribution puts the most weight on index 0, then 1, and so on (the hot keys are
//!   the low indexes; YCSB's scrambling is not applied, which does not matter to a store that does
//!   not range-partition);
//! - a `mixed` workload issues a read with probability `read_ratio`, a write otherwise.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution as _, Zipf};
use thiserror::Error;

use super::{Distribution, Workload};

/// A workload specification that cannot be run.
#[derive(Debug, Error, PartialEq)]
pub enum WorkloadError {
    /// The key space is empty.
    #[error("--keys must be at least 1")]
    NoKeys,
    /// The zipfian exponent is not a finite positive number.
    #[error("--zipf-theta must be a finite number > 0 (got {0})")]
    BadTheta(f64),
    /// The read ratio is outside `[0, 1]`.
    #[error("--read-ratio must be between 0 and 1 (got {0})")]
    BadReadRatio(f64),
}

/// Draws key indexes in `0..keys`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        keys: u64,
    },
    /// Key `i` drawn with probability proportional to `1 / (i + 1)^theta`.
    Zipfian {
        /// Number of keys.
        keys: u64,
        /// The sampler over `1..=keys`.
        zipf: Zipf<f64>,
    },
}

impl KeyChooser {
    /// A chooser over `keys` keys with the given distribution (`theta` is used by zipfian only).
    pub fn new(distribution: Distribution, keys: u64, theta: f64) -> Result<KeyChooser, WorkloadError> {
        if keys == 0 {
            return Err(WorkloadError::NoKeys);
        }
        match distribution {
            Distribution::Uniform => Ok(KeyChooser::Uniform { keys }),
            Distribution::Zipfian => {
                if !(theta.is_finite() && theta > 0.0) {
                    return Err(WorkloadError::BadTheta(theta));
                }
                let zipf = Zipf::new(keys as f64, theta).map_err(|_| WorkloadError::BadTheta(theta))?;
                Ok(KeyChooser::Zipfian { keys, zipf })
            }
        }
    }

    /// Draws one key index in `0..keys`.
    pub fn next(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.random_range(0..*keys),
            KeyChooser::Zipfian { keys, zipf } => {
                // The sampler returns an integral float in [1, keys]; clamp guards rounding.
                let k = zipf.sample(rng) as u64;
                k.clamp(1, *keys) - 1
            }
        }
    }
}

/// One request a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a key (raft-kv `GET`, etcd linearizable `Range`).
    Read(Bytes),
    /// Write a key (raft-kv `SET`, etcd `Put`).
    Write(Bytes, Bytes),
    /// Increment a counter key (raft-kv `INCR`; not offered by etcd).
    Incr(Bytes),
}

/// Generates the operations of one workload: shared, read-only, used by every client with its own
/// random number generator.
#[derive(Clone, Debug)]
pub struct OpGenerator {
    /// Which operations.
    workload: Workload,
    /// Probability of a read in a `mixed` workload.
    read_ratio: f64,
    /// Which keys.
    chooser: KeyChooser,
    /// The key names, indexed by key index (built once so clients never format).
    keys: Vec<Bytes>,
    /// The value every write stores.
    value: Bytes,
}

impl OpGenerator {
    /// A generator for `workload` over `keys` keys of the form `key:<index>` (`counter:<index>`
    /// for `incr`, so that counters never meet the values of other workloads) and values of
    /// `value_size` bytes.
    pub fn new(
        workload: Workload,
        read_ratio: f64,
        distribution: Distribution,
        keys: u64,
        theta: f64,
        value_size: usize,
    ) -> Result<OpGenerator, WorkloadError> {
        if !(0.0..=1.0).contains(&read_ratio) {
            return Err(WorkloadError::BadReadRatio(read_ratio));
        }
        let chooser = KeyChooser::new(distribution, keys, theta)?;
        let prefix = if workload == Workload::Incr { "counter" } else { "key" };
        let keys = (0..keys).map(|i| Bytes::from(format!("{prefix}:{i}"))).collect();
        let value = Bytes::from(vec![b'x'; value_size]);
        Ok(OpGenerator { workload, read_ratio, chooser, keys, value })
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The write that preloads key `index` (the warm-up), or None past the key space.
    pub fn preload(&self, index: usize) -> Option<Op> {
        self.keys.get(index).map(|k| Op::Write(k.clone(), self.value.clone()))
    }

    /// The next operation of a client.
    pub fn next(&self, rng: &mut SmallRng) -> Op {
        let key = self.key(self.chooser.next(rng));
        match self.workload {
            Workload::Write => Op::Write(key, self.value.clone()),
            Workload::Read => Op::Read(key),
            Workload::Incr => Op::Incr(key),
            Workload::Mixed => {
                if rng.random_bool(self.read_ratio) {
                    Op::Read(key)
                } else {
                    Op::Write(key, self.value.clone())
                }
            }
        }
    }

    fn key(&self, index: u64) -> Bytes {
        // `index < keys.len()` by the chooser's invariant; fall back to key 0 defensively.
        let i = usize::try_from(index).unwrap_or(0);
        self.keys.get(i).or(self.keys.first()).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn uniform_stays_in_range_and_covers_it() {
        let c = KeyChooser::new(Distribution::Uniform, 10, 0.99).unwrap();
        let mut r = rng();
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let k = c.next(&mut r);
            assert!(k < 10);
            seen[k as usize] += 1;
        }
        // Each key expects 1000 hits; all must be within a wide band.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn zipfian_stays_in_range_for_tiny_and_large_key_spaces() {
        let mut r = rng();
        for keys in [1u64, 2, 3, 1000, 1_000_000] {
            let c = KeyChooser::new(Distribution::Zipfian, keys, 0.99).unwrap();
            for _ in 0..5_000 {
                assert!(c.next(&mut r) < keys);
            }
        }
    }

    #[test]
    fn zipfian_is_skewed_toward_low_indexes() {
        let c = KeyChooser::new(Distribution::Zipfian, 1000, 0.99).unwrap();
        let mut r = rng();
        let mut counts = vec![0u32; 1000];
        let n = 100_000;
        for _ in 0..n {
            counts[c.next(&mut r) as usize] += 1;
        }
        // With theta 0.99 over 1000 keys, key 0 gets ~13% of draws, the top 10 ~39%; uniform
        // would give 0.1% and 1%.
        let top1 = f64::from(counts[0]) / f64::from(n);
        let top10: u32 = counts[..10].iter().sum();
        let top10 = f64::from(top10) / f64::from(n);
        assert!((0.10..0.17).contains(&top1), "top1 share {top1}");
        assert!((0.32..0.46).contains(&top10), "top10 share {top10}");
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[900]);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(KeyChooser::new(Distribution::Uniform, 0, 1.0).unwrap_err(), WorkloadError::NoKeys);
        assert!(matches!(KeyChooser::new(Distribution::Zipfian, 10, 0.0), Err(WorkloadError::BadTheta(_))));
        assert!(matches!(
            KeyChooser::new(Distribution::Zipfian, 10, f64::NAN),
            Err(WorkloadError::BadTheta(_))
        ));
        assert!(matches!(
            OpGenerator::new(Workload::Mixed, 1.5, Distribution::Uniform, 10, 1.0, 8),
            Err(WorkloadError::BadReadRatio(_))
        ));
    }

    #[test]
    fn mixed_honours_the_read_ratio_and_ops_carry_the_value() {
        let g = OpGenerator::new(Workload::Mixed, 0.9, Distribution::Uniform, 100, 0.99, 16).unwrap();
        let mut r = rng();
        let mut reads = 0;
        for _ in 0..10_000 {
            match g.next(&mut r) {
                Op::Read(k) => {
                    assert!(k.starts_with(b"key:"));
                    reads += 1;
                }
                Op::Write(k, v) => {
                    assert!(k.starts_with(b"key:"));
                    assert_eq!(v.len(), 16);
                }
                Op::Incr(_) => panic!("no incr in mixed"),
            }
        }
        assert!((8_800..9_200).contains(&reads), "reads {reads}");
        let w = OpGenerator::new(Workload::Write, 0.9, Distribution::Uniform, 3, 0.99, 4).unwrap();
        assert!(matches!(w.next(&mut r), Op::Write(_, _)));
        let i = OpGenerator::new(Workload::Incr, 0.9, Distribution::Uniform, 3, 0.99, 4).unwrap();
        assert!(matches!(i.next(&mut r), Op::Incr(k) if k.starts_with(b"counter:")));
        assert_eq!(w.preload(2), Some(Op::Write(Bytes::from("key:2"), Bytes::from("xxxx"))));
        assert_eq!(w.preload(3), None);
    }
}
