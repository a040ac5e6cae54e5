//! A ready swarm for a test: random content, its `.torrent` made by libtorrent, opentracker with
//! the info-hash whitelisted, and a python3-libtorrent seeder that has checked its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::data::{temp_dir, write_random_file, write_random_tree};
use crate::libtorrent::{create_torrent, LtOptions, LtPeer, Torrent};
use crate::tracker::Opentracker;

pub struct SwarmBuilder {
    label: String,
    name: String,
    /// `None`: a single-file torrent of `single_len` bytes.
    files: Option<Vec<(String, u64)>>,
    single_len: u64,
    piece_length: Option<u32>,
    tracker: bool,
    udp: bool,
    upload_limit: Option<u64>,
    seed: u64,
}

/// A running swarm: see the module documentation. Everything stops when it drops.
pub struct Swarm {
    pub torrent: Torrent,
    /// The seeder's copy: the file itself, or the torrent's folder.
    pub content: PathBuf,
    pub seeder: LtPeer,
    pub tracker: Option<Opentracker>,
    pub dir: TempDir,
}

impl SwarmBuilder {
    fn new(label: &str, name: &str) -> SwarmBuilder {
        SwarmBuilder {
            label: label.to_string(),
            name: name.to_string(),
            files: None,
            single_len: 0,
            piece_length: None,
            tracker: true,
            udp: false,
            upload_limit: None,
            seed: 0x5eed,
        }
    }

    pub fn piece_length(mut self, n: u32) -> Self {
        self.piece_length = Some(n);
        self
    }

    /// No tracker: the torrent has no announce URL and no opentracker runs.
    pub fn no_tracker(mut self) -> Self {
        self.tracker = false;
        self
    }

    /// Announce over UDP (BEP 15) instead of HTTP.
    pub fn udp_tracker(mut self) -> Self {
        self.udp = true;
        self
    }

    /// Limits the seeder's upload, in bytes per second.
    pub fn upload_limit(mut self, bytes_per_sec: u64) -> Self {
        self.upload_limit = Some(bytes_per_sec);
        self
    }

    pub fn start(self) -> Swarm {
        let dir = temp_dir(&self.label);
        let seed_dir = dir.path().join("seed");
        let content = seed_dir.join(&self.name);
        match &self.files {
            None => write_random_file(&content, self.single_len, self.seed),
            Some(files) => {
                let files: Vec<(&str, u64)> = files.iter().map(|(p, n)| (p.as_str(), *n)).collect();
                write_random_tree(&content, &files, self.seed);
            }
        }
        let mut tracker = self.tracker.then(|| Opentracker::start(&[]));
        let trackers: Vec<String> = tracker
            .iter()
            .map(|t| match self.udp {
                true => t.udp_announce_url(),
                false => t.announce_url(),
            })
            .collect();
        let torrent = create_torrent(
            &content,
            &dir.path().join(format!("{}.torrent", self.name)),
            self.piece_length,
            &trackers,
        );
        if let Some(t) = tracker.as_mut() {
            t.allow(torrent.info_hash);
        }
        let mut opts = LtOptions::torrent(&torrent.path, &seed_dir);
        if let Some(n) = self.upload_limit {
            opts = opts.upload_limit(n);
        }
        let seeder = opts.start("lt seeder");
        seeder.wait_finished(Duration::from_secs(120));
        Swarm {
            torrent,
            content,
            seeder,
            tracker,
            dir,
        }
    }
}

impl Swarm {
    /// A single-file torrent of `len` random bytes named `name`.
    pub fn single_file(label: &str, name: &str, len: u64) -> SwarmBuilder {
        let mut b = SwarmBuilder::new(label, name);
        b.single_len = len;
        b
    }

    /// A multi-file torrent in a folder `name`, with `(relative path, length)` files.
    pub fn multi_file(label: &str, name: &str, files: &[(&str, u64)]) -> SwarmBuilder {
        let mut b = SwarmBuilder::new(label, name);
        b.files = Some(files.iter().map(|(p, n)| (p.to_string(), *n)).collect());
        b
    }

    /// A fresh folder inside the swarm's temporary folder, e.g. for a download's output.
    pub fn new_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("create a folder");
        p
    }

    /// Where a download into `output` puts this torrent's file or folder.
    pub fn downloaded(&self, output: &Path) -> PathBuf {
        output.join(&self.torrent.name)
    }

    /// A magnet link with no tracker, only the seeder's address as `x.pe`.
    pub fn magnet_with_peer_only(&self) -> String {
        format!(
            "magnet:?xt=urn:btih:{}&dn={}&x.pe={}",
            self.torrent.info_hash.to_hex(),
            self.torrent.name,
            self.seeder.addr()
        )
    }
}
