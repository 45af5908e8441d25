//! What the edge knows about video: which objects are playlists and
//! segments, what a playlist says, and the freshness rules that follow.

pub mod cmcd;
pub mod dash;
pub mod freshness;
pub mod hls;

use std::time::Duration;

use http::{header, HeaderMap};

use crate::cmsd::ObjectType;

/// A playlist or manifest the edge has read.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Hls(hls::Summary),
    Dash(dash::Manifest),
}

impl Document {
    /// Reads a fetched playlist body of kind `kind`, fetched at `now` (a
    /// live DASH manifest's newest segments depend on the time).
    pub fn read(kind: MediaKind, body: &[u8], now: std::time::SystemTime) -> Option<Self> {
        match kind {
            MediaKind::HlsPlaylist => hls::parse(body).map(Document::Hls),
            MediaKind::DashManifest => dash::parse(body, now.into()).map(Document::Dash),
            _ => None,
        }
    }

    /// For a live document, the longest it may be cached unless configured
    /// otherwise: half its target duration (half a part for low-latency HLS),
    /// or half the manifest's update period. `None` for VOD.
    pub fn live_cap(&self) -> Option<Duration> {
        match self {
            Document::Hls(hls::Summary::Media(p)) if p.live => Some(p.part_target.unwrap_or(p.target_duration) / 2),
            _ => self.live_period().map(|period| period / 2),
        }
    }

    /// For a live document, how often it moves on: an HLS playlist's target
    /// duration, a DASH manifest's update period (2 s when it names none).
    /// `None` for VOD.
    pub fn live_period(&self) -> Option<Duration> {
        match self {
            Document::Hls(hls::Summary::Media(p)) if p.live => Some(p.target_duration),
            Document::Dash(m) if m.live => Some(m.update_period.unwrap_or(Duration::from_secs(2))),
            _ => None,
        }
    }
}

/// A segment URL with the last run of digits in its file stem (the segment
/// number or time) replaced: the same for every segment of one rendition.
pub fn rendition_of(url: &str) -> String {
    match split_number(url) {
        Some((rendition, _)) => rendition,
        None => url[..query_start(url)].to_owned(),
    }
}

/// A segment URL's rendition (see [`rendition_of`]) and its number: the
/// last run of digits in its file stem. `None` when the stem has no digits
/// or the number is too long for a u64.
pub fn numbered(url: &str) -> Option<(String, u64)> {
    let (rendition, digits) = split_number(url)?;
    Some((rendition, digits.parse().ok()?))
}

/// The rendition and the digits it replaced.
fn split_number(url: &str) -> Option<(String, &str)> {
    // Byte scans: this runs on segment requests. Every byte searched for is
    // ASCII, so each cut falls between characters.
    let path = &url[..query_start(url)];
    let bytes = path.as_bytes();
    let name_at = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let stem_end = bytes[name_at..]
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(bytes.len(), |i| name_at + i);
    let last = bytes[name_at..stem_end]
        .iter()
        .rposition(u8::is_ascii_digit)
        .map(|i| name_at + i)?;
    let first = bytes[..last]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let rendition = [&path[..first], "#", &path[last + 1..]].concat();
    Some((rendition, &path[first..=last]))
}

fn query_start(url: &str) -> usize {
    url.bytes().position(|b| b == b'?' || b == b'\n').unwrap_or(url.len())
}

/// What an object is, for video purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An HLS playlist (master or media).
    HlsPlaylist,
    /// A DASH manifest.
    DashManifest,
    /// A media segment, part or init section.
    Segment,
    Other,
}

impl MediaKind {
    pub fn is_playlist(self) -> bool {
        matches!(self, MediaKind::HlsPlaylist | MediaKind::DashManifest)
    }
}

const HLS_TYPES: [&str; 4] = [
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
];
const SEGMENT_EXTENSIONS: [&str; 14] = [
    "ts", "m4s", "mp4", "m4a", "m4v", "aac", "mp3", "ac3", "ec3", "vtt", "webvtt", "cmfv", "cmfa", "webm",
];

/// Classifies an object by its path's extension, else by the origin's
/// `CMSD-Static` object type (CTA-5006 `ot`), else by its `Content-Type`.
pub fn kind_of(path: &str, headers: &HeaderMap) -> MediaKind {
    if let Some(kind) = kind_by_path(path) {
        return kind;
    }
    let by_type = kind_by_content_type(headers);
    match crate::cmsd::object_type(headers) {
        Some(ObjectType::Media) => MediaKind::Segment,
        // A manifest of either format: its type says which, HLS if it does not.
        Some(ObjectType::Manifest) if by_type == MediaKind::DashManifest => MediaKind::DashManifest,
        Some(ObjectType::Manifest) => MediaKind::HlsPlaylist,
        None => by_type,
    }
}

fn kind_by_content_type(headers: &HeaderMap) -> MediaKind {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .unwrap_or_default();
    let is = |known: &str| content_type.eq_ignore_ascii_case(known);
    let starts = |prefix: &str| {
        content_type
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if HLS_TYPES.iter().any(|known| is(known)) {
        MediaKind::HlsPlaylist
    } else if is("application/dash+xml") {
        MediaKind::DashManifest
    } else if starts("video/") || starts("audio/") {
        MediaKind::Segment
    } else {
        MediaKind::Other
    }
}

/// Classifies an object by its path's extension alone: `None` when the
/// extension is not one the edge knows.
pub fn kind_by_path(path: &str) -> Option<MediaKind> {
    // Runs on every request: byte scans (the path is ASCII up to its query)
    // and comparisons in place, without lower-cased copies.
    let bytes = path.as_bytes();
    let end = bytes.iter().position(|&b| b == b'?').unwrap_or(bytes.len());
    let name = bytes[..end].iter().rposition(|&b| b == b'/').map_or(0, |at| at + 1);
    let dot = name + bytes[name..end].iter().rposition(|&b| b == b'.')?;
    let ext = &bytes[dot + 1..end];
    let is = |known: &str| ext.eq_ignore_ascii_case(known.as_bytes());
    if is("m3u8") || is("m3u") {
        Some(MediaKind::HlsPlaylist)
    } else if is("mpd") {
        Some(MediaKind::DashManifest)
    } else if SEGMENT_EXTENSIONS.iter().any(|known| is(known)) {
        Some(MediaKind::Segment)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renditions_ignore_only_the_segment_number() {
        assert_eq!(
            rendition_of("http://o/v/720p/seg-00123.m4s"),
            "http://o/v/720p/seg-#.m4s"
        );
        assert_eq!(
            rendition_of("http://o/v/720p/seg-124.m4s?x=1"),
            "http://o/v/720p/seg-#.m4s"
        );
        assert_ne!(
            rendition_of("http://o/v/720p/seg-1.m4s"),
            rendition_of("http://o/v/1080p/seg-1.m4s")
        );
        assert_eq!(rendition_of("http://o/v/init.mp4"), "http://o/v/init.mp4");
        // A multi-byte character just before the number is kept whole.
        assert_eq!(rendition_of("http://o/v/é12.ts"), "http://o/v/é#.ts");
        assert_eq!(rendition_of("http://o/v/12"), "http://o/v/#");
        assert_eq!(rendition_of("http://o/v1.d/seg.ts"), "http://o/v1.d/seg.ts");
        assert_eq!(
            numbered("http://o/v/720p/seg-00123.m4s?x=1"),
            Some(("http://o/v/720p/seg-#.m4s".to_owned(), 123))
        );
        assert_eq!(numbered("http://o/v/init.mp4"), None);
        assert_eq!(numbered("http://o/v/s99999999999999999999999.ts"), None);
        assert_eq!(
            rendition_of("http://o/v1/chunk-stream0-00042.m4s"),
            "http://o/v1/chunk-stream0-#.m4s"
        );
        assert_eq!(rendition_of("abc"), "abc");
    }

    #[test]
    fn kinds_by_extension_then_type() {
        let none = HeaderMap::new();
        let typed = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, t.parse().unwrap());
            h
        };
        let cases = [
            ("/live/index.m3u8", &none, MediaKind::HlsPlaylist),
            ("/live/index.M3U8?token=1", &none, MediaKind::HlsPlaylist),
            ("/dash/manifest.mpd", &none, MediaKind::DashManifest),
            ("/live/seg-12.ts", &none, MediaKind::Segment),
            ("/v/chunk.m4s", &none, MediaKind::Segment),
            ("/play", &typed("application/vnd.apple.mpegurl"), MediaKind::HlsPlaylist),
            ("/play", &typed("audio/mpegurl; charset=utf-8"), MediaKind::HlsPlaylist),
            ("/manifest", &typed("application/dash+xml"), MediaKind::DashManifest),
            ("/s/1", &typed("video/mp2t"), MediaKind::Segment),
            ("/index.html", &typed("text/html"), MediaKind::Other),
            ("/a.d/file", &none, MediaKind::Other),
            ("/live/SEG-13.TS", &none, MediaKind::Segment),
            ("/live/index?next=a/b.ts", &none, MediaKind::Other),
            ("/s/2", &typed("Video/MP2T"), MediaKind::Segment),
            ("/s/3", &typed("vid"), MediaKind::Other),
            ("/s/4", &typed("vidéo/x"), MediaKind::Other),
        ];
        for (path, headers, want) in cases {
            assert_eq!(kind_of(path, headers), want, "{path}");
        }
        // CTA-5006: the origin's CMSD-Static says what the path cannot.
        let cmsd = |value: &str, content_type: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert("cmsd-static", value.parse().unwrap());
            if let Some(t) = content_type {
                h.insert(header::CONTENT_TYPE, t.parse().unwrap());
            }
            h
        };
        let cases = [
            ("/play", cmsd("ot=m,sf=h,st=l", None), MediaKind::HlsPlaylist),
            (
                "/play",
                cmsd("st=v, ot=m", Some("application/dash+xml")),
                MediaKind::DashManifest,
            ),
            (
                "/object",
                cmsd("ot=v,br=3200", Some("application/octet-stream")),
                MediaKind::Segment,
            ),
            ("/object", cmsd("ot=av", None), MediaKind::Segment),
            ("/object", cmsd("ot=i", None), MediaKind::Segment),
            ("/object", cmsd("ot=o", Some("text/html")), MediaKind::Other),
            // The path still comes first.
            ("/live/index.m3u8", cmsd("ot=v", None), MediaKind::HlsPlaylist),
        ];
        for (path, headers, want) in cases {
            assert_eq!(kind_of(path, &headers), want, "{path} {headers:?}");
        }
    }

    #[test]
    fn kind_by_path_reads_only_the_last_segments_extension() {
        let cases = [
            ("/live/seg-12.ts", Some(MediaKind::Segment)),
            ("/live/seg.ts?next=a.m3u8", Some(MediaKind::Segment)),
            ("/café/seg.M4S", Some(MediaKind::Segment)),
            ("/live/.m3u8", Some(MediaKind::HlsPlaylist)),
            ("/d/m.mpd?x=1", Some(MediaKind::DashManifest)),
            ("/live/seg.ts.bak", None),
            ("/a.ts/file", None),
            ("/s/1", None),
            ("/index?x=seg.ts", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(kind_by_path(path), want, "{path}");
        }
    }
}
