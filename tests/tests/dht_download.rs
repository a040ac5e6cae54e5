//! `bridge download` and `bridge seed` with the DHT as their only peer source, against
//! python3-libtorrent DHT nodes on 127.0.0.1 (no tracker, no `x.pe`, no LSD): the bridge finds a
//! libtorrent seeder through get_peers, and libtorrent finds `bridge seed` through its
//! announce_peer.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use tests::bridge::{expect_complete, Download, Seed};
use tests::data::{first_difference, temp_dir, write_random_file};
use tests::libtorrent::PYTHON;
use tests::lt_dht::LtDht;
use tests::net::free_port;
use tests::process::{Proc, Stream};
use tests::wait::wait_until;
use tests::InfoHash;

const LEECH_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/lt_dht_leech.py");

#[test]
fn a_magnet_with_only_its_hash_downloads_from_a_libtorrent_swarm_found_through_the_dht() {
    let dir = temp_dir("dht-download");
    let lt = LtDht::start(dir.path(), InfoHash([0x5a; 20]));
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let magnet = format!("magnet:?xt=urn:btih:{}", lt.info_hash.to_hex());

    // Joined through a node that is not the seeder: the seeder must come from get_peers. On the
    // default dual-stack `::` address: IPv4 nodes are reached through the mapped addresses.
    let mut bridge = Download::new(magnet, &out)
        .default_bind()
        .dht(lt.addr(1), &state)
        .timeout(60)
        .spawn("bridge download");
    let (_, complete) = expect_complete(&mut bridge, Duration::from_secs(120));

    let source = dir.path().join("seed").join("f.bin");
    assert_eq!(complete.name, "f.bin");
    assert_eq!(complete.total, 1 << 20);
    assert_eq!(first_difference(&source, &out.join("f.bin")).unwrap(), None);
    let log = bridge.stderr().join("\n");
    assert!(log.contains("DHT bootstrapped"), "{log}");
    assert!(log.contains("DHT: found"), "{log}");
    // The routing table was saved for the next run, and holds the libtorrent nodes.
    let saved = std::fs::read_to_string(state.join("bt-tab").join("dht-nodes")).unwrap();
    assert!(saved.contains(&lt.addr(0).to_string()), "{saved}");
}

/// One JSON line from `lt_dht_leech.py`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LeechEvent {
    Ready { ports: Vec<u16> },
    Announce { info_hash: String, peer: String },
    Complete { info_hash: String },
}

fn leech_events(p: &Proc) -> Vec<LeechEvent> {
    p.stdout()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn libtorrent_finds_bridge_seed_through_the_dht_alone_and_downloads_from_it() {
    let dir = temp_dir("dht-seed");
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-u")
        .arg(LEECH_SCRIPT)
        .args(["--dir".as_ref(), dir.path().as_os_str()]);
    let lt = Proc::spawn("lt_dht_leech.py", cmd);
    let ports = lt.wait_line(
        Stream::Stdout,
        Duration::from_secs(60),
        "the libtorrent DHT nodes to be ready",
        |l| match serde_json::from_str(l) {
            Ok(LeechEvent::Ready { ports }) => Some(ports),
            _ => None,
        },
    );
    let nodes: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();

    let content = dir.path().join("content").join("data.bin");
    write_random_file(&content, 3 << 20, 0xd47);
    let port = free_port();
    // Only the first node: the others come from the DHT itself.
    let seed = Seed::start_with(
        Some("127.0.0.1"),
        &content,
        &dir.path().join("data.torrent"),
        port,
        &[],
        &nodes[..1],
        Some(&dir.path().join("state")),
    );
    let info_hash = seed
        .magnet
        .split("btih:")
        .nth(1)
        .map(|s| s[..40].to_lowercase())
        .unwrap();
    let ours = format!("127.0.0.1:{port}");

    // Our announce_peer is taken by a libtorrent node, with our TCP port.
    wait_until(
        Duration::from_secs(60),
        "libtorrent to take our announce",
        || {
            leech_events(&lt)
            .iter()
            .any(|e| matches!(e, LeechEvent::Announce { info_hash: h, peer } if *h == info_hash && *peer == ours))
            .then_some(())
        },
    );
    std::fs::write(dir.path().join("want"), &info_hash).unwrap();
    wait_until(Duration::from_secs(90), "libtorrent to complete", || {
        leech_events(&lt)
            .iter()
            .any(|e| matches!(e, LeechEvent::Complete { info_hash: h } if *h == info_hash))
            .then_some(())
    });
    let got = dir.path().join("dl").join("data.bin");
    assert_eq!(first_difference(&content, &got).unwrap(), None);
    // No tracker, no LSD, no x.pe, and `bridge seed` the only seed: the two met through the DHT,
    // either way round. libtorrent may dial the address our announce_peer gave it, or our seed
    // may dial the leecher it found in the DHT first (complete torrents dial leechers); runs go
    // both ways, so which one is not asserted.
    let log = seed.proc.stderr().join("\n");
    assert!(log.contains("DHT bootstrapped"), "{log}");
}
