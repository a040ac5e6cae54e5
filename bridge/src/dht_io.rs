//! The native DHT's I/O for the driver: its UDP socket on the peer port, the bootstrap nodes
//! (`--dht-bootstrap`, `--no-dht`), and the routing table kept between runs in the user's state
//! folder. The DHT itself (`protocol::dht`) and when to use it (`protocol::client`) are sans-IO.

use anyhow::{Context, Result};
use protocol::dht::NodeId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// The well-known routers a DHT node joins through when the user names none.
pub const DHT_ROUTERS: [&str; 3] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
];
/// Nodes saved at most, and lines of a saved file read at most.
const DHT_SAVE_MAX: usize = 1000;
/// A saved file past this size is not read.
const DHT_FILE_MAX: u64 = 256 << 10;
/// First line of the saved routing table.
const DHT_FILE_HEADER: &str = "bt-tab dht-nodes 1";
/// Names of bootstrap nodes are resolved within this long, or skipped.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Datagrams waiting for the loop at most; more are dropped, as the network would.
pub(crate) const DATAGRAM_QUEUE: usize = 1024;

/// `--dht-bootstrap` and `--no-dht`, shared by `download` and `seed`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DhtArgs {
    /// A DHT node to join the network through (repeatable; default: the well-known routers
    /// router.bittorrent.com, dht.transmissionbt.com and router.utorrent.com, port 6881).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub dht_bootstrap: Vec<String>,
    /// Do not use the DHT (BEP 5) to find peers.
    #[arg(long, conflicts_with = "dht_bootstrap")]
    pub no_dht: bool,
}

/// `HOST:PORT`, a name or an IP (IPv6 in brackets), checked but not resolved.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("{s:?} names no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{s:?}: {port:?} is not a port"))?;
    Ok(s.to_string())
}

impl DhtArgs {
    /// The DHT's options: bootstrap names resolved (those that fail are skipped with a
    /// warning), and the routing table saved in the user's state folder.
    pub async fn options(&self) -> Option<DhtOptions> {
        if self.no_dht {
            return None;
        }
        let names: Vec<String> = if self.dht_bootstrap.is_empty() {
            DHT_ROUTERS.iter().map(|s| s.to_string()).collect()
        } else {
            self.dht_bootstrap.clone()
        };
        let mut bootstrap = Vec::new();
        let lookups = names.into_iter().map(|n| async move {
            let r = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(n.clone()))
                .await
                .map(|r| r.map(Vec::from_iter));
            (n, r)
        });
        for (name, r) in futures_join_all(lookups).await {
            match r {
                Ok(Ok(addrs)) => bootstrap.extend(addrs),
                Ok(Err(e)) => warn!("DHT bootstrap node {name}: {e}"),
                Err(_) => warn!("DHT bootstrap node {name}: no answer from the resolver"),
            }
        }
        bootstrap.sort();
        bootstrap.dedup();
        Some(DhtOptions {
            bootstrap,
            state_file: dht_state_file(),
        })
    }
}

/// Runs the futures at once and gives their results in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, f) in futs.enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[derive(Debug, Clone)]
pub struct DhtOptions {
    pub bootstrap: Vec<SocketAddr>,
    /// Where the routing table is loaded from at start and saved to at exit.
    pub state_file: Option<PathBuf>,
}

/// `$XDG_STATE_HOME/bt-tab/dht-nodes`, else `~/.local/state/bt-tab/dht-nodes`.
fn dht_state_file() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?)
            .join(".local")
            .join("state"),
    };
    Some(base.join("bt-tab").join("dht-nodes"))
}

/// A saved routing table: our id and the nodes. Lines: the header, `id HEX`, then `HEX ADDR`.
fn format_dht_nodes(id: NodeId, nodes: &[(NodeId, SocketAddr)]) -> String {
    let mut s = format!("{DHT_FILE_HEADER}\nid {}\n", id.to_hex());
    for (n, a) in nodes.iter().take(DHT_SAVE_MAX) {
        s.push_str(&format!("{} {a}\n", n.to_hex()));
    }
    s
}

fn parse_node_id(hex: &str) -> Option<NodeId> {
    let b = hex.as_bytes();
    if b.len() != 40 {
        return None;
    }
    let mut id = [0u8; 20];
    for (i, pair) in b.chunks(2).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(NodeId(id))
}

pub(crate) type SavedTable = (NodeId, Vec<(NodeId, SocketAddr)>);

fn parse_dht_nodes(text: &str) -> std::result::Result<SavedTable, String> {
    let mut lines = text.lines();
    if lines.next() != Some(DHT_FILE_HEADER) {
        return Err("not a saved routing table".into());
    }
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("id "))
        .and_then(parse_node_id)
        .ok_or("no node id")?;
    let mut nodes = Vec::new();
    for (i, line) in lines.take(DHT_SAVE_MAX).enumerate() {
        let bad = || format!("line {} is not `ID ADDRESS`", i + 3);
        let (n, a) = line.split_once(' ').ok_or_else(bad)?;
        let n = parse_node_id(n).ok_or_else(bad)?;
        let a: SocketAddr = a.parse().map_err(|_| bad())?;
        nodes.push((n, a));
    }
    Ok((id, nodes))
}

/// The saved routing table, if there is one that reads; a bad one is ignored with a warning.
pub(crate) fn load_dht_nodes(path: &Path) -> Option<SavedTable> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > DHT_FILE_MAX {
        warn!(
            "ignoring {}: too big for a DHT routing table",
            path.display()
        );
        return None;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            warn!("ignoring {}: {e}", path.display());
            return None;
        }
    };
    match parse_dht_nodes(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("ignoring the DHT routing table {}: {e}", path.display());
            None
        }
    }
}

pub(crate) fn save_dht_nodes(
    path: &Path,
    id: NodeId,
    nodes: &[(NodeId, SocketAddr)],
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format_dht_nodes(id, nodes))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A UDP socket on the TCP listener's address: dual-stack when that is `[::]`.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = match addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// The DHT's socket and where its routing table is kept.
pub(crate) struct DhtIo {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    pub(crate) reader: tokio::task::JoinHandle<()>,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) bootstrapped: bool,
}

impl DhtIo {
    pub(crate) fn send(&self, to: SocketAddr, data: &[u8]) {
        let local_v6 = self.socket.local_addr().is_ok_and(|a| a.is_ipv6());
        let to = match (to, local_v6) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            (SocketAddr::V6(_), false) => return,
            (to, _) => to,
        };
        // A full send buffer drops the datagram, as the network may: the DHT retries.
        if let Err(e) = self.socket.try_send_to(data, to) {
            debug!("DHT datagram to {to} not sent: {e}");
        }
    }
}

impl Drop for DhtIo {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads datagrams into the loop's queue until the socket fails.
pub(crate) async fn read_datagrams(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // A full queue drops it, as a congested network would.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send((from, buf[..n].to_vec()))
                {
                    return;
                }
            }
            // ICMP errors (port unreachable) surface here on some systems: not fatal.
            Err(e) => debug!("DHT socket: {e}"),
        }
    }
}

/// The next datagram for the DHT, or never without one.
pub(crate) async fn recv_datagram(dht: &mut Option<DhtIo>) -> Option<(SocketAddr, Vec<u8>)> {
    match dht {
        Some(d) => d.rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_routing_table_reads_back_and_a_bad_one_is_refused() {
        let id = NodeId([7; 20]);
        let nodes = vec![
            (NodeId([1; 20]), "127.0.0.1:6881".parse().unwrap()),
            (NodeId([0xab; 20]), "[::1]:7000".parse().unwrap()),
        ];
        let text = format_dht_nodes(id, &nodes);
        assert_eq!(parse_dht_nodes(&text).unwrap(), (id, nodes.clone()));
        assert!(parse_dht_nodes("").is_err());
        assert!(parse_dht_nodes("garbage\n").is_err());
        let bad = format!("{DHT_FILE_HEADER}\nid {}\nzz 1.2.3.4:5\n", id.to_hex());
        assert!(parse_dht_nodes(&bad).unwrap_err().contains("line 3"));

        let dir = std::env::temp_dir().join(format!("bt-tab-dht-{}", std::process::id()));
        let path = dir.join("bt-tab").join("dht-nodes");
        save_dht_nodes(&path, id, &nodes).unwrap();
        assert_eq!(load_dht_nodes(&path), Some((id, nodes)));
        std::fs::write(&path, "not a table").unwrap();
        assert_eq!(load_dht_nodes(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bootstrap_addresses_are_host_and_port() {
        assert!(parse_host_port("router.bittorrent.com:6881").is_ok());
        assert!(parse_host_port("[::1]:6881").is_ok());
        assert!(parse_host_port("127.0.0.1").is_err());
        assert!(parse_host_port(":6881").is_err());
        assert!(parse_host_port("host:70000").is_err());
    }
}
