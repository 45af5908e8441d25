//! A bound on the upstream fetches one stream may have under way at once
//! (`media.stream_fetches`), so that a runaway stream (a player asking for
//! thousands of segment numbers, a playlist listing them) cannot take every
//! origin connection from the others. A stream is the folder an object's
//! key lies in: one rendition of one stream, as packagers lay them out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every fetch slot of a stream is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The fetch slots of every stream seen lately, and of every route.
pub struct StreamLimits {
    per_stream: usize,
    streams: moka::sync::Cache<String, Arc<Semaphore>>,
    /// Per route (`routes[].max_fetches`), by the route's name, with the
    /// limit each semaphore was made for.
    routes: moka::sync::Cache<String, (usize, Arc<Semaphore>)>,
}

impl StreamLimits {
    /// `per_stream` fetches at once per stream; 0: no bound.
    pub fn new(per_stream: usize) -> Self {
        Self {
            per_stream,
            // A stream idle this long gives its slots back to the map; a
            // fetch holding one keeps its own semaphore alive meanwhile.
            streams: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(300))
                .build(),
            routes: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }

    /// A slot among `limit` for a fetch on the route named `route`, waiting
    /// up to `patience` (none for a prefetch, which never waits); `Ok(None)`
    /// when the route is not bounded.
    pub async fn route_slot(
        &self,
        route: &str,
        limit: usize,
        patience: Option<Duration>,
    ) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        if limit == 0 {
            return Ok(None);
        }
        let mut slots = self
            .routes
            .get_with_by_ref(route, || (limit, Arc::new(Semaphore::new(limit))));
        if slots.0 != limit {
            // A reload changed the limit: new fetches count against a new
            // semaphore; those under way keep their slots in the old one.
            slots = (limit, Arc::new(Semaphore::new(limit)));
            self.routes.insert(route.to_owned(), slots.clone());
        }
        let slots = slots.1;
        match patience {
            None => slots.try_acquire_owned().map(Some).map_err(|_| Busy),
            Some(patience) => match tokio::time::timeout(patience, slots.acquire_owned()).await {
                Ok(Ok(permit)) => Ok(Some(permit)),
                _ => Err(Busy),
            },
        }
    }

    fn slots(&self, key: &str) -> Arc<Semaphore> {
        let stream = stream_of(key);
        self.streams
            .get_with_by_ref(stream, || Arc::new(Semaphore::new(self.per_stream)))
    }

    /// A slot for a fetch of `key`, waiting up to `patience` for one;
    /// `Ok(None)` when streams are not bounded; `Err` when none freed in time.
    pub async fn wait(&self, key: &str, patience: Duration) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        if self.per_stream == 0 {
            return Ok(None);
        }
        match tokio::time::timeout(patience, self.slots(key).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Busy),
        }
    }

    /// A slot for a fetch of `key` if one is free now (for a prefetch, which never waits).
    pub fn try_take(&self, key: &str) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        if self.per_stream == 0 {
            return Ok(None);
        }
        self.slots(key).try_acquire_owned().map(Some).map_err(|_| Busy)
    }
}

/// The stream of a cache key: its URL up to the last `/` of the path.
pub fn stream_of(key: &str) -> &str {
    let path_end = key.find('?').unwrap_or(key.len());
    let path_end = key[..path_end].find('\n').unwrap_or(path_end);
    match key[..path_end].rfind('/') {
        Some(slash) => &key[..=slash],
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_the_folder_of_the_key() {
        assert_eq!(stream_of("http://o/live/720p/seg-1.ts"), "http://o/live/720p/");
        assert_eq!(stream_of("http://o/live/720p/seg-1.ts?t=a/b"), "http://o/live/720p/");
        assert_eq!(
            stream_of("http://o/live/720p/seg-1.ts\naccept-encoding: gzip/x"),
            "http://o/live/720p/"
        );
        assert_eq!(stream_of("http://o/a.ts"), "http://o/");
    }

    #[tokio::test]
    async fn each_stream_has_its_own_slots() {
        let limits = StreamLimits::new(2);
        let a = limits.try_take("http://o/a/1.ts").unwrap();
        let b = limits.try_take("http://o/a/2.ts").unwrap();
        assert!(
            limits.try_take("http://o/a/3.ts").is_err(),
            "the third of one stream waits"
        );
        assert!(
            limits.try_take("http://o/b/1.ts").unwrap().is_some(),
            "another stream does not"
        );
        let short = Duration::from_millis(20);
        assert!(limits.wait("http://o/a/4.ts", short).await.is_err());
        drop(a);
        assert!(limits.wait("http://o/a/4.ts", short).await.unwrap().is_some());
        drop(b);
        let unbounded = StreamLimits::new(0);
        assert!(unbounded.try_take("http://o/a/1.ts").unwrap().is_none());
    }
}
