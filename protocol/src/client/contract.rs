//! The contract between the page and its bridge, written once for both sides: the `/announce`
//! query and its JSON answer, the `/peer` tunnel's address and its close codes. The bridge parses
//! what the page builds with these functions, and the page reads what the bridge writes with them,
//! so the two cannot drift apart.

use crate::engine::Encryption;
use crate::tracker::http::percent_encode;
use crate::tracker::{
    AnnounceEvent, AnnounceRequest, AnnounceResponse, TrackerError, MAX_PEERS_PER_RESPONSE,
};
use crate::types::hex;
use crate::{InfoHash, PeerId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use thiserror::Error;

/// The most peers the page asks the bridge for in one announce.
pub const MAX_NUMWANT: u32 = 200;
/// Tracker ids longer than this are not echoed (a real one is a few bytes).
pub const MAX_TRACKER_ID: usize = 256;

/// Why an announce made through the bridge gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnnounceError {
    /// The tracker failed or refused, as the bridge saw it.
    #[error("{0}")]
    Tracker(#[from] TrackerError),
    /// The bridge itself could not be asked, or refused the request: in words.
    #[error("the bridge's /announce failed: {0}")]
    Bridge(String),
}

/// `/announce?...` for an announce of `req` to the tracker at `url`.
pub fn announce_path(url: &str, req: &AnnounceRequest) -> String {
    let mut p = format!(
        "/announce?url={}&info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&key={}",
        percent_encode(url.as_bytes()),
        req.info_hash.to_hex(),
        hex(&req.peer_id.0),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        req.key,
    );
    if let Some(event) = req.event {
        p.push_str("&event=");
        p.push_str(event_name(event));
    }
    if let Some(n) = req.numwant {
        p.push_str(&format!("&numwant={n}"));
    }
    if let Some(id) = &req.tracker_id {
        p.push_str("&trackerid=");
        p.push_str(&percent_encode(id.as_bytes()));
    }
    p
}

fn event_name(e: AnnounceEvent) -> &'static str {
    match e {
        AnnounceEvent::Started => "started",
        AnnounceEvent::Completed => "completed",
        AnnounceEvent::Stopped => "stopped",
    }
}

/// The tracker URL (not yet checked: the bridge applies its own rules to it) and the announce
/// in an `/announce` query, or a message naming the bad parameter.
pub fn parse_announce_query(query: &str) -> Result<(String, AnnounceRequest), String> {
    let mut url = None;
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let (mut uploaded, mut downloaded, mut left) = (0u64, 0u64, 0u64);
    let mut event = None;
    let mut numwant = None;
    let mut key = None;
    let mut tracker_id = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let num = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{what} must be a non-negative integer, not {v:?}"))
        };
        match k.as_ref() {
            "url" => url = Some(v.to_string()),
            "info_hash" => {
                info_hash = Some(
                    InfoHash::from_hex(&v)
                        .ok_or_else(|| "info_hash must be 40 hex digits".to_string())?,
                )
            }
            "peer_id" => {
                // The same 40-hex-digit form as an info-hash.
                let h = InfoHash::from_hex(&v)
                    .ok_or_else(|| "peer_id must be 40 hex digits".to_string())?;
                peer_id = Some(PeerId(h.0));
            }
            "port" => {
                port = Some(
                    v.parse::<u16>()
                        .map_err(|_| format!("port must be 0-65535, not {v:?}"))?,
                )
            }
            "uploaded" => uploaded = num("uploaded")?,
            "downloaded" => downloaded = num("downloaded")?,
            "left" => left = num("left")?,
            "numwant" => {
                numwant = Some(
                    u32::try_from(num("numwant")?)
                        .unwrap_or(u32::MAX)
                        .min(MAX_NUMWANT),
                )
            }
            "key" => key = Some(u32::try_from(num("key")?).map_err(|_| "key must fit 32 bits")?),
            "trackerid" if v.len() <= MAX_TRACKER_ID => tracker_id = Some(v.to_string()),
            "trackerid" => return Err(format!("trackerid longer than {MAX_TRACKER_ID} bytes")),
            "event" => {
                event = match v.as_ref() {
                    "started" => Some(AnnounceEvent::Started),
                    "completed" => Some(AnnounceEvent::Completed),
                    "stopped" => Some(AnnounceEvent::Stopped),
                    "" | "empty" => None,
                    _ => return Err(format!("unknown event {v:?}")),
                }
            }
            _ => {}
        }
    }
    let url = url.ok_or("missing url")?;
    let info_hash = info_hash.ok_or("missing info_hash")?;
    let peer_id = peer_id.ok_or("missing peer_id")?;
    let port = port.ok_or("missing port")?;
    // Stable per peer id, so the tracker recognises the tab across announces.
    let key = key.unwrap_or_else(|| {
        peer_id.0.chunks(4).fold(0u32, |k, c| {
            k.rotate_left(5) ^ c.iter().fold(0, |a, b| a << 8 | u32::from(*b))
        })
    });
    let req = AnnounceRequest {
        info_hash,
        peer_id,
        port,
        uploaded,
        downloaded,
        left,
        event,
        numwant,
        key,
        tracker_id,
    };
    Ok((url, req))
}

/// The JSON the bridge answers `/announce` with: the tracker's answer, or an error.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<u32>,
    #[serde(default)]
    min_interval: Option<u32>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    warning: Option<String>,
    #[serde(default)]
    complete: Option<u32>,
    #[serde(default)]
    incomplete: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracker_id: Option<String>,
    /// An error in words; with `kind` and `detail` the page rebuilds the same `TrackerError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The body of a successful `/announce`.
pub fn answer_json(r: &AnnounceResponse) -> String {
    let answer = Answer {
        interval: Some(r.interval),
        min_interval: r.min_interval,
        peers: r.peers.iter().map(SocketAddr::to_string).collect(),
        warning: r.warning.clone(),
        complete: r.complete,
        incomplete: r.incomplete,
        tracker_id: r.tracker_id.clone(),
        ..Default::default()
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

/// The body of an `/announce` the tracker failed.
pub fn tracker_error_json(e: &TrackerError) -> String {
    let (kind, detail) = e.to_parts();
    let answer = Answer {
        error: Some(e.to_string()),
        kind: Some(kind.to_string()),
        detail: Some(detail),
        ..Default::default()
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

/// The body of an `/announce` the bridge refused itself (bad parameters, busy, forbidden).
pub fn refusal_json(why: &str) -> String {
    let answer = Answer {
        error: Some(why.to_string()),
        ..Default::default()
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

/// Reads the bridge's answer: `ok` is whether the HTTP status was a success. The body is
/// untrusted: missing or malformed fields read as absent, at most `MAX_PEERS_PER_RESPONSE`
/// peers are kept.
pub fn parse_answer(ok: bool, status: u16, body: &[u8]) -> Result<AnnounceResponse, AnnounceError> {
    let Ok(a) = serde_json::from_slice::<Answer>(body) else {
        return Err(AnnounceError::Bridge(format!(
            "/announce answered HTTP {status} without JSON"
        )));
    };
    if !ok {
        return Err(match (a.kind, a.detail, a.error) {
            (Some(kind), Some(detail), _) => TrackerError::from_parts(&kind, detail).into(),
            (_, _, Some(e)) => AnnounceError::Bridge(e),
            _ => AnnounceError::Bridge(format!("/announce answered HTTP {status}")),
        });
    }
    Ok(AnnounceResponse {
        interval: a.interval.unwrap_or(1800),
        min_interval: a.min_interval,
        peers: a
            .peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .take(MAX_PEERS_PER_RESPONSE)
            .collect(),
        warning: a.warning,
        complete: a.complete,
        incomplete: a.incomplete,
        tracker_id: a.tracker_id.filter(|t| t.len() <= MAX_TRACKER_ID),
    })
}

/// `/peer?addr=..&enc=..`: the tunnel to one peer; the bridge makes the MSE handshake towards the
/// peer as `enc` says (the tab's own bytes stay a plain BitTorrent stream).
pub fn peer_path(addr: SocketAddr, enc: Encryption) -> String {
    format!(
        "/peer?addr={}&enc={}",
        percent_encode(addr.to_string().as_bytes()),
        enc.as_str()
    )
}

/// The peer address and the encryption of a `/peer` query; a query without `enc` (an older page)
/// means `off`, and an unknown one is refused.
pub fn parse_peer_query(query: &str) -> Option<(SocketAddr, Encryption)> {
    let mut addr = None;
    let mut enc = Some(Encryption::Off);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "addr" => addr = v.parse().ok(),
            "enc" => enc = Encryption::parse(&v),
            _ => {}
        }
    }
    Some((addr?, enc?))
}

/// `/listen`: the tab's one WebSocket for peers that dial in. The bridge listens on a TCP port
/// for the tab, says which (`Port`), and offers each accepted connection whose handshake names
/// an info-hash the tab serves (`Incoming`); the tab takes one with a WebSocket to
/// [`accept_path`], which starts with the peer's handshake as received.
pub const LISTEN_PATH: &str = "/listen";

/// What the bridge says on `/listen` (text frames of JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromBridge {
    /// The TCP port the bridge accepts the tab's peers on: the one to announce.
    Port { port: u16 },
    /// A peer dialled in for `info_hash` (hex); take it through `accept_path(offer)` soon, or
    /// leave it to expire.
    Incoming {
        offer: u64,
        info_hash: String,
        addr: String,
    },
}

/// What the tab says on `/listen`: the info-hashes it serves (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromTab {
    Serve { info_hash: String },
    Unserve { info_hash: String },
}

/// A `/listen` message as text; `None` for anything else (the other side is untrusted).
pub fn encode_listen<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

/// Reads a `/listen` text frame of at most 1 KiB.
pub fn decode_listen<T: for<'de> Deserialize<'de>>(text: &str) -> Option<T> {
    if text.len() > 1024 {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// `/accept?offer=N`: the tunnel of a peer that dialled in.
pub fn accept_path(offer: u64) -> String {
    format!("/accept?offer={offer}")
}

/// The offer of an `/accept` query.
pub fn parse_accept_query(query: &str) -> Option<u64> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "offer")
        .and_then(|(_, v)| v.parse().ok())
}

/// Why the bridge ended a tunnel: the WebSocket close code the page sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelClose {
    Refused,
    TimedOut,
    Forbidden,
    NotBitTorrent,
    Busy,
    PeerClosed,
}

impl TunnelClose {
    pub const ALL: [TunnelClose; 6] = [
        TunnelClose::Refused,
        TunnelClose::TimedOut,
        TunnelClose::Forbidden,
        TunnelClose::NotBitTorrent,
        TunnelClose::Busy,
        TunnelClose::PeerClosed,
    ];

    pub const fn code(self) -> u16 {
        match self {
            TunnelClose::Refused => 4000,
            TunnelClose::TimedOut => 4001,
            TunnelClose::Forbidden => 4002,
            TunnelClose::NotBitTorrent => 4003,
            TunnelClose::Busy => 4004,
            TunnelClose::PeerClosed => 4005,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// A close code of a tunnel in words, for the page.
pub fn close_words(code: u16) -> &'static str {
    match TunnelClose::from_code(code) {
        Some(TunnelClose::Refused) => "connection refused",
        Some(TunnelClose::TimedOut) => "connection timed out",
        Some(TunnelClose::Forbidden) => "forbidden destination (the bridge refuses private addresses unless started with --allow-private)",
        Some(TunnelClose::NotBitTorrent) => "not a BitTorrent handshake",
        Some(TunnelClose::Busy) => "bridge busy",
        Some(TunnelClose::PeerClosed) => "peer closed the connection",
        None if code == 1000 => "closed",
        None if code == BRIDGE_GONE => "the bridge could not be reached",
        None => "closed unexpectedly",
    }
}

/// The code a browser reports for a WebSocket that ended without a close frame: the bridge
/// itself is gone, or never answered (every tunnel the bridge ends gets a code of its own).
pub const BRIDGE_GONE: u16 = 1006;

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId([0x2d; 20]),
            port: 0,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Some(AnnounceEvent::Started),
            numwant: Some(80),
            key: 77,
            tracker_id: Some("a&b".into()),
        }
    }

    #[test]
    fn the_query_the_page_builds_is_the_one_the_bridge_reads() {
        let url = "http://t.example:6969/announce?k=a b";
        let path = announce_path(url, &req());
        let query = path.strip_prefix("/announce?").unwrap();
        assert!(query.starts_with("url=http%3A%2F%2Ft.example%3A6969%2Fannounce%3Fk%3Da%20b&"));
        let (u, r) = parse_announce_query(query).unwrap();
        assert_eq!(u, url);
        assert_eq!(r, req());
        let mut r2 = req();
        r2.event = None;
        r2.numwant = Some(5000);
        r2.tracker_id = None;
        let (_, back) =
            parse_announce_query(announce_path(url, &r2).strip_prefix("/announce?").unwrap())
                .unwrap();
        assert_eq!(back.numwant, Some(MAX_NUMWANT));
        assert_eq!((back.event, back.tracker_id), (None, None));
    }

    #[test]
    fn bad_parameters_are_named() {
        let ih = "ab".repeat(20);
        let base = format!("url=http://t/&info_hash={ih}&peer_id={ih}&port=1");
        for (q, why) in [
            (format!("info_hash={ih}&peer_id={ih}&port=1"), "missing url"),
            (
                format!("url=http://t/&info_hash=12&peer_id={ih}&port=1"),
                "info_hash",
            ),
            (format!("{base}&event=bogus"), "event"),
            (format!("{base}&left=-1"), "left"),
            (
                format!("url=http://t/&info_hash={ih}&peer_id={ih}&port=70000"),
                "port",
            ),
            (
                format!("url=http://t/&info_hash={ih}&peer_id={ih}"),
                "missing port",
            ),
            (format!("{base}&trackerid={}", "x".repeat(300)), "trackerid"),
        ] {
            let e = parse_announce_query(&q).unwrap_err();
            assert!(e.contains(why), "{q}: {e}");
        }
    }

    #[test]
    fn answers_round_trip_and_hostile_ones_are_bounded() {
        let resp = AnnounceResponse {
            interval: 900,
            min_interval: Some(60),
            peers: vec!["1.2.3.4:5".parse().unwrap(), "[::1]:80".parse().unwrap()],
            warning: Some("w".into()),
            complete: Some(3),
            incomplete: None,
            tracker_id: Some("tid".into()),
        };
        assert_eq!(
            parse_answer(true, 200, answer_json(&resp).as_bytes()),
            Ok(resp)
        );
        let e = TrackerError::Failure("go away".into());
        assert_eq!(
            parse_answer(false, 502, tracker_error_json(&e).as_bytes()),
            Err(AnnounceError::Tracker(e))
        );
        assert_eq!(
            parse_answer(false, 403, refusal_json("forbidden origin").as_bytes()),
            Err(AnnounceError::Bridge("forbidden origin".into()))
        );
        assert!(matches!(
            parse_answer(true, 200, b"<html>"),
            Err(AnnounceError::Bridge(m)) if m.contains("without JSON")
        ));
        let many: Vec<String> = (0..5000)
            .map(|i| format!("\"10.0.{}.{}:1\"", i / 256, i % 256))
            .collect();
        let body = format!(
            "{{\"peers\":[{},\"junk\"],\"interval\":-5}}",
            many.join(",")
        );
        // A negative interval is malformed JSON for u32: the whole answer is refused, not guessed.
        assert!(parse_answer(true, 200, body.as_bytes()).is_err());
        let body = format!("{{\"peers\":[\"junk\",{}]}}", many.join(","));
        let r = parse_answer(true, 200, body.as_bytes()).unwrap();
        assert_eq!(r.peers.len(), MAX_PEERS_PER_RESPONSE);
        assert_eq!(r.interval, 1800);
    }

    #[test]
    fn listen_messages_round_trip_and_junk_is_none() {
        let port = FromBridge::Port { port: 6881 };
        assert_eq!(encode_listen(&port), r#"{"port":{"port":6881}}"#);
        assert_eq!(
            decode_listen::<FromBridge>(&encode_listen(&port)),
            Some(port)
        );
        let offer = FromBridge::Incoming {
            offer: 7,
            info_hash: "ab".repeat(20),
            addr: "[::1]:5".into(),
        };
        assert_eq!(
            decode_listen::<FromBridge>(&encode_listen(&offer)),
            Some(offer)
        );
        let serve = FromTab::Serve {
            info_hash: "cd".repeat(20),
        };
        assert_eq!(
            decode_listen::<FromTab>(&encode_listen(&serve)),
            Some(serve)
        );
        assert_eq!(decode_listen::<FromTab>("{\"serve\":1}"), None);
        assert_eq!(decode_listen::<FromTab>(&"x".repeat(2000)), None);
        assert_eq!(
            parse_accept_query(accept_path(42).strip_prefix("/accept?").unwrap()),
            Some(42)
        );
        assert_eq!(parse_accept_query("offer=-1"), None);
    }

    #[test]
    fn peer_paths_and_close_codes() {
        for a in ["1.2.3.4:5", "[::1]:80"] {
            let addr: SocketAddr = a.parse().unwrap();
            for enc in [Encryption::Prefer, Encryption::Require, Encryption::Off] {
                let path = peer_path(addr, enc);
                assert_eq!(
                    parse_peer_query(path.strip_prefix("/peer?").unwrap()),
                    Some((addr, enc))
                );
            }
        }
        assert_eq!(
            peer_path("[::1]:80".parse().unwrap(), Encryption::Off),
            "/peer?addr=%5B%3A%3A1%5D%3A80&enc=off"
        );
        let old = parse_peer_query("addr=1.2.3.4%3A5").unwrap();
        assert_eq!(
            old.1,
            Encryption::Off,
            "a page that says nothing gets what it had"
        );
        assert_eq!(parse_peer_query("addr=1.2.3.4%3A5&enc=maybe"), None);
        for c in TunnelClose::ALL {
            assert_eq!(TunnelClose::from_code(c.code()), Some(c));
            assert_ne!(close_words(c.code()), "closed unexpectedly");
        }
        assert_eq!(close_words(BRIDGE_GONE), "the bridge could not be reached");
        assert_eq!(close_words(4999), "closed unexpectedly");
    }
}
