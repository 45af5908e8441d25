//! Live segments asked for before they are listed. Players, and P2P
//! loaders racing ahead, ask for the next segment a moment before the
//! origin's playlist lists it, when the origin would answer 404. The edge
//! holds such a request until the playlist lists the segment, for at most
//! half a target duration (the longest a live playlist stays cached, so at
//! least one refresh falls in the wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::Notify;

use crate::media;

/// Renditions remembered at once; one not listed for [`FORGET_AFTER`] is
/// forgotten (its stream ended or nobody watches it).
const CAPACITY: u64 = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// What the newest refresh of a live playlist listed, for one rendition.
struct Rendition {
    /// The number of the newest segment listed.
    newest: AtomicU64,
    /// Half the playlist's target duration, in milliseconds.
    patience_ms: AtomicU64,
    /// The playlist as its route's path and query, refreshed while a
    /// request is held.
    playlist: String,
    /// Woken whenever a refresh lists a newer segment.
    listed: Notify,
}

/// The live renditions the edge has read playlists of, by
/// [`media::rendition_of`] of their segments' keys.
pub struct Upcoming {
    live: Cache<String, Arc<Rendition>>,
}

impl Default for Upcoming {
    fn default() -> Self {
        Self::new()
    }
}

impl Upcoming {
    pub fn new() -> Self {
        Self {
            live: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(FORGET_AFTER)
                .build(),
        }
    }

    /// A live playlist (`playlist`, as its route's path and query) was read:
    /// its newest segment's key is `newest`, its target duration `target`.
    /// Wakes the requests held for segments up to that one.
    pub fn listed(&self, newest: &str, target: Duration, playlist: &str) {
        let Some((rendition, number)) = media::numbered(newest) else {
            return;
        };
        let patience_ms = u64::try_from((target / 2).as_millis()).unwrap_or(u64::MAX);
        let entry = self.live.get_with(rendition, || {
            Arc::new(Rendition {
                newest: AtomicU64::new(number),
                patience_ms: AtomicU64::new(patience_ms),
                playlist: playlist.to_owned(),
                listed: Notify::new(),
            })
        });
        entry.patience_ms.store(patience_ms, Ordering::Relaxed);
        // A restarted stream counts from its new numbers.
        if entry.newest.swap(number, Ordering::AcqRel) != number {
            entry.listed.notify_waiters();
        }
    }

    /// A hold for the segment keyed `key` when it is the one after the
    /// newest its live playlist lists; `None` for any other request.
    pub fn hold(&self, key: &str) -> Option<Hold> {
        let (rendition, number) = media::numbered(key)?;
        let live = self.live.get(&rendition)?;
        let next = live.newest.load(Ordering::Acquire).checked_add(1)?;
        (number == next).then_some(Hold {
            rendition: live,
            number,
        })
    }
}

/// A request waiting for its segment to be listed.
pub struct Hold {
    rendition: Arc<Rendition>,
    number: u64,
}

impl Hold {
    /// The playlist to refresh while holding, as its route's path and query.
    pub fn playlist(&self) -> &str {
        &self.rendition.playlist
    }

    /// The longest the request is held: half a target duration.
    pub fn patience(&self) -> Duration {
        Duration::from_millis(self.rendition.patience_ms.load(Ordering::Relaxed))
    }

    pub fn is_listed(&self) -> bool {
        self.rendition.newest.load(Ordering::Acquire) >= self.number
    }

    /// Returns once a refresh lists a newer segment (the caller checks
    /// [`Hold::is_listed`] again: it may not be this one yet).
    pub async fn changed(&self) {
        let changed = self.rendition.listed.notified();
        if self.is_listed() {
            return;
        }
        changed.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIX: Duration = Duration::from_secs(6);

    #[test]
    fn only_the_segment_after_the_newest_listed_is_held() {
        let upcoming = Upcoming::new();
        upcoming.listed("http://o/live/seg-41.ts", SIX, "/live/index.m3u8");
        let hold = upcoming
            .hold("http://o/live/seg-42.ts")
            .expect("the next segment is held");
        assert_eq!(hold.playlist(), "/live/index.m3u8");
        assert_eq!(hold.patience(), Duration::from_secs(3));
        assert!(!hold.is_listed());
        for other in [
            "http://o/live/seg-41.ts",
            "http://o/live/seg-43.ts",
            "http://o/live/seg-9999.ts",
            "http://o/other/seg-42.ts",
            "http://o/live/init.mp4",
        ] {
            assert!(upcoming.hold(other).is_none(), "{other}");
        }
        upcoming.listed("http://o/live/seg-42.ts", SIX, "/live/index.m3u8");
        assert!(hold.is_listed());
    }

    #[tokio::test]
    async fn a_held_request_wakes_when_a_refresh_lists_more() {
        let upcoming = Arc::new(Upcoming::new());
        upcoming.listed("http://o/live/seg-7.ts", SIX, "/live/index.m3u8");
        let hold = upcoming.hold("http://o/live/seg-8.ts").unwrap();
        let waiter = tokio::spawn(async move {
            hold.changed().await;
            hold.is_listed()
        });
        tokio::task::yield_now().await;
        upcoming.listed("http://o/live/seg-8.ts", SIX, "/live/index.m3u8");
        let listed = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(listed.expect("woken").unwrap());
    }
}
