//! Performs one announce over the network: HTTP(S) with reqwest, UDP (BEP 15) with the sans-IO
//! `UdpAnnounce` over a tokio socket. Used by `download`/`seed` and by the browser's `/announce`
//! proxy, so the tracker's answer is bounded here: size, time and peer count.

use crate::serve::guard::forbidden;
use protocol::tracker::udp::UdpAnnounce;
use protocol::tracker::{http, AnnounceRequest, AnnounceResponse, TrackerError};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// The whole announce, HTTP or UDP, gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// A tracker response larger than this is refused (a real one is a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// UDP tries: BEP 15 waits 15 s then 30 s, and [`TIMEOUT`] ends it anyway.
const UDP_TRIES: u32 = 2;

/// Which tracker addresses an announce may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The command line: the user chose the tracker.
    Any,
    /// For the page: public unicast addresses only, checked on the address actually connected
    /// to (after DNS, and after every redirect), so a hostile name or redirect cannot turn the
    /// bridge against the user's own network.
    PublicOnly,
}

pub async fn announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
    announce_within(url, req, Reach::Any).await
}

pub async fn announce_within(
    url: &str,
    req: &AnnounceRequest,
    reach: Reach,
) -> Result<AnnounceResponse, TrackerError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if reach == Reach::PublicOnly {
        check_literal(url)?;
    }
    match scheme.as_deref() {
        Some("http") | Some("https") => http_announce(url, req, reach).await,
        Some("udp") => match tokio::time::timeout(TIMEOUT, udp_announce(url, req, reach)).await {
            Ok(r) => r,
            Err(_) => Err(TrackerError::Timeout),
        },
        _ => Err(TrackerError::BadUrl(url.to_string())),
    }
}

/// A tracker given as an IP literal never goes through DNS: check it here.
fn check_literal(url: &str) -> Result<(), TrackerError> {
    let u = url::Url::parse(url).map_err(|e| TrackerError::BadUrl(format!("{url}: {e}")))?;
    let ip: Option<IpAddr> = match u.host() {
        Some(url::Host::Ipv4(a)) => Some(a.into()),
        Some(url::Host::Ipv6(a)) => Some(a.into()),
        _ => None,
    };
    match ip.and_then(|ip| forbidden(ip).map(|why| (ip, why))) {
        Some((ip, why)) => Err(TrackerError::BadUrl(format!(
            "tracker address {ip} is a {why} (see --allow-private)"
        ))),
        None => Ok(()),
    }
}

/// Public addresses among `addrs`, or an error naming the host when there are none.
fn public_only(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    let total = addrs.len();
    let ok: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| forbidden(a.ip()).is_none())
        .collect();
    if ok.is_empty() {
        return Err(if total == 0 {
            format!("tracker host {host} has no address")
        } else {
            format!("tracker host {host} resolves only to private or local addresses (see --allow-private)")
        });
    }
    Ok(ok)
}

/// reqwest's resolver for [`Reach::PublicOnly`]: drops private addresses after the lookup, so
/// the check and the connection use the same answer.
struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = public_only(&host, addrs)?;
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn client(reach: Reach) -> Result<&'static reqwest::Client, TrackerError> {
    static ANY: OnceLock<reqwest::Client> = OnceLock::new();
    static PUBLIC: OnceLock<reqwest::Client> = OnceLock::new();
    let cell = match reach {
        Reach::Any => &ANY,
        Reach::PublicOnly => &PUBLIC,
    };
    if let Some(c) = cell.get() {
        return Ok(c);
    }
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("bt-tab/", env!("CARGO_PKG_VERSION")));
    builder = match reach {
        // A tracker has no business redirecting us far; a few hops cover http -> https moves.
        Reach::Any => builder.redirect(reqwest::redirect::Policy::limited(3)),
        Reach::PublicOnly => builder.dns_resolver(Arc::new(PublicResolver)).redirect(
            reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= 3 {
                    return attempt.error("too many redirects");
                }
                match check_literal(attempt.url().as_str()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e.to_string()),
                }
            }),
        ),
    };
    let c = builder
        .build()
        .map_err(|e| TrackerError::Io(format!("cannot build HTTP client: {e}")))?;
    Ok(cell.get_or_init(|| c))
}

async fn http_announce(
    url: &str,
    req: &AnnounceRequest,
    reach: Reach,
) -> Result<AnnounceResponse, TrackerError> {
    let full = http::announce_url(url, req);
    let mut resp = client(reach)?.get(&full).send().await.map_err(transport)?;
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

async fn udp_announce(
    url: &str,
    req: &AnnounceRequest,
    reach: Reach,
) -> Result<AnnounceResponse, TrackerError> {
    let (host, port) = udp_host_port(url)?;
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| TrackerError::Io(format!("cannot resolve {host}: {e}")))?
        .collect();
    if reach == Reach::PublicOnly {
        addrs = public_only(&host, addrs).map_err(TrackerError::BadUrl)?;
    }
    let addr = *addrs
        .first()
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

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: protocol::InfoHash([1; 20]),
            peer_id: protocol::PeerId([2; 20]),
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 1,
            event: None,
            numwant: None,
            key: 0,
            tracker_id: None,
        }
    }

    #[tokio::test]
    async fn public_only_refuses_private_trackers_by_literal_or_name() {
        for u in [
            "http://127.0.0.1:1/announce",
            "udp://[::1]:6969",
            "http://10.0.0.1/a",
            "udp://2130706433:80",
            "http://localhost:8080/",
            "udp://localhost:8080",
        ] {
            let e = announce_within(u, &req(), Reach::PublicOnly)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("--allow-private"), "{u}: {e}");
        }
    }

    #[tokio::test]
    async fn any_reaches_loopback() {
        // Nothing listens there: the error is a transport one, not a refusal.
        let e = announce_within("http://127.0.0.1:1/announce", &req(), Reach::Any)
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("--allow-private"), "{e}");
    }

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
        let req = req();
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
