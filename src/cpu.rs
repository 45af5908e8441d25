//! How busy the edge's process is: the share of the machine's cores it used
//! over the last sample, read from `/proc/self/stat` (Linux), for the
//! duress the edge reports to players (see `cmsd`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The process's CPU use between samples.
pub struct CpuMeter {
    /// The last share, in thousandths of all cores.
    permille: AtomicU64,
    last: Mutex<Option<(Instant, u64)>>,
    cores: f64,
    ticks_per_sec: f64,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self {
            permille: AtomicU64::new(0),
            last: Mutex::new(None),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            ticks_per_sec: ticks_per_sec(),
        }
    }
}

impl CpuMeter {
    /// Takes a sample: the share since the one before becomes [`CpuMeter::share`].
    pub fn sample(&self) {
        let Some(ticks) = process_ticks() else {
            return;
        };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((then, before)) = last.replace((now, ticks)) {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                let used = ticks.saturating_sub(before) as f64 / self.ticks_per_sec;
                let share = (used / seconds / self.cores).clamp(0.0, 1.0);
                self.permille.store((share * 1000.0) as u64, Ordering::Relaxed);
            }
        }
    }

    /// The share of all cores the process used over the last sample, 0 to 1.
    pub fn share(&self) -> f64 {
        self.permille.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// User and system time the process has used, in clock ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, in parentheses):
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_sec() -> f64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 {
            return ticks as f64;
        }
    }
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_thread_shows_in_the_share() {
        let meter = CpuMeter::default();
        meter.sample();
        assert_eq!(meter.share(), 0.0, "one sample is no interval");
        // Keep one core busy for a few clock ticks.
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        meter.sample();
        assert!(meter.share() > 0.0, "busy for 300 ms, the share is {}", meter.share());
        assert!(meter.share() <= 1.0);
    }
}
