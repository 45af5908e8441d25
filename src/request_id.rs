//! Request ids, as in `X-Request-Id` and the logs.

/// A request's id, as in `X-Request-Id` and the logs: this edge's start time
/// and a counter (`5f3e2a1b-2c`). Kept as numbers and written out only where
/// it is shown.
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    prefix: u32,
    n: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}-{:x}", self.prefix, self.n)
    }
}

impl RequestId {
    /// The id made of `prefix` and `n`, as `Edge::next_request_id` makes them.
    pub const fn new(prefix: u32, n: u64) -> Self {
        Self { prefix, n }
    }

    /// The id as an `X-Request-Id` value: the same text as `Display`.
    ///
    /// Marked sensitive, which HTTP/2 sends as a literal never indexed
    /// (RFC 7541 §6.2.3): a value unique to one answer is otherwise added to
    /// the connection's HPACK table on every answer, evicting an entry each
    /// time. That churn cost 9% of the instructions of an HTTP/2 hit; the
    /// name, no longer in the table, costs about 8 bytes per answer.
    pub fn header_value(&self) -> http::HeaderValue {
        let mut value =
            self.with_text(|text| http::HeaderValue::from_bytes(text).expect("hex digits are a valid header value"));
        value.set_sensitive(true);
        value
    }

    /// Calls `with` on the id's text, written digit by digit rather than
    /// through the formatter, since this is done on every answer.
    pub fn with_text<T>(&self, with: impl FnOnce(&[u8]) -> T) -> T {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 8 + 1 + 16];
        for (i, slot) in text[..8].iter_mut().enumerate() {
            *slot = HEX[(self.prefix >> (28 - 4 * i) & 0xf) as usize];
        }
        text[8] = b'-';
        let digits = (64 - self.n.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, slot) in text[9..9 + digits].iter_mut().enumerate() {
            *slot = HEX[(self.n >> (4 * (digits - 1 - i)) & 0xf) as usize];
        }
        with(&text[..9 + digits])
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn the_header_value_is_the_displayed_id() {
        for (prefix, n) in [(0, 0), (0x5f3e2a1b, 0x2c), (1, 1), (u32::MAX, u64::MAX), (0xabc, 0x10)] {
            let id = RequestId { prefix, n };
            assert_eq!(id.header_value(), id.to_string().as_str(), "{prefix:x} {n:x}");
            // HTTP/2's encoder (h2) keeps a sensitive value out of its table.
            assert!(id.header_value().is_sensitive());
        }
    }
}
