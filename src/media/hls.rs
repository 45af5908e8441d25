//! HLS playlists, parsed with `m3u8-rs`. The low-latency tags it does not
//! model (draft-pantos-hls-rfc8216bis §4.4.3.7–8, §4.4.5.3) are read by a line
//! scan: m3u8-rs 6 drops unknown tags after the last segment URI, which is
//! exactly where a live low-latency playlist puts its parts and preload hint.

use std::time::Duration;

use m3u8_rs::{MediaPlaylistType, Playlist};

/// What the edge needs to know of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// No `EXT-X-ENDLIST` and not a VOD playlist: it will change.
    pub live: bool,
    pub target_duration: Duration,
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (0 when absent).
    pub discontinuity_sequence: u64,
    /// Segment URIs as written, oldest first.
    pub segments: Vec<String>,
    /// `EXT-X-PART` URIs as written, oldest first.
    pub parts: Vec<String>,
    /// `EXT-X-PRELOAD-HINT` URIs: objects the origin will publish next.
    pub preload_hints: Vec<String>,
    /// `EXT-X-PART-INF:PART-TARGET`, for low-latency playlists.
    pub part_target: Option<Duration>,
}

/// A playlist's meaning for the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Summary {
    Media(MediaPlaylist),
    /// A master playlist: the URIs of its variant (rendition) playlists.
    Master {
        variants: Vec<String>,
    },
}

/// Parses a playlist; `None` when it is not one.
pub fn parse(bytes: &[u8]) -> Option<Summary> {
    match m3u8_rs::parse_playlist_res(bytes).ok()? {
        Playlist::MasterPlaylist(master) => Some(Summary::Master {
            variants: master.variants.into_iter().map(|v| v.uri).collect(),
        }),
        Playlist::MediaPlaylist(media) => {
            let mut parts = Vec::new();
            let mut preload_hints = Vec::new();
            let mut part_target = None;
            let text = String::from_utf8_lossy(bytes);
            for line in text.lines() {
                let Some((tag, rest)) = line.trim().split_once(':') else {
                    continue;
                };
                let attrs = attributes(rest);
                let get = |name: &str| attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                match tag {
                    "#EXT-X-PART" => parts.extend(get("URI")),
                    "#EXT-X-PRELOAD-HINT" => preload_hints.extend(get("URI")),
                    "#EXT-X-PART-INF" => {
                        part_target = get("PART-TARGET")
                            .and_then(|t| t.parse::<f64>().ok())
                            .filter(|t| t.is_finite() && *t > 0.0)
                            .map(Duration::from_secs_f64);
                    }
                    _ => {}
                }
            }
            Some(Summary::Media(MediaPlaylist {
                live: !media.end_list && media.playlist_type != Some(MediaPlaylistType::Vod),
                target_duration: Duration::from_secs(media.target_duration),
                media_sequence: media.media_sequence,
                discontinuity_sequence: media.discontinuity_sequence,
                segments: media.segments.into_iter().map(|s| s.uri).collect(),
                parts,
                preload_hints,
                part_target,
            }))
        }
    }
}

/// An HLS attribute list (`KEY=VALUE,KEY="quoted, value"`), quotes removed.
pub fn attributes(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, next)) => (v, next),
                None => (quoted, ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, next)) => (v, next),
                None => (after, ""),
            }
        };
        out.push((key.trim().to_owned(), value.trim().to_owned()));
        rest = next.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_vod_media_playlists() {
        let live = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:17\n#EXTINF:4.0,\nseg17.ts\n#EXTINF:4.0,\nseg18.ts\n";
        let Some(Summary::Media(p)) = parse(live) else {
            panic!("media playlist")
        };
        assert!(p.live);
        assert_eq!(p.target_duration, Duration::from_secs(4));
        assert_eq!(p.media_sequence, 17);
        assert_eq!(p.segments, vec!["seg17.ts", "seg18.ts"]);
        let vod = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4.0,\na.ts\n#EXT-X-ENDLIST\n";
        let Some(Summary::Media(p)) = parse(vod) else {
            panic!("media playlist")
        };
        assert!(!p.live);
    }

    #[test]
    fn master_playlists_list_variants() {
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2000000\nhigh/index.m3u8\n";
        assert_eq!(
            parse(master),
            Some(Summary::Master {
                variants: vec!["low/index.m3u8".into(), "high/index.m3u8".into()]
            })
        );
    }

    #[test]
    fn low_latency_tags() {
        let ll = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n#EXT-X-PART-INF:PART-TARGET=0.33334\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:4.0,\nseg5.mp4\n#EXT-X-PART:DURATION=0.33334,URI=\"seg6.part0.mp4\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33334,URI=\"seg6.part1.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg6.part2.mp4\"\n";
        let Some(Summary::Media(p)) = parse(ll) else {
            panic!("media playlist")
        };
        assert_eq!(p.parts, vec!["seg6.part0.mp4", "seg6.part1.mp4"]);
        assert_eq!(p.preload_hints, vec!["seg6.part2.mp4"]);
        assert_eq!(p.part_target, Some(Duration::from_secs_f64(0.33334)));
    }

    #[test]
    fn attribute_lists() {
        assert_eq!(
            attributes("TYPE=PART,URI=\"a,b.mp4\",BYTERANGE-START=100"),
            vec![
                ("TYPE".into(), "PART".into()),
                ("URI".into(), "a,b.mp4".into()),
                ("BYTERANGE-START".into(), "100".into())
            ]
        );
        assert!(attributes("").is_empty());
        assert_eq!(attributes("BROKEN"), vec![]);
        assert_eq!(
            attributes("URI=\"unterminated"),
            vec![("URI".into(), "unterminated".into())]
        );
    }

    #[test]
    fn garbage_is_not_a_playlist() {
        assert_eq!(parse(b"<html>"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0xff, 0xfe, 0x00]), None);
    }
}
