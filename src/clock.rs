//! The edge's clock. Rules take `now` as an argument; the edge reads the time
//! here, in one place, so that a test can move it forward instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The wall clock, plus however far it was moved forward.
#[derive(Debug, Default)]
pub struct Clock {
    ahead_nanos: AtomicU64,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        let ahead = self.ahead_nanos.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if ahead == 0 {
            return now;
        }
        now + Duration::from_nanos(ahead)
    }

    /// Moves the clock forward by `by`: what waiting would do, at once.
    /// (Entries still leave the store on moka's own schedule.)
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.ahead_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let clock = Clock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now();
        assert!(after.duration_since(before).unwrap() >= Duration::from_secs(3600));
    }
}
