//! HTTP(S) announce: URL building and response parsing.

use super::{AnnounceRequest, AnnounceResponse, TrackerError};

/// The full announce URL: `base` plus `info_hash`, `peer_id` (binary, percent-encoded), `port`,
/// `uploaded`, `downloaded`, `left`, `compact=1`, `event`, `numwant`, `key`. Keeps any query
/// `base` already has.
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    let _ = (base, req);
    todo!()
}

/// Parses a bencoded response: compact and dictionary `peers`, `peers6`, `failure reason`,
/// `warning message`, `interval`, `min interval`, `complete`, `incomplete`, `tracker id`.
pub fn parse_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let _ = body;
    todo!()
}

/// Percent-encodes every byte outside the URL-unreserved set.
pub fn percent_encode(bytes: &[u8]) -> String {
    let _ = bytes;
    todo!()
}
