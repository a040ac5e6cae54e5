//! npm's `bittorrent-tracker` on IPv6 loopback (HTTP on `[::1]`, UDP on both families): Debian's
//! opentracker is IPv4-only. `scripts/install-test-deps.sh` installs it into `tests/node`.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, Stream};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/tracker.mjs");

pub struct NodeTracker {
    _proc: Proc,
    port: u16,
}

impl NodeTracker {
    /// Starts the tracker and returns once it answers.
    pub fn start() -> NodeTracker {
        let port = TcpListener::bind("[::1]:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind [::1]:0 (IPv6 loopback)");
        let mut cmd = Command::new("node");
        cmd.arg(SCRIPT).arg(port.to_string());
        let proc = Proc::spawn("bittorrent-tracker", cmd);
        proc.wait_line(
            Stream::Stdout,
            Duration::from_secs(30),
            "the tracker to listen",
            |l| (l == "listening").then_some(()),
        );
        NodeTracker { _proc: proc, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port))
    }

    /// The HTTP announce URL, on `[::1]`.
    pub fn announce_url(&self) -> String {
        format!("http://[::1]:{}/announce", self.port)
    }
}
