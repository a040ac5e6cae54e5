//! `bridge download` and `bridge seed` with Message Stream Encryption against python3-libtorrent
//! peers that refuse anything but RC4-encrypted connections.

use std::time::Duration;

use tests::bridge::{assert_no_panic, expect_complete, Download, Seed};
use tests::data::{assert_same_tree, temp_dir, write_random_file};
use tests::libtorrent::{create_torrent, LtOptions};
use tests::mse::{EncLevel, EncPolicy, EncryptedPeer};
use tests::net::free_port;

const DEADLINE: Duration = Duration::from_secs(120);

/// The default (`prefer`) downloads from a seeder that forces RC4; `off` cannot.
#[test]
fn a_download_from_a_seeder_that_requires_encryption() {
    let dir = temp_dir("enc-download");
    let save = dir.path().join("seed");
    let content = save.join("secret.bin");
    write_random_file(&content, 3 * 1024 * 1024 + 11, 81);
    let torrent = create_torrent(&content, &dir.path().join("t.torrent"), Some(1 << 16), &[]);
    let seeder = EncryptedPeer::start(
        LtOptions::torrent(&torrent.path, &save),
        EncPolicy::Forced,
        EncLevel::Rc4,
    );
    seeder.wait_finished(Duration::from_secs(60));

    let out = dir.path().join("out");
    let mut bridge = Download::torrent(&torrent.path, &out)
        .peer(seeder.addr())
        .spawn("bridge download (prefer)");
    expect_complete(&mut bridge, DEADLINE);
    assert_same_tree(&content, &out.join("secret.bin"));

    let plain_out = dir.path().join("plain");
    let mut cmd = Download::torrent(&torrent.path, &plain_out)
        .peer(seeder.addr())
        .timeout(5)
        .command();
    cmd.args(["--encryption", "off"]);
    let mut plain = tests::process::Proc::spawn("bridge download (off)", cmd);
    let status = plain.wait_exit(DEADLINE);
    assert_no_panic(&plain);
    assert!(
        !status.success(),
        "a plain download got data from a seeder that forces encryption"
    );
    assert!(
        plain
            .stderr()
            .iter()
            .any(|l| l.starts_with("error: no progress for 5 s")),
        "{}",
        plain.tail(10)
    );
}

/// A libtorrent leecher that forces RC4 dials `bridge seed` (which accepts both) and downloads
/// the whole file.
#[test]
fn a_leecher_that_requires_encryption_downloads_from_bridge_seed() {
    let dir = temp_dir("enc-seed");
    let content = dir.path().join("shared.bin");
    write_random_file(&content, 2 * 1024 * 1024 + 5, 82);
    let port = free_port();
    let seed = Seed::start(&content, &dir.path().join("shared.torrent"), port, &[]);
    let leech = dir.path().join("leech");
    let leecher = EncryptedPeer::start(
        LtOptions::torrent(&seed.torrent, &leech).peer(seed.addr()),
        EncPolicy::Forced,
        EncLevel::Rc4,
    );
    leecher.wait_finished(DEADLINE);
    assert_same_tree(&content, &leech.join("shared.bin"));
}
