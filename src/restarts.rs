//! Live HLS stream restarts. An encoder that restarts often reuses its
//! segment names (`seg-0.ts` again), so a cache keyed by URL would hand
//! players the old stream's bytes under the new stream's names. Each live
//! media playlist's window is remembered; a window that cannot follow the
//! one before it means the stream started over.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::media::hls::MediaPlaylist;

/// Playlists remembered at once; a playlist not refreshed for
/// [`FORGET_AFTER`] is forgotten (its stream ended or nobody watches it).
const CAPACITY: u64 = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What one refresh of a live playlist showed.
#[derive(Debug, Clone)]
struct Window {
    media_sequence: u64,
    discontinuity_sequence: u64,
    segments: Arc<[String]>,
}

/// Why a playlist is taken for a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `EXT-X-MEDIA-SEQUENCE` went backwards.
    SequenceBackwards,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` went backwards, or rose by more than
    /// the segments that left the window.
    DiscontinuityJump,
    /// A sequence number in both windows names another URI, or the window
    /// shrank at the same sequence number.
    Rewritten,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::SequenceBackwards => "media sequence went backwards",
            Restart::DiscontinuityJump => "discontinuity sequence jumped",
            Restart::Rewritten => "the window was rewritten",
        }
    }
}

/// The last window seen of each live playlist, by its cache key.
pub struct Restarts {
    seen: Cache<String, Window>,
}

impl Default for Restarts {
    fn default() -> Self {
        Self::new()
    }
}

impl Restarts {
    pub fn new() -> Self {
        Self {
            seen: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(FORGET_AFTER)
                .build(),
        }
    }

    /// Records `playlist`'s window; when it shows the stream started over,
    /// returns why with the segment URIs of the window before (as written).
    pub fn observe(&self, key: &str, playlist: &MediaPlaylist) -> Option<(Restart, Arc<[String]>)> {
        let now = Window {
            media_sequence: playlist.media_sequence,
            discontinuity_sequence: playlist.discontinuity_sequence,
            segments: playlist.segments.iter().cloned().collect(),
        };
        let before = self.seen.get(key);
        self.seen.insert(key.to_owned(), now.clone());
        let before = before?;
        restarted(&before, &now).map(|why| (why, before.segments))
    }
}

/// Whether `now` cannot be a later window of the stream `before` showed.
fn restarted(before: &Window, now: &Window) -> Option<Restart> {
    if now.media_sequence < before.media_sequence {
        return Some(Restart::SequenceBackwards);
    }
    let slid = now.media_sequence - before.media_sequence;
    let discontinuities = now.discontinuity_sequence.checked_sub(before.discontinuity_sequence);
    if discontinuities.is_none_or(|d| d > slid) {
        return Some(Restart::DiscontinuityJump);
    }
    // Sequence numbers both windows hold must name the same segments.
    let overlap = usize::try_from(slid)
        .ok()
        .and_then(|slid| before.segments.get(slid..))
        .unwrap_or_default();
    let same = overlap.iter().zip(now.segments.iter()).all(|(a, b)| a == b);
    if !same || (slid == 0 && now.segments.len() < before.segments.len()) {
        return Some(Restart::Rewritten);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(sequence: u64, discontinuities: u64, segments: &[&str]) -> Window {
        Window {
            media_sequence: sequence,
            discontinuity_sequence: discontinuities,
            segments: segments.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_window_that_slides_or_grows_is_the_same_stream() {
        let before = window(10, 1, &["s10.ts", "s11.ts", "s12.ts"]);
        for now in [
            window(10, 1, &["s10.ts", "s11.ts", "s12.ts"]),
            window(10, 1, &["s10.ts", "s11.ts", "s12.ts", "s13.ts"]),
            window(11, 1, &["s11.ts", "s12.ts", "s13.ts"]),
            // A discontinuity left the window with its segment.
            window(12, 2, &["s12.ts", "s13.ts", "s14.ts"]),
            // Far ahead, nothing in common: a player that came back late.
            window(40, 3, &["s40.ts", "s41.ts"]),
        ] {
            assert_eq!(restarted(&before, &now), None, "{now:?}");
        }
    }

    #[test]
    fn a_window_that_cannot_follow_is_a_restart() {
        let before = window(10, 1, &["s10.ts", "s11.ts", "s12.ts"]);
        let cases = [
            (window(0, 0, &["s0.ts"]), Restart::SequenceBackwards),
            (
                window(10, 0, &["s10.ts", "s11.ts", "s12.ts"]),
                Restart::DiscontinuityJump,
            ),
            (
                window(11, 3, &["s11.ts", "s12.ts", "s13.ts"]),
                Restart::DiscontinuityJump,
            ),
            (window(10, 1, &["s10.ts"]), Restart::Rewritten),
            (window(11, 1, &["s11.ts", "x12.ts", "s13.ts"]), Restart::Rewritten),
        ];
        for (now, why) in cases {
            assert_eq!(restarted(&before, &now), Some(why), "{now:?}");
        }
    }

    #[test]
    fn the_first_window_of_a_playlist_is_no_restart_and_the_last_one_is_remembered() {
        let restarts = Restarts::new();
        let playlist = |sequence: u64, segments: &[&str]| MediaPlaylist {
            live: true,
            target_duration: Duration::from_secs(1),
            media_sequence: sequence,
            discontinuity_sequence: 0,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            parts: vec![],
            preload_hints: vec![],
            part_target: None,
        };
        assert!(restarts.observe("k", &playlist(5, &["s5.ts", "s6.ts"])).is_none());
        assert!(restarts.observe("k", &playlist(6, &["s6.ts", "s7.ts"])).is_none());
        let (why, old) = restarts.observe("k", &playlist(0, &["s0.ts"])).expect("a restart");
        assert_eq!(why, Restart::SequenceBackwards);
        assert_eq!(&*old, &["s6.ts".to_string(), "s7.ts".to_string()]);
        // The new stream's window is the one remembered now.
        assert!(restarts.observe("k", &playlist(0, &["s0.ts", "s1.ts"])).is_none());
        assert!(restarts.observe("other", &playlist(0, &["s0.ts"])).is_none());
    }
}
