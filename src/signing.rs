//! Signed URLs (`[routes.signing]`), in the manner of the large CDNs' token
//! auth: a token names an expiry and, optionally, a path prefix (an ACL),
//! and carries an HMAC-SHA256 of both under one of the route's keys.
//!
//! Token text: `exp=<unix seconds>[~acl=<path>]~hmac=<hex>`, in the query
//! argument or the cookie named by `param` (`token` by default).
//!
//! - Without `acl`, the HMAC is of `exp=<exp>~url=<request path>`: the token
//!   is good for that one path.
//! - With `acl`, the HMAC is of `exp=<exp>~acl=<acl>`, and the token is good
//!   for every path the ACL covers: a prefix ending in `*`, or a playlist
//!   (`.m3u8`, `.mpd`), which covers its folder: one token per stream, the
//!   way players append the playlist's token to its segments.
//!
//! The token is checked before anything else is done for a request, and it
//! is neither in the cache key nor sent to the origin.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use ring::hmac;

use crate::config::SigningConfig;

/// Why a request was refused: the short reason its 403 gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    /// No key of the route's signed it (tampered, or an unknown key).
    Signature,
    Expired,
    /// Signed for another path.
    NotCovered,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "this URL must be signed: no token",
            Denied::Malformed => "the token is malformed",
            Denied::Signature => "the token's signature does not match",
            Denied::Expired => "the token has expired",
            Denied::NotCovered => "the token is for another path",
        }
    }
}

/// Whether a request for `path` (as the client sent it, without the query)
/// carries a valid token, in `query` or in its cookies, at `now` (unix seconds).
pub fn check(
    signing: &SigningConfig,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    now: u64,
) -> Result<(), Denied> {
    let token = query
        .and_then(|q| query_value(q, &signing.param))
        .or_else(|| cookie_value(headers, &signing.param))
        .ok_or(Denied::Missing)?;
    let token = Token::parse(&token).ok_or(Denied::Malformed)?;
    let message = token.message(path);
    let signed = signing.keys.iter().any(|key| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
        hmac::verify(&key, message.as_bytes(), &token.mac).is_ok()
    });
    if !signed {
        return Err(Denied::Signature);
    }
    if now > token.exp {
        return Err(Denied::Expired);
    }
    match token.acl {
        Some(acl) if !covers(acl, path) => Err(Denied::NotCovered),
        _ => Ok(()),
    }
}

/// A token for `path` alone, or for what `acl` covers, until `exp`; signed
/// with `key` (the route's first).
pub fn sign(key: &str, exp: u64, acl: Option<&str>, path: &str) -> String {
    let token = Token {
        exp,
        acl,
        mac: Vec::new(),
    };
    let message = token.message(path);
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let mac = hmac::sign(&key, message.as_bytes());
    let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    match acl {
        Some(acl) => format!("exp={exp}~acl={acl}~hmac={hex}"),
        None => format!("exp={exp}~hmac={hex}"),
    }
}

/// `path_and_query` without the `param` argument: what the cache key and the
/// origin see.
pub fn without_token<'a>(path_and_query: Cow<'a, str>, param: &str) -> Cow<'a, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query;
    };
    if !query.split('&').any(|pair| is_param(pair, param)) {
        return path_and_query;
    }
    let kept: Vec<&str> = query.split('&').filter(|pair| !is_param(pair, param)).collect();
    match kept.is_empty() {
        true => Cow::Owned(path.to_owned()),
        false => Cow::Owned(format!("{path}?{}", kept.join("&"))),
    }
}

/// Drops the `param` cookie from `Cookie` headers sent upstream.
pub fn strip_cookie(headers: &mut HeaderMap, param: &str) {
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    headers.remove(header::COOKIE);
    for value in values {
        let Ok(text) = value.to_str() else {
            headers.append(header::COOKIE, value);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.is_empty() && !is_param(pair, param))
            .collect();
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            if !kept.is_empty() {
                headers.append(header::COOKIE, v);
            }
        }
    }
}

fn is_param(pair: &str, param: &str) -> bool {
    pair.split_once('=').map_or(pair, |(name, _)| name) == param
}

fn query_value(query: &str, param: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == param).then(|| decode(value))
    })
}

fn cookie_value(headers: &HeaderMap, param: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == param).then(|| decode(value.trim_matches('"')))
        })
}

fn decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// A token's fields.
struct Token<'a> {
    exp: u64,
    acl: Option<&'a str>,
    mac: Vec<u8>,
}

impl<'a> Token<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let (fields, hex) = text.rsplit_once("~hmac=")?;
        let rest = fields.strip_prefix("exp=")?;
        let (exp, acl) = match rest.split_once("~acl=") {
            Some((exp, acl)) if !acl.is_empty() => (exp, Some(acl)),
            Some(_) => return None,
            None => (rest, None),
        };
        if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) || hex.len() != 64 {
            return None;
        }
        let mac = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(Self {
            exp: exp.parse().ok()?,
            acl,
            mac,
        })
    }

    /// What the HMAC is of.
    fn message(&self, path: &str) -> String {
        match self.acl {
            Some(acl) => format!("exp={}~acl={acl}", self.exp),
            None => format!("exp={}~url={path}", self.exp),
        }
    }
}

/// Whether `acl` covers `path`: a prefix ending in `*`, a playlist's folder,
/// or that one path.
fn covers(acl: &str, path: &str) -> bool {
    if let Some(prefix) = acl.strip_suffix('*') {
        return path.starts_with(prefix);
    }
    let playlist = [".m3u8", ".mpd"].iter().any(|ext| acl.ends_with(ext));
    match acl.rsplit_once('/') {
        Some((folder, _)) if playlist => path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/')),
        _ => path == acl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "first-key-of-16-bytes";
    const OLD: &str = "older-key-of-16-bytes";
    const NOW: u64 = 1_800_000_000;

    fn config(keys: &[&str]) -> SigningConfig {
        SigningConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            param: "token".into(),
        }
    }

    fn in_query(token: &str) -> String {
        format!("a=1&token={token}")
    }

    fn verdict(keys: &[&str], path: &str, token: &str, now: u64) -> Result<(), Denied> {
        check(&config(keys), path, Some(&in_query(token)), &HeaderMap::new(), now)
    }

    #[test]
    fn tokens_are_judged() {
        let exact = sign(KEY, NOW + 60, None, "/live/a.m3u8");
        let stream = sign(KEY, NOW + 60, Some("/live/s1/index.m3u8"), "");
        let prefix = sign(KEY, NOW + 60, Some("/vod/*"), "");
        let old = sign(OLD, NOW + 60, None, "/x.ts");
        type Case<'a> = (&'a [&'a str], &'a str, &'a str, Result<(), Denied>);
        let cases: &[Case] = &[
            (&[KEY], "/live/a.m3u8", &exact, Ok(())),
            (&[KEY], "/live/b.m3u8", &exact, Err(Denied::Signature)),
            (&[OLD], "/live/a.m3u8", &exact, Err(Denied::Signature)),
            // Rotation: the old key still verifies while listed.
            (&[KEY, OLD], "/x.ts", &old, Ok(())),
            (&[KEY], "/x.ts", &old, Err(Denied::Signature)),
            (&[KEY], "/live/s1/index.m3u8", &stream, Ok(())),
            (&[KEY], "/live/s1/seg-7.ts", &stream, Ok(())),
            (&[KEY], "/live/s1/720p/seg-7.ts", &stream, Ok(())),
            (&[KEY], "/live/s10/seg-7.ts", &stream, Err(Denied::NotCovered)),
            (&[KEY], "/live/s2/seg-7.ts", &stream, Err(Denied::NotCovered)),
            (&[KEY], "/vod/film/seg-1.ts", &prefix, Ok(())),
            (&[KEY], "/live/x.ts", &prefix, Err(Denied::NotCovered)),
            (&[KEY], "/live/a.m3u8", "", Err(Denied::Malformed)),
            (&[KEY], "/live/a.m3u8", "exp=1~hmac=zz", Err(Denied::Malformed)),
            (&[KEY], "/live/a.m3u8", "exp=~hmac=", Err(Denied::Malformed)),
        ];
        for (keys, path, token, want) in cases {
            assert_eq!(verdict(keys, path, token, NOW), *want, "{path} with {token}");
        }
    }

    #[test]
    fn an_expired_token_is_refused_and_a_tampered_expiry_breaks_the_signature() {
        let token = sign(KEY, NOW - 1, None, "/a.ts");
        assert_eq!(verdict(&[KEY], "/a.ts", &token, NOW), Err(Denied::Expired));
        let extended = token.replacen(&format!("exp={}", NOW - 1), &format!("exp={}", NOW + 3600), 1);
        assert_eq!(verdict(&[KEY], "/a.ts", &extended, NOW), Err(Denied::Signature));
        let widened = sign(KEY, NOW + 60, Some("/live/s1/*"), "").replace("/live/s1/*", "/*");
        assert_eq!(verdict(&[KEY], "/other.ts", &widened, NOW), Err(Denied::Signature));
    }

    #[test]
    fn the_token_may_come_in_a_cookie_or_percent_encoded() {
        let token = sign(KEY, NOW + 60, Some("/live/*"), "");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; token={token}").parse().unwrap());
        assert_eq!(check(&config(&[KEY]), "/live/x.ts", None, &headers, NOW), Ok(()));
        let encoded = token.replace('=', "%3D").replace('/', "%2F").replace('~', "%7E");
        assert_eq!(verdict(&[KEY], "/live/x.ts", &encoded, NOW), Ok(()));
        assert_eq!(
            check(&config(&[KEY]), "/live/x.ts", Some("a=1"), &HeaderMap::new(), NOW),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn the_token_leaves_the_query_and_the_cookies() {
        let cases = [
            ("/a.ts?token=x", "/a.ts"),
            ("/a.ts?a=1&token=x&b=2", "/a.ts?a=1&b=2"),
            ("/a.ts?a=1", "/a.ts?a=1"),
            ("/a.ts?tokens=1", "/a.ts?tokens=1"),
            ("/a.ts", "/a.ts"),
        ];
        for (given, want) in cases {
            assert_eq!(without_token(Cow::Borrowed(given), "token"), want, "{given}");
        }
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; token=x; b=2".parse().unwrap());
        headers.append(header::COOKIE, "token=y".parse().unwrap());
        strip_cookie(&mut headers, "token");
        let left: Vec<&str> = headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1; b=2"]);
    }
}
