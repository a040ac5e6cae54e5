//! Message Stream Encryption between engines: what each setting meets.

use super::*;

fn engine(info: &Info, store: SharedStorage, seed: u64, encryption: Encryption) -> Torrent {
    let config = Config {
        encryption,
        entropy: [seed as u8; 32],
        ..Config::default()
    };
    let mut t = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(seed),
        config,
        seed,
    );
    t.attach_storage(Box::new(store), 0);
    assert!(t.check_existing(u32::MAX, 0).unwrap());
    t
}

/// What came of a leecher with `leech` dialling a seeder with `seed`.
struct Outcome {
    done: bool,
    /// The leecher's connections to the seeder, in order: whether each began with an MSE
    /// handshake rather than a plain one.
    attempts: Vec<bool>,
    /// Why the seeder closed connections.
    seeder_closed: Vec<String>,
}

fn download(leech: Encryption, seed: Encryption) -> Outcome {
    let (data, info) = make_torrent(300_000, 16 * 1024, 21);
    let store =
        |d: Vec<u8>| SharedStorage(Rc::new(std::cell::RefCell::new(MemoryStorage { data: d })));
    let got = store(vec![0; data.len()]);
    let mut net = Net::new();
    let s = net.add(engine(&info, store(data.clone()), 22, seed));
    let l = net.add(engine(&info, got.clone(), 23, leech));
    let seeder_addr = net.nodes[s].addr;
    net.nodes[l]
        .torrent
        .add_peers(&[seeder_addr], PeerSource::Manual, 0);
    let done = net.run_until(300_000, |n| n.nodes[l].torrent.is_complete());
    if done {
        assert!(
            got.0.borrow().data == data,
            "{leech:?} -> {seed:?}: bytes differ"
        );
    }
    let plain_start = Handshake::new(info.info_hash, PeerId::generate(1)).encode();
    let attempts = net
        .first_bytes
        .iter()
        .filter(|((node, _), _)| *node == l)
        .map(|(_, first)| !plain_start.starts_with(first))
        .collect();
    let seeder_closed = net.nodes[s]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Close { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .collect();
    Outcome {
        done,
        attempts,
        seeder_closed,
    }
}

#[test]
fn both_preferring_encryption_download_through_one_encrypted_connection() {
    let o = download(Encryption::Prefer, Encryption::Prefer);
    assert!(o.done, "{:?}", o.seeder_closed);
    assert_eq!(o.attempts, [true]);
}

#[test]
fn a_peer_without_encryption_is_dialled_again_in_plain_and_serves() {
    let o = download(Encryption::Prefer, Encryption::Off);
    assert!(o.done, "{:?}", o.seeder_closed);
    assert_eq!(o.attempts, [true, false], "encrypted first, then plain");
}

#[test]
fn requiring_encryption_of_a_peer_without_it_gets_nothing() {
    let o = download(Encryption::Require, Encryption::Off);
    assert!(!o.done);
    assert!(
        o.attempts.iter().all(|mse| *mse),
        "a plain attempt: {:?}",
        o.attempts
    );
    assert!(!o.attempts.is_empty());
}

#[test]
fn a_peer_requiring_encryption_refuses_a_plain_handshake_and_takes_an_encrypted_one() {
    let o = download(Encryption::Off, Encryption::Require);
    assert!(
        !o.done,
        "a plain handshake got through to a peer that requires encryption"
    );
    assert!(
        o.seeder_closed
            .iter()
            .any(|r| r.contains("we require encryption")),
        "{:?}",
        o.seeder_closed
    );
    let o = download(Encryption::Prefer, Encryption::Require);
    assert!(o.done, "{:?}", o.seeder_closed);
    assert_eq!(o.attempts, [true]);
}
