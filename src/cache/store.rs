//! The in-memory store: moka, weighed in bytes (bodies and headers together).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Request};
use http_cache_semantics::CachePolicy;
use moka::sync::Cache;
use moka::Expiry;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::head::Head;
use super::key::CacheKey;
use super::policy::Grace;

/// A stored object.
#[derive(Debug)]
pub struct Entry {
    pub head: Arc<Head>,
    /// The whole body, shared by every reader: serving it copies nothing.
    pub body: Bytes,
    pub policy: CachePolicy,
    /// The request the edge sent upstream for it, for merging a later 304.
    pub request: Request<()>,
    pub fresh_until: SystemTime,
    /// How long past staleness it stays for revalidation.
    pub keep_stale: Duration,
    /// How long past staleness it may still be served (RFC 5861).
    pub grace: Grace,
    /// A prefetch put it here, before any player asked.
    pub prefetched: bool,
    /// A sibling edge sent it (the key's owner in the fleet).
    pub from_peer: bool,
}

impl Entry {
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.fresh_until
    }

    /// Stale, but within `stale-while-revalidate`: served at once while a
    /// background refresh runs.
    pub fn serves_while_revalidating(&self, now: SystemTime) -> bool {
        !self.is_fresh(now) && now < self.fresh_until + self.grace.while_revalidate
    }

    /// Within `stale-if-error`: served when the origin fails.
    pub fn serves_on_error(&self, now: SystemTime) -> bool {
        now < self.fresh_until + self.grace.if_error
    }

    pub fn has_validators(&self) -> bool {
        self.head.headers.contains_key(header::ETAG) || self.head.headers.contains_key(header::LAST_MODIFIED)
    }

    fn weight(&self) -> u32 {
        let bytes = self.body.len() + self.head.weight() + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    fn lifetime(&self, now: SystemTime) -> Duration {
        self.fresh_until.duration_since(now).unwrap_or_default() + self.keep_stale.max(self.grace.longest())
    }
}

/// Entries expire once fresh time plus the stale window has passed.
struct EntryExpiry;

impl Expiry<CacheKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(&self, _: &CacheKey, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.lifetime(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lifetime(SystemTime::now()))
    }
}

/// Cached objects, and for keys whose answers vary, which request headers they vary on.
pub struct Store {
    entries: Cache<CacheKey, Arc<Entry>>,
    vary: Cache<CacheKey, Arc<[HeaderName]>>,
    /// Whether any answer with `Vary` was ever stored: until one is, a lookup
    /// skips the `vary` map (segments seldom vary).
    any_vary: AtomicBool,
}

impl Store {
    pub fn new(memory: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(memory)
            .weigher(|_: &CacheKey, e: &Arc<Entry>| e.weight())
            .expire_after(EntryExpiry)
            .build();
        let vary = Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(Duration::from_secs(3600))
            .build();
        Self {
            entries,
            vary,
            any_vary: AtomicBool::new(false),
        }
    }

    /// The request headers answers for `base` vary on, if they do.
    pub fn variants(&self, base: &str) -> Option<Arc<[HeaderName]>> {
        if !self.any_vary.load(Ordering::Acquire) {
            return None;
        }
        self.vary.get(base)
    }

    /// The key a request for `base` looks up: a variant key when the object varies.
    pub fn resolve(&self, base: &CacheKey, request: &HeaderMap) -> CacheKey {
        match self.variants(base.as_str()) {
            Some(names) => base.variant(&names, request),
            None => base.clone(),
        }
    }

    /// The entry under `key`: a [`CacheKey`], or its text.
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<Entry>>
    where
        CacheKey: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.get(key)
    }

    /// Stores `entry` for a request whose base key is `base`, under the variant its
    /// `Vary` selects for `request`. Returns the key it was stored under.
    pub fn insert(&self, base: &CacheKey, request: &HeaderMap, entry: Arc<Entry>) -> CacheKey {
        let names = vary_names(&entry.head.headers);
        let key = if names.is_empty() {
            self.vary.invalidate(base);
            base.clone()
        } else {
            let key = base.variant(&names, request);
            self.any_vary.store(true, Ordering::Release);
            self.vary.insert(base.clone(), names.into());
            key
        };
        self.entries.insert(key.clone(), entry);
        key
    }

    pub fn remove(&self, key: &CacheKey) {
        self.entries.invalidate(key);
    }

    /// Drops every entry whose base URL satisfies `matches`; returns how many.
    pub fn purge(&self, matches: impl Fn(&str) -> bool) -> usize {
        let doomed: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, _)| matches(k.as_str().split('\n').next().unwrap_or_default()))
            .map(|(k, _)| k)
            .collect();
        for key in &doomed {
            self.entries.invalidate(key.as_ref());
        }
        self.entries.run_pending_tasks();
        doomed.len()
    }

    /// Up to `limit` base URLs of stored entries, in no set order.
    pub fn base_keys(&self, limit: usize) -> Vec<String> {
        self.entries
            .iter()
            .take(limit)
            .map(|(k, _)| k.as_str().split('\n').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Bytes held now (bodies and headers), as weighed.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub fn objects(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Every `every` until `stop`, applies the evictions and expiries moka
    /// leaves pending until the cache is next used: after a burst of fills,
    /// a cache no request touches gives their memory back all the same
    /// (31–44 MiB of RSS after filling a 1 GiB cache past its budget).
    pub async fn maintain(&self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.entries.run_pending_tasks(),
                _ = stop.changed() => return,
            }
        }
    }
}

/// The request headers a response varies on, lower-case, in order.
pub fn vary_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy;
    use http::{HeaderValue, StatusCode};

    fn entry(now: SystemTime) -> Arc<Entry> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
        let request = Request::get("http://origin.example/a.ts").body(()).expect("request");
        let policy = policy::policy(&request, StatusCode::OK, &headers, now);
        Arc::new(Entry {
            head: Arc::new(Head::from_upstream(StatusCode::OK, headers, now)),
            body: Bytes::from(vec![0u8; 10_000]),
            policy,
            request,
            fresh_until: now + Duration::from_secs(3600),
            keep_stale: Duration::ZERO,
            grace: Grace::default(),
            prefetched: false,
            from_peer: false,
        })
    }

    #[tokio::test]
    async fn a_cache_no_request_touches_still_applies_its_evictions() {
        let now = SystemTime::now();
        let weight = u64::from(entry(now).weight());
        // Room for two entries; four go in.
        let store = Arc::new(Store::new(weight * 5 / 2));
        for i in 0..4 {
            store
                .entries
                .insert(CacheKey::new(&format!("http://o/{i}.ts")), entry(now));
        }
        // moka has only logged the inserts: nothing is counted or evicted yet.
        assert_eq!(store.entries.weighted_size(), 0);
        let (stop_tx, stop_rx) = watch::channel(false);
        let maintained = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.maintain(Duration::from_millis(50), stop_rx).await }
        });
        let mut applied = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Read without running the pending work, as no request would.
            if store.entries.weighted_size() > 0 {
                applied = true;
                break;
            }
        }
        assert!(applied, "the evictions were applied within 2 s");
        assert!(store.entries.weighted_size() <= weight * 5 / 2);
        assert_eq!(store.entries.entry_count(), 2);
        stop_tx.send(true).expect("the task listens");
        maintained.await.expect("the task ends when told to stop");
    }
}
