//! `bridge download` against a python3-libtorrent seeder on loopback.

use std::time::Duration;

use tests::bridge::{expect_complete, parse_progress, parse_resume, Download};
use tests::data::assert_same_tree;
use tests::process::Stream;
use tests::swarm::Swarm;

const MIB: u64 = 1024 * 1024;

#[test]
fn single_file_of_64_mib_from_libtorrent_found_through_opentracker() {
    // Not a multiple of the piece length: the last piece is short.
    let size = 64 * MIB + 12_345;
    let swarm = Swarm::single_file("dl-single", "random.bin", size).start();
    let out = swarm.new_dir("out");

    let mut bridge = Download::torrent(&swarm.torrent.path, &out)
        .timeout(60)
        .spawn("bridge download");
    let (resume, complete) = expect_complete(&mut bridge, Duration::from_secs(300));

    assert_eq!(resume.have, 0, "nothing was on disk before");
    assert_eq!(resume.total, u64::from(swarm.torrent.num_pieces));
    assert_eq!(complete.name, "random.bin");
    assert_eq!(complete.total, size);
    assert_same_tree(&swarm.content, &swarm.downloaded(&out));
}

#[test]
fn multi_file_with_empty_tiny_and_piece_straddling_files() {
    const PIECE: u64 = 16 * 1024;
    let files = [
        ("empty-first", 0),
        ("one-byte", 1),
        ("a/just-under-a-piece", PIECE - 1),
        // From offset 16384: starts on a boundary and ends 3 bytes into the 4th piece.
        ("a/straddles-three", 2 * PIECE + 3),
        ("b/empty-middle", 0),
        ("b/c/straddles-one", PIECE + 100),
        ("b/c/inside-one-piece", 50),
        ("tail", 3 * PIECE + 7),
        ("z-empty-last", 0),
    ];
    let swarm = Swarm::multi_file("dl-multi", "multi", &files)
        .piece_length(PIECE as u32)
        .start();
    let out = swarm.new_dir("out");

    let mut bridge = Download::torrent(&swarm.torrent.path, &out)
        .timeout(60)
        .spawn("bridge download");
    let (_, complete) = expect_complete(&mut bridge, Duration::from_secs(120));

    let total: u64 = files.iter().map(|(_, n)| n).sum();
    assert_eq!(complete.total, total);
    assert_same_tree(&swarm.content, &swarm.downloaded(&out));
}

#[test]
fn single_file_through_a_udp_tracker() {
    let swarm = Swarm::single_file("dl-udp", "udp.bin", 5 * MIB + 1)
        .udp_tracker()
        .start();
    let out = swarm.new_dir("out");

    let mut bridge = Download::torrent(&swarm.torrent.path, &out)
        .timeout(60)
        .spawn("bridge download");
    expect_complete(&mut bridge, Duration::from_secs(120));
    assert_same_tree(&swarm.content, &swarm.downloaded(&out));
}

#[test]
fn magnet_with_only_x_pe_resolves_metadata_through_ut_metadata() {
    let swarm = Swarm::multi_file(
        "dl-magnet",
        "from-magnet",
        &[("x.bin", 3 * MIB + 5), ("y/z.bin", 100_000)],
    )
    .no_tracker()
    .start();
    let out = swarm.new_dir("out");

    let mut bridge = Download::new(swarm.magnet_with_peer_only(), &out)
        .timeout(60)
        .spawn("bridge download");
    let (_, complete) = expect_complete(&mut bridge, Duration::from_secs(120));

    assert_eq!(complete.name, "from-magnet");
    assert_same_tree(&swarm.content, &swarm.downloaded(&out));
}

#[test]
fn interrupted_download_resumes_from_verified_pieces() {
    let size = 32 * MIB;
    // About 8 s at 4 MB/s: time to stop it part-way.
    let swarm = Swarm::single_file("dl-resume", "resume.bin", size)
        .upload_limit(4_000_000)
        .start();
    let out = swarm.new_dir("out");
    let download = Download::torrent(&swarm.torrent.path, &out).timeout(60);

    let mut first = download.spawn("bridge download (first)");
    let at = first.wait_line(
        Stream::Stderr,
        Duration::from_secs(120),
        "progress: of at least 30 %",
        |l| parse_progress(l).filter(|p| p.total > 0 && p.verified * 10 >= p.total * 3),
    );
    let killed = first.kill();
    assert!(
        !killed.success(),
        "bridge finished before it could be interrupted (at {at:?})"
    );
    drop(first);

    let mut second = Download::torrent(&swarm.torrent.path, &out)
        .timeout(60)
        .spawn("bridge download (resumed)");
    let (resume, complete) = expect_complete(&mut second, Duration::from_secs(180));
    eprintln!("killed at {at:?}; restarted with {resume:?}; then {complete:?}");

    assert!(
        resume.have > 0,
        "the restart found no verified piece on disk (killed at {at:?})"
    );
    assert_eq!(resume.total, u64::from(swarm.torrent.num_pieces));
    assert!(
        complete.downloaded < complete.total,
        "the restart downloaded {} of {} bytes again",
        complete.downloaded,
        complete.total
    );
    assert_same_tree(&swarm.content, &swarm.downloaded(&out));
    // The stdout line and the parsed value agree.
    assert!(second
        .stdout()
        .iter()
        .any(|l| parse_resume(l) == Some(resume)));
}
