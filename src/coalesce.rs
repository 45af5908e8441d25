//! At most one upstream fetch per cache key at a time.
//!
//! A request joins the fill from the moment of its miss, before the origin's
//! headers are in (ATS and Squid leave that window open). Keys whose answers
//! turned out uncacheable are remembered for `cache.pass_ttl` (Varnish's
//! hit-for-pass), so later requests go to the origin in parallel instead of
//! queueing one behind another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;

use crate::cache::{CacheKey, Entry};
use crate::fill::{Fill, Reader, Writer};
use crate::outcome::PassReason;

/// The result of asking for a key that is not fresh in the cache.
pub enum Joined {
    /// A fill finished and stored it between the lookup and the join.
    Hit(Arc<Entry>),
    /// This request starts the fetch: the caller spawns it with the writer.
    Started(Reader, Writer),
    /// Joined a fetch under way.
    Collapsed(Reader),
}

pub struct Inflight {
    fills: Mutex<HashMap<CacheKey, Arc<Fill>>>,
    passes: Cache<CacheKey, PassReason>,
}

impl Inflight {
    pub fn new(pass_ttl: Duration) -> Self {
        Self {
            fills: Mutex::new(HashMap::new()),
            passes: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(pass_ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// Why `key` was found uncacheable, if it was within `cache.pass_ttl`.
    pub fn passed_for(&self, key: &CacheKey) -> Option<PassReason> {
        self.passes.get(key)
    }

    pub fn remember_pass(&self, key: &CacheKey, reason: PassReason) {
        self.passes.insert(key.clone(), reason);
    }

    /// Joins the fill for `key`, or starts one. `fresh` re-checks the cache under
    /// the lock: a fill stores its entry before it leaves this map, so a request
    /// that finds no fill here either sees the entry or starts the only new fetch.
    pub fn join(&self, key: &CacheKey, fresh: impl FnOnce() -> Option<Arc<Entry>>) -> Joined {
        let mut fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fill) = fills.get(key) {
            if fill.joinable() {
                return Joined::Collapsed(fill.join());
            }
        }
        if let Some(entry) = fresh() {
            return Joined::Hit(entry);
        }
        let (fill, writer, reader) = Fill::start();
        fills.insert(key.clone(), fill);
        Joined::Started(reader, writer)
    }

    /// Closes `fill` to new joiners (if it is still the one registered for `key`).
    pub fn close(&self, key: &CacheKey, fill: &Arc<Fill>) {
        let mut fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            fills.remove(key);
        }
    }

    /// Whether a fill for `key` is under way.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.fills.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    /// The keys of up to `n` fills under way now.
    pub fn keys(&self, n: usize) -> Vec<String> {
        let fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        fills.keys().take(n).map(|k| k.as_str().to_owned()).collect()
    }

    /// Fills under way now.
    pub fn len(&self) -> usize {
        self.fills.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
