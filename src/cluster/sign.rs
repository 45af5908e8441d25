//! Sibling requests are signed: an HMAC-SHA256 over the method, the path and
//! a timestamp, keyed with `cluster.secret`. A request without a valid
//! signature is an ordinary client request, whatever else it carries.

use ring::hmac;

/// The header a signed sibling request carries: `<unix seconds>.<hex HMAC>`.
pub const SIGNATURE: http::HeaderName = http::HeaderName::from_static("outpost-sibling");

/// How far a signature's timestamp may be from this member's clock, either
/// way: long enough for clock drift between members, short enough that a
/// captured request is soon worthless.
pub const WINDOW_SECS: u64 = 30;

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature is not `<seconds>.<hex>`")]
    Malformed,
    #[error("the signature's timestamp is outside the {WINDOW_SECS} s window")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Signs and checks sibling requests with the fleet's shared secret.
pub struct Signer {
    key: hmac::Key,
    /// This fleet's `CDN-Loop` token (RFC 8586): derived from the secret, so
    /// that fleets do not collide and the token does not reveal the secret.
    token: String,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, b"outpost cdn-loop token");
        let token = format!("outpost-{}", hex(&tag.as_ref()[..6]));
        Self { key, token }
    }

    /// The signature header's value for `method` and `path_and_query` at `now` (Unix seconds).
    pub fn sign(&self, method: &str, path_and_query: &str, now: u64) -> String {
        let tag = hmac::sign(&self.key, message(method, path_and_query, now).as_bytes());
        format!("{now}.{}", hex(tag.as_ref()))
    }

    /// Checks a signature header's value against the request it came with.
    pub fn verify(&self, value: &[u8], method: &str, path_and_query: &str, now: u64) -> Result<(), Refused> {
        let text = std::str::from_utf8(value).map_err(|_| Refused::Malformed)?;
        let (secs, sig) = text.split_once('.').ok_or(Refused::Malformed)?;
        let secs: u64 = secs.parse().map_err(|_| Refused::Malformed)?;
        let sig = unhex(sig).ok_or(Refused::Malformed)?;
        if secs.abs_diff(now) > WINDOW_SECS {
            return Err(Refused::Stale);
        }
        // `verify` compares in constant time.
        hmac::verify(&self.key, message(method, path_and_query, secs).as_bytes(), &sig).map_err(|_| Refused::Mismatch)
    }

    /// This fleet's `CDN-Loop` token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

fn message(method: &str, path_and_query: &str, secs: u64) -> String {
    format!("{method}\n{path_and_query}\n{secs}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    // A SHA-256 tag: 32 bytes.
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";
    const NOW: u64 = 1_796_000_000;

    #[test]
    fn a_signature_holds_for_its_request_within_the_window_only() {
        let signer = Signer::new(SECRET);
        let sig = signer.sign("GET", "/live/seg-1.ts", NOW);
        let ok = |value: &str, method: &str, path: &str, now: u64| signer.verify(value.as_bytes(), method, path, now);
        assert_eq!(ok(&sig, "GET", "/live/seg-1.ts", NOW), Ok(()));
        assert_eq!(ok(&sig, "GET", "/live/seg-1.ts", NOW + WINDOW_SECS), Ok(()));
        assert_eq!(ok(&sig, "GET", "/live/seg-1.ts", NOW - WINDOW_SECS), Ok(()));
        assert_eq!(
            ok(&sig, "GET", "/live/seg-1.ts", NOW + WINDOW_SECS + 1),
            Err(Refused::Stale)
        );
        assert_eq!(ok(&sig, "GET", "/live/seg-2.ts", NOW), Err(Refused::Mismatch));
        assert_eq!(ok(&sig, "POST", "/live/seg-1.ts", NOW), Err(Refused::Mismatch));
        assert_eq!(ok(&sig, "GET", "/live/seg-1.ts?x=1", NOW), Err(Refused::Mismatch));
        // Another fleet's secret.
        let other = Signer::new(b"fedcba9876543210");
        assert_eq!(
            other.verify(sig.as_bytes(), "GET", "/live/seg-1.ts", NOW),
            Err(Refused::Mismatch)
        );
        // A moved timestamp breaks the signature.
        let (_, tag) = sig.split_once('.').unwrap();
        let moved = format!("{}.{tag}", NOW + 1);
        assert_eq!(ok(&moved, "GET", "/live/seg-1.ts", NOW), Err(Refused::Mismatch));
    }

    #[test]
    fn malformed_signatures_are_refused_without_panicking() {
        let signer = Signer::new(SECRET);
        for bad in [
            "",
            ".",
            "abc",
            "1.",
            ".ab",
            "12.xyz",
            "12.abc",
            "-1.00",
            "1.é0",
            "99999999999999999999999.00",
        ] {
            assert_eq!(
                signer.verify(bad.as_bytes(), "GET", "/", NOW),
                Err(Refused::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            signer.verify(&[0xff, b'.', b'0'], "GET", "/", NOW),
            Err(Refused::Malformed)
        );
        // A tag of the wrong length, or not hex.
        assert_eq!(
            signer.verify(format!("{NOW}.00").as_bytes(), "GET", "/", NOW),
            Err(Refused::Malformed)
        );
        let not_hex = format!("{NOW}.{}", "zz".repeat(32));
        assert_eq!(
            signer.verify(not_hex.as_bytes(), "GET", "/", NOW),
            Err(Refused::Malformed)
        );
        let zeros = format!("{NOW}.{}", "00".repeat(32));
        assert_eq!(signer.verify(zeros.as_bytes(), "GET", "/", NOW), Err(Refused::Mismatch));
    }

    #[test]
    fn the_loop_token_names_the_fleet_without_the_secret() {
        let a = Signer::new(SECRET);
        assert_eq!(a.token(), Signer::new(SECRET).token());
        assert_ne!(a.token(), Signer::new(b"fedcba9876543210").token());
        assert!(a.token().starts_with("outpost-") && a.token().len() == "outpost-".len() + 12);
        assert!(!a.token().contains("0123456789abcdef"));
    }
}
