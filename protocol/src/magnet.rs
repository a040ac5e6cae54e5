//! Magnet URIs (BEP 9): `xt=urn:btih:` in hex or base32, `dn`, `tr`, `x.pe`.

use crate::InfoHash;
use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with `magnet:?`)")]
    NotMagnet,
    #[error("magnet link has no `xt=urn:btih:` info-hash")]
    NoInfoHash,
    #[error("magnet info-hash {0:?} is neither 40 hex digits nor 32 base32 characters")]
    BadInfoHash(String),
    #[error("magnet link has a malformed parameter: {0}")]
    BadParam(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses.
    pub peers: Vec<SocketAddr>,
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Self, MagnetError> {
        let query = uri
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &uri[8..])
            .ok_or(MagnetError::NotMagnet)?;
        let mut info_hash = None;
        let mut name = None;
        let mut trackers: Vec<String> = Vec::new();
        let mut peers = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            // `xt.1`, `tr.2`, ...: numbered variants of a repeated parameter.
            let key = key
                .split_once('.')
                .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
                .map_or(key, |(k, _)| k);
            match key {
                "xt" => {
                    let urn = decode(value)?;
                    let urn = String::from_utf8_lossy(&urn);
                    let Some(hash) = urn
                        .get(..9)
                        .filter(|p| p.eq_ignore_ascii_case("urn:btih:"))
                        .map(|_| &urn[9..])
                    else {
                        continue; // other urns (btmh, sha1, ...) are not ours
                    };
                    let hash = parse_btih(hash)
                        .ok_or_else(|| MagnetError::BadInfoHash(hash.to_string()))?;
                    if info_hash.is_some_and(|h| h != hash) {
                        return Err(MagnetError::BadParam(
                            "two different btih info-hashes".into(),
                        ));
                    }
                    info_hash = Some(hash);
                }
                "dn" => {
                    let plus_as_space = value.replace('+', " ");
                    name = Some(String::from_utf8_lossy(&decode(&plus_as_space)?).into_owned());
                }
                "tr" => {
                    // A tracker that is not text is dropped: trackers are hints.
                    if let Ok(url) = String::from_utf8(decode(value)?) {
                        if !url.is_empty() && !trackers.contains(&url) {
                            trackers.push(url);
                        }
                    }
                }
                "x.pe" => {
                    if let Some(addr) = String::from_utf8(decode(value)?)
                        .ok()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .filter(|a| a.port() != 0 && !peers.contains(a))
                    {
                        peers.push(addr);
                    }
                }
                _ => {}
            }
        }
        Ok(Magnet {
            info_hash: info_hash.ok_or(MagnetError::NoInfoHash)?,
            name,
            trackers,
            peers,
        })
    }

    /// `magnet:?xt=urn:btih:<hex>&dn=..&tr=..&x.pe=..`, percent-encoded.
    pub fn to_uri(&self) -> String {
        let mut uri = format!("magnet:?xt=urn:btih:{}", self.info_hash.to_hex());
        if let Some(name) = &self.name {
            uri.push_str("&dn=");
            uri.push_str(&encode(name));
        }
        for tracker in &self.trackers {
            uri.push_str("&tr=");
            uri.push_str(&encode(tracker));
        }
        for peer in &self.peers {
            uri.push_str("&x.pe=");
            uri.push_str(&encode(&peer.to_string()));
        }
        uri
    }
}

/// 40 hex digits or 32 base32 characters (RFC 4648 alphabet, either case).
fn parse_btih(s: &str) -> Option<InfoHash> {
    if s.len() == 40 {
        return InfoHash::from_hex(s);
    }
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut acc: u64 = 0;
    let mut bits = 0;
    let mut i = 0;
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(i)? = (acc >> bits) as u8;
            acc &= (1 << bits) - 1;
            i += 1;
        }
    }
    Some(InfoHash(out))
}

/// Percent-decoding; a `%` not followed by two hex digits is an error.
fn decode(s: &str) -> Result<Vec<u8>, MagnetError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| {
                    u8::from_str_radix(h, 16)
                        .ok()
                        .filter(|_| h.bytes().all(|d| d.is_ascii_hexdigit()))
                })
                .ok_or_else(|| MagnetError::BadParam(format!("bad percent-escape in {s:?}")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn hex_magnet_with_everything() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{}&dn=Big+Buck%20Bunny&tr=udp%3A%2F%2Ft.example%3A1337&tr=http://t2/a?x=1&tr=udp%3A%2F%2Ft.example%3A1337&x.pe=10.0.0.1:6881&x.pe=%5B2001:db8::1%5D:51413&x.pe=[::1]:7&so=0-1&xt=urn:btmh:1220abcd",
            HEX.to_uppercase()
        ))
        .unwrap();
        assert_eq!(m.info_hash.to_hex(), HEX);
        assert_eq!(m.name.as_deref(), Some("Big Buck Bunny"));
        assert_eq!(m.trackers, ["udp://t.example:1337", "http://t2/a?x=1"]);
        assert_eq!(
            m.peers,
            [
                "10.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:51413".parse().unwrap(),
                "[::1]:7".parse().unwrap()
            ]
        );
        assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
    }

    #[test]
    fn base32_magnet() {
        // Base32 of the 20 bytes above.
        let m = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(m.info_hash.to_hex(), HEX);
        let lower = Magnet::parse("MAGNET:?xt=URN:BTIH:yex6dqdlxisuvhoj6um3gnnkpqjwpkek").unwrap();
        assert_eq!(lower.info_hash, m.info_hash);
        assert_eq!(m.name, None);
        assert!(m.trackers.is_empty() && m.peers.is_empty());
    }

    #[test]
    fn unparsable_peers_are_skipped() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=host.example:1&x.pe=1.2.3.4&x.pe=1.2.3.4:0&x.pe=::1:5&x.pe=1.2.3.4:99999&x.pe=5.6.7.8:9"
        ))
        .unwrap();
        assert_eq!(m.peers, ["5.6.7.8:9".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn bad_magnets() {
        assert_eq!(Magnet::parse(""), Err(MagnetError::NotMagnet));
        assert_eq!(
            Magnet::parse("http://x/?xt=urn:btih:aa"),
            Err(MagnetError::NotMagnet)
        );
        assert_eq!(Magnet::parse("magnet:"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?"), Err(MagnetError::NoInfoHash));
        assert_eq!(
            Magnet::parse("magnet:?dn=x&xt=urn:btmh:1220ab"),
            Err(MagnetError::NoInfoHash)
        );
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:abc"),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "g".repeat(40))),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "1".repeat(32))),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%zz")),
            Err(MagnetError::BadParam(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%4")),
            Err(MagnetError::BadParam(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%+1")),
            Err(MagnetError::BadParam(_))
        ));
        let other = "a".repeat(40);
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}")),
            Err(MagnetError::BadParam(_))
        ));
        // Multi-byte UTF-8 where the prefix would be sliced must not panic.
        assert_eq!(Magnet::parse("magnet:é?xt"), Err(MagnetError::NotMagnet));
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btihé"),
            Err(MagnetError::NoInfoHash)
        );
        assert!(Magnet::parse("magnet:?xt=urn:btié").is_err());
    }

    #[test]
    fn to_uri_encodes_reserved_characters() {
        let m = Magnet {
            info_hash: InfoHash::from_hex(HEX).unwrap(),
            name: Some("a b&c=d+é".into()),
            trackers: vec!["http://t/announce?k=1&x=2".into()],
            peers: vec![],
        };
        let uri = m.to_uri();
        assert_eq!(uri, format!("magnet:?xt=urn:btih:{HEX}&dn=a%20b%26c%3Dd%2B%C3%A9&tr=http%3A%2F%2Ft%2Fannounce%3Fk%3D1%26x%3D2"));
        assert_eq!(Magnet::parse(&uri), Ok(m));
    }
}
