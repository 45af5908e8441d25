//! DASH manifests, parsed with `dash-mpd-core`: whether one is live, and for
//! a live one the newest published segment of each representation, predicted
//! from its `SegmentTemplate` (`$Number$` or `$Time$`, ISO/IEC 23009-1 §5.3.9.4).

use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_mpd_core::{SegmentTemplate, MPD};

/// What the edge needs to know of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `type="dynamic"`: it will change.
    pub live: bool,
    /// How often it changes, for its cache lifetime.
    pub update_period: Option<Duration>,
    /// The newest published segment of each representation, relative to the manifest.
    pub newest: Vec<String>,
}

/// Parses a manifest; `None` when it is not one. `now` places duration-based
/// (`$Number$` without a timeline) segments on the clock.
pub fn parse(bytes: &[u8], now: DateTime<Utc>) -> Option<Manifest> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mpd: MPD = dash_mpd_core::parse(text).ok()?;
    let live = mpd.mpdtype.as_deref() == Some("dynamic");
    let mut newest = Vec::new();
    if live {
        let mpd_base = mpd.base_url.first().map(|b| b.base.clone()).unwrap_or_default();
        for period in &mpd.periods {
            let period_start = period.start.unwrap_or_default();
            let period_base = join(&mpd_base, period.BaseURL.first().map(|b| b.base.as_str()));
            for set in &period.adaptations {
                let set_base = join(&period_base, set.BaseURL.first().map(|b| b.base.as_str()));
                for rep in &set.representations {
                    let template = rep
                        .SegmentTemplate
                        .as_ref()
                        .or(set.SegmentTemplate.as_ref())
                        .or(period.SegmentTemplate.as_ref());
                    let Some(template) = template else { continue };
                    let base = join(&set_base, rep.BaseURL.first().map(|b| b.base.as_str()));
                    let started = mpd.availabilityStartTime.map(|t| t + period_start);
                    let id = rep.id.as_deref().unwrap_or_default();
                    if let Some(uri) = newest_segment(template, id, rep.bandwidth, started, now) {
                        newest.push(format!("{base}{uri}"));
                    }
                }
            }
        }
    }
    Some(Manifest {
        live,
        update_period: mpd.minimumUpdatePeriod.or(mpd.maxSegmentDuration),
        newest,
    })
}

fn join(base: &str, next: Option<&str>) -> String {
    match next {
        Some(n) if n.contains("://") || n.starts_with('/') => n.to_owned(),
        Some(n) => format!("{base}{n}"),
        None => base.to_owned(),
    }
}

/// The newest published segment of one representation.
fn newest_segment(
    template: &SegmentTemplate,
    id: &str,
    bandwidth: Option<u64>,
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<String> {
    let media = template.media.as_deref()?;
    let start_number = template.startNumber.unwrap_or(1);
    if let Some(timeline) = &template.SegmentTimeline {
        // Walk the timeline: the last entry (after its repeats) is the newest segment.
        let mut time = 0u64;
        let mut number = start_number;
        let mut last = None;
        for s in &timeline.segments {
            if let Some(t) = s.t {
                time = t;
            }
            let repeats = s.r.unwrap_or(0).max(0) as u64;
            for _ in 0..=repeats.min(100_000) {
                last = Some((time, number));
                time = time.checked_add(s.d)?;
                number += 1;
            }
        }
        let (time, number) = last?;
        return Some(fill_template(media, id, bandwidth, Some(number), Some(time)));
    }
    // Duration-based numbering: count whole segments since availability start.
    let timescale = template.timescale.unwrap_or(1).max(1) as f64;
    let seconds = template.duration? / timescale;
    if !(seconds.is_finite() && seconds > 0.0) {
        return None;
    }
    let elapsed = (now - started?).to_std().ok()?.as_secs_f64();
    let complete = (elapsed / seconds).floor() as u64;
    let number = start_number + complete.checked_sub(1)?;
    Some(fill_template(media, id, bandwidth, Some(number), None))
}

/// Substitutes `$RepresentationID$`, `$Bandwidth$`, `$Number$`, `$Time$` (with
/// optional `%0Nd` widths) and `$$`.
pub fn fill_template(media: &str, id: &str, bandwidth: Option<u64>, number: Option<u64>, time: Option<u64>) -> String {
    let mut out = String::with_capacity(media.len() + 16);
    let mut rest = media;
    while let Some(open) = rest.find('$') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('$') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let token = &after[..close];
        let (name, width) = match token.split_once('%') {
            Some((n, fmt)) => (
                n,
                fmt.trim_start_matches('0').trim_end_matches('d').parse::<usize>().ok(),
            ),
            None => (token, None),
        };
        let value = match name {
            "" => Some("$".to_owned()),
            "RepresentationID" => Some(id.to_owned()),
            "Bandwidth" => bandwidth.map(|b| b.to_string()),
            "Number" => number.map(|n| n.to_string()),
            "Time" => time.map(|t| t.to_string()),
            _ => None,
        };
        match value {
            Some(v) => match width {
                Some(w) => out.push_str(&format!("{v:0>w$}")),
                None => out.push_str(&v),
            },
            None => {
                out.push('$');
                out.push_str(token);
                out.push('$');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMELINE: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT2S" availabilityStartTime="2024-01-01T00:00:00Z" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="1" start="PT0S">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="1000" media="$RepresentationID$/t-$Time$.m4s" initialization="$RepresentationID$/init.mp4">
        <SegmentTimeline><S t="10000" d="2000" r="2"/><S d="1000"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="720p" bandwidth="2000000"/>
      <Representation id="360p" bandwidth="600000"/>
    </AdaptationSet>
  </Period>
</MPD>"#;

    const NUMBERED: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2024-01-01T00:00:00Z" maxSegmentDuration="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="1" start="PT0S">
    <AdaptationSet mimeType="video/mp4">
      <Representation id="v1" bandwidth="1000000">
        <SegmentTemplate timescale="1" duration="2" startNumber="1" media="v1/seg-$Number%05d$.m4s"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::seconds(secs)
    }

    #[test]
    fn timeline_gives_the_last_listed_segment() {
        let m = parse(TIMELINE.as_bytes(), at(100)).unwrap();
        assert!(m.live);
        assert_eq!(m.update_period, Some(Duration::from_secs(2)));
        // t=10000,12000,14000 (r=2), then 16000.
        assert_eq!(m.newest, vec!["720p/t-16000.m4s", "360p/t-16000.m4s"]);
    }

    #[test]
    fn numbered_segments_follow_the_clock() {
        let m = parse(NUMBERED.as_bytes(), at(9)).unwrap();
        // 4 whole 2 s segments have been published by t=9 s: numbers 1..=4.
        assert_eq!(m.newest, vec!["v1/seg-00004.m4s"]);
        assert_eq!(parse(NUMBERED.as_bytes(), at(1)).unwrap().newest, Vec::<String>::new());
    }

    #[test]
    fn static_manifests_predict_nothing() {
        let vod = NUMBERED.replace("type=\"dynamic\"", "type=\"static\"");
        let m = parse(vod.as_bytes(), at(9)).unwrap();
        assert!(!m.live && m.newest.is_empty());
        assert_eq!(parse(b"not xml", at(0)), None);
    }

    #[test]
    fn templates() {
        assert_eq!(
            fill_template("$RepresentationID$/$Number%03d$.m4s", "a", None, Some(7), None),
            "a/007.m4s"
        );
        assert_eq!(
            fill_template("b$Bandwidth$-$Time$$$x", "", Some(800), None, Some(9)),
            "b800-9$x"
        );
        assert_eq!(
            fill_template("keep-$Unknown$-$open", "", None, None, None),
            "keep-$Unknown$-$open"
        );
    }
}
