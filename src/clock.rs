//! The edge's clock. Rules take `now` as an argument; the edge reads the time
//! here, in one place.
//!
//! It is the wall clock at start plus tokio's monotonic time since: as cheap
//! to read as the wall clock, not moved by a step of the system clock while
//! the edge runs (entries neither expire nor come back to life when NTP
//! steps), and moved by tokio's own test clock, so a test that waits for an
//! entry to expire pauses and advances tokio's time instead of sleeping.

use std::time::SystemTime;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Clock {
    wall_at_start: SystemTime,
    started: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            wall_at_start: SystemTime::now(),
            started: Instant::now(),
        }
    }
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        self.wall_at_start + self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokios_time() {
        let clock = Clock::default();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn it_starts_at_the_wall_clock() {
        let clock = Clock::default();
        let gap = clock.now().duration_since(SystemTime::now()).unwrap_or_default();
        assert!(gap < Duration::from_secs(1), "{gap:?}");
    }
}
