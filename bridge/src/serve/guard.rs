//! The guards of a relay that every page in the user's browser can reach: who may use it (Host and
//! Origin), where it may connect (no private networks unless allowed), and how much at once.

use axum::http::{header, HeaderMap};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Which pages may use the API routes.
#[derive(Debug, Clone)]
pub struct Access {
    /// Exact `Origin` values accepted: the bridge's own and `--allow-origin` ones.
    origins: Vec<String>,
    /// The number of leading entries of `origins` that are the bridge's own (no CORS needed).
    own: usize,
    /// `Host` values accepted, so a DNS-rebound name (evil.example resolving to 127.0.0.1) cannot
    /// pass itself off as the bridge's own page.
    hosts: Vec<String>,
}

/// Why a request was refused, for the log and the 403 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Host header {0:?} is not this bridge (DNS rebinding?)")]
    Host(String),
    #[error("request has no Host header")]
    NoHost,
    #[error("Origin {0:?} is not allowed (see --allow-origin)")]
    Origin(String),
    #[error("WebSocket without an Origin header")]
    NoOrigin,
    #[error("cross-site request without an Origin header (Sec-Fetch-Site: {0})")]
    CrossSite(String),
}

impl Access {
    pub fn new(listen: SocketAddr, allowed: &[String]) -> Self {
        let port = listen.port();
        let mut hosts = vec![listen.to_string(), format!("localhost:{port}")];
        if listen.ip().is_unspecified() {
            // A wildcard bind is reached on loopback by the browser on this machine.
            hosts.push(format!("127.0.0.1:{port}"));
            hosts.push(format!("[::1]:{port}"));
        }
        hosts.dedup();
        let mut origins: Vec<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
        let own = origins.len();
        for o in allowed {
            let o = o.trim_end_matches('/').to_string();
            if let Some(h) = o.split_once("://").map(|(_, h)| h.to_string()) {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
        Access {
            origins,
            own,
            hosts,
        }
    }

    fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .ok_or(Refusal::NoHost)?
            .to_str()
            .map_err(|_| Refusal::Host("<not text>".into()))?;
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            Ok(())
        } else {
            Err(Refusal::Host(host.chars().take(100).collect()))
        }
    }

    /// The `Origin` header if present; `Err` when present and not allowed.
    fn origin<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a str>, Refusal> {
        let Some(v) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let o = v
            .to_str()
            .map_err(|_| Refusal::Origin("<not text>".into()))?;
        if self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            Ok(Some(o))
        } else {
            Err(Refusal::Origin(o.chars().take(100).collect()))
        }
    }

    /// A WebSocket upgrade: browsers always send `Origin` there, so it is required.
    pub fn check_websocket(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check_host(headers)?;
        self.origin(headers)?.ok_or(Refusal::NoOrigin)?;
        Ok(())
    }

    /// A plain GET from a page. Browsers leave `Origin` out of same-origin GETs, so without it
    /// the request must not be marked cross-site (`Sec-Fetch-Site`; non-browser clients send
    /// neither). Returns the origin to name in `Access-Control-Allow-Origin`, if any.
    pub fn check_fetch(&self, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
        self.check_host(headers)?;
        match self.origin(headers)? {
            Some(o) => {
                let own = self.origins[..self.own]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o));
                Ok((!own).then(|| o.to_string()))
            }
            None => match headers.get("sec-fetch-site").map(|v| v.to_str()) {
                None | Some(Ok("same-origin")) | Some(Ok("none")) => Ok(None),
                Some(v) => Err(Refusal::CrossSite(
                    v.unwrap_or("<not text>").chars().take(40).collect(),
                )),
            },
        }
    }
}

/// Why a destination is refused without `--allow-private`, or `None` for a public unicast one.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => forbidden_v4(a),
        IpAddr::V6(a) => {
            // IPv4-mapped (::ffff:a.b.c.d) reaches the IPv4 address itself.
            if let Some(v4) = a.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = a.segments();
            if a.is_unspecified() {
                Some("unspecified address")
            } else if a.is_loopback() {
                Some("loopback address")
            } else if a.is_multicast() {
                Some("multicast address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("private address (fc00::/7)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local address")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local address")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible ::a.b.c.d, deprecated and never a real peer.
                Some("IPv4-compatible address")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_unspecified() || o[0] == 0 {
        Some("unspecified address")
    } else if a.is_loopback() {
        Some("loopback address")
    } else if a.is_private() {
        Some("private address (RFC 1918)")
    } else if o[0] == 100 && o[1] & 0xc0 == 64 {
        Some("shared address (100.64.0.0/10)")
    } else if a.is_link_local() {
        Some("link-local address")
    } else if a.is_multicast() {
        Some("multicast address")
    } else if a.is_broadcast() {
        Some("broadcast address")
    } else if o[0] >= 240 {
        Some("reserved address (240.0.0.0/4)")
    } else {
        None
    }
}

/// Where tunnels may go.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    pub allow_private: bool,
    /// Exceptions to the private rule: the demo's own seeder.
    pub extra: Vec<SocketAddr>,
}

impl Destinations {
    pub fn check(&self, addr: SocketAddr) -> Result<(), String> {
        if addr.port() == 0 {
            return Err("port 0".into());
        }
        if self.allow_private || self.extra.contains(&addr) {
            return Ok(());
        }
        match forbidden(addr.ip()) {
            Some(why) => Err(format!("{why} (see --allow-private)")),
            None => Ok(()),
        }
    }
}

/// Tunnels open per client and in total.
#[derive(Debug, Clone)]
pub struct Limits {
    per_client: usize,
    total: usize,
    open: Arc<Mutex<Count>>,
}

#[derive(Debug, Default)]
struct Count {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One open tunnel; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    client: IpAddr,
    open: Arc<Mutex<Count>>,
}

impl Limits {
    pub fn new(per_client: usize, total: usize) -> Self {
        Limits {
            per_client,
            total,
            open: Arc::default(),
        }
    }

    pub fn acquire(&self, client: IpAddr) -> Result<Permit, String> {
        let mut c = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.total {
            return Err(format!("{} tunnels open in total", c.total));
        }
        let mine = c.by_client.entry(client).or_default();
        if *mine >= self.per_client {
            return Err(format!("{mine} tunnels open from {client}"));
        }
        *mine += 1;
        c.total += 1;
        Ok(Permit {
            client,
            open: self.open.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.open.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins_and_hosts() {
        let a = Access::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["https://app.example/".into()],
        );
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(a.check_websocket(&ok), Ok(()));
        let lh = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert_eq!(a.check_websocket(&lh), Ok(()));
        let foreign = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(
            a.check_websocket(&foreign),
            Err(Refusal::Origin(_))
        ));
        let none = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(a.check_websocket(&none), Err(Refusal::NoOrigin));
        let rebound = headers(&[
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ]);
        assert!(matches!(a.check_websocket(&rebound), Err(Refusal::Host(_))));
        let allowed = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://app.example"),
        ]);
        assert_eq!(
            a.check_fetch(&allowed),
            Ok(Some("https://app.example".into()))
        );
        assert_eq!(a.check_fetch(&ok), Ok(None));
        // Same-origin GETs carry no Origin; cross-site ones without it are refused.
        assert_eq!(
            a.check_fetch(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin")
            ])),
            Ok(None)
        );
        assert!(matches!(
            a.check_fetch(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("sec-fetch-site", "cross-site")
            ])),
            Err(Refusal::CrossSite(_))
        ));
        assert_eq!(a.check_fetch(&HeaderMap::new()), Err(Refusal::NoHost));

        let any = Access::new("0.0.0.0:9000".parse().unwrap(), &[]);
        let lo = headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
        ]);
        assert_eq!(any.check_websocket(&lo), Ok(()));
    }

    #[test]
    fn private_destinations() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "1.2.3.4",
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
        let d = Destinations {
            allow_private: false,
            extra: vec!["127.0.0.1:7000".parse().unwrap()],
        };
        assert!(d.check("127.0.0.1:7000".parse().unwrap()).is_ok());
        assert!(d.check("127.0.0.1:7001".parse().unwrap()).is_err());
        assert!(d.check("1.2.3.4:0".parse().unwrap()).is_err());
    }

    #[test]
    fn limits_per_client_and_total() {
        let l = Limits::new(2, 3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = l.acquire(a).unwrap();
        let _p2 = l.acquire(a).unwrap();
        assert!(l.acquire(a).is_err());
        let _p3 = l.acquire(b).unwrap();
        assert!(l.acquire(b).is_err());
        drop(p1);
        assert!(l.acquire(b).is_ok());
    }
}
