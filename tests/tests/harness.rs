//! The harness itself, with no bridge involved: a libtorrent seeder and a libtorrent leecher find
//! each other through opentracker (whitelist mode) and exchange a multi-file torrent byte for byte.
//! When this fails, the other end-to-end tests cannot mean anything.

use std::time::{Duration, Instant};

use tests::data::{assert_same_tree, temp_dir, write_random_tree};
use tests::libtorrent::{create_torrent, LtOptions};
use tests::tracker::Opentracker;

#[test]
fn libtorrent_seeder_to_libtorrent_leecher_through_opentracker() {
    let dir = temp_dir("harness");
    let seed_dir = dir.path().join("seed");
    let content = seed_dir.join("content");
    write_random_tree(
        &content,
        &[
            ("a.bin", 3 * 1024 * 1024 + 17),
            ("sub/b.bin", 40_000),
            ("empty", 0),
        ],
        1,
    );
    // The tracker starts first with an empty whitelist: allow() must reach a running tracker.
    let mut tracker = Opentracker::start(&[]);
    let torrent = create_torrent(
        &content,
        &dir.path().join("t.torrent"),
        Some(32 * 1024),
        &[tracker.announce_url()],
    );
    tracker.allow(torrent.info_hash);

    let seeder = LtOptions::torrent(&torrent.path, &seed_dir).start("lt seeder");
    seeder.wait_finished(Duration::from_secs(30));

    let leech_dir = dir.path().join("leech");
    let mut leecher = LtOptions::torrent(&torrent.path, &leech_dir)
        .exit_when_finished()
        .start("lt leecher");
    leecher.wait_finished(Duration::from_secs(60));
    leecher.proc().wait_exit(Duration::from_secs(10));

    assert_same_tree(&content, &leech_dir.join("content"));
    assert!(
        tracker.peers(&torrent.info_hash).contains(&seeder.addr()),
        "opentracker lists the seeder"
    );
}

/// The interrupted-download test relies on a libtorrent upload limit slowing a loopback
/// transfer down; check that it does.
#[test]
fn libtorrent_upload_limit_applies_on_loopback() {
    let dir = temp_dir("harness-limit");
    let seed_dir = dir.path().join("seed");
    let content = seed_dir.join("limited.bin");
    let size = 4 * 1024 * 1024;
    write_random_tree(&seed_dir, &[("limited.bin", size)], 2);
    let torrent = create_torrent(&content, &dir.path().join("t.torrent"), None, &[]);

    let seeder = LtOptions::torrent(&torrent.path, &seed_dir)
        .upload_limit(1024 * 1024)
        .start("lt seeder");
    seeder.wait_finished(Duration::from_secs(30));
    let leech_dir = dir.path().join("leech");
    let started = Instant::now();
    let leecher = LtOptions::torrent(&torrent.path, &leech_dir)
        .peer(seeder.addr())
        .start("lt leecher");
    leecher.wait_finished(Duration::from_secs(60));
    let took = started.elapsed();
    assert_same_tree(&content, &leech_dir.join("limited.bin"));
    // 4 MiB at 1 MiB/s: about 4 s (the first second's burst allowance aside).
    assert!(
        took >= Duration::from_millis(2500),
        "4 MiB at an upload limit of 1 MiB/s arrived in {took:?}"
    );
}
