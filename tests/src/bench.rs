//! What the two benchmark programs (`bench` and `bench_tab`) share: the seeded swarm they measure
//! against, the byte check after each run, and the figures' arithmetic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::browser::proc_status_bytes;
use crate::data::{first_difference, write_random_file};
use crate::libtorrent::{create_torrent, LtOptions, LtPeer, Torrent};
use crate::process::{describe, Proc};
use crate::tracker::Opentracker;

/// A client that has not exited after this long has failed its run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// How a client's run went: wall time from `started` to its exit, and its peak memory.
pub struct Sampled {
    pub secs: f64,
    /// Largest `RssAnon` seen: the process's own heap and stacks.
    pub peak_rss_anon: u64,
    /// `VmHWM` at the last sample: peak resident set, file-backed pages included.
    pub vm_hwm: u64,
}

/// Waits for `proc` to exit successfully, sampling its memory from /proc every 50 ms.
pub fn wait_sampling(proc: &mut Proc, started: Instant) -> Result<Sampled, String> {
    let (mut peak_rss_anon, mut vm_hwm) = (0, 0);
    let status = loop {
        if let Some(anon) = proc_status_bytes(proc.pid(), "RssAnon:") {
            peak_rss_anon = peak_rss_anon.max(anon);
        }
        if let Some(hwm) = proc_status_bytes(proc.pid(), "VmHWM:") {
            vm_hwm = vm_hwm.max(hwm);
        }
        if let Some(s) = proc.try_status() {
            break s;
        }
        if started.elapsed() > RUN_TIMEOUT {
            proc.kill();
            return Err(format!("no exit after {RUN_TIMEOUT:?}\n{}", proc.tail(10)));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("{}\n{}", describe(status), proc.tail(10)));
    }
    Ok(Sampled {
        secs,
        peak_rss_anon,
        vm_hwm,
    })
}

/// The kernel's running total of free memory handed back to the host (virtio-balloon free page
/// reporting), where the kernel has it, as the Firecracker VMs here do.
const REPORTED_KIB: &str = "/sys/module/page_reporting/parameters/reported_kib";

/// Writes out every dirty page (`sync`), then waits until the kernel has handed the memory freed
/// by the previous run back to the host (its reported total unchanged for 2 s; at most 60 s).
///
/// Why `sync`: the source file and the clients' copies are written into the page cache, and the
/// kernel writes them back about 30 s later, on whatever run is going then.
///
/// Why: in these VMs a page first touched after being reported costs a fault in the host. Writing
/// 1 GiB into fresh page cache then takes ~1.2 s of system time instead of ~0.2 s. Whether a run
/// gets reported pages or recently freed ones depends on how long ago the previous run deleted
/// its copy, which gave the second of two back-to-back runs a 15 % head start. Starting every
/// run from the same settled state makes the clients comparable. Elsewhere this returns at once.
pub fn settle_memory() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("sync: {e}");
    }
    let read = || {
        std::fs::read_to_string(REPORTED_KIB)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let Some(first) = read() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (first, Instant::now());
    while since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = read().unwrap_or(last);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

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
