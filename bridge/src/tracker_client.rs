//! Performs one announce over the network: HTTP(S) with reqwest, UDP (BEP 15) with the sans-IO
//! `UdpAnnounce` over a tokio socket. Used by `download`/`seed` and by the browser's `/announce`
//! proxy, so the tracker's answer is bounded here: size, time and peer count.

use protocol::tracker::udp::UdpAnnounce;
use protocol::tracker::{http, AnnounceRequest, AnnounceResponse, TrackerError};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// The whole announce, HTTP or UDP, gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// A tracker response larger than this is refused (a real one is a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// UDP tries: BEP 15 waits 15 s then 30 s, and [`TIMEOUT`] ends it anyway.
const UDP_TRIES: u32 = 2;

pub async fn announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") | Some("https") => http_announce(url, req).await,
        Some("udp") => match tokio::time::timeout(TIMEOUT, udp_announce(url, req)).await {
            Ok(r) => r,
            Err(_) => Err(TrackerError::Timeout),
        },
        _ => Err(TrackerError::BadUrl(url.to_string())),
    }
}

fn client() -> Result<&'static reqwest::Client, TrackerError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("bt-tab/", env!("CARGO_PKG_VERSION")))
        // A tracker has no business redirecting us far; a few hops cover http -> https moves.
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| TrackerError::Io(format!("cannot build HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| c))
}

async fn http_announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
    let full = http::announce_url(url, req);
    let mut resp = client()?.get(&full).send().await.map_err(transport)?;
    let status = resp.status();
    if let Some(len) = resp.content_length() {
        if len > MAX_BODY as u64 {
            return Err(TrackerError::Malformed(format!(
                "response of {len} bytes is too large"
            )));
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(TrackerError::Malformed(format!(
                "response larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    match http::parse_response(&body) {
        // Trackers often put `failure reason` in a 4xx body: that message is the useful one.
        Err(e) if !status.is_success() && !matches!(e, TrackerError::Failure(_)) => {
            Err(TrackerError::Io(format!("HTTP status {status}")))
        }
        r => r,
    }
}

fn transport(e: reqwest::Error) -> TrackerError {
    if e.is_timeout() {
        TrackerError::Timeout
    } else {
        TrackerError::Io(error_chain(&e))
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); show the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `udp://host:port[/...]` to the host and port.
fn udp_host_port(url: &str) -> Result<(String, u16), TrackerError> {
    let bad = || TrackerError::BadUrl(url.to_string());
    let rest = url
        .get(6..)
        .filter(|_| url[..6].eq_ignore_ascii_case("udp://"))
        .ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

async fn udp_announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
    let (host, port) = udp_host_port(url)?;
    let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| TrackerError::Io(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| TrackerError::Io(format!("{host} has no address")))?;
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| TrackerError::Io(e.to_string()))?;
    sock.connect(addr)
        .await
        .map_err(|e| TrackerError::Io(e.to_string()))?;

    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut udp = UdpAnnounce::new(req.clone(), crate::random_seed(), UDP_TRIES, now());
    // BEP 15 packets are small; a bigger datagram is truncated and then refused by the parser.
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(pkt) = udp.poll_transmit() {
            sock.send(&pkt)
                .await
                .map_err(|e| TrackerError::Io(e.to_string()))?;
        }
        if let Some(result) = udp.poll_result() {
            return result;
        }
        let wait = match udp.poll_timeout() {
            Some(t) => Duration::from_millis(t.saturating_sub(now())),
            None => TIMEOUT,
        };
        match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => udp.handle_datagram(&buf[..n], now()),
            // ICMP port unreachable shows up as an error on a connected socket.
            Ok(Err(e)) => return Err(TrackerError::Io(e.to_string())),
            Err(_) => udp.handle_timeout(now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_urls() {
        assert_eq!(
            udp_host_port("udp://t.example:6969/announce").unwrap(),
            ("t.example".into(), 6969)
        );
        assert_eq!(udp_host_port("UDP://[::1]:80").unwrap(), ("::1".into(), 80));
        assert!(udp_host_port("udp://host/announce").is_err());
        assert!(udp_host_port("udp://:80").is_err());
        assert!(udp_host_port("udp://h:0").is_err());
        assert!(udp_host_port("udp:").is_err());
    }

    #[tokio::test]
    async fn unsupported_scheme_is_refused() {
        let req = AnnounceRequest {
            info_hash: protocol::InfoHash([1; 20]),
            peer_id: protocol::PeerId([2; 20]),
            port: 1,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: None,
            numwant: None,
            key: 0,
        };
        assert!(matches!(
            announce("ftp://x/", &req).await,
            Err(TrackerError::BadUrl(_))
        ));
        assert!(matches!(
            announce("nonsense", &req).await,
            Err(TrackerError::BadUrl(_))
        ));
    }
}
