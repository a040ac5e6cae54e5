//! Tab benchmark: `cargo run --release -p tests --bin bench_tab [-- OPTIONS]`.
//!
//! Seeds a torrent of random data (1 GiB by default) from python3-libtorrent on 127.0.0.1, found
//! through opentracker, and downloads it in turns in the page of `bridge serve --allow-private`
//! in headless Chromium (a fresh profile each run, so OPFS starts empty) and with
//! `bridge download`, several runs each. The tab runs twice per round: as shipped, hashing pieces
//! with WebCrypto (`tab`), and with `?hash=wasm`, hashing in wasm (`tab-wasm`). It prints, for
//! every run:
//!
//! - the rate in MB/s (10^6 bytes per second). The tab's time runs from the file input's `change`
//!   event to the moment the progress bar's `aria-valuenow` becomes 100, both taken in the page
//!   (`performance.now()`, a MutationObserver); the engine's Worker posts a snapshot as soon as the
//!   download completes. `bridge download`'s time is its wall time from start to exit.
//! - peak memory, sampled from /proc every 100 ms (50 ms for `bridge download`): for the tab the
//!   sum of `RssAnon` over Chromium's renderer processes (the page, its Worker and the wasm
//!   memory: the tab's own heap, without the shared binary or the page cache of OPFS files; also
//!   shown idle, with the page loaded before the download), and
//!   the sum of `RssAnon` over every Chromium process (browser, network and storage services
//!   too); for `bridge download` its `RssAnon`.
//! - responsiveness of the page during the download: the largest lateness of a 50 ms
//!   `setInterval` heartbeat on the page's main thread, and the largest gap between
//!   `requestAnimationFrame` callbacks.
//! - the re-check after a reload: the finished page is reloaded and timed until the torrent seeds
//!   again, which hashes the whole file from OPFS (WebCrypto or wasm, as the run's page does).
//!
//! Then the median of each and the ratio of the tab's median rate to the native one. Every
//! download is checked after it is timed: the tab's saved file slice by slice (SHA-1 of each
//! 16 MiB in the page against the source), the native one byte for byte.
//!
//! Options: --size-mib N (1024), --runs N (3), --piece-kib N (libtorrent's choice),
//! --dir DIR (the system's temporary folder), --no-verify, --clients LIST (`tab,tab-wasm,native`:
//! which clients run, in this order within each round; reordering shows whether a slot favours
//! whoever runs in it).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::bench::{median, mib, settle_memory, verify, wait_sampling, BenchSwarm, RUN_TIMEOUT};
use tests::bridge::{bridge_bin, Download};
use tests::browser::{chromium_memory, Browser, ChromiumMemory};
use tests::libtorrent::Torrent;
use tests::page::{file_digests, Page, Serve, DIGEST_CHUNK};

struct Options {
    size_mib: u64,
    runs: usize,
    piece_kib: Option<u32>,
    dir: Option<PathBuf>,
    verify: bool,
    clients: Vec<Client>,
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// The page as shipped: pieces hashed with WebCrypto.
    Tab,
    /// The page with `?hash=wasm`.
    TabWasm,
    /// `bridge download`.
    Native,
}

impl Client {
    fn parse(s: &str) -> Result<Client, String> {
        match s {
            "tab" => Ok(Client::Tab),
            "tab-wasm" => Ok(Client::TabWasm),
            "native" => Ok(Client::Native),
            _ => Err(format!("unknown client {s:?} (tab, tab-wasm, native)")),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Client::Tab => "tab",
            Client::TabWasm => "tab-wasm",
            Client::Native => "native",
        }
    }
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        size_mib: 1024,
        runs: 3,
        piece_kib: None,
        dir: None,
        verify: true,
        clients: vec![Client::Tab, Client::TabWasm, Client::Native],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size-mib" => o.size_mib = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--runs" => o.runs = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--piece-kib" => o.piece_kib = Some(value()?.parse().map_err(|e| format!("{a}: {e}"))?),
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--no-verify" => o.verify = false,
            "--clients" => {
                o.clients = value()?
                    .split(',')
                    .map(Client::parse)
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                println!(
                    "bench_tab [--size-mib N] [--runs N] [--piece-kib N] [--dir DIR] [--no-verify] \
                     [--clients tab,tab-wasm,native]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    if o.runs == 0 || o.size_mib == 0 || o.clients.is_empty() {
        return Err("--runs, --size-mib and --clients must not be zero or empty".into());
    }
    Ok(o)
}

struct Tab {
    secs: f64,
    mb_per_s: f64,
    peak: ChromiumMemory,
    /// Renderer `RssAnon` with the page loaded and idle, before the torrent is added.
    idle_renderer: u64,
    /// Largest lateness of the 50 ms heartbeat, in ms.
    max_late_ms: f64,
    /// Largest gap between animation frames, in ms.
    max_frame_gap_ms: f64,
    /// From a reload of the finished page until the torrent seeds again: the Worker re-checks
    /// (hashes) the whole file in OPFS.
    recheck_secs: f64,
}

struct Native {
    secs: f64,
    mb_per_s: f64,
    peak_rss_anon: u64,
}

enum Outcome {
    Tab(Tab),
    Native(Native),
}

/// One run of one client: its round (from 1), the client and what it measured.
type Run = (usize, Client, Result<Outcome, String>);

/// Installed before the torrent is added: the heartbeat, the frame clock and the moment the
/// progress bar reaches 100.
const PROBE_JS: &str = r#"
const b = (window.__bench = { start: null, done: null, maxLate: 0, maxFrameGap: 0 });
const input = document.querySelector('#torrent-file');
input.addEventListener('change', () => {
  b.start = performance.now();
  b.maxLate = 0;
  b.maxFrameGap = 0;
}, { capture: true });
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  if (b.start !== null && b.done === null) b.maxLate = Math.max(b.maxLate, now - last - 50);
  last = now;
}, 50);
let lastFrame = performance.now();
const frame = () => {
  const now = performance.now();
  if (b.start !== null && b.done === null) b.maxFrameGap = Math.max(b.maxFrameGap, now - lastFrame);
  lastFrame = now;
  requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
new MutationObserver(() => {
  if (b.done !== null) return;
  const bar = document.querySelector('section.torrent [role=progressbar]');
  if (bar && bar.getAttribute('aria-valuenow') === '100') b.done = performance.now();
}).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-valuenow'] });
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let swarm = BenchSwarm::start(
        "bench-tab-",
        opts.dir.as_deref(),
        opts.size_mib,
        opts.piece_kib,
    );
    let (root, content, torrent) = (&swarm.root, &swarm.content, &swarm.torrent);
    let digests = opts.verify.then(|| file_digests(content));
    // Warnings only: a debug line per tunnel would cost the bridge time.
    let serve = Serve::start_with(true, "warn");

    println!(
        "torrent: {} MiB, {} pieces of {} KiB; seeder python3-libtorrent on 127.0.0.1 via opentracker",
        opts.size_mib,
        torrent.num_pieces,
        torrent.piece_length / 1024,
    );
    println!(
        "tab: {} in headless {}, page from `bridge serve --allow-private`; native: `bridge download`; {} runs each, in turns; {} cores",
        bridge_bin().display(),
        chromium_version(),
        opts.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let mut results = Vec::new();
    for run in 1..=opts.runs {
        for &client in &opts.clients {
            eprintln!("run {run}: {}", client.label());
            let r = match client {
                Client::Tab | Client::TabWasm => {
                    let (query, hasher) = if client == Client::Tab {
                        ("", "subtle")
                    } else {
                        ("?hash=wasm", "wasm")
                    };
                    measure_tab(&serve, query, hasher, torrent, digests.as_ref())
                        .await
                        .map(Outcome::Tab)
                }
                Client::Native => {
                    let out = root.path().join(format!("out-{run}"));
                    fs::create_dir_all(&out).expect("create the output folder");
                    let r = measure_native(torrent, &out).and_then(|m| {
                        if opts.verify {
                            verify(content, &out.join("bench.bin"))?;
                        }
                        Ok(m)
                    });
                    let _ = fs::remove_dir_all(&out);
                    r.map(Outcome::Native)
                }
            };
            if let Err(e) = &r {
                eprintln!("run {run}: {} failed: {e}", client.label());
            }
            results.push((run, client, r));
        }
    }
    print_table(&results);
    drop(serve);
    drop(swarm);
}

fn chromium_version() -> String {
    std::process::Command::new(tests::browser::CHROMIUM)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "Chromium (version unknown)".into())
}

async fn measure_tab(
    serve: &Serve,
    query: &str,
    hasher: &str,
    torrent: &Torrent,
    digests: Option<&(u64, Vec<String>)>,
) -> Result<Tab, String> {
    let browser = Browser::start().await;
    let result = run_tab(&browser, serve, query, hasher, torrent, digests).await;
    browser.close().await;
    result
}

async fn run_tab(
    browser: &Browser,
    serve: &Serve,
    query: &str,
    hasher: &str,
    torrent: &Torrent,
    digests: Option<&(u64, Vec<String>)>,
) -> Result<Tab, String> {
    let page = Page::open(&browser.client, &format!("{}{query}", serve.url)).await;
    let state = page.state().await;
    if state.storage.as_deref() != Some("opfs") {
        return Err(format!("the page stores in {:?}, not OPFS", state.storage));
    }
    if state.hash.as_deref() != Some(hasher) {
        return Err(format!(
            "the page hashes with {:?}, not {hasher}",
            state.hash
        ));
    }
    println!(
        "  sockets: {}",
        state.sockets.as_deref().unwrap_or("unknown")
    );
    page.client
        .execute(PROBE_JS, vec![])
        .await
        .map_err(|e| format!("install the probes: {e}"))?;
    let id = torrent.info_hash.to_hex();
    let pgid = browser.chromium_pid();
    let idle_renderer = chromium_memory(pgid).renderer_anon;
    settle_memory();
    let mut peak = ChromiumMemory::default();
    let started = Instant::now();
    page.add_torrent_file(&torrent.path).await;
    // Memory is sampled every 100 ms; the page is asked how it is doing only every 500 ms, since
    // each WebDriver call costs chromedriver, the browser and the page's main thread CPU that the
    // download would otherwise have (the time itself is taken in the page).
    let mut tick = 0u32;
    let b = loop {
        let m = chromium_memory(pgid);
        peak.renderer_anon = peak.renderer_anon.max(m.renderer_anon);
        peak.total_anon = peak.total_anon.max(m.total_anon);
        peak.total_rss = peak.total_rss.max(m.total_rss);
        tick += 1;
        if tick.is_multiple_of(5) {
            let b: Value = page
                .client
                .execute("return window.__bench;", vec![])
                .await
                .map_err(|e| format!("read the probes: {e}"))?;
            if b["done"].is_number() {
                break b;
            }
            let s = page.state().await;
            if let Some(t) = s.torrent(&id).filter(|t| t.state == "error") {
                return Err(format!("the torrent failed: {}", t.message));
            }
            if started.elapsed() > RUN_TIMEOUT {
                return Err(format!(
                    "not done after {RUN_TIMEOUT:?}; the page shows {s:?}"
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ms = |k: &str| b[k].as_f64().unwrap_or(f64::NAN);
    let secs = (ms("done") - ms("start")) / 1000.0;
    let mut tab = Tab {
        secs,
        mb_per_s: torrent.total_size as f64 / 1e6 / secs,
        peak,
        idle_renderer,
        max_late_ms: ms("maxLate"),
        max_frame_gap_ms: ms("maxFrameGap"),
        recheck_secs: f64::NAN,
    };
    if let Some((size, want)) = digests {
        page.save(&id, 0).await;
        let (got_size, got) = page.saved_digests().await;
        if got_size != *size {
            return Err(format!("saved {got_size} bytes of {size}"));
        }
        if let Some(i) = want.iter().zip(&got).position(|(a, b)| a != b) {
            return Err(format!(
                "wrong bytes in {}..{}",
                i * DIGEST_CHUNK,
                (i + 1) * DIGEST_CHUNK
            ));
        }
    }
    let reload = Instant::now();
    page.client
        .refresh()
        .await
        .map_err(|e| format!("reload the page: {e}"))?;
    page.wait_ready().await;
    page.wait_state(
        RUN_TIMEOUT,
        "the torrent to seed again after a reload",
        |s| s.torrent(&id).filter(|t| t.state == "seeding").map(|_| ()),
    )
    .await;
    tab.recheck_secs = reload.elapsed().as_secs_f64();
    Ok(tab)
}

fn measure_native(torrent: &Torrent, out: &Path) -> Result<Native, String> {
    settle_memory();
    let started = Instant::now();
    let mut proc = Download::torrent(&torrent.path, out)
        .timeout(120)
        .spawn("bridge download");
    let run = wait_sampling(&mut proc, started)?;
    Ok(Native {
        secs: run.secs,
        mb_per_s: torrent.total_size as f64 / 1e6 / run.secs,
        peak_rss_anon: run.peak_rss_anon,
    })
}

fn print_table(results: &[Run]) {
    println!();
    println!(
        "{:<8} {:>3} {:>7} {:>7} {:>9} {:>13} {:>13} {:>13} {:>13} {:>10}",
        "client",
        "run",
        "secs",
        "MB/s",
        "idle MiB",
        "renderer MiB",
        "chromium MiB",
        "heartbeat ms",
        "frame gap ms",
        "recheck s"
    );
    for (run, client, r) in results {
        let label = client.label();
        match r {
            Ok(Outcome::Tab(t)) => println!(
                "{:<8} {:>3} {:>7.2} {:>7.1} {:>9.1} {:>13.1} {:>13.1} {:>13.0} {:>13.0} {:>10.2}",
                label,
                run,
                t.secs,
                t.mb_per_s,
                mib(t.idle_renderer),
                mib(t.peak.renderer_anon),
                mib(t.peak.total_anon),
                t.max_late_ms,
                t.max_frame_gap_ms,
                t.recheck_secs
            ),
            Ok(Outcome::Native(n)) => println!(
                "{:<8} {:>3} {:>7.2} {:>7.1} {:>9} {:>13} {:>13.1}",
                label,
                run,
                n.secs,
                n.mb_per_s,
                "-",
                "-",
                mib(n.peak_rss_anon)
            ),
            Err(e) => println!(
                "{:<8} {run:>3}  failed: {}",
                label,
                e.lines().next().unwrap_or_default()
            ),
        }
    }
    println!();
    println!(
        "(idle MiB: RssAnon of Chromium's renderer processes with the page loaded, before the \
         download; renderer MiB: their peak during the download, page + Worker + wasm; \
         chromium MiB: of all Chromium processes, or of `bridge download` for native; \
         heartbeat ms: largest lateness of a 50 ms setInterval on the page; frame gap ms: \
         largest gap between animation frames; recheck s: from a reload of the finished page \
         until it seeds again, the whole file hashed from OPFS)"
    );
    let tabs_of = |want: Client| -> Option<Vec<&Tab>> {
        results.iter().any(|(_, c, _)| *c == want).then(|| {
            results
                .iter()
                .filter_map(|(_, c, r)| match r {
                    Ok(Outcome::Tab(t)) if *c == want => Some(t),
                    _ => None,
                })
                .collect()
        })
    };
    let wasm_rate = tabs_of(Client::TabWasm).and_then(|t| summarize("tab-wasm", &t));
    let tab_rate = tabs_of(Client::Tab).and_then(|t| summarize("tab", &t));
    let ok_natives: Vec<&Native> = results
        .iter()
        .filter_map(|(_, _, r)| match r {
            Ok(Outcome::Native(n)) => Some(n),
            _ => None,
        })
        .collect();
    if ok_natives.is_empty() {
        println!("median native: none");
        return;
    }
    let native_rate = median(ok_natives.iter().map(|n| n.mb_per_s).collect());
    let native_mem = median(ok_natives.iter().map(|n| mib(n.peak_rss_anon)).collect());
    println!(
        "median native: {native_rate:.1} MB/s over {} runs, peak RssAnon {native_mem:.1} MiB",
        ok_natives.len()
    );
    if let (Some(tab), Some(wasm)) = (tab_rate, wasm_rate) {
        println!(
            "WebCrypto / wasm hashing: {:.0} % of the wasm-hashing tab's rate",
            tab / wasm * 100.0
        );
    }
    let Some(tab_rate) = tab_rate else {
        return;
    };
    let ratio = tab_rate / native_rate;
    println!(
        "tab / native: {:.0} % (target: at least 50 % and at least 120 MB/s: {})",
        ratio * 100.0,
        if ratio >= 0.5 && tab_rate >= 120.0 {
            "met"
        } else {
            "not met"
        }
    );
}

/// Prints the medians of one kind of tab run; returns its median rate.
fn summarize(label: &str, ok: &[&Tab]) -> Option<f64> {
    if ok.is_empty() {
        println!("median {label}: no successful run");
        return None;
    }
    let rate = median(ok.iter().map(|t| t.mb_per_s).collect());
    let renderer = median(ok.iter().map(|t| mib(t.peak.renderer_anon)).collect());
    let chromium = median(ok.iter().map(|t| mib(t.peak.total_anon)).collect());
    let late = ok.iter().map(|t| t.max_late_ms).fold(0.0, f64::max);
    let gap = ok.iter().map(|t| t.max_frame_gap_ms).fold(0.0, f64::max);
    let recheck = median(ok.iter().map(|t| t.recheck_secs).collect());
    println!(
        "median {label}: {rate:.1} MB/s over {} runs, peak renderer {renderer:.1} MiB, all Chromium {chromium:.1} MiB; \
         worst heartbeat lateness {late:.0} ms, worst frame gap {gap:.0} ms; recheck after a reload {recheck:.2} s",
        ok.len()
    );
    Some(rate)
}
