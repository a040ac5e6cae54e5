//! Hostile input: broken `.torrent` files and magnets, path traversal, and peers that misbehave
//! after a valid handshake. Each gets a clear error or a disconnect, never a panic, and the
//! download still completes from the good seeder.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tests::bencode::{multi_file_torrent, TorrentFile};
use tests::bridge::{assert_no_panic, expect_complete, peer_log, Download};
use tests::data::{assert_same_tree, list_files, temp_dir};
use tests::fake_peer::{FakePeer, Misbehaviour};
use tests::libtorrent::create_torrent;
use tests::process::describe;
use tests::swarm::Swarm;

/// Runs `bridge download source`, expects a non-zero exit with an `error:` line on stderr and no
/// panic, and returns that line.
fn expect_error(source: &str, output: &Path) -> String {
    let mut bridge = Download::new(source, output)
        .timeout(5)
        .spawn("bridge download");
    let status = bridge.wait_exit(Duration::from_secs(60));
    assert_no_panic(&bridge);
    assert!(
        !status.success(),
        "bridge download {source:?} succeeded ({})",
        describe(status)
    );
    let stderr = bridge.stderr();
    let line = stderr
        .iter()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line for {source:?}\n{}", bridge.tail(20)));
    assert!(
        line.len() > "error: ".len() + 5,
        "the error names no problem: {line:?}"
    );
    line.clone()
}

#[test]
fn truncated_garbage_empty_and_missing_torrent_files_are_clear_errors() {
    let dir = temp_dir("hostile-files");
    let content = dir.path().join("content.bin");
    tests::data::write_random_file(&content, 200_000, 31);
    let good = create_torrent(&content, &dir.path().join("good.torrent"), Some(16384), &[]);
    let bytes = fs::read(&good.path).unwrap();

    let truncated = dir.path().join("truncated.torrent");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.torrent");
    let mut rng = fastrand::Rng::with_seed(32);
    fs::write(&garbage, (0..4096).map(|_| rng.u8(..)).collect::<Vec<u8>>()).unwrap();
    let empty = dir.path().join("empty.torrent");
    fs::write(&empty, b"").unwrap();
    // Valid bencode, but no `info` dictionary.
    let no_info = dir.path().join("no-info.torrent");
    fs::write(&no_info, b"d8:announce20:http://127.0.0.1:1/ae").unwrap();
    let missing = dir.path().join("does-not-exist.torrent");

    let out = dir.path().join("out");
    for path in [&truncated, &garbage, &empty, &no_info] {
        let line = expect_error(&path.to_string_lossy(), &out);
        eprintln!("{}: {line}", path.display());
        assert!(
            line.contains("torrent"),
            "{line:?} does not say what is wrong"
        );
    }
    let line = expect_error(&missing.to_string_lossy(), &out);
    assert!(
        line.contains("does-not-exist.torrent"),
        "the error names the missing file: {line:?}"
    );
    for magnet in [
        "magnet:?xt=urn:btih:zz",
        "magnet:?dn=no-hash",
        "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let line = expect_error(magnet, &out);
        eprintln!("{magnet}: {line}");
        assert!(
            line.contains("magnet"),
            "{line:?} does not say what is wrong"
        );
    }
    assert!(
        !out.exists() || list_files(&out).is_empty(),
        "a failed download wrote files: {:?}",
        list_files(&out)
    );
}

#[test]
fn path_traversal_torrents_are_refused_and_write_nothing_outside() {
    let dir = temp_dir("hostile-traversal");
    let data: &[u8] = b"evil bytes";
    let cases: [(&str, Vec<&str>); 5] = [
        ("t", vec!["..", "evil"]),
        ("t", vec!["sub", "..", "..", "evil"]),
        ("..", vec!["evil"]),
        ("t", vec!["/tmp", "evil"]),
        ("t", vec!["a", "", "evil"]),
    ];
    for (i, (name, path)) in cases.iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        let inner = case.join("inner");
        fs::create_dir_all(&inner).unwrap();
        let (bytes, _) = multi_file_torrent(
            name,
            16384,
            &[
                TorrentFile {
                    path: vec!["fine"],
                    data: b"ok",
                },
                TorrentFile {
                    path: path.clone(),
                    data,
                },
            ],
            None,
        );
        let torrent = case.join("evil.torrent");
        fs::write(&torrent, bytes).unwrap();
        let out = inner.join("out");
        let line = expect_error(&torrent.to_string_lossy(), &out);
        eprintln!("name {name:?}, path {path:?}: {line}");
        assert!(line.contains("path"), "{line:?} does not name the bad path");
        assert_eq!(
            list_files(&case),
            vec![Path::new("evil.torrent").to_path_buf()],
            "name {name:?}, path {path:?}: files were written"
        );
    }
    assert!(!Path::new("/tmp/evil").exists());
}

/// A swarm slow enough (a rate-limited seeder) that a fake peer gets its say, and a download
/// that is also told about the fake peer. The download must complete with the right bytes and
/// log that it closed or banned the fake peer. Returns the fake peer and those log lines.
fn download_with_fake_peer(
    label: &str,
    make: impl FnOnce(&Swarm) -> FakePeer,
) -> (FakePeer, Vec<String>) {
    let swarm = Swarm::single_file(label, "good.bin", 4 * 1024 * 1024 + 999)
        .piece_length(16 * 1024)
        .upload_limit(2_000_000)
        .start();
    let fake = make(&swarm);
    let out = swarm.new_dir("out");
    let mut bridge = Download::torrent(&swarm.torrent.path, &out)
        .peer(fake.addr())
        .timeout(60)
        .spawn("bridge download");
    expect_complete(&mut bridge, Duration::from_secs(180));
    assert_same_tree(&swarm.content, &swarm.downloaded(&out));

    assert!(
        fake.handshakes() > 0,
        "the bridge never reached the fake peer"
    );
    let log = peer_log(&bridge, fake.addr());
    eprintln!("{label}: {log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains(" closed: ") || l.contains(" banned: ")),
        "no `peer {} closed:` or `banned:` line\n{}",
        fake.addr(),
        bridge.tail(40)
    );
    (fake, log)
}

#[test]
fn fake_peer_sending_an_oversized_length_is_dropped() {
    download_with_fake_peer("hostile-oversized", |s| {
        FakePeer::start(Misbehaviour::OversizedLength, s.torrent.info_hash)
    });
}

#[test]
fn fake_peer_sending_garbage_is_dropped() {
    download_with_fake_peer("hostile-garbage", |s| {
        FakePeer::start(Misbehaviour::Garbage, s.torrent.info_hash)
    });
}

#[test]
fn fake_peer_sending_corrupt_pieces_is_banned() {
    let (fake, log) = download_with_fake_peer("hostile-corrupt", |s| {
        let behaviour = Misbehaviour::CorruptPieces {
            num_pieces: s.torrent.num_pieces,
        };
        FakePeer::start(behaviour, s.torrent.info_hash)
    });
    assert!(
        fake.corrupt_blocks() > 0,
        "the bridge never requested a block from the corrupt peer"
    );
    assert!(
        log.iter().any(|l| l.contains(" banned: ")),
        "the peer sent {} corrupt blocks and was not banned: {log:?}",
        fake.corrupt_blocks()
    );
}
