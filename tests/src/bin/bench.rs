//! Download benchmark: `cargo run --release -p tests --bin bench [-- OPTIONS]`.
//!
//! Seeds a torrent of random data (1 GiB by default) from python3-libtorrent on 127.0.0.1, found
//! through opentracker, and downloads it in turns with `bridge download` (the release build), the
//! python3-libtorrent leecher and `aria2c`, several runs each. For every run it prints the wall time
//! from start to exit, the rate in MB/s (10^6 bytes per second, over that wall time), and peak
//! memory: the largest `RssAnon` of the client process sampled every 50 ms from /proc (its own heap
//! and stacks, not the page cache of the file it writes), and its `VmHWM` (peak resident set,
//! file-backed and shared pages included). Then the median of each client. Every download is
//! compared with the source byte for byte after it is timed.
//!
//! Options: --size-mib N (1024), --runs N (3), --clients bridge,libtorrent,aria2c (also
//! bridge-rc4: `--encryption require`),
//! --piece-kib N (libtorrent's choice), --dir DIR (the system's temporary folder).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tests::bench::{median, mib, settle_memory, verify, wait_sampling, BenchSwarm};
use tests::bridge::{bridge_bin, parse_complete, Download};
use tests::libtorrent::{LtOptions, Torrent};
use tests::net::free_port;
use tests::process::Proc;

/// `bridge-rc4` is `bridge download --encryption require`: every byte through RC4, against the
/// same seeder (which accepts both), for the cost of encryption beside `bridge`'s default.
const CLIENTS: [&str; 4] = ["bridge", "bridge-rc4", "libtorrent", "aria2c"];

struct Options {
    size_mib: u64,
    runs: usize,
    clients: Vec<String>,
    piece_kib: Option<u32>,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        size_mib: 1024,
        runs: 3,
        clients: ["bridge", "libtorrent", "aria2c"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        piece_kib: None,
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size-mib" => o.size_mib = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--runs" => o.runs = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--piece-kib" => o.piece_kib = Some(value()?.parse().map_err(|e| format!("{a}: {e}"))?),
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--clients" => {
                o.clients = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = o.clients.iter().find(|c| !CLIENTS.contains(&c.as_str())) {
                    return Err(format!("unknown client {bad:?} (known: {CLIENTS:?})"));
                }
            }
            "-h" | "--help" => {
                println!(
                    "bench [--size-mib N] [--runs N] [--clients {}] [--piece-kib N] [--dir DIR]",
                    CLIENTS.join(",")
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(o)
}

struct RunResult {
    client: String,
    run: usize,
    outcome: Result<Measured, String>,
}

struct Measured {
    secs: f64,
    mb_per_s: f64,
    peak_rss_anon: u64,
    vm_hwm: u64,
    /// What the client said of itself, if anything.
    note: String,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let swarm = BenchSwarm::start("bench-", opts.dir.as_deref(), opts.size_mib, opts.piece_kib);
    let (root, content, torrent) = (&swarm.root, &swarm.content, &swarm.torrent);

    print_setup(&opts, torrent);
    let mut results = Vec::new();
    for run in 1..=opts.runs {
        for client in &opts.clients {
            let out = root.path().join(format!("out-{client}-{run}"));
            fs::create_dir_all(&out).expect("create the output folder");
            eprintln!("run {run}: {client}");
            let outcome = measure(client, torrent, &out).and_then(|m| {
                verify(content, &out.join("bench.bin"))?;
                Ok(m)
            });
            if let Err(e) = &outcome {
                eprintln!("run {run}: {client} failed: {e}");
            }
            let _ = fs::remove_dir_all(&out);
            results.push(RunResult {
                client: client.clone(),
                run,
                outcome,
            });
        }
    }
    print_table(&results, &opts.clients);
}

fn print_setup(opts: &Options, torrent: &Torrent) {
    let version = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_else(|| "unknown".into())
    };
    println!(
        "torrent: {} MiB, {} pieces of {} KiB; seeder python3-libtorrent {} on 127.0.0.1",
        opts.size_mib,
        torrent.num_pieces,
        torrent.piece_length / 1024,
        version(
            Command::new("/usr/bin/python3")
                .args(["-c", "import libtorrent; print(libtorrent.__version__)"])
        ),
    );
    println!(
        "clients: bridge {}; {}; {} runs each, in turns; {} cores",
        bridge_bin().display(),
        version(Command::new("aria2c").arg("--version")),
        opts.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
}

fn measure(client: &str, torrent: &Torrent, out: &Path) -> Result<Measured, String> {
    settle_memory();
    let started = Instant::now();
    let mut proc = match client {
        "bridge" => Download::torrent(&torrent.path, out)
            .timeout(120)
            .spawn("bridge download"),
        "bridge-rc4" => {
            let mut cmd = Download::torrent(&torrent.path, out).timeout(120).command();
            cmd.args(["--encryption", "require"]);
            Proc::spawn("bridge download (rc4)", cmd)
        }
        "libtorrent" => Proc::spawn(
            "lt leecher",
            LtOptions::torrent(&torrent.path, out)
                .exit_when_finished()
                .command(),
        ),
        "aria2c" => Proc::spawn("aria2c", aria2c(torrent, out)),
        other => return Err(format!("unknown client {other}")),
    };
    let run = wait_sampling(&mut proc, started)?;
    let note = proc
        .stdout()
        .iter()
        .find_map(|l| parse_complete(l))
        .map(|c| format!("says {:.0} MB/s", c.mb_per_s))
        .unwrap_or_default();
    Ok(Measured {
        secs: run.secs,
        mb_per_s: torrent.total_size as f64 / 1e6 / run.secs,
        peak_rss_anon: run.peak_rss_anon,
        vm_hwm: run.vm_hwm,
        note,
    })
}

fn aria2c(torrent: &Torrent, out: &Path) -> Command {
    let mut cmd = Command::new("aria2c");
    cmd.arg(format!("--dir={}", out.display()))
        .args([
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            // Preallocating by writing zeros would time the disk, not the download.
            "--file-allocation=falloc",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--enable-color=false",
        ])
        .arg(format!("--listen-port={}", free_port()))
        .arg(&torrent.path);
    cmd
}

fn print_table(results: &[RunResult], clients: &[String]) {
    println!();
    println!(
        "{:<11} {:>3} {:>8} {:>8} {:>13} {:>10}  note",
        "client", "run", "secs", "MB/s", "RssAnon MiB", "VmHWM MiB"
    );
    for r in results {
        match &r.outcome {
            Ok(m) => println!(
                "{:<11} {:>3} {:>8.2} {:>8.1} {:>13.1} {:>10.1}  {}",
                r.client,
                r.run,
                m.secs,
                m.mb_per_s,
                mib(m.peak_rss_anon),
                mib(m.vm_hwm),
                m.note
            ),
            Err(e) => println!(
                "{:<11} {:>3}  failed: {}",
                r.client,
                r.run,
                e.lines().next().unwrap_or_default()
            ),
        }
    }
    println!();
    println!(
        "{:<11} {:>4} {:>12} {:>19}",
        "median", "runs", "MB/s", "peak RssAnon MiB"
    );
    for client in clients {
        let ok: Vec<&Measured> = results
            .iter()
            .filter(|r| &r.client == client)
            .filter_map(|r| r.outcome.as_ref().ok())
            .collect();
        if ok.is_empty() {
            println!("{client:<11} {:>4} {:>12} {:>19}", 0, "-", "-");
            continue;
        }
        let rate = median(ok.iter().map(|m| m.mb_per_s).collect());
        let anon = median(ok.iter().map(|m| mib(m.peak_rss_anon)).collect());
        println!("{client:<11} {:>4} {rate:>12.1} {anon:>19.1}", ok.len());
    }
}
