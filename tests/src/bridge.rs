//! The `bridge` binary under test, and its output lines.
//!
//! Tests run the release build (hashing in a debug build is twenty times slower): `BRIDGE_BIN`
//! names it, or it is looked up as `release/bridge` in the target directory this test binary was
//! built in. `cargo build --release -p bridge` first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::wait_port_open;
use crate::process::{Proc, Stream};

/// The path of the `bridge` binary the tests run.
pub fn bridge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BRIDGE_BIN") {
        return PathBuf::from(p);
    }
    // This test binary lives in <target>/<profile>/deps/ (or <target>/<profile>/ for a [[bin]]).
    let exe = std::env::current_exe().expect("current_exe");
    let found = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("release").join("bridge"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "no release build of bridge found near {}: run `cargo build --release -p bridge` \
             (with the same CARGO_TARGET_DIR) or set BRIDGE_BIN",
            exe.display()
        )
    })
}

/// Arguments of `bridge download`.
#[derive(Clone, Debug)]
pub struct Download {
    pub source: String,
    pub output: PathBuf,
    pub peers: Vec<SocketAddr>,
    pub port: Option<u16>,
    pub timeout_secs: Option<u64>,
    pub seed: bool,
    /// `--bind`; `None` leaves the bridge's default (dual-stack `::`).
    pub bind: Option<String>,
    /// `--dht-bootstrap` addresses; empty: `--no-dht`, so that no test reaches the internet's
    /// DHT routers.
    pub dht_bootstrap: Vec<SocketAddr>,
    /// `XDG_STATE_HOME` for the saved DHT routing table, with `dht_bootstrap`.
    pub state_home: Option<PathBuf>,
}

impl Download {
    /// Downloads `source` (a `.torrent` path or a magnet URI) into `output`, listening on any free
    /// port of 127.0.0.1 (`--port 0`: tests run in parallel, so never on the default port).
    pub fn new(source: impl Into<String>, output: &Path) -> Download {
        Download {
            source: source.into(),
            output: output.to_path_buf(),
            peers: Vec::new(),
            port: Some(0),
            timeout_secs: None,
            seed: false,
            bind: Some("127.0.0.1".into()),
            dht_bootstrap: Vec::new(),
            state_home: None,
        }
    }

    /// Uses the DHT, joining it through `node`, with its state under `state_home`.
    pub fn dht(mut self, node: SocketAddr, state_home: &Path) -> Self {
        self.dht_bootstrap.push(node);
        self.state_home = Some(state_home.to_path_buf());
        self
    }

    pub fn torrent(path: &Path, output: &Path) -> Download {
        Download::new(path.to_string_lossy().into_owned(), output)
    }

    pub fn peer(mut self, addr: SocketAddr) -> Self {
        self.peers.push(addr);
        self
    }

    /// Listens where the bridge does by default: `::`, IPv6 and IPv4.
    pub fn default_bind(mut self) -> Self {
        self.bind = None;
        self
    }

    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout_secs = Some(secs);
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bridge_bin());
        cmd.arg("download")
            .arg(&self.source)
            .arg("--output")
            .arg(&self.output);
        if let Some(ip) = &self.bind {
            cmd.args(["--bind", ip]);
        }
        if let Some(p) = self.port {
            cmd.args(["--port", &p.to_string()]);
        }
        for p in &self.peers {
            cmd.args(["--peer", &p.to_string()]);
        }
        if let Some(t) = self.timeout_secs {
            cmd.args(["--timeout", &t.to_string()]);
        }
        if self.seed {
            cmd.arg("--seed");
        }
        dht_args(&mut cmd, &self.dht_bootstrap, self.state_home.as_deref());
        cmd.env("RUST_BACKTRACE", "1");
        cmd
    }

    pub fn spawn(&self, name: &str) -> Proc {
        Proc::spawn(name, self.command())
    }
}

/// `--dht-bootstrap` for each node, or `--no-dht` without any: tests never reach the internet.
fn dht_args(cmd: &mut Command, bootstrap: &[SocketAddr], state_home: Option<&Path>) {
    if bootstrap.is_empty() {
        cmd.arg("--no-dht");
    }
    for a in bootstrap {
        cmd.args(["--dht-bootstrap", &a.to_string()]);
    }
    if let Some(h) = state_home {
        cmd.env("XDG_STATE_HOME", h);
    }
}

/// `resume: <have>/<total> pieces verified on disk`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    pub have: u64,
    pub total: u64,
}

pub fn parse_resume(line: &str) -> Option<Resume> {
    let rest = line.strip_prefix("resume: ")?;
    let (counts, _) = rest.split_once(' ')?;
    let (have, total) = counts.split_once('/')?;
    Some(Resume {
        have: have.parse().ok()?,
        total: total.parse().ok()?,
    })
}

/// `complete: <name>, <total> bytes, downloaded <downloaded> bytes in <secs> s (<MB/s> MB/s)`
#[derive(Clone, Debug, PartialEq)]
pub struct Complete {
    pub name: String,
    pub total: u64,
    pub downloaded: u64,
    pub secs: f64,
    pub mb_per_s: f64,
}

pub fn parse_complete(line: &str) -> Option<Complete> {
    let rest = line.strip_prefix("complete: ")?;
    // The name may itself hold ", ": split from the right.
    let (name, rest) = rest.rsplit_once(", downloaded ")?;
    let (name, total) = name.rsplit_once(", ")?;
    let total = total.strip_suffix(" bytes")?.parse().ok()?;
    let (downloaded, rest) = rest.split_once(" bytes in ")?;
    let (secs, rest) = rest.split_once(" s (")?;
    let mb = rest.strip_suffix(" MB/s)")?;
    Some(Complete {
        name: name.to_string(),
        total,
        downloaded: downloaded.parse().ok()?,
        secs: secs.parse().ok()?,
        mb_per_s: mb.parse().ok()?,
    })
}

/// `progress: <verified>/<total> bytes, <peers> peers, <rate> B/s`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub verified: u64,
    pub total: u64,
    pub peers: u64,
    pub rate: u64,
}

pub fn parse_progress(line: &str) -> Option<Progress> {
    let rest = line.strip_prefix("progress: ")?;
    let mut parts = rest.split(", ");
    let (verified, total) = parts.next()?.strip_suffix(" bytes")?.split_once('/')?;
    let peers = parts.next()?.strip_suffix(" peers")?;
    let rate = parts.next()?.strip_suffix(" B/s")?;
    Some(Progress {
        verified: verified.parse().ok()?,
        total: total.parse().ok()?,
        peers: peers.parse().ok()?,
        rate: rate.parse().ok()?,
    })
}

/// Waits for `bridge download` to exit, asserts it succeeded without a panic, and returns its
/// `resume:` and `complete:` lines.
pub fn expect_complete(proc: &mut Proc, timeout: Duration) -> (Resume, Complete) {
    let status = proc.wait_exit(timeout);
    assert_no_panic(proc);
    assert!(
        status.success(),
        "bridge download failed ({})\n{}",
        crate::process::describe(status),
        proc.tail(40)
    );
    let out = proc.stdout();
    let resume = out.iter().find_map(|l| parse_resume(l));
    let complete = out.iter().find_map(|l| parse_complete(l));
    match (resume, complete) {
        (Some(r), Some(c)) => (r, c),
        _ => panic!(
            "bridge download printed no `resume:` and `complete:` lines\n{}",
            proc.tail(40)
        ),
    }
}

/// Panics if the process wrote a Rust panic message.
pub fn assert_no_panic(proc: &Proc) {
    let stderr = proc.stderr();
    assert!(
        !stderr.iter().any(|l| l.contains("panicked")),
        "{} panicked\n{}",
        proc.name(),
        proc.tail(60)
    );
}

/// Lines of stderr about `addr`: `peer <addr> banned: ...` or `peer <addr> closed: ...`.
pub fn peer_log(proc: &Proc, addr: SocketAddr) -> Vec<String> {
    let prefix = format!("peer {addr} ");
    proc.lines(Stream::Stderr)
        .into_iter()
        .filter(|l| l.contains(&prefix))
        .collect()
}

/// A running `bridge seed`: its magnet link and `.torrent` path, from its stdout.
pub struct Seed {
    pub proc: Proc,
    pub magnet: String,
    pub torrent: PathBuf,
    pub port: u16,
}

impl Seed {
    /// Starts `bridge seed PATH` on 127.0.0.1:`port` and waits for its `magnet:` and `torrent:`
    /// lines.
    pub fn start(path: &Path, torrent_out: &Path, port: u16, trackers: &[String]) -> Seed {
        Seed::start_on(Some("127.0.0.1"), path, torrent_out, port, trackers)
    }

    /// As `start`, with `--bind IP` (`None`: the bridge's default, dual-stack `::`).
    pub fn start_on(
        bind: Option<&str>,
        path: &Path,
        torrent_out: &Path,
        port: u16,
        trackers: &[String],
    ) -> Seed {
        Seed::start_with(bind, path, torrent_out, port, trackers, &[], None)
    }

    /// As `start_on`, joining the DHT through `dht_bootstrap` (empty: `--no-dht`) with its
    /// state under `state_home`.
    pub fn start_with(
        bind: Option<&str>,
        path: &Path,
        torrent_out: &Path,
        port: u16,
        trackers: &[String],
        dht_bootstrap: &[SocketAddr],
        state_home: Option<&Path>,
    ) -> Seed {
        let mut cmd = Command::new(bridge_bin());
        cmd.arg("seed")
            .arg(path)
            .arg("--torrent-out")
            .arg(torrent_out)
            .args(["--port", &port.to_string()]);
        if let Some(ip) = bind {
            cmd.args(["--bind", ip]);
        }
        for t in trackers {
            cmd.args(["--tracker", t]);
        }
        dht_args(&mut cmd, dht_bootstrap, state_home);
        cmd.env("RUST_BACKTRACE", "1");
        let proc = Proc::spawn("bridge seed", cmd);
        let t = Duration::from_secs(60);
        let magnet = proc.wait_line(Stream::Stdout, t, "the magnet: line", |l| {
            l.strip_prefix("magnet: ").map(str::to_string)
        });
        let torrent = proc.wait_line(Stream::Stdout, t, "the torrent: line", |l| {
            l.strip_prefix("torrent: ").map(PathBuf::from)
        });
        let seed = Seed {
            proc,
            magnet,
            torrent,
            port,
        };
        // A peer told to dial the seed right away must find it listening.
        wait_port_open(seed.addr(), t);
        seed
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_output_lines() {
        assert_eq!(
            parse_resume("resume: 3/10 pieces verified on disk"),
            Some(Resume { have: 3, total: 10 })
        );
        assert_eq!(
            parse_complete(
                "complete: a, b.bin, 1000 bytes, downloaded 600 bytes in 1.5 s (0.4 MB/s)"
            ),
            Some(Complete {
                name: "a, b.bin".into(),
                total: 1000,
                downloaded: 600,
                secs: 1.5,
                mb_per_s: 0.4,
            })
        );
        assert_eq!(
            parse_progress("progress: 5/10 bytes, 2 peers, 300 B/s"),
            Some(Progress {
                verified: 5,
                total: 10,
                peers: 2,
                rate: 300,
            })
        );
        assert_eq!(
            parse_progress("progress: x/10 bytes, 2 peers, 300 B/s"),
            None
        );
        assert_eq!(parse_complete("complete: nonsense"), None);
    }
}
