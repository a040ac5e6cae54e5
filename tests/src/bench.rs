//! What the two benchmark programs (`bench` and `bench_tab`) share: the seeded swarm they measure
//! against, the byte check after each run, and the figures' arithmetic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::data::{first_difference, write_random_file};
use crate::libtorrent::{create_torrent, LtOptions, LtPeer, Torrent};
use crate::tracker::Opentracker;

/// A file of random data seeded by python3-libtorrent on 127.0.0.1, its torrent (made by
/// libtorrent) announced to a whitelisted opentracker. Dropping it stops both.
pub struct BenchSwarm {
    /// Holds the source under `seed/` and the clients' output folders.
    pub root: tempfile::TempDir,
    /// The source file, `bench.bin`: every download is compared with it.
    pub content: PathBuf,
    pub torrent: Torrent,
    pub seeder: LtPeer,
    pub tracker: Opentracker,
}

impl BenchSwarm {
    /// `size_mib` of data in a new folder under `dir` (else the system's temporary folder);
    /// `piece_kib` overrides libtorrent's choice of piece length.
    pub fn start(prefix: &str, dir: Option<&Path>, size_mib: u64, piece_kib: Option<u32>) -> Self {
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix(prefix);
            b
        };
        let root = match dir {
            Some(d) => builder.tempdir_in(d),
            None => builder.tempdir(),
        }
        .expect("create the benchmark folder");

        eprintln!("writing {size_mib} MiB of random data");
        let seed_dir = root.path().join("seed");
        let content = seed_dir.join("bench.bin");
        write_random_file(&content, size_mib * 1024 * 1024, 0xbe4c);

        let mut tracker = Opentracker::start(&[]);
        eprintln!("hashing the torrent with libtorrent");
        let torrent = create_torrent(
            &content,
            &root.path().join("bench.torrent"),
            piece_kib.map(|k| k * 1024),
            &[tracker.announce_url()],
        );
        tracker.allow(torrent.info_hash);
        let seeder = LtOptions::torrent(&torrent.path, &seed_dir).start("lt seeder");
        eprintln!("waiting for the seeder to check its data");
        seeder.wait_finished(Duration::from_secs(600));
        BenchSwarm {
            root,
            content,
            torrent,
            seeder,
            tracker,
        }
    }
}

/// Compares a client's download with the source, byte for byte.
pub fn verify(expected: &Path, actual: &Path) -> Result<(), String> {
    match first_difference(expected, actual) {
        Ok(None) => Ok(()),
        Ok(Some(d)) => Err(format!("wrong bytes: {d}")),
        Err(e) => Err(format!("cannot compare {}: {e}", actual.display())),
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
