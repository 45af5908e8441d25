//! The demo's stream: a 10 s clip of real H.264/AAC video (see `clip/make.sh`)
//! looped as a live HLS stream, and the same clip as a VOD playlist.

use bytes::Bytes;

/// Seconds of media in every clip segment (the encoder cut them exactly).
pub const SEGMENT_SECONDS: u64 = 2;
/// Segments in the live playlist's window.
pub const WINDOW: u64 = 6;

/// The clip's segments, in order.
const CLIP: [&[u8]; 5] = [
    include_bytes!("clip/seg-0.ts"),
    include_bytes!("clip/seg-1.ts"),
    include_bytes!("clip/seg-2.ts"),
    include_bytes!("clip/seg-3.ts"),
    include_bytes!("clip/seg-4.ts"),
];

/// Live segment `n`: the clip's segment `n mod 5`, shared, never copied.
pub fn segment(n: u64) -> Bytes {
    Bytes::from_static(CLIP[(n % CLIP.len() as u64) as usize])
}

/// How many live segments exist `elapsed_secs` after the stream started.
/// It starts with a full window so that players can join at once.
pub fn published(elapsed_secs: u64) -> u64 {
    WINDOW + elapsed_secs / SEGMENT_SECONDS
}

/// The live media playlist when `published` segments exist: the last
/// `WINDOW` of them. The clip restarts every five segments, so each restart
/// is a discontinuity (timestamps jump back), counted by
/// `EXT-X-DISCONTINUITY-SEQUENCE` for those that have left the window.
pub fn live_playlist(published: u64) -> String {
    let first = published.saturating_sub(WINDOW);
    let clip = CLIP.len() as u64;
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}\n\
         #EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
        first / clip
    );
    for n in first..published {
        if n > first && n % clip == 0 {
            text.push_str("#EXT-X-DISCONTINUITY\n");
        }
        text.push_str(&format!("#EXTINF:{SEGMENT_SECONDS}.000,\nseg-{n}.ts\n"));
    }
    text
}

/// The clip once, as a VOD playlist of `/vod/seg-N.ts`.
pub fn vod_playlist() -> String {
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n"
    );
    for n in 0..CLIP.len() {
        text.push_str(&format!("#EXTINF:{SEGMENT_SECONDS}.000,\nseg-{n}.ts\n"));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

/// The number of the clip segment at `name` (`seg-N.ts`) when it is below `limit`.
pub fn segment_number(name: &str, limit: u64) -> Option<u64> {
    let n = name.strip_prefix("seg-")?.strip_suffix(".ts")?.parse::<u64>().ok()?;
    (n < limit).then_some(n)
}

/// How many segments the clip has.
pub fn clip_segments() -> u64 {
    CLIP.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::hls::{self, Summary};

    #[test]
    fn the_window_slides_and_counts_discontinuities() {
        let text = live_playlist(13);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"));
        // Segments 7..13; the restart at 10 is marked, the one at 5 has left (1 so far).
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(text.contains("seg-7.ts") && text.contains("seg-12.ts") && !text.contains("seg-13.ts"));
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nseg-10.ts"));
        let Some(Summary::Media(p)) = hls::parse(text.as_bytes()) else {
            panic!("the live playlist parses")
        };
        assert!(p.live);
        assert_eq!(p.segments.len(), 6);
    }

    #[test]
    fn a_restart_first_in_the_window_is_counted_not_marked() {
        let text = live_playlist(16);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"));
        assert_eq!(
            text.matches("#EXT-X-DISCONTINUITY\n").count(),
            1,
            "only the restart at 15"
        );
    }

    #[test]
    fn segments_loop_over_the_clip() {
        assert_eq!(segment(0), segment(5));
        assert_ne!(segment(0), segment(1));
        assert_eq!(&segment(3)[..1], &[0x47], "MPEG-TS sync byte");
        assert_eq!(published(0), WINDOW);
        assert_eq!(published(5), WINDOW + 2);
    }

    #[test]
    fn vod_lists_the_clip_once() {
        let Some(Summary::Media(p)) = hls::parse(vod_playlist().as_bytes()) else {
            panic!("the VOD playlist parses")
        };
        assert!(!p.live);
        assert_eq!(p.segments.len(), 5);
        assert_eq!(segment_number("seg-4.ts", 5), Some(4));
        assert_eq!(segment_number("seg-5.ts", 5), None);
        assert_eq!(segment_number("seg-x.ts", 5), None);
    }
}
