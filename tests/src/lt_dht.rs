//! Three python3-libtorrent DHT nodes on 127.0.0.1, one seeding, through `tests/py/lt_dht.py`.
//!
//! The script reports on stdout as JSON lines (see its documentation); [`LtDht`] parses them so
//! that a test can check them while it drives its own node.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::libtorrent::PYTHON;
use crate::process::{Proc, Stream};
use crate::InfoHash;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/lt_dht.py");

/// One JSON line from `lt_dht.py`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Ready {
        ports: Vec<u16>,
        info_hash: String,
    },
    Nodes {
        counts: Vec<usize>,
    },
    Announce {
        node: usize,
        info_hash: String,
        peer: String,
    },
    Peers {
        info_hash: String,
        peers: Vec<String>,
    },
}

/// The running nodes, stopped on drop.
pub struct LtDht {
    proc: Proc,
    ports: Vec<u16>,
    /// What node 0 seeds and has announced.
    pub info_hash: InfoHash,
}

impl LtDht {
    /// Starts the nodes with their data under `dir`, node 1 asking for `watch` with
    /// dht_get_peers every second once ready, and waits until node 0's announce was taken.
    pub fn start(dir: &Path, watch: InfoHash) -> LtDht {
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(SCRIPT)
            .arg("--dir")
            .arg(dir)
            .args(["--watch", &watch.to_hex()]);
        let proc = Proc::spawn("lt_dht.py", cmd);
        let (ports, info_hash) = proc.wait_line(
            Stream::Stdout,
            Duration::from_secs(60),
            "the libtorrent DHT nodes to be ready",
            |l| match serde_json::from_str(l) {
                Ok(Event::Ready { ports, info_hash }) => Some((ports, info_hash)),
                _ => None,
            },
        );
        let info_hash = InfoHash::from_hex(&info_hash).expect("a hex info-hash");
        LtDht {
            proc,
            ports,
            info_hash,
        }
    }

    /// Node `i`'s DHT address; it also takes peers at this port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    pub fn events(&self) -> Vec<Event> {
        self.proc
            .stdout()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether a libtorrent node took an announce_peer of `peer` for `info_hash`.
    pub fn took_announce(&self, info_hash: InfoHash, peer: SocketAddr) -> bool {
        self.events().iter().any(|e| {
            matches!(e, Event::Announce { info_hash: h, peer: p, .. }
                if *h == info_hash.to_hex() && *p == peer.to_string())
        })
    }

    /// Whether node 1's dht_get_peers for the watched info-hash found `peer`.
    pub fn found(&self, peer: SocketAddr) -> bool {
        self.events()
            .iter()
            .any(|e| matches!(e, Event::Peers { peers, .. } if peers.contains(&peer.to_string())))
    }

    /// The largest routing table among the nodes, as last reported.
    pub fn max_table(&self) -> usize {
        self.events()
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Nodes { counts } => counts.iter().copied().max(),
                _ => None,
            })
            .unwrap_or(0)
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
