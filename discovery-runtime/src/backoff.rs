//! Delays between attempts. [`Backoff`] is for failures: it grows exponentially with full
//! jitter up to a cap and resets on the next success. [`PollInterval`] is for sources that
//! poll: it grows while nothing changes and drops back to its minimum after a change.
use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The delay before the next attempt: a random point in the upper half of
    /// `initial * 2^failures` (capped), so many clients failing together spread out while each
    /// still waits long enough to let the other side recover.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(jitter())
    }

    /// How many failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A number in [0, 1) that differs between calls and processes, without a random-number crate.
fn jitter() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = RandomState::new().hash_one(n);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait between polls of a source that cannot be watched.
#[derive(Clone, Debug)]
pub struct PollInterval {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl PollInterval {
    pub fn new(min: Duration, max: Duration) -> Self {
        PollInterval {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The wait before the next poll.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// After a poll: a change brings the interval back to its minimum; no change doubles it
    /// up to its maximum.
    pub fn observe(&mut self, changed: bool) -> Duration {
        self.current = if changed {
            self.min
        } else {
            self.current.saturating_mul(2).min(self.max)
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets_on_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] < Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] < Duration::from_millis(800));
        for x in &d[4..] {
            assert!(
                *x >= Duration::from_millis(500) && *x < Duration::from_secs(1),
                "{x:?}"
            );
        }
        assert_eq!(b.failures(), 8);
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<_> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn poll_interval_grows_while_quiet_and_shrinks_after_a_change() {
        let mut p = PollInterval::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(p.observe(false), Duration::from_secs(2));
        assert_eq!(p.observe(false), Duration::from_secs(4));
        assert_eq!(p.observe(false), Duration::from_secs(8));
        assert_eq!(p.observe(false), Duration::from_secs(8));
        assert_eq!(p.observe(true), Duration::from_secs(1));
    }
}
