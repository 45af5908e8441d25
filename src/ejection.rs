//! Origins taken out of turn after they failed (passive ejection), until a
//! probe or a request finds them answering again. A down origin is still
//! asked when every other source failed too: ejection changes the order in
//! which sources are tried, never whether a request is tried at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Why an origin is down, and since when.
#[derive(Debug, Clone)]
pub struct Down {
    pub since: SystemTime,
    pub error: String,
}

/// The origins down now, by base URL.
#[derive(Default)]
pub struct Ejections {
    /// Whether any origin is down: the usual answer, read without the lock.
    any: AtomicBool,
    down: Mutex<HashMap<String, Down>>,
}

impl Ejections {
    /// Whether any origin is down (one atomic read).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub fn is_down(&self, origin: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().contains_key(origin)
    }

    /// Marks `origin` down; true when it was up.
    pub fn failed(&self, origin: &str, error: &str, now: SystemTime) -> bool {
        let mut down = self.lock();
        let newly = !down.contains_key(origin);
        if newly {
            down.insert(
                origin.to_owned(),
                Down {
                    since: now,
                    error: error.to_owned(),
                },
            );
            self.any.store(true, Ordering::Release);
        }
        newly
    }

    /// Marks `origin` up again; true when it was down.
    pub fn recovered(&self, origin: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut down = self.lock();
        let was = down.remove(origin).is_some();
        self.any.store(!down.is_empty(), Ordering::Release);
        was
    }

    /// Every origin down now, with why.
    pub fn down(&self) -> Vec<(String, Down)> {
        let mut list: Vec<_> = self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Down>> {
        // The map stays consistent whatever a panicking holder did.
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_down_from_its_failure_until_it_recovers() {
        let e = Ejections::default();
        let now = SystemTime::UNIX_EPOCH;
        assert!(!e.is_down("http://a"));
        assert!(e.failed("http://a", "refused", now));
        assert!(!e.failed("http://a", "refused again", now), "already down");
        assert!(e.is_down("http://a") && !e.is_down("http://b"));
        assert_eq!(e.down()[0].1.error, "refused");
        assert!(e.recovered("http://a"));
        assert!(!e.recovered("http://a"));
        assert!(!e.is_down("http://a"));
        assert!(e.down().is_empty());
    }
}
