//! The tab's peers through the bridge's MSE/PE (`/peer?...&enc=prefer|require|off`): the page in
//! headless Chromium downloads from a python3-libtorrent seeder that requires encryption, and
//! from one that speaks none (through `prefer`'s fallback to a plain handshake); and a tunnel
//! that requires encryption to a peer without it closes, saying so, without relaying anything
//! and without the page's handshake ever reaching the peer in the clear.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use protocol::wire::Handshake;
use protocol::{InfoHash, PeerId};
use serde_json::{json, Value};
use tests::browser::Browser;
use tests::data::{temp_dir, write_random_file};
use tests::libtorrent::{
    create_torrent, wait_listening, Event, LtOptions, Torrent, PYTHON, SCRIPT,
};
use tests::mse::{EncLevel, EncPolicy, EncryptedPeer, ENC_SCRIPT};
use tests::page::{Page, Serve};
use tests::process::{Proc, Stream};
use tests::tracker::Opentracker;
use tests::wait::wait_until;

/// Two cores shared with other tests: every wait is generous.
const DEADLINE: Duration = Duration::from_secs(120);
const MIB: u64 = 1024 * 1024;
/// The bridge's close codes (protocol::client::contract::TunnelClose).
const REFUSED: u64 = 4000;
const PEER_CLOSED: u64 = 4005;

/// A torrent of `len` random bytes in 64 KiB pieces, with `trackers`.
fn make_torrent(dir: &Path, name: &str, len: u64, trackers: &[String]) -> (Torrent, PathBuf) {
    let content = dir.join("seed").join(name);
    write_random_file(&content, len, 0xe4c);
    let torrent = create_torrent(
        &content,
        &dir.join(format!("{name}.torrent")),
        Some(65536),
        trackers,
    );
    (torrent, content)
}

#[tokio::test]
async fn the_tab_downloads_from_a_seeder_that_requires_encryption() {
    let dir = temp_dir("tab-enc-require");
    let mut tracker = Opentracker::start(&[]);
    let (torrent, content) = make_torrent(
        dir.path(),
        "secret.bin",
        6 * MIB + 11,
        &[tracker.announce_url()],
    );
    tracker.allow(torrent.info_hash);
    // in_enc_policy and out_enc_policy forced, allowed_enc_level rc4: a plain handshake, or
    // MSE with plaintext selected, is refused.
    let seeder = EncryptedPeer::start(
        LtOptions::torrent(&torrent.path, &dir.path().join("seed")),
        EncPolicy::Forced,
        EncLevel::Rc4,
    );
    seeder.wait_finished(Duration::from_secs(60));

    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    page.add_torrent_file(&torrent.path).await;
    let id = torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&content).await;
    browser.close().await;

    let to_seeder = format!("-> {} open (MSE, RC4)", seeder.addr());
    let lines = serve.log_lines(&to_seeder);
    assert!(
        !lines.is_empty(),
        "the bridge logged no RC4 tunnel to the seeder ({to_seeder:?}); its tunnels: {:#?}",
        serve.log_lines("tunnel")
    );
}

#[tokio::test]
async fn the_tab_falls_back_to_a_plain_handshake_with_a_seeder_without_encryption() {
    let dir = temp_dir("tab-enc-plain");
    let (torrent, content) = make_torrent(dir.path(), "plain.bin", 6 * MIB + 5, &[]);
    let seeder = PlainOnlySeeder::start(&torrent.path, &dir.path().join("seed"));

    let serve = Serve::start(true);
    let browser = Browser::start().await;
    // No tracker: the magnet's x.pe names the seeder; the page's own tunnels ask for
    // enc=prefer, fall back to a plain handshake, fetch the metadata and the data.
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn={}&x.pe={}",
        torrent.info_hash.to_hex(),
        torrent.name,
        seeder.addr
    );
    let page = Page::open(&browser.client, &format!("{}#{magnet}", serve.url)).await;

    // Meanwhile, by hand: a tunnel that requires encryption to this seeder is refused, saying so.
    let hs = Handshake::new(torrent.info_hash, PeerId(*b"-TE0001-require-only")).encode();
    let got = tunnel(&page, &peer_url(&serve, seeder.addr, "require"), &hs).await;
    assert_eq!(got.code, REFUSED, "{got:?}");
    assert!(got.reason.contains("encryption required"), "{got:?}");
    assert_eq!(got.messages, 0, "nothing relayed: {got:?}");

    let id = torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&content).await;
    browser.close().await;

    let to_seeder = format!("-> {}", seeder.addr);
    let tunnels = serve.log_lines(&to_seeder);
    let said = |needle: &str| tunnels.iter().any(|l| l.contains(needle));
    assert!(
        said("falling back to a plain handshake") && said("open (plain)"),
        "the bridge logged no fallback to a plain handshake: {tunnels:#?}"
    );
    assert!(
        said("closed: encryption required"),
        "the refused tunnel left no log line: {tunnels:#?}"
    );
}

#[tokio::test]
async fn require_closes_without_relaying_prefer_reconnects_once_off_stays_plain() {
    let peer = PlainOnlyPeer::start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    let hs = Handshake::new(InfoHash([7; 20]), PeerId(*b"-TE0001-tab-handshak")).encode();

    // require: one connection, on which only the MSE key and padding went out; then a close
    // frame that says why, and not one byte for the page.
    let got = tunnel(&page, &peer_url(&serve, peer.addr, "require"), &hs).await;
    assert!(got.opened, "{got:?}");
    assert_eq!(got.code, REFUSED, "{got:?}");
    assert!(
        got.reason.starts_with("encryption required: ") && got.reason.contains("MSE handshake"),
        "{got:?}"
    );
    assert_eq!(got.messages, 0, "the page got bytes: {got:?}");
    let conns = peer.wait_connections(1);
    settle();
    let conns_after = peer.connections();
    assert_eq!(
        conns_after.len(),
        1,
        "require must not fall back: {conns:?}"
    );
    let sent = &conns_after[0];
    assert!(sent.len() >= 96, "less than an MSE public key: {sent:?}");
    assert!(!sent.starts_with(&hs[..20]), "a plain handshake went out");
    assert!(
        !contains(sent, &[7; 20]) && !contains(sent, b"BitTorrent protocol"),
        "the page's handshake reached the peer in the clear"
    );
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        serve
            .log_lines(&format!("-> {} closed: encryption required", peer.addr))
            .first()
            .cloned()
    });

    // prefer: the MSE attempt, then one more connection that starts with the page's handshake
    // as it sent it; the peer's answer reaches the page, and its close is reported.
    let got = tunnel(&page, &peer_url(&serve, peer.addr, "prefer"), &hs).await;
    assert_eq!(got.code, PEER_CLOSED, "{got:?}");
    assert_eq!(got.first, PlainOnlyPeer::answer(&hs).to_vec(), "{got:?}");
    peer.wait_connections(3);
    settle();
    let conns = peer.connections();
    assert_eq!(conns.len(), 3, "prefer reconnects once: {conns:?}");
    assert!(!conns[1].starts_with(&hs[..20]), "the first try is MSE");
    assert_eq!(
        &conns[2][..],
        &hs[..],
        "the fallback sends the handshake as is"
    );

    // off: today's path, the handshake on the first connection.
    let got = tunnel(&page, &peer_url(&serve, peer.addr, "off"), &hs).await;
    assert_eq!(got.code, PEER_CLOSED, "{got:?}");
    assert_eq!(got.first, PlainOnlyPeer::answer(&hs).to_vec(), "{got:?}");
    peer.wait_connections(4);
    settle();
    let conns = peer.connections();
    assert_eq!(conns.len(), 4, "off connects once: {conns:?}");
    assert_eq!(&conns[3][..], &hs[..]);
    browser.close().await;
}

/// Time for a connection the bridge would have made before its close frame to be accepted.
fn settle() {
    thread::sleep(Duration::from_millis(500));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn peer_url(serve: &Serve, addr: SocketAddr, enc: &str) -> String {
    format!("ws://127.0.0.1:{}/peer?addr={addr}&enc={enc}", serve.port)
}

/// What the page saw on one WebSocket tunnel.
#[derive(Debug)]
struct Seen {
    opened: bool,
    code: u64,
    reason: String,
    /// Binary messages received.
    messages: u64,
    /// Their first bytes (up to 1 KiB).
    first: Vec<u8>,
}

/// Opens a WebSocket to `url` in the page, sends `first` once it opens, and collects what comes
/// back until it closes.
async fn tunnel(page: &Page<'_>, url: &str, first: &[u8]) -> Seen {
    const JS: &str = r#"
const [url, first, done] = arguments;
let opened = false, messages = 0;
const got = [];
const ws = new WebSocket(url);
ws.binaryType = 'arraybuffer';
ws.onopen = () => { opened = true; ws.send(new Uint8Array(first)); };
ws.onmessage = (e) => {
  messages += 1;
  for (const b of new Uint8Array(e.data)) if (got.length < 1024) got.push(b);
};
ws.onclose = (e) => done({ opened, code: e.code, reason: e.reason, messages, first: got });
"#;
    let v: Value = page.run_async(JS, vec![json!(url), json!(first)]).await;
    Seen {
        opened: v["opened"].as_bool().unwrap_or(false),
        code: v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no close code: {v}")),
        reason: v["reason"].as_str().unwrap_or_default().to_string(),
        messages: v["messages"].as_u64().unwrap_or(0),
        first: v["first"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.as_u64())
                    .map(|b| b as u8)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A python3-libtorrent seeder with protocol encryption disabled both ways (`in_enc_policy` and
/// `out_enc_policy` `pe_disabled`): it drops a connection whose first bytes are not a plain
/// BitTorrent handshake.
struct PlainOnlySeeder {
    _proc: Proc,
    addr: SocketAddr,
}

impl PlainOnlySeeder {
    fn start(torrent: &Path, save: &Path) -> PlainOnlySeeder {
        // lt_peer.py's command line, run through lt_enc_peer.py, as tests::mse does.
        let plain = LtOptions::torrent(torrent, save).command();
        let mut cmd = Command::new(PYTHON);
        for arg in plain.get_args() {
            cmd.arg(if arg == SCRIPT {
                OsStr::new(ENC_SCRIPT)
            } else {
                arg
            });
        }
        cmd.args(["--enc-policy", "disabled", "--enc-level", "plaintext"]);
        let proc = Proc::spawn("lt plain-only seeder", cmd);
        let port = wait_listening(&proc);
        proc.wait_line(
            Stream::Stdout,
            Duration::from_secs(60),
            "libtorrent to finish checking",
            |l| matches!(serde_json::from_str(l), Ok(Event::Finished)).then_some(()),
        );
        PlainOnlySeeder {
            _proc: proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

/// A peer on loopback that speaks no MSE, recording what each connection sent. To a plain
/// handshake it answers with one of its own and hangs up; on anything else it hangs up after
/// reading what arrived, as a plain-only client does.
struct PlainOnlyPeer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl PlainOnlyPeer {
    fn start() -> PlainOnlyPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake peer");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, stopped) = (Arc::clone(&received), Arc::clone(&stop));
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let index = {
                            let mut r = rec.lock().unwrap();
                            r.push(Vec::new());
                            r.len() - 1
                        };
                        let rec = Arc::clone(&rec);
                        thread::spawn(move || serve_one(s, &rec, index));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PlainOnlyPeer {
            addr,
            received,
            stop,
        }
    }

    /// Its answer to a plain handshake: the same torrent, its own peer id.
    fn answer(hs: &[u8; 68]) -> [u8; 68] {
        let theirs = Handshake::decode(hs).expect("a handshake");
        Handshake::new(theirs.info_hash, PeerId(*b"-FK0001-plain-onlype")).encode()
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` connections were accepted and each has finished (sent what it will).
    fn wait_connections(&self, n: usize) -> Vec<Vec<u8>> {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} connections to the fake peer"),
            || {
                let c = self.connections();
                (c.len() >= n && c.iter().all(|b| !b.is_empty())).then_some(c)
            },
        )
    }
}

impl Drop for PlainOnlyPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection of [`PlainOnlyPeer`].
fn serve_one(mut s: TcpStream, rec: &Mutex<Vec<Vec<u8>>>, index: usize) {
    let _ = s.set_nonblocking(false);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until 68 bytes are in or nothing more comes for a moment (the bridge's MSE attempt
    // sends its key and padding, then waits for ours).
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 68 && Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) if got.len() >= 20 => break,
            Err(_) => {}
        }
    }
    let plain = got.len() >= 68 && got[0] == 19 && &got[1..20] == b"BitTorrent protocol";
    if plain {
        let hs: [u8; 68] = got[..68].try_into().expect("68 bytes");
        let _ = s.write_all(&PlainOnlyPeer::answer(&hs));
    } else {
        // Whatever else is on its way (the rest of the padding), for the record.
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    rec.lock().unwrap()[index] = got;
    // Dropping `s` hangs up.
}
