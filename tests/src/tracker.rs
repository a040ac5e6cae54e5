//! Debian's opentracker, started per test.
//!
//! Debian builds it in whitelist mode: an announce for an info-hash not in the whitelist file
//! fails with "Requested download is not authorized". The whitelist is re-read on SIGHUP.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::data::temp_dir;
use crate::net::{free_port, wait_port_open};
use crate::process::Proc;
use crate::wait::wait_until;
use crate::InfoHash;

pub const OPENTRACKER: &str = "/usr/bin/opentracker";

/// A running opentracker on 127.0.0.1, HTTP and UDP on the same port.
pub struct Opentracker {
    proc: Proc,
    port: u16,
    whitelist_file: PathBuf,
    whitelist: Vec<InfoHash>,
    _dir: TempDir,
}

impl Opentracker {
    /// Starts opentracker with `whitelist` allowed, and returns once it answers announces for
    /// them.
    pub fn start(whitelist: &[InfoHash]) -> Opentracker {
        let dir = temp_dir("opentracker");
        // opentracker chroots to its working directory and drops to the user `nobody`, who
        // must still read the whitelist when it is reloaded.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the tracker directory");
        let whitelist_file = dir.path().join("whitelist");
        write_whitelist(&whitelist_file, whitelist);
        let port = free_port();
        let mut cmd = Command::new(OPENTRACKER);
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-P", &port.to_string(), "-w"])
            .arg(&whitelist_file)
            .current_dir(dir.path());
        let mut tracker = Opentracker {
            proc: Proc::spawn("opentracker", cmd),
            port,
            whitelist_file,
            whitelist: whitelist.to_vec(),
            _dir: dir,
        };
        wait_port_open(tracker.addr(), Duration::from_secs(10));
        for hash in whitelist {
            tracker.wait_allowed(hash);
        }
        tracker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The HTTP announce URL.
    pub fn announce_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// The UDP announce URL (BEP 15).
    pub fn udp_announce_url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }

    /// Adds `hash` to the whitelist, reloads it, and returns once announces for it are accepted.
    pub fn allow(&mut self, hash: InfoHash) {
        if !self.whitelist.contains(&hash) {
            self.whitelist.push(hash);
        }
        write_whitelist(&self.whitelist_file, &self.whitelist);
        self.proc.signal(libc::SIGHUP);
        self.wait_allowed(&hash);
    }

    /// Polls with an announce from a probe peer until the tracker accepts `hash`, then takes the
    /// probe out of the swarm again with a `stopped` event so no client ever dials it.
    fn wait_allowed(&mut self, hash: &InfoHash) {
        let addr = self.addr();
        wait_until(
            Duration::from_secs(10),
            &format!("opentracker to allow {hash}"),
            || {
                let reply = http_get(addr, &probe_announce(hash, "started")).ok()?;
                if reply.contains("failure reason") {
                    return None;
                }
                http_get(addr, &probe_announce(hash, "stopped")).ok()?;
                Some(())
            },
        );
    }

    /// The peers the tracker lists for `hash` (for assertions and diagnostics).
    pub fn peers(&self, hash: &InfoHash) -> Vec<SocketAddr> {
        // A stopped announce returns no peers; look with a real one and withdraw it at once.
        let reply =
            http_get_bytes(self.addr(), &probe_announce(hash, "started")).unwrap_or_default();
        let _ = http_get(self.addr(), &probe_announce(hash, "stopped"));
        compact_peers(&reply)
            .into_iter()
            .filter(|a| a.port() != 1)
            .collect()
    }
}

fn write_whitelist(file: &Path, hashes: &[InfoHash]) {
    let text: String = hashes.iter().map(|h| format!("{}\n", h.to_hex())).collect();
    fs::write(file, text).expect("write the whitelist");
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).expect("chmod the whitelist");
}

fn probe_announce(hash: &InfoHash, event: &str) -> String {
    format!(
        "/announce?info_hash={}&peer_id=-HA0001-probeprobepr&port=1&uploaded=0&downloaded=0&left=0&compact=1&numwant=200&event={event}",
        percent_encode(&hash.0)
    )
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn http_get_bytes(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let body = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| reply[i + 4..].to_vec())
        .unwrap_or(reply);
    Ok(body)
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    http_get_bytes(addr, path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The compact `peers` string of an announce reply.
fn compact_peers(reply: &[u8]) -> Vec<SocketAddr> {
    let Some(at) = reply.windows(7).position(|w| w == b"5:peers") else {
        return Vec::new();
    };
    let rest = &reply[at + 7..];
    let Some(colon) = rest.iter().position(|&b| b == b':') else {
        return Vec::new();
    };
    let len: usize = match std::str::from_utf8(&rest[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(n) => n,
        None => return Vec::new(),
    };
    let data = rest.get(colon + 1..colon + 1 + len).unwrap_or_default();
    data.chunks_exact(6)
        .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
        .collect()
}
