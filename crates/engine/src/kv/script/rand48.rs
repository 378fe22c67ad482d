//! Redis' `math.random` for scripts: the POSIX `rand48` linear congruential generator
//! (`x' = 0x5DEECE66D * x + 0xB mod 2^48`). Every run starts from the generator's initial state
//! (`0x1234ABCD330E`), so a script draws the same numbers on every replica, and the numbers Redis
//! 7 draws first after it starts (Redis 7 keeps the state between runs; a replicated store
//! cannot). `math.randomseed(n)` reseeds as `srand48(n)`.

/// The generator's 48-bit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rand48(u64);

const A: u64 = 0x5_DEEC_E66D;
const C: u64 = 0xB;
const MASK: u64 = (1 << 48) - 1;

/// Redis' `REDIS_LRAND48_MAX` (`INT32_MAX`).
const LRAND48_MAX: i64 = i32::MAX as i64;

impl Rand48 {
    /// The state before any seeding (`X2 X1 X0` = `0x1234 0xABCD 0x330E`).
    pub(crate) fn initial() -> Self {
        Rand48(0x1234_ABCD_330E)
    }

    /// `srand48(seed)`: the state is `seed << 16 | 0x330E` (the low 32 bits of the seed).
    pub(crate) fn seeded(seed: i32) -> Self {
        Rand48(((u64::from(seed as u32)) << 16 | 0x330E) & MASK)
    }

    /// `lrand48()`: the next number in `0..2^31`.
    pub(crate) fn next_i32(&mut self) -> i64 {
        self.0 = (A.wrapping_mul(self.0).wrapping_add(C)) & MASK;
        (self.0 >> 17) as i64
    }

    /// What Redis' `math.random()` draws before scaling: `(lrand48() % MAX) / MAX`, in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        (self.next_i32() % LRAND48_MAX) as f64 / LRAND48_MAX as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_posix_lrand48() {
        // glibc: srand48(0); lrand48() x3 = 366850414, 1610402016, 623008080... computed from the
        // definition (a = 0x5DEECE66D, c = 0xB, x0 = 0x330E).
        let mut r = Rand48::seeded(0);
        let mut x: u64 = 0x330E;
        for _ in 0..5 {
            x = (0x5DEECE66D_u64.wrapping_mul(x) + 0xB) & ((1 << 48) - 1);
            assert_eq!(r.next_i32(), (x >> 17) as i64);
        }
        // What redis-server 7.0.15 answers to its first `math.random(100)` calls after a start
        // (40, 85) and to `math.randomseed(7) return math.random(1000)` (267).
        let mut r = Rand48::initial();
        assert_eq!((r.next_unit() * 100.0).floor() + 1.0, 40.0);
        assert_eq!((r.next_unit() * 100.0).floor() + 1.0, 85.0);
        assert_eq!((Rand48::seeded(7).next_unit() * 1000.0).floor() + 1.0, 267.0);
        let mut a = Rand48::seeded(42);
        let mut b = Rand48::seeded(42);
        assert_eq!(a.next_unit(), b.next_unit());
        assert!((0.0..1.0).contains(&Rand48::seeded(7).next_unit()));
    }
}
