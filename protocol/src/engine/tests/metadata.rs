//! Magnets against peers that lie about the metadata.

use super::*;

/// A torrent with many long file names: its metadata takes several ut_metadata pieces.
fn make_torrent_with_big_metadata(seed: u64) -> (Vec<u8>, Info) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let files: Vec<(Vec<String>, u64)> = (0..250)
        .map(|i| (vec![format!("{i:03}-{}.bin", "x".repeat(150))], 1000))
        .collect();
    let len = files.iter().map(|f| f.1).sum::<u64>() as usize;
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let mut b = InfoBuilder::new("big metadata", files, 16 * 1024, false);
    b.update(&data);
    (data, b.finish())
}

/// A magnet leecher connects first to a scripted peer that serves `lie` as the metadata, then to
/// an honest seeder (after the liar has answered, or at once if not `liar_alone_first`): it gets
/// the metadata all the same, downloads the data, and bans the liar.
fn magnet_beats_a_metadata_liar(data: &[u8], info: &Info, lie: Vec<u8>, liar_alone_first: bool) {
    let mut net = Net::new();
    let script = ScriptedPeer::new(info.info_hash, lie);
    let answered = script.answered.clone();
    let liar = net.add_script(script);
    let honest = net.add(seeder(info, data, 51));
    let liar_addr = net.nodes[liar].addr;
    let honest_addr = net.nodes[honest].addr;
    // Plain handshakes: the scripted liar speaks no MSE, and a fallback would change who answers
    // first, which this scenario is about.
    let config = Config {
        encryption: Encryption::Off,
        ..Config::default()
    };
    let leech = Torrent::new(info.info_hash, None, PeerId::generate(52), config, 52);
    let l = net.add(leech);
    // The liar first, so that its size is the first reported.
    net.nodes[l]
        .torrent
        .add_peers(&[liar_addr], PeerSource::Magnet, net.now);
    if liar_alone_first {
        net.settle();
        assert!(answered.get() > 0, "the liar was not asked");
    }
    net.nodes[l]
        .torrent
        .add_peers(&[honest_addr], PeerSource::Magnet, net.now);

    assert!(
        net.run_until(120_000, |n| n.nodes[l].torrent.info().is_some()),
        "no metadata"
    );
    assert_eq!(net.nodes[l].torrent.info().unwrap().raw, info.raw);
    let store = SharedStorage(Rc::new(std::cell::RefCell::new(MemoryStorage::new(
        info.total_length,
    ))));
    net.nodes[l]
        .torrent
        .attach_storage(Box::new(store.clone()), net.now);
    assert!(net.nodes[l]
        .torrent
        .check_existing(u32::MAX, net.now)
        .unwrap());
    assert!(
        net.run_until(600_000, |n| n.nodes[l].torrent.is_complete()),
        "download did not complete"
    );
    assert!(store.0.borrow().data == data, "downloaded bytes differ");

    let events = &net.nodes[l].events;
    let banned_at = events
        .iter()
        .position(|e| *e == Event::PeerBanned(liar_addr))
        .expect("the liar is banned");
    assert!(!events.contains(&Event::PeerBanned(honest_addr)));
    assert!(
        !events[banned_at..]
            .iter()
            .any(|e| matches!(e, Event::Connect { addr, .. } if *addr == liar_addr)),
        "the liar was dialled again"
    );
    // The honest seeder was never dropped for its metadata, only once both were seeds.
    let honest_conns: Vec<ConnId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Connect { conn, addr } if *addr == honest_addr => Some(*conn),
            _ => None,
        })
        .collect();
    for e in events {
        if let Event::Close { conn, reason } = e {
            if honest_conns.contains(conn) {
                assert_eq!(*reason, CloseReason::BothSeeds);
            }
        }
    }
}

#[test]
fn magnet_completes_when_its_first_peer_lies_about_metadata_size_and_the_liar_is_banned() {
    let (data, info) = make_torrent(700_000, 32 * 1024, 6);
    assert!(info.raw.len() < METADATA_PIECE);
    // Three pieces of junk where the metadata takes one.
    let mut rng = fastrand::Rng::with_seed(66);
    let lie: Vec<u8> = (0..2 * METADATA_PIECE + 100).map(|_| rng.u8(..)).collect();
    magnet_beats_a_metadata_liar(&data, &info, lie, true);
}

#[test]
fn magnet_completes_when_a_peer_sends_bad_metadata_of_the_right_size_and_the_liar_is_banned() {
    // One piece: the liar alone supplies it.
    let (data, info) = make_torrent(700_000, 32 * 1024, 7);
    let mut lie = info.raw.clone();
    lie[10] ^= 1;
    magnet_beats_a_metadata_liar(&data, &info, lie, true);

    // Several pieces, asked of both peers at once: the first failure names nobody, so every piece
    // is fetched again from one peer.
    let (data, info) = make_torrent_with_big_metadata(8);
    assert!(info.raw.len() > 2 * METADATA_PIECE);
    let mut lie = info.raw.clone();
    for piece in lie.chunks_mut(METADATA_PIECE) {
        piece[0] ^= 1;
    }
    magnet_beats_a_metadata_liar(&data, &info, lie, false);
}
