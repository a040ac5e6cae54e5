//! HTTP(S) announce: URL building and response parsing.
//!
//! `interval` is reported exactly as the tracker sent it (it must be a non-negative integer that
//! fits in `u32`); bounding it to something sane is the [`super::Announcer`]'s job, which never
//! re-announces sooner than [`super::announcer::MIN_REANNOUNCE_SECS`].

use super::{
    AnnounceEvent, AnnounceRequest, AnnounceResponse, TrackerError, MAX_PEERS_PER_RESPONSE,
};
use crate::bencode::{self, Value};
use crate::extension::decode_compact;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Texts from the tracker (failure reason, warning, tracker id) are cut to this many bytes: they
/// end up in logs and on the page.
const MAX_TEXT_LEN: usize = 1024;

/// The full announce URL: `base` plus `info_hash`, `peer_id` (binary, percent-encoded), `port`,
/// `uploaded`, `downloaded`, `left`, `compact=1`, `event`, `numwant`, `key`, `trackerid`. Keeps
/// any query `base` already has.
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    // A fragment is never sent to the server; parameters appended after it would be lost.
    let base = base.split('#').next().unwrap_or(base);
    let mut url = String::with_capacity(base.len() + 256);
    url.push_str(base);
    if !base.contains('?') {
        url.push('?');
    } else if !base.ends_with('?') && !base.ends_with('&') {
        url.push('&');
    }
    // Writing to a String cannot fail.
    let _ = write!(
        url,
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1",
        percent_encode(&req.info_hash.0),
        percent_encode(&req.peer_id.0),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
    );
    if let Some(event) = req.event {
        let name = match event {
            AnnounceEvent::Started => "started",
            AnnounceEvent::Completed => "completed",
            AnnounceEvent::Stopped => "stopped",
        };
        let _ = write!(url, "&event={name}");
    }
    if let Some(n) = req.numwant {
        let _ = write!(url, "&numwant={n}");
    }
    let _ = write!(url, "&key={:08x}", req.key);
    if let Some(id) = &req.tracker_id {
        let _ = write!(url, "&trackerid={}", percent_encode(id.as_bytes()));
    }
    url
}

/// Parses a bencoded response: compact and dictionary `peers`, `peers6`, `failure reason`,
/// `warning message`, `interval`, `min interval`, `complete`, `incomplete`, `tracker id`.
pub fn parse_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let root = bencode::decode(body)
        .map_err(|e| TrackerError::Malformed(format!("body is not bencode: {e}")))?;
    if !root.is_dict() {
        return Err(TrackerError::Malformed(
            "body is not a bencoded dictionary".into(),
        ));
    }

    if let Some(reason) = root.get("failure reason") {
        return Err(TrackerError::Failure(match reason.as_bytes() {
            Some(b) => text(b),
            None => "(failure reason is not a string)".into(),
        }));
    }

    let interval = match root.get("interval") {
        Some(Value::Int(i)) => u32::try_from(*i)
            .map_err(|_| TrackerError::Malformed(format!("interval {i} is out of range")))?,
        Some(_) => return Err(TrackerError::Malformed("interval is not an integer".into())),
        None => return Err(TrackerError::Malformed("interval is missing".into())),
    };

    let mut peers = Vec::new();
    match root.get("peers") {
        None => {}
        Some(Value::Bytes(b)) => compact_peers(b, false, &mut peers)?,
        Some(Value::List(list)) => dict_peers(list, &mut peers),
        Some(_) => {
            return Err(TrackerError::Malformed(
                "peers is neither a string nor a list".into(),
            ))
        }
    }
    match root.get("peers6") {
        None => {}
        Some(Value::Bytes(b)) => compact_peers(b, true, &mut peers)?,
        Some(_) => return Err(TrackerError::Malformed("peers6 is not a string".into())),
    }

    Ok(AnnounceResponse {
        interval,
        min_interval: optional_u32(&root, "min interval"),
        peers,
        warning: optional_text(&root, "warning message"),
        complete: optional_u32(&root, "complete"),
        incomplete: optional_u32(&root, "incomplete"),
        tracker_id: optional_text(&root, "tracker id"),
    })
}

/// Percent-encodes every byte outside the URL-unreserved set.
pub fn percent_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
    }
    s
}

/// A peer address worth dialling: port 0 and unspecified addresses are useless.
fn usable(addr: SocketAddr) -> bool {
    addr.port() != 0 && !addr.ip().is_unspecified()
}

/// Appends a compact peer string (BEP 23: 4-byte IPv4 + port; BEP 7: 16-byte IPv6 + port) to
/// `out`, up to [`MAX_PEERS_PER_RESPONSE`] in total.
pub(crate) fn compact_peers(
    bytes: &[u8],
    ipv6: bool,
    out: &mut Vec<SocketAddr>,
) -> Result<(), TrackerError> {
    let (entry, name) = if ipv6 { (18, "peers6") } else { (6, "peers") };
    let room = MAX_PEERS_PER_RESPONSE.saturating_sub(out.len());
    let peers = decode_compact(bytes, entry, room).ok_or_else(|| {
        TrackerError::Malformed(format!(
            "{name}: compact length {} is not a multiple of {entry}",
            bytes.len()
        ))
    })?;
    out.extend(peers.into_iter().filter(|a| usable(*a)));
    Ok(())
}

/// The original (BEP 3) peer list of `{ip, port, peer id}` dictionaries. Entries that are not
/// usable (a hostname, a bad port, missing fields) are skipped rather than failing the whole
/// response: the other peers are still good.
fn dict_peers(list: &[Value<'_>], out: &mut Vec<SocketAddr>) {
    for item in list {
        if out.len() >= MAX_PEERS_PER_RESPONSE {
            return;
        }
        let Some(port) = item.get("port").and_then(Value::as_int) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        let Some(ip) = item
            .get("ip")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let addr = SocketAddr::new(ip, port);
        if usable(addr) {
            out.push(addr);
        }
    }
}

/// Optional counters are informational: a value of the wrong type or range is dropped.
fn optional_u32(dict: &Value<'_>, key: &str) -> Option<u32> {
    dict.get(key)?.as_int().and_then(|i| u32::try_from(i).ok())
}

fn optional_text(dict: &Value<'_>, key: &str) -> Option<String> {
    dict.get(key)?.as_bytes().map(text)
}

/// Tracker text as a bounded, valid UTF-8 string.
pub(crate) fn text(bytes: &[u8]) -> String {
    let bytes = bytes.get(..MAX_TEXT_LEN).unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InfoHash, PeerId};

    fn request() -> AnnounceRequest {
        let mut hash = [0u8; 20];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        AnnounceRequest {
            info_hash: InfoHash(hash),
            peer_id: PeerId(*b"-BW0100-abc~def.g_h "),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Some(AnnounceEvent::Started),
            numwant: Some(50),
            key: 0xbeef,
            tracker_id: None,
        }
    }

    #[test]
    fn percent_encodes_binary() {
        assert_eq!(percent_encode(b"aZ09-._~"), "aZ09-._~");
        assert_eq!(
            percent_encode(&[0x00, 0xff, b' ', b'%', b'/', b'?']),
            "%00%FF%20%25%2F%3F"
        );
        assert_eq!(percent_encode(&[]), "");
    }

    #[test]
    fn url_has_every_parameter() {
        let req = request();
        let url = announce_url("http://t.example/announce", &req);
        let expected = format!(
            "http://t.example/announce?info_hash={}&peer_id=-BW0100-abc~def.g_h%20&port=6881&uploaded=1\
             &downloaded=2&left=3&compact=1&event=started&numwant=50&key=0000beef",
            percent_encode(&req.info_hash.0)
        );
        assert_eq!(url, expected);
        assert!(url.contains("info_hash=%00%25J"), "{url}");
    }

    #[test]
    fn url_keeps_existing_query() {
        let mut req = request();
        req.event = None;
        req.numwant = None;
        let url = announce_url("http://t.example/a?passkey=xyz", &req);
        assert!(
            url.starts_with("http://t.example/a?passkey=xyz&info_hash="),
            "{url}"
        );
        assert!(!url.contains("event="));
        assert!(!url.contains("numwant="));
        assert!(url.ends_with("&key=0000beef"));
        let url = announce_url("http://t.example/a?", &req);
        assert!(url.starts_with("http://t.example/a?info_hash="), "{url}");
        let url = announce_url("http://t.example/a?x=1&", &req);
        assert!(
            url.starts_with("http://t.example/a?x=1&info_hash="),
            "{url}"
        );
        let url = announce_url("http://t.example/a#frag", &req);
        assert!(url.starts_with("http://t.example/a?info_hash="), "{url}");
    }

    #[test]
    fn url_echoes_tracker_id() {
        let mut req = request();
        assert!(!announce_url("http://t/", &req).contains("trackerid"));
        req.tracker_id = Some("a b&c=d/\u{e9}".into());
        let url = announce_url("http://t/?x=1#f", &req);
        assert!(
            url.ends_with("&key=0000beef&trackerid=a%20b%26c%3Dd%2F%C3%A9"),
            "{url}"
        );
        req.tracker_id = Some(String::new());
        assert!(announce_url("http://t/", &req).ends_with("&trackerid="));
    }

    #[test]
    fn url_events() {
        let mut req = request();
        req.event = Some(AnnounceEvent::Completed);
        assert!(announce_url("http://t/", &req).contains("&event=completed&"));
        req.event = Some(AnnounceEvent::Stopped);
        assert!(announce_url("http://t/", &req).contains("&event=stopped&"));
    }

    fn bstr(s: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", s.len()).into_bytes();
        v.extend_from_slice(s);
        v
    }

    #[test]
    fn compact_peers_and_counters() {
        let mut body =
            b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e5:peers".to_vec();
        body.extend(bstr(&[
            127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 0, 10, 0, 0, 3, 0, 80,
        ]));
        body.extend(b"6:peers6");
        let mut v6 = vec![0u8; 16];
        v6[15] = 1;
        v6.extend([0x1a, 0xe2]);
        body.extend(bstr(&v6));
        body.extend(b"10:tracker id3:abc15:warning message4:slowe");
        let r = parse_response(&body).unwrap();
        assert_eq!(r.interval, 1800);
        assert_eq!(r.min_interval, Some(60));
        assert_eq!(r.complete, Some(5));
        assert_eq!(r.incomplete, Some(7));
        assert_eq!(r.tracker_id.as_deref(), Some("abc"));
        assert_eq!(r.warning.as_deref(), Some("slow"));
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "10.0.0.3:80".parse().unwrap(),
            "[::1]:6882".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
    }

    #[test]
    fn dict_peers_skip_hostnames_and_bad_ports() {
        let body = b"d8:intervali900e5:peersl\
            d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
            d2:ip11:example.com4:porti1ee\
            d2:ip3:::14:porti7000ee\
            d2:ip8:10.0.0.14:porti0ee\
            d2:ip8:10.0.0.14:porti70000ee\
            d2:ip8:10.0.0.1e\
            i5e\
            ee";
        let r = parse_response(body).unwrap();
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:7000".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
        assert_eq!(r.min_interval, None);
    }

    #[test]
    fn failure_reason() {
        let r = parse_response(b"d14:failure reason11:not allowede");
        assert_eq!(r, Err(TrackerError::Failure("not allowed".into())));
        // Failure wins even without an interval.
        let r = parse_response(b"d14:failure reasoni3e8:intervali5ee");
        assert!(matches!(r, Err(TrackerError::Failure(_))));
    }

    #[test]
    fn malformed_responses_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (b"d5:peers0:e", "interval is missing"),
            (b"d8:interval3:abce", "interval is not an integer"),
            (b"d8:intervali-1ee", "interval -1"),
            (b"d8:intervali10e5:peers5:abcdee", "multiple of 6"),
            (b"d8:intervali10e6:peers66:abcdefe", "multiple of 18"),
            (b"d8:intervali10e5:peersi3ee", "peers is neither"),
            (b"li1ee", "not a bencoded dictionary"),
            (b"<html>", "not bencode"),
        ];
        for (body, needle) in cases {
            match parse_response(body) {
                Err(TrackerError::Malformed(m)) => {
                    assert!(m.contains(needle), "{m:?} lacks {needle:?}")
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn peers_are_capped() {
        let mut compact = Vec::new();
        for i in 0..(MAX_PEERS_PER_RESPONSE as u32 + 10) {
            compact.extend(i.wrapping_add(0x0a00_0001).to_be_bytes());
            compact.extend(1000u16.to_be_bytes());
        }
        let mut body = b"d8:intervali10e5:peers".to_vec();
        body.extend(bstr(&compact));
        body.extend(b"6:peers6");
        body.extend(bstr(&[1u8; 18]));
        body.push(b'e');
        let r = parse_response(&body).unwrap();
        assert_eq!(r.peers.len(), MAX_PEERS_PER_RESPONSE);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        let seeds: &[&[u8]] = &[
            b"d8:intervali1800e5:peers6:\x7f\0\0\x01\x1a\xe1e",
            b"d14:failure reason3:noe",
            b"d8:intervali10e5:peersld2:ip9:127.0.0.14:porti1eeee",
        ];
        for _ in 0..3000 {
            let mut body = seeds[rng.usize(..seeds.len())].to_vec();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..body.len());
                match rng.u8(..3) {
                    0 => body[i] = rng.u8(..),
                    1 => body.truncate(i),
                    _ => body.insert(i, rng.u8(..)),
                }
                if body.is_empty() {
                    break;
                }
            }
            let _ = parse_response(&body);
        }
        let _ = parse_response(b"");
        let _ = parse_response(&[b'l'; 10_000]);
        let _ = parse_response(b"d8:intervali99999999999999999999999ee");
        let _ = parse_response(b"d5:peers4294967296:e");
    }
}
