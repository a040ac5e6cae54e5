//! Compact encodings of BEP 5 and BEP 32: a peer is 6 bytes (IPv4 and port) or 18 (IPv6 and
//! port), a node is its 20-byte id followed by a compact peer (26 or 38 bytes).

use super::id::NodeId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const PEER_V4: usize = 6;
pub const PEER_V6: usize = 18;
pub const NODE_V4: usize = 20 + PEER_V4;
pub const NODE_V6: usize = 20 + PEER_V6;

/// A node as the DHT hands it around: who it says it is and where it answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// A compact peer, or `None` for a length that is neither form or for port 0, which nobody can
/// be reached at.
pub fn parse_peer(b: &[u8]) -> Option<SocketAddr> {
    let (ip, port) = match b.len() {
        PEER_V4 => {
            let ip: [u8; 4] = b[..4].try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(ip)), &b[4..])
        }
        PEER_V6 => {
            let ip: [u8; 16] = b[..16].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(ip)), &b[16..])
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(port.try_into().ok()?);
    (port != 0).then_some(SocketAddr::new(ip, port))
}

pub fn write_peer(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend(ip.octets()),
        IpAddr::V6(ip) => out.extend(ip.octets()),
    }
    out.extend(addr.port().to_be_bytes());
}

/// Appends the nodes of a `nodes` (IPv4, `v6` false) or `nodes6` string to `out`, stopping
/// once `out` holds `max`. A torn last entry is ignored rather than losing the whole answer, and
/// entries with port 0 are skipped.
pub fn parse_nodes(b: &[u8], v6: bool, max: usize, out: &mut Vec<NodeInfo>) {
    let entry = if v6 { NODE_V6 } else { NODE_V4 };
    for chunk in b.chunks_exact(entry) {
        if out.len() >= max {
            return;
        }
        let Ok(id) = <[u8; 20]>::try_from(&chunk[..20]) else {
            continue;
        };
        if let Some(addr) = parse_peer(&chunk[20..]) {
            out.push(NodeInfo {
                id: NodeId(id),
                addr,
            });
        }
    }
}

pub fn write_node(node: &NodeInfo, out: &mut Vec<u8>) {
    out.extend(node.id.0);
    write_peer(&node.addr, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_round_trip_and_refuse_odd_lengths() {
        for s in ["1.2.3.4:6881", "[2001:db8::1]:51413"] {
            let a: SocketAddr = s.parse().unwrap();
            let mut b = Vec::new();
            write_peer(&a, &mut b);
            assert_eq!(parse_peer(&b), Some(a));
        }
        assert_eq!(parse_peer(&[1, 2, 3, 4, 0, 0]), None, "port 0");
        assert_eq!(parse_peer(&[1, 2, 3, 4, 5]), None);
        assert_eq!(parse_peer(&[]), None);
    }

    #[test]
    fn nodes_ignore_torn_tails_and_stop_at_max() {
        let mut b = Vec::new();
        for i in 0..5u8 {
            write_node(
                &NodeInfo {
                    id: NodeId([i; 20]),
                    addr: SocketAddr::from(([10, 0, 0, i], 1000 + u16::from(i))),
                },
                &mut b,
            );
        }
        b.extend([9; 7]);
        let mut out = Vec::new();
        parse_nodes(&b, false, 3, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].id, NodeId([2; 20]));
        assert_eq!(out[2].addr, "10.0.0.2:1002".parse().unwrap());
        out.clear();
        parse_nodes(&b, false, 100, &mut out);
        assert_eq!(out.len(), 5);
        out.clear();
        parse_nodes(&b[..NODE_V6], true, 100, &mut out);
        assert_eq!(out.len(), 1, "the same bytes read as one IPv6 node");
    }
}
