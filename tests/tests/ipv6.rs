//! IPv6 end to end: a swarm on `[::1]` only, found through an IPv6 tracker.

use std::time::Duration;

use tests::bridge::{expect_complete, peer_log, Download, Seed};
use tests::browser::Browser;
use tests::data::{assert_same_tree, temp_dir, write_random_file};
use tests::libtorrent::{create_torrent, Event, LtOptions};
use tests::net::free_port;
use tests::node_tracker::NodeTracker;
use tests::page::{Page, Serve};

/// A libtorrent seeder listening on `[::1]` only, announced to an HTTP tracker on `[::1]`:
/// `bridge download` with its default dual-stack listener gets the seeder's address from the
/// tracker's `peers6`, dials it over IPv6 and downloads the same bytes. (The same tracker's UDP
/// side answers over IPv6 but hands out IPv4 peers only, so UDP over IPv6 is tested against a
/// scripted tracker in the bridge's unit tests.)
#[test]
fn a_v6_only_swarm_downloads_through_a_v6_http_tracker() {
    let tracker = NodeTracker::start();
    {
        let (label, url) = ("http", tracker.announce_url());
        let dir = temp_dir(&format!("ipv6-{label}"));
        let seed_dir = dir.path().join("seed");
        let content = seed_dir.join("v6.bin");
        write_random_file(&content, 3 * 1024 * 1024 + 17, 61);
        let torrent = create_torrent(
            &content,
            &dir.path().join("v6.torrent"),
            Some(32768),
            &[url],
        );
        let seeder = LtOptions::torrent(&torrent.path, &seed_dir)
            .bind("[::1]")
            .start("libtorrent seeder on [::1]");
        // Its first announce reached the tracker: the download will hear of it.
        seeder.wait_event(
            Duration::from_secs(30),
            "the seeder's announce",
            |e| match e {
                Event::Tracker { message } if !message.contains("error") => Some(()),
                _ => None,
            },
        );
        let out = dir.path().join("out");
        let mut bridge = Download::torrent(&torrent.path, &out)
            .default_bind()
            .spawn("bridge download");
        expect_complete(&mut bridge, Duration::from_secs(120));
        assert_same_tree(&content, &out.join("v6.bin"));
        let seeder_addr = format!("[::1]:{}", seeder.port());
        let log = peer_log(&bridge, seeder_addr.parse().unwrap());
        assert!(
            log.iter().any(|l| l.contains(" connected")),
            "{label}: no connection to {seeder_addr}: {log:?}\n{}",
            bridge.tail(30)
        );
    }
}

/// `bridge seed` on its default listener takes a leecher dialling in over IPv6 and one over IPv4,
/// and names the IPv4 one by its IPv4 address (not `::ffff:127.0.0.1`).
#[test]
fn the_default_listener_takes_ipv6_and_ipv4_peers() {
    let dir = temp_dir("ipv6-listen");
    let content = dir.path().join("both.bin");
    write_random_file(&content, 2 * 1024 * 1024 + 5, 62);
    let port = free_port();
    let seed = Seed::start_on(None, &content, &dir.path().join("both.torrent"), port, &[]);
    for (label, bind, peer) in [
        ("v6", "[::1]", format!("[::1]:{port}")),
        ("v4", "127.0.0.1", format!("127.0.0.1:{port}")),
    ] {
        let save = dir.path().join(label);
        let leecher = LtOptions::torrent(&seed.torrent, &save)
            .bind(bind)
            .peer(peer.parse().unwrap())
            .start(&format!("libtorrent leecher on {bind}"));
        leecher.wait_finished(Duration::from_secs(60));
        assert_same_tree(&content, &save.join("both.bin"));
        let leecher_ip = if label == "v6" { "[::1]" } else { "127.0.0.1" };
        let incoming = seed.proc.stderr().into_iter().any(|l| {
            l.contains(&format!("peer {leecher_ip}:")) && l.contains("connected (incoming)")
        });
        assert!(
            incoming,
            "{label}: no incoming peer from {leecher_ip}\n{}",
            seed.proc.tail(20)
        );
    }
}

/// The tab in the same v6-only swarm: its announce goes through the bridge's `/announce` to the
/// tracker on `[::1]`, and its tunnel through `/peer?addr=[::1]:port` to the seeder.
#[tokio::test]
async fn the_tab_downloads_from_a_v6_only_swarm() {
    let tracker = NodeTracker::start();
    let dir = temp_dir("ipv6-tab");
    let seed_dir = dir.path().join("seed");
    let content = seed_dir.join("tab6.bin");
    write_random_file(&content, 5 * 1024 * 1024 + 3, 63);
    let torrent = create_torrent(
        &content,
        &dir.path().join("tab6.torrent"),
        Some(65536),
        &[tracker.announce_url()],
    );
    let seeder = LtOptions::torrent(&torrent.path, &seed_dir)
        .bind("[::1]")
        .start("libtorrent seeder on [::1]");
    seeder.wait_event(
        Duration::from_secs(30),
        "the seeder's announce",
        |e| match e {
            Event::Tracker { message } if !message.contains("error") => Some(()),
            _ => None,
        },
    );
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    page.add_torrent_file(&torrent.path).await;
    let id = torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, Duration::from_secs(120)).await;
    page.save(&id, 0).await;
    page.assert_saved_equals(&content).await;
    browser.close().await;
    let tunnels = serve.log_lines(&format!("[::1]:{}", seeder.port()));
    assert!(
        !tunnels.is_empty(),
        "the bridge logged no tunnel to the seeder"
    );
}
