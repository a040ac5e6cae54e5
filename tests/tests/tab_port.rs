//! The tab's port: `bridge serve` accepts peers on a TCP port for the tab's torrents and hands
//! each to the tab that serves the torrent its handshake names.

use std::time::Duration;

use tests::browser::Browser;
use tests::data::first_difference;
use tests::libtorrent::LtOptions;
use tests::page::{Page, Serve};
use tests::swarm::Swarm;

const MIB: u64 = 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(120);

/// The tab downloads a torrent, its only seeder goes away, and a libtorrent leecher that finds the
/// tab through the tracker (the tab announced the bridge's port) dials that port and downloads
/// the whole torrent from the tab.
#[tokio::test]
async fn a_leecher_downloads_from_a_complete_tab_through_the_bridges_port() {
    let mut swarm = Swarm::single_file("tab-port", "served.bin", 4 * MIB + 5).start();
    let serve = Serve::start(true);
    let browser = Browser::start().await;
    let page = Page::open(&browser.client, &serve.url).await;
    page.add_torrent_file(&swarm.torrent.path).await;
    let id = swarm.torrent.info_hash.to_hex();
    page.wait_progress(&id, 100, DEADLINE).await;
    // From now on only the tab has the data, and the tab learns of no new peer by itself (its
    // next announce is half an hour away): the leecher must come in through the port.
    swarm.seeder.proc().kill();

    let leech_dir = swarm.new_dir("leech");
    let leecher = LtOptions::torrent(&swarm.torrent.path, &leech_dir).start("lt leecher");
    leecher.wait_finished(DEADLINE);
    let got = leech_dir.join("served.bin");
    if let Some(diff) = first_difference(&swarm.content, &got).expect("compare the copy") {
        panic!("the leecher's copy differs from the source: {diff}");
    }
    let offered = serve.log_lines("offered to the tab");
    assert!(
        !offered.is_empty(),
        "the bridge handed no incoming peer to the tab\n{}",
        serve.proc.tail(30)
    );
    browser.close().await;
}
