//! Redis' `long double` arithmetic for `INCRBYFLOAT` and `HINCRBYFLOAT`, in software.
//!
//! Redis parses both operands with `strtold`, adds them as C `long double`s and prints the sum
//! with `"%.17Lf"`, trailing zeros (and a trailing `.`) removed, `-0` printed `0`. On x86-64 a
//! `long double` is the x87 80-bit format (64-bit significand), which is why `INCRBYFLOAT k 0.1`
//! on `0.2` answers `0.3` where a `double` would give `0.30000000000000004`.
//!
//! # Why in software
//!
//! Every replica must compute the same bytes (determinism, module [`super`]): a C `long double`
//! is 80-bit on x86-64 but 128-bit on aarch64 Linux and 64-bit on others, so calling the C
//! library would let a mixed cluster diverge. This module computes exactly what glibc does on
//! x86-64 with exact integer arithmetic (`num-bigint`):
//!
//! * parsing rounds the decimal value to the nearest 64-bit-significand number, ties to even
//!   (as glibc's `strtold`); the exponent range is the x87 one, subnormals included;
//! * addition rounds the exact sum the same way;
//! * printing is the exact decimal expansion rounded to 17 places, ties to even (glibc).
//!
//! Accepted input is what Redis' `string2ld` accepts, except hexadecimal floats (`0x1p3`),
//! which are refused as "not a valid float": an optional sign, decimal digits with an optional
//! point and exponent, or `inf`/`infinity` (any case); no spaces, no `nan`, at most 5119 bytes,
//! and nothing that overflows or underflows to zero.

use num_bigint::BigUint;

/// Bits of the significand of an x87 extended-precision number.
const MANT_BITS: u64 = 64;
/// Exponent of the least significant bit of the smallest subnormal: 2^-16445.
const MIN_LSB_EXP: i64 = -16445;
/// Numbers at or above 2^16384 overflow to infinity.
const MAX_EXP: i64 = 16384;
/// Redis' `MAX_LONG_DOUBLE_CHARS`: longer input is refused.
const MAX_CHARS: usize = 5 * 1024;

/// A finite extended-precision number: `(-1)^neg * mant * 2^exp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LongDouble {
    neg: bool,
    mant: u64,
    exp: i64,
}

/// What a parse found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A finite number.
    Finite(LongDouble),
    /// `inf` / `infinity`, either sign.
    Infinite,
}

impl LongDouble {
    fn zero() -> Self {
        LongDouble { neg: false, mant: 0, exp: 0 }
    }

    /// Rounds `num / den * 2^exp2` (positive) to the nearest representable number, ties to even;
    /// `None` if it overflows.
    fn round(neg: bool, num: &BigUint, den: &BigUint, exp2: i64) -> Option<LongDouble> {
        if num.bits() == 0 {
            return Some(LongDouble { neg, mant: 0, exp: 0 });
        }
        // Scale so the quotient has at least MANT_BITS + 2 bits.
        let shift = (MANT_BITS as i64 + 2) - (num.bits() as i64 - den.bits() as i64);
        let (q, r) = if shift >= 0 {
            let n = num << (shift as usize);
            (&n / den, &n % den)
        } else {
            let d = den << ((-shift) as usize);
            (num / &d, num % &d)
        };
        let sticky = r.bits() != 0;
        let base = exp2 - shift; // value = (q + r/den') * 2^base
        let bits = q.bits() as i64;
        let mut drop = bits - MANT_BITS as i64;
        if base + drop < MIN_LSB_EXP {
            drop = MIN_LSB_EXP - base;
        }
        let (mut mant, mut lsb) = if drop <= 0 {
            // Only reachable with a tiny quotient; exact apart from `sticky`, which cannot be
            // set (the quotient had at least MANT_BITS + 2 bits).
            (q, base)
        } else {
            let drop_u = drop as u64;
            let kept = &q >> drop_u;
            let rem = &q - (&kept << drop_u);
            let half = BigUint::from(1u8) << (drop_u - 1);
            let up = rem > half || (rem == half && (sticky || kept.bit(0)));
            (if up { kept + 1u8 } else { kept }, base + drop)
        };
        if mant.bits() > MANT_BITS {
            mant >>= 1u8;
            lsb += 1;
        }
        if mant.bits() != 0 && lsb + mant.bits() as i64 > MAX_EXP {
            return None;
        }
        let digits = mant.to_u64_digits();
        let m = digits.first().copied().unwrap_or(0);
        Some(LongDouble { neg, mant: m, exp: if m == 0 { 0 } else { lsb } })
    }

    /// True for zero (either sign).
    fn is_zero(&self) -> bool {
        self.mant == 0
    }

    /// The exact sum, rounded; `None` if it overflows.
    pub(crate) fn add(&self, other: &LongDouble) -> Option<LongDouble> {
        if self.is_zero() {
            return Some(if other.is_zero() {
                LongDouble { neg: self.neg && other.neg, ..LongDouble::zero() }
            } else {
                other.clone()
            });
        }
        if other.is_zero() {
            return Some(self.clone());
        }
        let e = self.exp.min(other.exp);
        let a = BigUint::from(self.mant) << ((self.exp - e) as u64);
        let b = BigUint::from(other.mant) << ((other.exp - e) as u64);
        let one = BigUint::from(1u8);
        if self.neg == other.neg {
            return LongDouble::round(self.neg, &(a + b), &one, e);
        }
        // Opposite signs: the larger magnitude decides the sign; an exact zero is +0.
        match a.cmp(&b) {
            std::cmp::Ordering::Equal => Some(LongDouble::zero()),
            std::cmp::Ordering::Greater => LongDouble::round(self.neg, &(a - b), &one, e),
            std::cmp::Ordering::Less => LongDouble::round(other.neg, &(b - a), &one, e),
        }
    }

    /// `"%.17Lf"` with trailing zeros and point removed and `-0` printed `0` (Redis'
    /// `ld2string(..., LD_STR_HUMAN)`).
    pub(crate) fn to_human(&self) -> String {
        // value * 10^17 = mant * 2^exp * 10^17, rounded to an integer, ties to even.
        let scale = BigUint::from(10u8).pow(17);
        let num = BigUint::from(self.mant) * &scale;
        let scaled = if self.exp >= 0 {
            num << (self.exp as u64)
        } else {
            let sh = (-self.exp) as u64;
            let q = &num >> sh;
            let rem = &num - (&q << sh);
            let half = BigUint::from(1u8) << (sh - 1);
            if rem > half || (rem == half && q.bit(0)) {
                q + 1u8
            } else {
                q
            }
        };
        let digits = scaled.to_str_radix(10);
        let digits = format!("{digits:0>18}");
        let (int, frac) = digits.split_at(digits.len() - 17);
        let frac = frac.trim_end_matches('0');
        let mut out = String::with_capacity(digits.len() + 2);
        if self.neg {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        if out == "-0" {
            out = "0".to_owned();
        }
        out
    }
}

/// Parses like Redis' `string2ld` (see the module docs); `None` is "not a valid float".
pub(crate) fn parse(s: &[u8]) -> Option<Parsed> {
    if s.is_empty() || s.len() >= MAX_CHARS {
        return None;
    }
    let (neg, body) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Some(Parsed::Infinite);
    }
    let mut digits: Vec<u8> = Vec::new();
    let mut exp10: i64 = 0;
    let mut i = 0;
    let mut seen_digit = false;
    while i < body.len() && body[i].is_ascii_digit() {
        digits.push(body[i] - b'0');
        seen_digit = true;
        i += 1;
    }
    if i < body.len() && body[i] == b'.' {
        i += 1;
        while i < body.len() && body[i].is_ascii_digit() {
            digits.push(body[i] - b'0');
            exp10 -= 1;
            seen_digit = true;
            i += 1;
        }
    }
    if !seen_digit {
        return None;
    }
    if i < body.len() && (body[i] == b'e' || body[i] == b'E') {
        let mut j = i + 1;
        let eneg = match body.get(j) {
            Some(b'-') => {
                j += 1;
                true
            }
            Some(b'+') => {
                j += 1;
                false
            }
            _ => false,
        };
        let start = j;
        let mut e: i64 = 0;
        while j < body.len() && body[j].is_ascii_digit() {
            e = e.saturating_mul(10).saturating_add(i64::from(body[j] - b'0'));
            j += 1;
        }
        if j == start {
            return None; // "1e" leaves the "e" unparsed: trailing garbage
        }
        exp10 = exp10.saturating_add(if eneg { -e } else { e });
        i = j;
    }
    if i != body.len() {
        return None;
    }
    // Strip leading zeros; an all-zero mantissa is zero whatever the exponent.
    let first = digits.iter().position(|&d| d != 0);
    let Some(first) = first else {
        return Some(Parsed::Finite(LongDouble { neg, mant: 0, exp: 0 }));
    };
    let digits = &digits[first..];
    let magnitude = exp10.saturating_add(digits.len() as i64); // value < 10^magnitude
    if magnitude > 4934 {
        return None; // overflows (ERANGE, HUGE_VAL)
    }
    if magnitude < -4952 {
        return None; // underflows to zero (ERANGE)
    }
    let mut d = BigUint::from(0u8);
    for chunk in digits.chunks(18) {
        let mut v: u64 = 0;
        for &x in chunk {
            v = v * 10 + u64::from(x);
        }
        d = d * BigUint::from(10u64.pow(chunk.len() as u32)) + v;
    }
    let one = BigUint::from(1u8);
    let ten = BigUint::from(10u8);
    let r = if exp10 >= 0 {
        LongDouble::round(neg, &(d * ten.pow(exp10 as u32)), &one, 0)
    } else {
        LongDouble::round(neg, &d, &ten.pow((-exp10) as u32), 0)
    };
    match r {
        Some(v) if v.is_zero() => None, // a nonzero number that underflows to zero
        Some(v) => Some(Parsed::Finite(v)),
        None => None,
    }
}

/// `a + b` formatted as Redis does, or the error: `None` if the sum is NaN or infinite.
pub(crate) fn add_human(a: &Parsed, b: &Parsed) -> Option<String> {
    match (a, b) {
        (Parsed::Finite(x), Parsed::Finite(y)) => x.add(y).map(|v| v.to_human()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(a: &str, b: &str) -> Option<String> {
        add_human(&parse(a.as_bytes())?, &parse(b.as_bytes())?)
    }

    /// Answers of Redis 7 on x86-64 (`SET k a`, `INCRBYFLOAT k b`).
    #[test]
    fn matches_redis_on_x86_64() {
        let cases = [
            ("10.50", "0.1", "10.6"),
            ("0.2", "0.1", "0.3"),
            ("0", "0.1", "0.1"),
            ("5.0e3", "2.0e2", "5200"),
            ("3", "1.5", "4.5"),
            ("0", "-5", "-5"),
            ("1", "-1", "0"),
            ("-0.000000000000000001", "0", "0"),
            ("1e-17", "0", "0.00000000000000001"),
            ("1e-18", "0", "0"),
            ("123456789012345678", "1", "123456789012345679"),
            ("0.1", "0.7", "0.8"),
            ("3.0", "1.1", "4.1"),
            ("17179869184", "1.5", "17179869185.5"),
            ("+5", ".5", "5.5"),
            ("5.", "1", "6"),
            ("9223372036854775807", "1", "9223372036854775808"),
        ];
        for (a, b, want) in cases {
            assert_eq!(sum(a, b).as_deref(), Some(want), "{a} + {b}");
        }
    }

    #[test]
    fn rejects_what_string2ld_rejects() {
        for s in [
            "", " 1", "1 ", "abc", "1e", "1e+", "nan", "-nan", "0x10", "1.2.3", ".", "e5", "1e99999",
            "1e-99999",
        ] {
            assert_eq!(parse(s.as_bytes()), None, "{s:?}");
        }
        assert_eq!(parse(b"inf"), Some(Parsed::Infinite));
        assert_eq!(parse(b"-Infinity"), Some(Parsed::Infinite));
        assert!(matches!(parse(b"0e-99999"), Some(Parsed::Finite(_))));
        assert!(matches!(parse(b"1e-4940"), Some(Parsed::Finite(_)))); // subnormal
        assert_eq!(parse(&vec![b'1'; MAX_CHARS]), None);
        assert_eq!(sum("inf", "1"), None);
        assert_eq!(sum("1.1e4932", "1.1e4932"), None); // overflow
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 2^64 + 1 is not representable: ties to the even neighbour 2^64.
        assert_eq!(sum("18446744073709551616", "1").as_deref(), Some("18446744073709551616"));
        assert_eq!(sum("18446744073709551616", "3").as_deref(), Some("18446744073709551620"));
        // 2^63 + 1 is (64 significant bits).
        assert_eq!(sum("9223372036854775808", "1").as_deref(), Some("9223372036854775809"));
    }
}
