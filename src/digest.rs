//! Integrity digests (RFC 9530): the SHA-256 of every body the edge fills,
//! sent as `Repr-Digest`; the origin's own `Repr-Digest` or `Content-Digest`
//! checked against the bytes; and what a client's `Want-Repr-Digest` asks.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use ring::digest::{self, Context, SHA256, SHA512};

pub const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
pub const WANT_REPR_DIGEST: HeaderName = HeaderName::from_static("want-repr-digest");

/// The `Repr-Digest` value for a SHA-256 digest: `sha-256=:<base64>:`.
pub fn repr_digest(sha256: &[u8]) -> HeaderValue {
    let text = format!("sha-256=:{}:", STANDARD.encode(sha256));
    HeaderValue::from_str(&text).expect("base64 is a valid header value")
}

/// The SHA-256 in a `Repr-Digest` value the edge wrote, if it holds one.
pub fn sha256_of(value: &HeaderValue) -> Option<Vec<u8>> {
    parse(value.as_bytes())
        .into_iter()
        .find(|(name, _)| name == "sha-256")
        .map(|(_, digest)| digest)
}

/// A digest the origin sent, to check the body against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `repr-digest` or `content-digest`, for the error.
    pub field: &'static str,
    pub algorithm: &'static str,
    pub digest: Vec<u8>,
}

impl Expected {
    /// The strongest digest the edge can check among those in `headers`
    /// (`Repr-Digest` first, then `Content-Digest`; SHA-512, then SHA-256).
    /// Algorithms the edge does not know are ignored, as RFC 9530 §5 allows.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        for (name, field) in [(REPR_DIGEST, "repr-digest"), (CONTENT_DIGEST, "content-digest")] {
            let pairs: Vec<(String, Vec<u8>)> =
                headers.get_all(name).iter().flat_map(|v| parse(v.as_bytes())).collect();
            for algorithm in ["sha-512", "sha-256"] {
                if let Some((_, digest)) = pairs.iter().find(|(n, _)| n == algorithm) {
                    return Some(Self {
                        field,
                        algorithm,
                        digest: digest.clone(),
                    });
                }
            }
        }
        None
    }
}

/// Digests of a body as it streams in: SHA-256 always (what the edge sends),
/// and the origin's algorithm when it sent another to check.
pub struct Hasher {
    sha256: Context,
    other: Option<Context>,
}

impl Hasher {
    pub fn new(expected: Option<&Expected>) -> Self {
        let other = expected
            .filter(|e| e.algorithm == "sha-512")
            .map(|_| Context::new(&SHA512));
        Self {
            sha256: Context::new(&SHA256),
            other,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(other) = &mut self.other {
            other.update(data);
        }
    }

    /// The body's SHA-256, after checking it against `expected`: `Err` with
    /// what was computed when they differ.
    pub fn finish(self, expected: Option<&Expected>) -> Result<Vec<u8>, String> {
        let sha256 = self.sha256.finish().as_ref().to_vec();
        let Some(expected) = expected else {
            return Ok(sha256);
        };
        let computed = match self.other {
            Some(other) => other.finish().as_ref().to_vec(),
            None => sha256.clone(),
        };
        if computed == expected.digest {
            Ok(sha256)
        } else {
            Err(format!(
                "the body's {} is :{}:, its {} says :{}:",
                expected.algorithm,
                STANDARD.encode(&computed),
                expected.field,
                STANDARD.encode(&expected.digest)
            ))
        }
    }
}

/// The SHA-256 of each `size`-byte chunk of `body` (the last may be shorter), in hex.
pub fn chunk_digests(body: &[u8], size: usize) -> Vec<String> {
    body.chunks(size.max(1))
        .map(|chunk| hex(digest::digest(&SHA256, chunk).as_ref()))
        .collect()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Whether a request's `Want-Repr-Digest` (if any) lets the edge send its
/// SHA-256: unless it rates `sha-256` at 0, or names only other algorithms.
/// Without the field, the digest is sent unasked (RFC 9530 §4 allows it).
pub fn wanted(request: &HeaderMap) -> bool {
    let mut any = false;
    for value in request.get_all(WANT_REPR_DIGEST) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for member in text.split(',') {
            let Some((name, weight)) = member.split_once('=') else {
                continue;
            };
            any = true;
            if name.trim() == "sha-256" {
                return weight.trim().parse::<u8>().is_ok_and(|w| w > 0);
            }
        }
    }
    !any
}

/// The `name=:base64:` members of a digest field (an RFC 8941 dictionary of
/// byte sequences); members that are not byte sequences are skipped.
fn parse(value: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    text.split(',')
        .filter_map(|member| {
            let (name, rest) = member.split_once('=')?;
            let rest = rest.trim();
            // Parameters after the byte sequence (`;x=y`) are ignored.
            let bytes = rest.strip_prefix(':')?.split(':').next()?;
            let digest = STANDARD.decode(bytes).ok()?;
            Some((name.trim().to_ascii_lowercase(), digest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // `printf hello | sha256sum`, and its base64.
    const HELLO_HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_B64: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn the_edge_writes_and_reads_its_sha256() {
        let mut h = Hasher::new(None);
        h.update(b"hel");
        h.update(b"lo");
        let sha = h.finish(None).unwrap();
        assert_eq!(hex(&sha), HELLO_HEX);
        let value = repr_digest(&sha);
        assert_eq!(value, format!("sha-256=:{HELLO_B64}:").as_str());
        assert_eq!(sha256_of(&value), Some(sha));
    }

    #[test]
    fn an_origins_digest_is_checked_with_the_strongest_known_algorithm() {
        let sha512 = digest::digest(&SHA512, b"hello");
        let both = headers(&[(
            "repr-digest",
            &format!(
                "unknown=:AAAA:, sha-256=:{HELLO_B64}:, sha-512=:{}:",
                STANDARD.encode(sha512)
            ),
        )]);
        let expected = Expected::of(&both).unwrap();
        assert_eq!((expected.field, expected.algorithm), ("repr-digest", "sha-512"));
        let mut h = Hasher::new(Some(&expected));
        h.update(b"hello");
        assert_eq!(hex(&h.finish(Some(&expected)).unwrap()), HELLO_HEX);

        let content = headers(&[("content-digest", &format!("sha-256=:{HELLO_B64}:"))]);
        let expected = Expected::of(&content).unwrap();
        let mut h = Hasher::new(Some(&expected));
        h.update(b"hellO");
        let err = h.finish(Some(&expected)).unwrap_err();
        assert!(err.contains("content-digest") && err.contains(HELLO_B64), "{err}");

        assert_eq!(Expected::of(&headers(&[("repr-digest", "md5=:AAAA:")])), None);
        assert_eq!(Expected::of(&headers(&[("repr-digest", "sha-256=not-bytes")])), None);
        assert_eq!(Expected::of(&HeaderMap::new()), None);
    }

    #[test]
    fn want_repr_digest_is_honoured() {
        let cases = [
            (vec![], true),
            (vec!["sha-256=1"], true),
            (vec!["sha-512=3, sha-256=10"], true),
            (vec!["sha-256=0"], false),
            (vec!["sha-512=5"], false),
            (vec!["sha-512=5", "sha-256=2"], true),
            (vec!["garbage"], true),
        ];
        for (values, wanted_) in cases {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append(WANT_REPR_DIGEST, v.parse().unwrap());
            }
            assert_eq!(wanted(&h), wanted_, "{values:?}");
        }
    }

    #[test]
    fn chunks_are_digested_one_by_one() {
        let chunks = chunk_digests(b"hellohello!", 5);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0], HELLO_HEX);
        assert_eq!(chunks[0], chunks[1]);
        assert_eq!(chunks[2], hex(digest::digest(&SHA256, b"!").as_ref()));
        assert_eq!(chunk_digests(b"", 5), Vec::<String>::new());
    }
}
