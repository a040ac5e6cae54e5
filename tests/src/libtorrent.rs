//! python3-libtorrent peers and torrent files, through `tests/py/lt_peer.py`.
//!
//! The script runs under Debian's `/usr/bin/python3`, the interpreter the python3-libtorrent
//! package installs for (a pyenv or venv python on the PATH lacks the module). It reports its state
//! as JSON lines on stdout, which [`LtPeer`] parses so a test can wait on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::process::{describe, Proc, Stream};
use crate::InfoHash;

pub const PYTHON: &str = "/usr/bin/python3";
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/lt_peer.py");

/// A `.torrent` file made by libtorrent's `create_torrent`.
#[derive(Clone, Debug)]
pub struct Torrent {
    pub path: PathBuf,
    pub info_hash: InfoHash,
    pub name: String,
    pub total_size: u64,
    pub num_pieces: u32,
    pub piece_length: u32,
    pub magnet: String,
}

#[derive(Deserialize)]
struct Created {
    info_hash: String,
    name: String,
    total_size: u64,
    num_pieces: u32,
    piece_length: u32,
    magnet: String,
}

impl Created {
    fn into_torrent(self, path: &Path) -> Torrent {
        Torrent {
            path: path.to_path_buf(),
            info_hash: InfoHash::from_hex(&self.info_hash)
                .expect("libtorrent prints a hex info-hash"),
            name: self.name,
            total_size: self.total_size,
            num_pieces: self.num_pieces,
            piece_length: self.piece_length,
            magnet: self.magnet,
        }
    }
}

/// Makes a v1 `.torrent` of the file or folder `content` at `out`. `piece_length` of `None`
/// lets libtorrent choose.
pub fn create_torrent(
    content: &Path,
    out: &Path,
    piece_length: Option<u32>,
    trackers: &[String],
) -> Torrent {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(SCRIPT)
        .arg("create")
        .arg("--path")
        .arg(content)
        .arg("--out")
        .arg(out)
        .args(["--piece-length", &piece_length.unwrap_or(0).to_string()]);
    for t in trackers {
        cmd.args(["--tracker", t]);
    }
    let c: Created = run_json(cmd, "lt_peer.py create");
    c.into_torrent(out)
}

/// Reads a `.torrent` file with libtorrent (e.g. one that `bridge seed` wrote).
pub fn torrent_info(path: &Path) -> Torrent {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(SCRIPT).arg("info").arg("--torrent").arg(path);
    let c: Created = run_json(cmd, "lt_peer.py info");
    c.into_torrent(path)
}

fn run_json<T: for<'de> Deserialize<'de>>(mut cmd: Command, what: &str) -> T {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        describe(out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed {stdout:?}: {e}"))
}

/// What the peer starts from.
#[derive(Clone, Debug)]
pub enum Source {
    Torrent(PathBuf),
    Magnet(String),
}

/// Options for a libtorrent peer: a seeder when `save` already holds the data, a leecher
/// otherwise.
#[derive(Clone, Debug)]
pub struct LtOptions {
    pub source: Source,
    pub save: PathBuf,
    pub port: u16,
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    pub peers: Vec<SocketAddr>,
    pub exit_when_finished: bool,
    pub seed_mode: bool,
    /// The address it listens on (`[::1]` for IPv6); default 127.0.0.1.
    pub bind: Option<String>,
}

impl LtOptions {
    pub fn new(source: Source, save: &Path) -> LtOptions {
        LtOptions {
            source,
            save: save.to_path_buf(),
            port: 0,
            upload_limit: None,
            download_limit: None,
            peers: Vec::new(),
            exit_when_finished: false,
            seed_mode: false,
            bind: None,
        }
    }

    pub fn torrent(path: &Path, save: &Path) -> LtOptions {
        LtOptions::new(Source::Torrent(path.to_path_buf()), save)
    }

    pub fn magnet(uri: &str, save: &Path) -> LtOptions {
        LtOptions::new(Source::Magnet(uri.to_string()), save)
    }

    /// Upload limit in bytes per second (applies to loopback peers too).
    pub fn upload_limit(mut self, bytes_per_sec: u64) -> Self {
        self.upload_limit = Some(bytes_per_sec);
        self
    }

    pub fn download_limit(mut self, bytes_per_sec: u64) -> Self {
        self.download_limit = Some(bytes_per_sec);
        self
    }

    /// A peer to connect to directly, besides those from trackers.
    pub fn peer(mut self, addr: SocketAddr) -> Self {
        self.peers.push(addr);
        self
    }

    /// Trust the files in `save` without checking them first (for large seeds).
    pub fn seed_mode(mut self) -> Self {
        self.seed_mode = true;
        self
    }

    /// Listens on `ip` instead of 127.0.0.1 (an IPv6 one in brackets: `[::1]`).
    pub fn bind(mut self, ip: &str) -> Self {
        self.bind = Some(ip.to_string());
        self
    }

    pub fn exit_when_finished(mut self) -> Self {
        self.exit_when_finished = true;
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u").arg(SCRIPT).arg("run");
        match &self.source {
            Source::Torrent(p) => cmd.arg("--torrent").arg(p),
            Source::Magnet(m) => cmd.args(["--magnet", m]),
        };
        cmd.arg("--save")
            .arg(&self.save)
            .args(["--port", &self.port.to_string()]);
        if let Some(n) = self.upload_limit {
            cmd.args(["--upload-limit", &n.to_string()]);
        }
        if let Some(n) = self.download_limit {
            cmd.args(["--download-limit", &n.to_string()]);
        }
        for p in &self.peers {
            cmd.args(["--peer", &p.to_string()]);
        }
        if self.exit_when_finished {
            cmd.arg("--exit-when-finished");
        }
        if self.seed_mode {
            cmd.arg("--seed-mode");
        }
        if let Some(ip) = &self.bind {
            cmd.args(["--bind", ip]);
        }
        cmd
    }

    /// Starts the peer and returns once it listens.
    pub fn start(self, name: &str) -> LtPeer {
        let proc = Proc::spawn(name, self.command());
        let port = wait_listening(&proc);
        LtPeer { proc, port }
    }
}

/// One JSON line from `lt_peer.py run`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Listening { port: u16 },
    Status(Status),
    Finished,
    Metadata,
    Tracker { message: String },
    Error { what: String, message: String },
}

#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub state: String,
    pub progress: f64,
    pub total_done: u64,
    pub total_wanted: u64,
    pub num_peers: u32,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub total_upload: u64,
    pub is_seeding: bool,
}

/// A running python3-libtorrent peer on 127.0.0.1.
pub struct LtPeer {
    proc: Proc,
    port: u16,
}

impl LtPeer {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.proc
            .stdout()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The latest status line, if any.
    pub fn status(&self) -> Option<Status> {
        self.events().into_iter().rev().find_map(|e| match e {
            Event::Status(s) => Some(s),
            _ => None,
        })
    }

    /// Waits until every piece is verified (a seeder reports this once its check is done).
    pub fn wait_finished(&self, timeout: Duration) {
        self.wait_event(timeout, "libtorrent to finish", |e| {
            matches!(e, Event::Finished).then_some(())
        });
        if let Some(Event::Error { what, message }) = self
            .events()
            .into_iter()
            .find(|e| matches!(e, Event::Error { .. }))
        {
            panic!(
                "{}: libtorrent reported {what}: {message}",
                self.proc.name()
            );
        }
    }

    /// Waits until a status line satisfies `pred`, and returns it.
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Status) -> bool,
    ) -> Status {
        self.wait_event(timeout, what, |e| match e {
            Event::Status(s) if pred(&s) => Some(s),
            _ => None,
        })
    }

    pub fn wait_event<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(Event) -> Option<T>,
    ) -> T {
        self.proc.wait_line(Stream::Stdout, timeout, what, |l| {
            serde_json::from_str::<Event>(l).ok().and_then(&mut f)
        })
    }
}

/// Waits for an lt_peer.py process to say it listens; returns its port.
pub fn wait_listening(proc: &Proc) -> u16 {
    proc.wait_line(
        Stream::Stdout,
        Duration::from_secs(30),
        "libtorrent to listen",
        |l| match serde_json::from_str::<Event>(l) {
            Ok(Event::Listening { port }) => Some(port),
            _ => None,
        },
    )
}
