//! A python3-libtorrent leecher downloads from `bridge seed`.

use std::time::Duration;

use tests::bridge::Seed;
use tests::data::{assert_same_tree, temp_dir, write_random_file, write_random_tree};
use tests::libtorrent::{torrent_info, LtOptions};
use tests::net::free_port;
use tests::tracker::Opentracker;

#[test]
fn libtorrent_leecher_downloads_a_folder_from_bridge_seed() {
    let dir = temp_dir("seed-folder");
    let content = dir.path().join("shared");
    write_random_tree(
        &content,
        &[
            ("big.bin", 9 * 1024 * 1024 + 3),
            ("small/one", 1),
            ("small/empty", 0),
        ],
        21,
    );
    let mut tracker = Opentracker::start(&[]);
    let seed = Seed::start(
        &content,
        &dir.path().join("shared.torrent"),
        free_port(),
        &[tracker.announce_url()],
    );
    // Only now is the info-hash known: whitelist it so both sides' announces succeed.
    let info = torrent_info(&seed.torrent);
    assert_eq!(info.name, "shared");
    tracker.allow(info.info_hash);

    let leech_dir = dir.path().join("leech");
    // The tracker finds the seeder once the bridge announces again; add it directly as well so
    // the test does not hang on the announce interval.
    let leecher = LtOptions::torrent(&seed.torrent, &leech_dir)
        .peer(seed.addr())
        .start("lt leecher");
    leecher.wait_finished(Duration::from_secs(120));
    assert_same_tree(&content, &leech_dir.join("shared"));
}

#[test]
fn libtorrent_leecher_gets_metadata_from_bridge_seed_by_magnet() {
    let dir = temp_dir("seed-magnet");
    let content = dir.path().join("single.bin");
    write_random_file(&content, 2 * 1024 * 1024 + 77, 22);
    let seed = Seed::start(
        &content,
        &dir.path().join("single.torrent"),
        free_port(),
        &[],
    );
    assert!(
        seed.magnet.starts_with("magnet:?xt=urn:btih:"),
        "bridge seed printed {:?}",
        seed.magnet
    );

    let leech_dir = dir.path().join("leech");
    let leecher = LtOptions::magnet(&seed.magnet, &leech_dir)
        .peer(seed.addr())
        .start("lt leecher");
    leecher.wait_finished(Duration::from_secs(120));
    assert_same_tree(&content, &leech_dir.join("single.bin"));
}
