//! The real page in headless Chromium, served by `bridge serve`, downloading from a
//! python3-libtorrent seeder (found through opentracker or named in a magnet) on loopback; and the
//! bridge's guards as a browser meets them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use protocol::wire::Handshake;
use protocol::{InfoHash, PeerId};
use serde_json::{json, Value};
use tests::browser::Browser;
use tests::page::{Page, Serve};
use tests::swarm::Swarm;
use tests::wait::wait_until;

const MIB: u64 = 1024 * 1024;
/// Two cores shared with other tests: every wait is generous.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn torrent_file_through_the_file_input_downloads_and_saves_the_same_bytes() {
    file_input_download("", "subtle", "worker").await;
}

#[tokio::test]
async fn with_hashing_in_wasm_the_same_download_saves_the_same_bytes() {
    file_input_download("?hash=wasm", "wasm", "worker").await;
}

/// The fallback of pages without cross-origin isolation: the engine's Worker owns the sockets.
#[tokio::test]
async fn with_sockets_in_the_engine_worker_the_same_download_saves_the_same_bytes() {
    file_input_download("?sockets=direct", "subtle", "direct").await;
}

/// `query` is added to the page's address; `hasher` is who must hash the pieces, `sockets` who
/// must own the peer WebSockets.
async fn file_input_download(query: &str, hasher: &str, sockets: &str) {
    // Not a multiple of any piece length: the last piece is short.
    let swarm = Swarm::single_file("br-file", "random.bin", 24 * MIB + 777).start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &format!("{}{query}", serve.url)).await;
    let state = page.state().await;
    assert_eq!(
        state.storage.as_deref(),
        Some("opfs"),
        "the page must store downloads in the Origin Private File System"
    );
    assert_eq!(state.hash.as_deref(), Some(hasher));
    assert_eq!(state.sockets.as_deref(), Some(sockets));

    page.add_torrent_file(&swarm.torrent.path).await;
    let id = swarm.torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&swarm.content).await;
    browser.close().await;
}

#[tokio::test]
async fn magnet_in_the_url_fragment_resolves_metadata_and_downloads() {
    // No tracker: the magnet's x.pe names the seeder, which serves the metadata (ut_metadata).
    let swarm = Swarm::single_file("br-magnet", "from-magnet.bin", 6 * MIB + 5)
        .no_tracker()
        .start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let url = format!("{}#{}", serve.url, swarm.magnet_with_peer_only());
    let page = Page::open(&browser.client, &url).await;

    let id = swarm.torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&swarm.content).await;
    browser.close().await;
}

#[tokio::test]
async fn the_demo_downloads_in_the_page_without_allow_private() {
    // The newcomer's path: `bridge --demo`, then the printed URL. Only the demo's own seeder may be
    // reached on loopback; the page verifies every piece against the demo torrent's hashes.
    let (mut serve, url) = Serve::demo();
    let btih = url
        .split("urn:btih:")
        .nth(1)
        .and_then(|rest| rest.get(..40))
        .unwrap_or_else(|| panic!("no info-hash in the demo URL {url}"))
        .to_ascii_lowercase();
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &url).await;
    let done = page.wait_progress(&btih, 100, DEADLINE).await;
    assert_eq!(done.progress, 100);
    browser.close().await;

    // The sample lives only as long as the bridge: a stopped bridge removes it.
    let entries = || std::fs::read_dir(serve.tmp.path()).unwrap().count();
    assert_eq!(
        entries(),
        1,
        "the demo's sample directory in the bridge's TMPDIR"
    );
    serve.proc.signal(libc::SIGTERM);
    let status = serve.proc.wait_exit(DEADLINE);
    assert!(status.success(), "bridge --demo after SIGTERM: {status}");
    assert_eq!(entries(), 0, "the demo's sample is left behind");
}

#[tokio::test]
async fn pause_holds_resume_completes_and_remove_deletes_the_data() {
    // About 8 s at 4 MB/s: time to pause part-way.
    let swarm = Swarm::single_file("br-pause", "pause.bin", 32 * MIB)
        .upload_limit(4_000_000)
        .start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    page.add_torrent_file(&swarm.torrent.path).await;
    let id = swarm.torrent.info_hash.to_hex();
    page.wait_progress(&id, 10, DEADLINE).await;

    click(&browser, &id, "pause").await;
    let paused = page
        .wait_state(DEADLINE, "the torrent to pause", |s| {
            s.torrent(&id).filter(|t| t.state == "paused").cloned()
        })
        .await;
    assert!(
        paused.progress < 90,
        "paused too late ({} %) to prove anything",
        paused.progress
    );
    // A paused torrent has no peers: watch it for a while and see it stand still.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        let now = page
            .state()
            .await
            .torrent(&id)
            .cloned()
            .expect("torrent listed");
        assert!(
            now.progress <= paused.progress + 1,
            "progress moved while paused: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    click(&browser, &id, "resume").await;
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&swarm.content).await;

    click(&browser, &id, "remove").await;
    page.wait_state(DEADLINE, "the torrent to go", |s| {
        s.torrent(&id).is_none().then_some(())
    })
    .await;
    // The files go after the card does: wait for them, with a deadline.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = page
            .run_async(
                "const done = arguments[arguments.length - 1];
                 (async () => {
                   const names = [];
                   for await (const name of (await navigator.storage.getDirectory()).keys()) names.push(name);
                   return names;
                 })().then(done, e => done(['error: ' + e]));",
                vec![],
            )
            .await;
        let left: Vec<String> = serde_json::from_value(left).expect("OPFS names");
        if !left.iter().any(|n| n.starts_with(&id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "removing the torrent left its data in OPFS: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
}

async fn click(browser: &Browser, id: &str, button: &str) {
    let sel = format!("section.torrent[data-infohash='{id}'] button.{button}");
    browser
        .client
        .find(fantoccini::Locator::Css(&sel))
        .await
        .unwrap_or_else(|e| panic!("no {button} button: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot press {button}: {e}"));
}

#[tokio::test]
async fn a_reload_in_the_middle_resumes_and_completes() {
    reload_case("").await;
}

#[tokio::test]
async fn with_hashing_in_wasm_a_reload_resumes_and_completes() {
    reload_case("?hash=wasm").await;
}

/// The check after the reload hashes what OPFS holds: with WebCrypto, or in wasm with
/// `?hash=wasm` in `query`.
async fn reload_case(query: &str) {
    let size = 32 * MIB;
    // About 8 s at 4 MB/s: time to reload part-way.
    let swarm = Swarm::single_file("br-reload", "reload.bin", size)
        .upload_limit(4_000_000)
        .start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &format!("{}{query}", serve.url)).await;
    page.add_torrent_file(&swarm.torrent.path).await;
    let id = swarm.torrent.info_hash.to_hex();
    let before = page.wait_progress(&id, 25, DEADLINE).await;
    assert!(
        before.progress < 90,
        "the download was almost done before the reload ({} %): the test proves nothing",
        before.progress
    );

    browser.client.refresh().await.expect("reload the page");
    page.wait_ready().await;
    let restored = page
        .wait_state(
            DEADLINE,
            "the torrent to be restored after the reload",
            |s| s.torrent(&id).cloned(),
        )
        .await;
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&swarm.content).await;

    // Resumed, not restarted: the seeder sent about the file once, not the file plus what it
    // had sent before the reload. Its status comes every 200 ms; wait for two fresh ones.
    let seen = swarm.seeder.events().len();
    wait_until(Duration::from_secs(10), "fresh seeder status", || {
        (swarm.seeder.events().len() >= seen + 2).then_some(())
    });
    let uploaded = swarm.seeder.status().expect("a status").total_upload;
    let sent_before = size * u64::from(before.progress) / 100;
    eprintln!(
        "reloaded at {} %, restored at {} % ({}), the seeder uploaded {uploaded} bytes in all",
        before.progress, restored.progress, restored.state
    );
    assert!(
        uploaded < size + sent_before / 2,
        "the seeder uploaded {uploaded} bytes for a {size}-byte file; {} % was verified before \
         the reload (restored at {} %, {})",
        before.progress,
        restored.progress,
        restored.state
    );
    browser.close().await;
}

/// Opens a WebSocket to `url` in the page; once open, sends `first` as one binary frame. Returns
/// whether it opened and its close code, when it closes.
async fn tunnel_attempt(page: &Page<'_>, url: &str, first: &[u8]) -> (bool, u64) {
    let v = tunnel_script(page, url, first, false).await;
    let opened = v["opened"].as_bool().expect("opened");
    let code = v["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no close code: {v}"));
    (opened, code)
}

/// Like [`tunnel_attempt`], but returns as soon as `first` is sent, leaving the tunnel open;
/// `false` if it closed before it opened.
async fn tunnel_open(page: &Page<'_>, url: &str, first: &[u8]) -> bool {
    let v = tunnel_script(page, url, first, true).await;
    v["opened"].as_bool().expect("opened")
}

async fn tunnel_script(page: &Page<'_>, url: &str, first: &[u8], return_on_open: bool) -> Value {
    const JS: &str = r#"
const [url, first, returnOnOpen, done] = arguments;
let opened = false;
let ws;
try {
  ws = new WebSocket(url);
} catch (e) {
  done({ opened, code: -1, error: String(e) });
  return;
}
ws.binaryType = 'arraybuffer';
ws.onopen = () => {
  opened = true;
  ws.send(new Uint8Array(first));
  if (returnOnOpen) done({ opened, code: null });
};
ws.onclose = (e) => done({ opened, code: e.code });
"#;
    page.run_async(JS, vec![json!(url), json!(first), json!(return_on_open)])
        .await
}

fn handshake() -> Vec<u8> {
    Handshake::new(InfoHash([7; 20]), PeerId([9; 20]))
        .encode()
        .to_vec()
}

/// A listener the bridge must never connect to: checked without waiting, because the bridge
/// would have connected before it closed the WebSocket.
fn untouched_listener() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}

fn assert_no_connection(l: &TcpListener) {
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the bridge connected to the destination: {other:?}"),
    }
}

fn peer_url(serve: &Serve, dest: &TcpListener) -> String {
    let addr = dest.local_addr().expect("listener address");
    format!("ws://127.0.0.1:{}/peer?addr={addr}", serve.port)
}

/// A page on another loopback port, that is, another origin. Serves one small page to any GET
/// until dropped.
struct OtherSite {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl OtherSite {
    fn start() -> OtherSite {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the other site");
        l.set_nonblocking(true).expect("non-blocking listener");
        let addr = l.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let body = "<!doctype html><title>another site</title><p>hello</p>";
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        OtherSite { addr, stop }
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn pages_of_other_origins_cannot_open_tunnels() {
    let serve = Serve::start(true);
    let dest = untouched_listener();
    let other = OtherSite::start();
    let browser = Browser::start().await;
    let page = Page {
        client: &browser.client,
    };

    // Another site on this machine, and a page with an opaque origin (Origin: null).
    for site in [
        format!("http://{}/", other.addr),
        "data:text/html,<title>opaque</title>".to_string(),
    ] {
        browser
            .client
            .goto(&site)
            .await
            .unwrap_or_else(|e| panic!("open {site}: {e}"));
        let (opened, code) = tunnel_attempt(&page, &peer_url(&serve, &dest), &handshake()).await;
        assert!(
            !opened,
            "a page from {site} opened a tunnel (closed with {code})"
        );
        // The upgrade was refused: the browser reports an abnormal closure.
        assert_eq!(code, 1006, "from {site}");
        assert_no_connection(&dest);
    }
    // The other site's refusal is logged with its reason (stderr is read on another thread: wait
    // for it). The opaque page's attempt may never reach the bridge: Chromium's Local Network
    // Access keeps pages that are not themselves on loopback away from it.
    let origin = format!("Origin \"http://{}\" is not allowed", other.addr);
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        let lines = serve.log_lines("refused /peer");
        lines.iter().any(|l| l.contains(&origin)).then_some(())
    });

    // The bridge's own page gets through to the same destination: the refusals were the origin's.
    page.client.goto(&serve.url).await.expect("open the page");
    let dest_addr = dest.local_addr().expect("address");
    let opened = tunnel_open(&page, &peer_url(&serve, &dest), &handshake()).await;
    assert!(opened, "the bridge's own page could not open a tunnel");
    wait_until(
        DEADLINE,
        &format!("the bridge to connect to {dest_addr}"),
        || dest.accept().ok().map(|_| ()),
    );
    browser.close().await;
}

#[tokio::test]
async fn first_bytes_that_are_not_a_handshake_are_refused_without_connecting() {
    let serve = Serve::start(true);
    let dest = untouched_listener();
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;

    let mut garbage = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
    garbage.resize(68, b'x');
    let (opened, code) = tunnel_attempt(&page, &peer_url(&serve, &dest), &garbage).await;
    assert!(opened, "the upgrade itself should succeed");
    assert_eq!(code, 4003, "close code for a tunnel that is not BitTorrent");
    assert_no_connection(&dest);
    // stderr is read on another thread: wait for the line rather than look once.
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        (!serve.log_lines("refused tunnel").is_empty()).then_some(())
    });
    browser.close().await;
}

#[tokio::test]
async fn private_destinations_are_refused_without_allow_private() {
    let serve = Serve::start(false);
    let dest = untouched_listener();
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;

    let (_, code) = tunnel_attempt(&page, &peer_url(&serve, &dest), &handshake()).await;
    assert_eq!(code, 4002, "close code for a forbidden destination");
    assert_no_connection(&dest);
    wait_until(
        Duration::from_secs(10),
        "the refusal in the log with its reason",
        || {
            serve
                .log_lines("refused tunnel")
                .iter()
                .any(|l| l.contains("forbidden destination"))
                .then_some(())
        },
    );
    browser.close().await;
}
