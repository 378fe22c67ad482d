//! Rate limiting of failed authentication attempts, per peer IP address.
//!
//! A peer may fail [`FREE_FAILURES`] times; after that each further failure blocks it for twice
//! as long as the one before (1 s, 2 s, 4 s, ... at most [`MAX_BLOCK`]). While blocked, its
//! `AUTH` attempts are refused without checking the password (so a password guesser gets a few
//! guesses a minute, not thousands a second, and cannot spend the node's CPU on Argon2). A
//! success clears the peer's record; a record idle for [`FORGET_AFTER`] is forgotten. The table
//! holds at most [`MAX_PEERS`] addresses: when it is full, the record idle longest is dropped, so
//! an attacker with many addresses costs bounded memory (and each address still gets only a few
//! guesses). Time is passed in, so the rules are tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures allowed before blocking starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(60);
/// A record idle this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most peer addresses tracked.
pub const MAX_PEERS: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

/// The limiter (behind a mutex in [`super::session::Gate`]).
#[derive(Debug, Default)]
pub struct Limiter {
    peers: HashMap<IpAddr, Record>,
}

/// What the limiter says about an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead and check the password.
    Check,
    /// Refused without checking, for about this much longer.
    Blocked(Duration),
}

impl Limiter {
    /// Whether `peer` may try now.
    pub fn check(&mut self, peer: IpAddr, now: Instant) -> Verdict {
        match self.peers.get(&peer).and_then(|r| r.blocked_until) {
            Some(until) if until > now => Verdict::Blocked(until - now),
            _ => Verdict::Check,
        }
    }

    /// Records a failure; returns the peer's failure count and how long it is now blocked.
    pub fn failed(&mut self, peer: IpAddr, now: Instant) -> (u32, Option<Duration>) {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.evict(now);
        }
        let r = self.peers.entry(peer).or_insert(Record { failures: 0, blocked_until: None, last: now });
        if now.duration_since(r.last) > FORGET_AFTER {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        let block = (r.failures > FREE_FAILURES).then(|| {
            let doublings = (r.failures - FREE_FAILURES - 1).min(16);
            Duration::from_secs(1u64 << doublings).min(MAX_BLOCK)
        });
        r.blocked_until = block.map(|b| now + b);
        (r.failures, block)
    }

    /// Clears `peer`'s record after a success.
    pub fn succeeded(&mut self, peer: IpAddr) {
        self.peers.remove(&peer);
    }

    /// Number of addresses tracked.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        self.peers.retain(|_, r| now.duration_since(r.last) <= FORGET_AFTER);
        if self.peers.len() >= MAX_PEERS {
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, r)| r.last).map(|(ip, _)| *ip) {
                self.peers.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_few_failures_are_free_then_blocks_double_up_to_the_cap() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a = ip(1);
        for k in 1..=FREE_FAILURES {
            assert_eq!(l.check(a, t0), Verdict::Check);
            assert_eq!(l.failed(a, t0), (k, None));
        }
        assert_eq!(l.failed(a, t0), (FREE_FAILURES + 1, Some(Duration::from_secs(1))));
        assert_eq!(l.check(a, t0), Verdict::Blocked(Duration::from_secs(1)));
        assert_eq!(l.check(ip(2), t0), Verdict::Check, "other peers are not affected");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check(a, t1), Verdict::Check, "the block ends");
        assert_eq!(l.failed(a, t1).1, Some(Duration::from_secs(2)));
        let mut t = t1;
        for _ in 0..20 {
            t += Duration::from_secs(61);
            let (_, block) = l.failed(a, t);
            assert!(block.unwrap() <= MAX_BLOCK);
        }
        assert_eq!(l.failed(a, t).1, Some(MAX_BLOCK));
        l.succeeded(a);
        assert_eq!(l.check(a, t), Verdict::Check);
        assert_eq!(l.failed(a, t), (1, None), "a success starts the count over");
    }

    #[test]
    fn an_idle_record_is_forgotten_and_the_table_is_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.failed(ip(1), t0);
        }
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(l.failed(ip(1), later), (1, None));
        for n in 0..(MAX_PEERS as u32 + 500) {
            l.failed(ip(1000 + n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert!(l.len() <= MAX_PEERS, "{}", l.len());
    }
}
