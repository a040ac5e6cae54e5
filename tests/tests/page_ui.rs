//! The parts of the page a user touches besides the file input and the URL fragment, in headless
//! Chromium against `bridge serve` and python3-libtorrent on loopback: drag and drop, the tab
//! uploading to another peer, the messages that say in words what is wrong, and keyboard-only use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fantoccini::key::Key;
use serde_json::Value;
use tempfile::TempDir;
use tests::browser::Browser;
use tests::data::{first_difference, temp_dir, write_random_file};
use tests::libtorrent::{create_torrent, wait_listening, Event, LtOptions, Torrent};
use tests::net::free_port;
use tests::page::{Focus, Page, Serve};
use tests::process::{Proc, Stream};
use tests::swarm::Swarm;
use tests::tracker::Opentracker;

const MIB: u64 = 1024 * 1024;
/// Two cores shared with other tests: every wait is generous.
const DEADLINE: Duration = Duration::from_secs(90);

// ---- drag and drop --------------------------------------------------------------------------

#[tokio::test]
async fn a_torrent_file_dropped_on_the_page_downloads_and_saves_the_same_bytes() {
    let swarm = Swarm::single_file("ui-drop", "dropped.bin", 3 * MIB + 321).start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;

    let bytes = std::fs::read(&swarm.torrent.path).expect("read the .torrent");
    // Dropped on the torrent list, not on the "Add" box: the page takes drops anywhere.
    let drop = page
        .drop_files("#torrents", &[("dropped.torrent", &bytes)])
        .await;
    assert!(
        drop.enter_prevented && drop.over_prevented && drop.drop_prevented,
        "the page must cancel dragenter, dragover and drop, or the browser refuses the drop (or \
         opens the file itself): {drop:?}"
    );
    assert!(
        drop.overlay_shown && drop.overlay_hidden_after,
        "the drop overlay should show during the drag and go after the drop: {drop:?}"
    );

    let id = swarm.torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&swarm.content).await;
    browser.close().await;
}

// ---- uploading from the tab -----------------------------------------------------------------

/// A python3-libtorrent peer bound to an address of our choice and blocking others (the
/// `--bind` and `--block` options of lt_peer.py), which `LtOptions::start` does not offer.
struct BoundPeer {
    proc: Proc,
    addr: SocketAddr,
}

impl BoundPeer {
    fn start(name: &str, opts: LtOptions, bind: Ipv4Addr, block: &[Ipv4Addr]) -> BoundPeer {
        let mut cmd: Command = opts.command();
        cmd.args(["--bind", &bind.to_string()]);
        for ip in block {
            cmd.args(["--block", &ip.to_string()]);
        }
        let proc = Proc::spawn(name, cmd);
        let port = wait_listening(&proc);
        BoundPeer {
            proc,
            addr: SocketAddr::new(IpAddr::V4(bind), port),
        }
    }

    fn wait_finished(&self, timeout: Duration, what: &str) {
        self.proc.wait_line(Stream::Stdout, timeout, what, |l| {
            matches!(serde_json::from_str(l), Ok(Event::Finished)).then_some(())
        });
    }

    /// The latest `total_upload` libtorrent reported.
    fn total_upload(&self) -> u64 {
        self.proc
            .stdout()
            .iter()
            .rev()
            .find_map(|l| match serde_json::from_str::<Event>(l) {
                Ok(Event::Status(s)) => Some(s.total_upload),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// The `{"event":"blocked"}` lines: connections the ip_filter refused.
    fn blocked(&self) -> Vec<String> {
        self.proc
            .stdout()
            .into_iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == "blocked"))
            .collect()
    }
}

/// Random content and its `.torrent` listing `trackers`, in a temporary folder.
fn content(label: &str, name: &str, len: u64, trackers: &[String]) -> (TempDir, PathBuf, Torrent) {
    let dir = temp_dir(label);
    let seed_dir = dir.path().join("seed");
    let content = seed_dir.join(name);
    write_random_file(&content, len, 0x7ab);
    let torrent = create_torrent(
        &content,
        &dir.path().join(format!("{name}.torrent")),
        None,
        trackers,
    );
    (dir, content, torrent)
}

#[tokio::test]
async fn the_tab_uploads_to_a_leecher_that_can_only_get_the_data_from_the_tab() {
    // S seeds on 127.0.0.2. L, on 127.0.0.1, starts empty and refuses every connection to or
    // from 127.0.0.2, so even if it learns S's address (the tab sends PEX) it cannot use it:
    // whatever L gets, it gets from the tab, which connects to both through the bridge.
    let s_ip = Ipv4Addr::new(127, 0, 0, 2);
    let (dir, source, torrent) = content("ui-upload", "uploaded.bin", 4 * MIB + 99, &[]);
    let seeder = BoundPeer::start(
        "lt seeder S",
        LtOptions::torrent(&torrent.path, source.parent().expect("seed folder")),
        s_ip,
        &[],
    );
    seeder.wait_finished(Duration::from_secs(60), "S to check its data");
    let leech_dir = dir.path().join("leech");
    std::fs::create_dir_all(&leech_dir).expect("create the leecher's folder");
    let leecher = BoundPeer::start(
        "lt leecher L",
        LtOptions::torrent(&torrent.path, &leech_dir),
        Ipv4Addr::LOCALHOST,
        &[s_ip],
    );

    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let url = format!(
        "{}#magnet:?xt=urn:btih:{}&dn={}&x.pe={}&x.pe={}",
        serve.url,
        torrent.info_hash.to_hex(),
        torrent.name,
        seeder.addr,
        leecher.addr
    );
    let page = Page::open(&browser.client, &url).await;
    let id = torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;

    leecher.wait_finished(DEADLINE, "L to finish, with data only the tab can give it");
    let got = leech_dir.join(&torrent.name);
    if let Some(diff) = first_difference(&source, &got).expect("compare L's file") {
        panic!("L's copy differs from the source: {diff}");
    }
    eprintln!(
        "S uploaded {} bytes (to the tab); L refused {} connections to S: {:?}",
        seeder.total_upload(),
        leecher.blocked().len(),
        leecher.blocked()
    );
    assert!(
        leecher
            .blocked()
            .iter()
            .all(|l| l.contains(&s_ip.to_string())),
        "L refused an address other than S's: {:?}",
        leecher.blocked()
    );
    browser.close().await;
}

// ---- messages in words ----------------------------------------------------------------------

#[tokio::test]
async fn a_bridge_that_went_away_is_named_on_the_torrent() {
    // Slow enough to be mid-download when the bridge goes: 16 MiB at 2 MB/s.
    let swarm = Swarm::single_file("ui-bridge-gone", "gone.bin", 16 * MIB)
        .upload_limit(2_000_000)
        .start();
    let mut serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    page.add_torrent_file(&swarm.torrent.path).await;
    let id = swarm.torrent.info_hash.to_hex();
    let before = page.wait_progress(&id, 5, DEADLINE).await;
    assert!(before.progress < 90, "done too soon to prove anything");

    serve.proc.kill();
    let shown = page
        .wait_message(&id, DEADLINE, "that the bridge is unreachable", |m| {
            m.to_lowercase().contains("bridge unreachable")
        })
        .await;
    eprintln!("shown: {shown:?}");
    assert_eq!(
        shown.to_lowercase().matches("unreachable").count(),
        1,
        "said once, in plain words: {shown:?}"
    );
    browser.close().await;
}

#[tokio::test]
async fn torrents_whose_peers_and_tracker_are_dead_say_no_peers_and_why() {
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;

    // A magnet whose only peer is a closed port.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let magnet_id = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
    let magnet = format!("magnet:?xt=urn:btih:{magnet_id}&dn=nobody-home&x.pe={dead}");
    add_magnet_by_form(&page, &magnet).await;

    // A .torrent whose only tracker refuses it (opentracker without it on its whitelist).
    let tracker = Opentracker::start(&[]);
    let (_dir, _source, refused) = content(
        "ui-no-peers",
        "refused.bin",
        64 * 1024,
        &[tracker.announce_url()],
    );
    page.add_torrent_file(&refused.path).await;
    let torrent_id = refused.info_hash.to_hex();

    let m1 = page
        .wait_message(magnet_id, DEADLINE, "\"No peers\"", |m| {
            m.starts_with("No peers")
        })
        .await;
    let m2 = page
        .wait_message(&torrent_id, DEADLINE, "\"No peers\"", |m| {
            m.starts_with("No peers")
        })
        .await;
    eprintln!("magnet: {m1:?}\ntorrent: {m2:?}");
    assert!(
        m1.contains(&dead.to_string()),
        "the message should name the peer that failed: {m1:?}"
    );
    assert!(
        m2.contains("tracker refused") && m2.contains("not authorized"),
        "the message should say the tracker refused, and why: {m2:?}"
    );
    assert!(
        !m2.contains("unreachable"),
        "the tracker answered, it is not unreachable: {m2:?}"
    );
    for m in [&m1, &m2] {
        assert!(
            !m.to_lowercase().contains("bridge"),
            "the bridge is up: {m:?}"
        );
    }
    browser.close().await;
}

#[tokio::test]
async fn a_garbage_torrent_file_is_refused_with_the_reason() {
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;

    let dir = temp_dir("ui-garbage");
    let path = dir.path().join("garbage.torrent");
    write_random_file(&path, 3000, 0x6a7b);
    page.add_torrent_file(&path).await;

    let shown = wait_visible(&page, "#alerts .alert-item", |t| {
        t.contains("garbage.torrent")
    })
    .await;
    assert!(
        shown.contains("Could not add garbage.torrent") && shown.contains("not a torrent file"),
        "the alert should name the file and the problem: {shown:?}"
    );
    assert!(
        page.state().await.torrents.is_empty(),
        "a garbage file was added as a torrent"
    );
    browser.close().await;
}

/// Waits until an element matching `selector` shows text for which `f` is true.
async fn wait_visible(page: &Page<'_>, selector: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let texts = page.visible_texts(selector).await;
        if let Some(t) = texts.iter().find(|t| f(t)) {
            return t.clone();
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "nothing visible at {selector} matched; it shows {texts:?}; the page: {:#?}",
                page.state().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn add_magnet_by_form(page: &Page<'_>, magnet: &str) {
    let input = page
        .client
        .find(fantoccini::Locator::Css("#magnet-input"))
        .await
        .expect("the magnet field");
    input.send_keys(magnet).await.expect("type the magnet");
    page.client
        .find(fantoccini::Locator::Css("#magnet-add"))
        .await
        .expect("the Add button")
        .click()
        .await
        .expect("press Add");
}

// ---- the keyboard alone ---------------------------------------------------------------------

fn is(f: &Focus, tag: &str, class_or_id: &str) -> bool {
    f.tag == tag && (f.id == class_or_id || f.class.split(' ').any(|c| c == class_or_id))
}

/// The focus is on screen and drawn (a ring a sighted keyboard user can follow).
fn assert_focus_shown(f: &Focus) {
    assert!(f.rendered, "the focus is on something off screen: {f:?}");
    assert!(
        f.focus_visible && !f.outline.starts_with("none") && !f.outline.ends_with(" 0px"),
        "the focus on {} is not drawn: {f:?}",
        f.describe()
    );
}

#[tokio::test]
async fn the_keyboard_alone_adds_a_magnet_pauses_resumes_saves_and_removes() {
    let swarm = Swarm::single_file("ui-keys", "keys.bin", 2 * MIB + 17)
        .no_tracker()
        .start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    let tab = char::from(Key::Tab);
    let enter = char::from(Key::Enter);
    let space = ' ';

    // From the top of the page: the file picker first, then the magnet field; type the link,
    // on to Add, press it.
    let f = page
        .tab_to(4, "the file picker", |f| is(f, "input", "torrent-file"))
        .await;
    assert_focus_shown(&f);
    let f = page
        .tab_to(1, "the magnet field", |f| is(f, "input", "magnet-input"))
        .await;
    assert_focus_shown(&f);
    page.press_keys(swarm.magnet_with_peer_only().chars()).await;
    let f = page
        .tab_to(2, "the Add button", |f| is(f, "button", "magnet-add"))
        .await;
    assert_focus_shown(&f);
    page.press_keys([enter]).await;

    let id = swarm.torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    assert_eq!(
        page.focus().await.id,
        "magnet-add",
        "the focus should stay where the user left it"
    );

    // Pause with Enter; the focus moves to Resume, which replaces Pause.
    let f = page
        .tab_to(6, "the torrent's Pause button", |f| {
            f.torrent.as_deref() == Some(&id) && is(f, "button", "pause")
        })
        .await;
    assert_focus_shown(&f);
    page.press_keys([enter]).await;
    page.wait_state(DEADLINE, "the torrent to pause", |s| {
        s.torrent(&id).filter(|t| t.state == "paused").map(|_| ())
    })
    .await;
    let f = page.focus().await;
    assert!(
        is(&f, "button", "resume"),
        "after Pause the focus is on {f:?}"
    );
    assert_focus_shown(&f);

    // Resume with Space.
    page.press_keys([space]).await;
    page.wait_state(DEADLINE, "the torrent to resume", |s| {
        s.torrent(&id).filter(|t| t.state == "seeding").map(|_| ())
    })
    .await;
    let f = page.focus().await;
    assert!(
        is(&f, "button", "pause"),
        "after Resume the focus is on {f:?}"
    );

    // On to Save; Enter hands the file to the browser.
    let f = page
        .tab_to(6, "the Save button", |f| {
            f.torrent.as_deref() == Some(&id) && is(f, "button", "save")
        })
        .await;
    assert_focus_shown(&f);
    browser
        .client
        .execute("window.btTab.lastSaved = null;", vec![])
        .await
        .expect("reset lastSaved");
    page.press_keys([enter]).await;
    page.wait_saved(&id, 0).await;
    page.assert_saved_equals(&swarm.content).await;

    // Back (Shift+Tab) to Remove, and press it: the torrent goes, the focus lands on the magnet
    // field rather than on nothing.
    let shift = char::from(Key::Shift);
    let mut back = Vec::new();
    for _ in 0..6 {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: shift })
            .then(KeyAction::Down { value: tab })
            .then(KeyAction::Up { value: tab })
            .then(KeyAction::Up { value: shift });
        browser
            .client
            .perform_actions(keys)
            .await
            .expect("Shift+Tab");
        let f = page.focus().await;
        back.push(f.describe());
        if is(&f, "button", "remove") {
            break;
        }
    }
    let f = page.focus().await;
    assert!(
        is(&f, "button", "remove"),
        "Shift+Tab never reached Remove: {back:#?}"
    );
    assert_focus_shown(&f);
    page.press_keys([enter]).await;
    page.wait_state(DEADLINE, "the torrent to go", |s| {
        s.torrent(&id).is_none().then_some(())
    })
    .await;
    let f = page.focus().await;
    assert!(
        is(&f, "input", "magnet-input"),
        "after Remove the focus is on {f:?}"
    );
    browser.close().await;
}
