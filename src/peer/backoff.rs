//! Redial delays: exponential with jitter, pure so it can be tested.

use std::time::Duration;

use crate::limits::{DIAL_BACKOFF_MAX, DIAL_BACKOFF_MIN};

/// Failures so far against one peer, and when it may be dialed again.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
    /// Unix ms before which no dial is attempted.
    not_before_ms: u64,
}

impl Backoff {
    pub fn may_dial(&self, now_ms: u64) -> bool {
        now_ms >= self.not_before_ms
    }

    /// Record a failed dial at `now_ms`; `random` (any u64, from the Env RNG)
    /// picks the jitter. Returns the delay chosen.
    pub fn failed(&mut self, now_ms: u64, random: u64) -> Duration {
        let delay = delay(self.failures, random);
        self.failures = self.failures.saturating_add(1);
        self.not_before_ms = now_ms.saturating_add(delay.as_millis() as u64);
        delay
    }

    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The delay after `failures` earlier failures: `min * 2^failures`, capped,
/// then scaled to 50-100% by `random`.
pub fn delay(failures: u32, random: u64) -> Duration {
    let base = DIAL_BACKOFF_MIN
        .saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .min(DIAL_BACKOFF_MAX);
    let half = base / 2;
    let jitter_ms = random % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn delays_grow_stay_bounded_and_jitter_within_half(failures in 0u32..200, random: u64) {
            let d = delay(failures, random);
            prop_assert!(d <= DIAL_BACKOFF_MAX);
            prop_assert!(d >= DIAL_BACKOFF_MIN / 2);
            let full = DIAL_BACKOFF_MIN.saturating_mul(1 << failures.min(20)).min(DIAL_BACKOFF_MAX);
            prop_assert!(d >= full / 2 && d <= full);
        }
    }

    #[test]
    fn a_success_resets_and_a_failure_defers() {
        let mut backoff = Backoff::default();
        assert!(backoff.may_dial(0));
        let d = backoff.failed(1_000, 7);
        assert!(!backoff.may_dial(1_000));
        assert!(backoff.may_dial(1_000 + d.as_millis() as u64));
        backoff.failed(5_000, 7);
        assert_eq!(backoff.failures(), 2);
        backoff.succeeded();
        assert!(backoff.may_dial(0));
    }
}
