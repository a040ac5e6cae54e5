//! Performs one announce over the network: HTTP(S) with reqwest, UDP (BEP 15) with the sans-IO
//! `UdpAnnounce` over a tokio socket. Used by `download`/`seed` and by the browser's `/announce`
//! proxy, so the tracker's answer is bounded here: size, time and peer count.

use crate::serve::guard::forbidden;
use protocol::tracker::udp::{UdpAnnounce, CONNECTION_ID_LIFETIME_MS};
use protocol::tracker::{http, AnnounceRequest, AnnounceResponse, TrackerError};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// An HTTP announce, and a UDP tracker's name lookup, give up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// A tracker response larger than this is refused (a real one is a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// UDP tries, which bound a UDP announce instead of [`TIMEOUT`]: BEP 15 retransmits after 15 s
/// and this gives up 30 s later, so a silent tracker costs 45 s. BEP 15 allows 8 tries (hours);
/// the announcer's failover to the next tracker is worth more than that patience.
const UDP_TRIES: u32 = 2;
/// UDP trackers whose connection id is remembered. A miss only costs one connect round trip.
const MAX_CONNECTIONS: usize = 64;

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
        Some("udp") => udp_announce(url, req, reach, &CONNECTIONS, 1).await,
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

/// BEP 15 connection ids by tracker address, so that announces within a minute of a connect,
/// from `bridge download` or for the page, skip it.
struct Connections(Mutex<Vec<(SocketAddr, u64, Instant)>>);

static CONNECTIONS: Connections = Connections::new();

impl Connections {
    const fn new() -> Self {
        Connections(Mutex::new(Vec::new()))
    }

    fn lifetime() -> Duration {
        Duration::from_millis(CONNECTION_ID_LIFETIME_MS)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, u64, Instant)>> {
        // The list holds plain values, always whole: a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, addr: SocketAddr, now: Instant) -> Option<(u64, Instant)> {
        let mut entries = self.entries();
        entries.retain(|e| now.saturating_duration_since(e.2) < Self::lifetime());
        entries
            .iter()
            .find(|e| e.0 == addr)
            .map(|&(_, id, at)| (id, at))
    }

    fn put(&self, addr: SocketAddr, connection: Option<(u64, Instant)>, now: Instant) {
        let mut entries = self.entries();
        entries.retain(|e| e.0 != addr && now.saturating_duration_since(e.2) < Self::lifetime());
        let Some((id, at)) = connection else {
            return;
        };
        if entries.len() >= MAX_CONNECTIONS {
            // The oldest is the next to expire anyway.
            if let Some(oldest) = (0..entries.len()).min_by_key(|&i| entries[i].2) {
                entries.swap_remove(oldest);
            }
        }
        entries.push((addr, id, at));
    }
}

async fn udp_announce(
    url: &str,
    req: &AnnounceRequest,
    reach: Reach,
    connections: &Connections,
    speedup: u32,
) -> Result<AnnounceResponse, TrackerError> {
    let (host, port) = udp_host_port(url)?;
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let mut addrs: Vec<SocketAddr> = tokio::time::timeout(TIMEOUT, lookup)
        .await
        .map_err(|_| TrackerError::Io(format!("cannot resolve {host}: timed out")))?
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

    let known = connections.get(addr, Instant::now());
    // Time starts when the known id was received, so its age needs no negative numbers.
    let clock = Clock {
        origin: known.map_or_else(Instant::now, |(_, at)| at),
        speedup: speedup.max(1),
    };
    let seed = crate::random_seed();
    let mut udp = match known {
        Some((id, _)) => {
            UdpAnnounce::with_connection(req.clone(), seed, UDP_TRIES, clock.now(), id, 0)
        }
        None => UdpAnnounce::new(req.clone(), seed, UDP_TRIES, clock.now()),
    };
    udp.set_ipv6(addr.is_ipv6());
    let result = drive(&sock, &mut udp, &clock).await;
    let connection = udp.connection().map(|(id, at)| (id, clock.instant(at)));
    connections.put(addr, connection, Instant::now());
    result
}

/// `UdpAnnounce`'s milliseconds on the real clock. Tests speed it up so BEP 15's retransmission
/// schedule passes in milliseconds.
struct Clock {
    origin: Instant,
    /// Protocol milliseconds per real one.
    speedup: u32,
}

impl Clock {
    fn now(&self) -> u64 {
        let real = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        real.saturating_mul(u64::from(self.speedup))
    }

    fn until(&self, deadline: u64) -> Duration {
        let left = deadline.saturating_sub(self.now());
        Duration::from_millis(left.div_ceil(u64::from(self.speedup)))
    }

    fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms / u64::from(self.speedup))
    }
}

async fn drive(
    sock: &UdpSocket,
    udp: &mut UdpAnnounce,
    clock: &Clock,
) -> Result<AnnounceResponse, TrackerError> {
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
        // Without a deadline and without a result the machine is stuck: don't wait forever.
        let Some(deadline) = udp.poll_timeout() else {
            return Err(TrackerError::Timeout);
        };
        match tokio::time::timeout(clock.until(deadline), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => udp.handle_datagram(&buf[..n], clock.now()),
            // ICMP port unreachable shows up as an error on a connected socket.
            Ok(Err(e)) => return Err(TrackerError::Io(e.to_string())),
            Err(_) => udp.handle_timeout(clock.now()),
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

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts of what a fake UDP tracker received.
    #[derive(Default)]
    struct Seen {
        connects: AtomicUsize,
        announces: AtomicUsize,
        refused: AtomicUsize,
    }

    /// A BEP 15 tracker on `bind` that hands out fresh connection ids, answers announces with
    /// a known id with `peers`, and answers any other id with an error, as real ones do.
    async fn fake_udp_tracker(bind: &str, peers: Vec<u8>) -> (SocketAddr, Arc<Seen>) {
        let sock = UdpSocket::bind(bind).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut issued: Vec<u64> = Vec::new();
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let d = &buf[..n];
                if n < 16 {
                    continue;
                }
                let head = u64::from_be_bytes(d[..8].try_into().unwrap());
                let action = u32::from_be_bytes(d[8..12].try_into().unwrap());
                let txn = &d[12..16];
                let mut reply = Vec::new();
                if n == 16 && head == 0x41727101980 && action == 0 {
                    counts.connects.fetch_add(1, Ordering::SeqCst);
                    let id = 0x5eed_0000 + issued.len() as u64;
                    issued.push(id);
                    reply.extend(0u32.to_be_bytes());
                    reply.extend(txn);
                    reply.extend(id.to_be_bytes());
                } else if n >= 98 && action == 1 && issued.contains(&head) {
                    counts.announces.fetch_add(1, Ordering::SeqCst);
                    reply.extend(1u32.to_be_bytes());
                    reply.extend(txn);
                    reply.extend([1800u32, 0, 1].iter().flat_map(|v| v.to_be_bytes()));
                    reply.extend(&peers);
                } else {
                    counts.refused.fetch_add(1, Ordering::SeqCst);
                    reply.extend(3u32.to_be_bytes());
                    reply.extend(txn);
                    reply.extend(b"Connection ID missmatch.");
                }
                let _ = sock.send_to(&reply, from).await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn udp_retransmits_to_a_silent_tracker_then_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}", silent.local_addr().unwrap());
        // 1000 protocol ms per real one: 15 s + 30 s pass in 45 ms.
        let started = Instant::now();
        let result = udp_announce(&url, &req(), Reach::Any, &Connections::new(), 1000).await;
        assert_eq!(result, Err(TrackerError::Timeout));
        assert!(started.elapsed() >= Duration::from_millis(45));
        let mut buf = [0u8; 2048];
        let mut datagrams = Vec::new();
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), silent.recv(&mut buf)).await
        {
            datagrams.push(buf[..n].to_vec());
        }
        assert_eq!(datagrams.len(), 2, "a connect and one retransmission");
        assert_eq!(datagrams[0].len(), 16);
        assert_eq!(datagrams[0], datagrams[1], "the same connect again");
    }

    #[tokio::test]
    async fn udp_connection_id_is_reused_within_its_minute() {
        let (addr, seen) = fake_udp_tracker("127.0.0.1:0", vec![10, 0, 0, 1, 0x1a, 0xe1]).await;
        // Through the public entry point: the cache `download` and `/announce` share.
        let url = format!("udp://{addr}/announce");
        for _ in 0..2 {
            let r = announce(&url, &req()).await.unwrap();
            assert_eq!(
                r.peers,
                vec!["10.0.0.1:6881".parse::<SocketAddr>().unwrap()]
            );
        }
        assert_eq!(seen.connects.load(Ordering::SeqCst), 1, "one connect only");
        assert_eq!(seen.announces.load(Ordering::SeqCst), 2);
        assert_eq!(seen.refused.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn udp_refused_stale_connection_id_falls_back_to_a_connect() {
        let (addr, seen) = fake_udp_tracker("127.0.0.1:0", vec![10, 0, 0, 2, 0, 80]).await;
        let connections = Connections::new();
        let now = Instant::now();
        connections.put(addr, Some((0xdead, now)), now);
        let url = format!("udp://{addr}");
        let r = udp_announce(&url, &req(), Reach::Any, &connections, 1)
            .await
            .unwrap();
        assert_eq!(r.peers, vec!["10.0.0.2:80".parse::<SocketAddr>().unwrap()]);
        assert_eq!(
            seen.refused.load(Ordering::SeqCst),
            1,
            "the stale id was tried"
        );
        assert_eq!(seen.connects.load(Ordering::SeqCst), 1);
        let (id, _) = connections.get(addr, Instant::now()).unwrap();
        assert_eq!(id, 0x5eed_0000, "the new id replaced the stale one");
    }

    #[tokio::test]
    async fn udp_announce_over_ipv6_takes_18_byte_peers() {
        let mut peers = vec![0x20, 0x01, 0x0d, 0xb8];
        peers.extend([0u8; 11]);
        peers.push(7);
        peers.extend(51413u16.to_be_bytes());
        let (addr, _) = fake_udp_tracker("[::1]:0", peers).await;
        let r = announce(&format!("udp://{addr}"), &req()).await.unwrap();
        assert_eq!(
            r.peers,
            vec!["[2001:db8::7]:51413".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn connection_cache_expires_and_stays_bounded() {
        let c = Connections::new();
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:6969".parse().unwrap();
        c.put(a, Some((1, t0)), t0);
        assert_eq!(c.get(a, t0 + Duration::from_secs(59)), Some((1, t0)));
        assert_eq!(
            c.get(a, t0 + Duration::from_secs(60)),
            None,
            "past its minute"
        );
        assert!(c.entries().is_empty(), "expired entries are dropped");
        c.put(a, Some((2, t0)), t0);
        c.put(a, None, t0);
        assert_eq!(c.get(a, t0), None, "a refused id is forgotten");
        for i in 0..(MAX_CONNECTIONS as u16 + 5) {
            let at = t0 + Duration::from_millis(u64::from(i));
            c.put(
                SocketAddr::from(([192, 0, 2, 2], i)),
                Some((u64::from(i), at)),
                at,
            );
        }
        assert_eq!(c.entries().len(), MAX_CONNECTIONS);
        let newest = t0 + Duration::from_millis(MAX_CONNECTIONS as u64 + 4);
        assert_eq!(
            c.get(SocketAddr::from(([192, 0, 2, 2], 0)), newest),
            None,
            "oldest went"
        );
        assert!(c
            .get(SocketAddr::from(([192, 0, 2, 2], 5)), newest)
            .is_some());
    }
}
