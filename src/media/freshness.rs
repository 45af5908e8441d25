//! Freshness for video objects, on top of the RFC 9111 rules: live playlists
//! are cached briefly whatever the origin says, segments without caching
//! headers get a default lifetime, and a 404 for a segment (published a
//! moment later on a live stream) is kept only a fraction of a second.

use std::time::Duration;

use http::{header, HeaderMap, StatusCode};

use super::{Document, MediaKind};
use crate::cache::Disposition;
use crate::config::MediaConfig;
use crate::headers::cache_directives;

/// Whether the origin said anything about freshness (RFC 9111 §4.2.1, §5.2.2.4).
pub fn origin_spoke(headers: &HeaderMap) -> bool {
    headers.contains_key(header::EXPIRES)
        || cache_directives(headers).any(|(name, _)| matches!(name.as_str(), "max-age" | "s-maxage" | "no-cache"))
}

/// The disposition of a video object once its head is in. `judged` is what
/// the RFC rules gave; private and oversized answers stay as they are.
pub fn at_head(
    kind: MediaKind,
    status: StatusCode,
    headers: &HeaderMap,
    judged: Disposition,
    media: &MediaConfig,
) -> Disposition {
    if matches!(judged, Disposition::Private | Disposition::TooLarge) || origin_spoke(headers) {
        return judged;
    }
    let ttl = match (kind, status) {
        (MediaKind::Segment, StatusCode::OK) => media.segment_default_ttl,
        (MediaKind::Segment, StatusCode::NOT_FOUND) => media.negative_ttl,
        // Provisional: a live playlist's lifetime is set once its body is read.
        (k, StatusCode::OK) if k.is_playlist() => media.segment_default_ttl,
        _ => return judged,
    };
    Disposition::Store { ttl }
}

/// The lifetime of a playlist once read: a live one is kept at most
/// `media.playlist_max_ttl`, by default its own cap (see `Document::live_cap`);
/// a VOD one keeps `ttl` from its head.
pub fn playlist_ttl(document: &Document, ttl: Duration, origin_spoke: bool, media: &MediaConfig) -> Duration {
    let Some(own_cap) = document.live_cap() else {
        return ttl;
    };
    let cap = media.playlist_max_ttl.unwrap_or(own_cap);
    if origin_spoke {
        ttl.min(cap)
    } else {
        cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media() -> MediaConfig {
        crate::config::Config::from_toml("").unwrap().media
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    fn live(target: u64, part: Option<f64>) -> Document {
        Document::Hls(crate::media::hls::Summary::Media(crate::media::hls::MediaPlaylist {
            live: true,
            target_duration: Duration::from_secs(target),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: vec![],
            parts: vec![],
            preload_hints: vec![],
            part_target: part.map(Duration::from_secs_f64),
        }))
    }

    #[test]
    fn defaults_apply_only_when_the_origin_is_silent() {
        let m = media();
        let none = HeaderMap::new();
        let store = |s: u64| Disposition::Store {
            ttl: Duration::from_secs(s),
        };
        let cases = [
            (
                MediaKind::Segment,
                200,
                &none,
                Disposition::Share,
                Disposition::Store {
                    ttl: m.segment_default_ttl,
                },
            ),
            (
                MediaKind::Segment,
                404,
                &none,
                Disposition::Share,
                Disposition::Store { ttl: m.negative_ttl },
            ),
            (
                MediaKind::HlsPlaylist,
                200,
                &none,
                Disposition::Share,
                Disposition::Store {
                    ttl: m.segment_default_ttl,
                },
            ),
            (MediaKind::Segment, 500, &none, Disposition::Share, Disposition::Share),
            (MediaKind::Other, 200, &none, Disposition::Share, Disposition::Share),
            (
                MediaKind::Segment,
                200,
                &none,
                Disposition::Private,
                Disposition::Private,
            ),
            (
                MediaKind::Segment,
                200,
                &none,
                Disposition::TooLarge,
                Disposition::TooLarge,
            ),
        ];
        for (kind, status, h, judged, want) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(at_head(kind, status, h, judged, &m), want, "{kind:?} {status}");
        }
        let spoke = headers(&[("cache-control", "max-age=5")]);
        assert_eq!(
            at_head(MediaKind::Segment, StatusCode::OK, &spoke, store(5), &m),
            store(5)
        );
        let no_cache = headers(&[("cache-control", "no-cache")]);
        assert_eq!(
            at_head(
                MediaKind::HlsPlaylist,
                StatusCode::OK,
                &no_cache,
                Disposition::Share,
                &m
            ),
            Disposition::Share
        );
    }

    #[test]
    fn live_playlists_are_capped() {
        let mut m = media();
        let long = Duration::from_secs(60);
        assert_eq!(playlist_ttl(&live(6, None), long, true, &m), Duration::from_secs(3));
        assert_eq!(
            playlist_ttl(&live(6, None), Duration::from_secs(1), true, &m),
            Duration::from_secs(1)
        );
        assert_eq!(
            playlist_ttl(&live(6, None), long, false, &m),
            Duration::from_secs(3),
            "silent origin: the cap"
        );
        assert_eq!(
            playlist_ttl(&live(4, Some(1.0)), long, true, &m),
            Duration::from_millis(500),
            "low latency: half a part"
        );
        let vod = Document::Hls(crate::media::hls::Summary::Master { variants: vec![] });
        assert_eq!(playlist_ttl(&vod, long, true, &m), long);
        let dash = Document::Dash(crate::media::dash::Manifest {
            live: true,
            update_period: Some(Duration::from_secs(4)),
            newest: vec![],
        });
        assert_eq!(
            playlist_ttl(&dash, long, true, &m),
            Duration::from_secs(2),
            "DASH: half the update period"
        );
        m.playlist_max_ttl = Some(Duration::from_millis(700));
        assert_eq!(playlist_ttl(&live(6, None), long, true, &m), Duration::from_millis(700));
    }
}
