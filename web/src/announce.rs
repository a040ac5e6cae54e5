//! Announces through the bridge: the page cannot reach trackers itself (no UDP, no CORS), so
//! the bridge's `/announce` performs them from structured parameters and answers in JSON.

use crate::js::{err_text, get, global};
use js_sys::Array;
use protocol::tracker::http::percent_encode;
use protocol::tracker::{AnnounceEvent, AnnounceResponse, TrackerError, MAX_PEERS_PER_RESPONSE};
use protocol::{InfoHash, PeerId};
use std::net::SocketAddr;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

/// We accept no incoming connections, but trackers want a port; 6881 is what they expect.
pub const ANNOUNCE_PORT: u16 = 6881;
pub const NUMWANT: u32 = 80;

pub struct Query<'a> {
    pub tracker: &'a str,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<AnnounceEvent>,
}

/// Why an announce failed; `bridge` says, in words, why the bridge itself did not answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: TrackerError,
    pub bridge: Option<String>,
}

/// The bridge's `/announce` path and query for `q`.
pub fn path(q: &Query) -> String {
    let event = match q.event {
        Some(AnnounceEvent::Started) => "&event=started",
        Some(AnnounceEvent::Completed) => "&event=completed",
        Some(AnnounceEvent::Stopped) => "&event=stopped",
        None => "",
    };
    format!(
        "/announce?url={}&info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}{}&numwant={}",
        percent_encode(q.tracker.as_bytes()),
        q.info_hash.to_hex(),
        hex(&q.peer_id.0),
        ANNOUNCE_PORT,
        q.uploaded,
        q.downloaded,
        q.left,
        event,
        NUMWANT,
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Performs one announce through the bridge.
pub async fn announce(path: String) -> Result<AnnounceResponse, Failure> {
    let bridge = |msg: String| Failure {
        error: TrackerError::Io(msg.clone()),
        bridge: Some(msg),
    };
    let resp = JsFuture::from(global().fetch_with_str(&path))
        .await
        .map_err(|e| bridge(err_text(&e)))?;
    let resp: Response = resp
        .dyn_into()
        .map_err(|_| bridge("fetch returned no response".into()))?;
    let status = resp.status();
    let json = match resp.json() {
        Ok(p) => JsFuture::from(p).await.ok(),
        Err(_) => None,
    };
    let Some(json) = json else {
        return Err(bridge(format!(
            "/announce answered HTTP {status} without JSON"
        )));
    };
    if !resp.ok() {
        // The tracker's error as the bridge saw it; else the bridge's own refusal, in words.
        let error = match (
            get(&json, "kind").as_string(),
            get(&json, "detail").as_string(),
        ) {
            (Some(kind), Some(detail)) => TrackerError::from_parts(&kind, detail),
            _ => TrackerError::Io(
                get(&json, "error")
                    .as_string()
                    .unwrap_or_else(|| format!("/announce answered HTTP {status}")),
            ),
        };
        return Err(Failure {
            error,
            bridge: None,
        });
    }
    Ok(parse(&json))
}

/// The bridge's JSON answer; missing or malformed fields read as absent.
fn parse(json: &wasm_bindgen::JsValue) -> AnnounceResponse {
    let num = |key| {
        get(json, key)
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n.min(u32::MAX as f64) as u32)
    };
    let peers: Vec<String> = match get(json, "peers").dyn_into::<Array>() {
        Ok(arr) => arr
            .iter()
            .take(MAX_PEERS_PER_RESPONSE)
            .filter_map(|v| v.as_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    AnnounceResponse {
        interval: num("interval").unwrap_or(1800),
        min_interval: num("min_interval"),
        peers: parse_peers(peers.iter().map(String::as_str)),
        warning: get(json, "warning").as_string(),
        complete: num("complete"),
        incomplete: num("incomplete"),
        tracker_id: None,
    }
}

/// `"1.2.3.4:6881"` and `"[::1]:6881"` strings; bad ones are skipped, at most
/// `MAX_PEERS_PER_RESPONSE` kept.
pub fn parse_peers<'a>(peers: impl Iterator<Item = &'a str>) -> Vec<SocketAddr> {
    peers
        .filter_map(|p| p.parse().ok())
        .take(MAX_PEERS_PER_RESPONSE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_encodes_the_tracker_and_hex_ids() {
        let q = Query {
            tracker: "http://t.example:6969/announce?k=a b",
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId([0x2d; 20]),
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Some(AnnounceEvent::Started),
        };
        let p = path(&q);
        assert!(p.starts_with(
            "/announce?url=http%3A%2F%2Ft.example%3A6969%2Fannounce%3Fk%3Da%20b&info_hash="
        ));
        assert!(p.contains(&format!("info_hash={}", "ab".repeat(20))));
        assert!(p.contains(&format!("peer_id={}", "2d".repeat(20))));
        assert!(p.contains("&port=6881&uploaded=1&downloaded=2&left=3&event=started&numwant=80"));
    }

    #[test]
    fn peers_parse_v4_and_v6_and_skip_junk() {
        let got = parse_peers(["1.2.3.4:6881", "[::1]:80", "nonsense", "1.2.3.4"].into_iter());
        assert_eq!(
            got,
            vec!["1.2.3.4:6881".parse().unwrap(), "[::1]:80".parse().unwrap()]
        );
    }
}
