//! `poll_timeout` names the true next deadline: the engine wakes when something is due, and
//! `handle_timeout` at that time does it.

use super::*;

/// The `request` messages among what the engine has to send now.
fn requests_sent(t: &mut Torrent, now: u64, from_engine: &mut Decoder) -> usize {
    let mut count = 0;
    let mut bytes = Vec::new();
    while let Some(conn) = t.poll_transmit(now, &mut bytes) {
        t.handle_sent(conn, bytes.len(), now);
        from_engine.push(&bytes);
    }
    while let Some(msg) = from_engine.next().unwrap() {
        count += matches!(msg, Message::Request(_)) as usize;
    }
    count
}

#[test]
fn an_idle_engine_without_peers_or_candidates_has_no_deadline() {
    let (data, info) = make_torrent(100_000, 16 * 1024, 11);
    let magnet = Torrent::new(
        info.info_hash,
        None,
        PeerId::generate(1),
        Config::default(),
        1,
    );
    let empty = checked(&info, &vec![0; data.len()], 2);
    for mut t in [magnet, empty, seeder(&info, &data, 3)] {
        assert_eq!(t.poll_timeout(), None);
        t.handle_timeout(5_000);
        assert_eq!(t.poll_timeout(), None);
        t.pause(6_000);
        t.resume(7_000);
        assert_eq!(t.poll_timeout(), None);
    }
}

#[test]
fn a_connecting_peer_wakes_the_engine_at_its_connect_timeout_then_at_its_retry() {
    let (data, info) = make_torrent(100_000, 16 * 1024, 12);
    let mut t = checked(&info, &vec![0; data.len()], 4);
    let addr: SocketAddr = "10.1.1.1:6881".parse().unwrap();
    t.add_peers(&[addr], PeerSource::Tracker, 1_000);
    assert!(matches!(t.poll_event(), Some(Event::Connect { .. })));
    assert_eq!(
        t.poll_timeout(),
        Some(31_001),
        "30 s of connecting, then it times out"
    );
    t.handle_timeout(31_000);
    assert_eq!(t.poll_event(), None, "not a millisecond early");
    t.handle_timeout(31_001);
    assert!(matches!(
        t.poll_event(),
        Some(Event::Close {
            reason: CloseReason::ConnectTimedOut,
            ..
        })
    ));
    // A first failure waits 30 s before the address is dialled again.
    assert_eq!(t.poll_timeout(), Some(61_001));
    t.handle_timeout(61_001);
    assert!(matches!(t.poll_event(), Some(Event::Connect { addr: a, .. }) if a == addr));
}

#[test]
fn a_request_timeout_fires_at_its_time() {
    let (data, info) = make_torrent(200_000, 16 * 1024, 13);
    let mut t = checked(&info, &vec![0; data.len()], 5);
    let conn = t
        .handle_incoming("10.1.1.2:6881".parse().unwrap(), 0)
        .unwrap();
    let mut wire = Handshake::new(info.info_hash, PeerId::generate(99))
        .encode()
        .to_vec();
    Message::HaveAll.encode(&mut wire);
    Message::Unchoke.encode(&mut wire);
    t.handle_data(conn, &wire, 1_000);
    let mut from_engine = Decoder::new(1 << 20);
    let mut bytes = Vec::new();
    t.poll_transmit(1_000, &mut bytes).unwrap();
    from_engine.push(&bytes);
    from_engine.next_handshake().unwrap().unwrap();
    let first = requests_sent(&mut t, 1_000, &mut from_engine);
    assert_eq!(first, info.num_pieces() as usize, "one block per piece");

    // The choker rounds come first; the requests are given up 30 s after they were sent.
    let mut wakes = Vec::new();
    while let Some(due) = t.poll_timeout().filter(|&d| d < 31_001) {
        t.handle_timeout(due);
        wakes.push((due, requests_sent(&mut t, due, &mut from_engine)));
    }
    assert_eq!(wakes, [(10_000, 0), (20_000, 0), (30_000, 0)]);
    assert_eq!(t.poll_timeout(), Some(31_001));
    t.handle_timeout(31_000);
    assert_eq!(requests_sent(&mut t, 31_000, &mut from_engine), 0);
    t.handle_timeout(31_001);
    // Snubbed: the peer keeps one request at a time until it delivers.
    assert_eq!(requests_sent(&mut t, 31_001, &mut from_engine), 1);
    assert_eq!(t.poll_timeout(), Some(40_000));
}

#[test]
fn an_idle_peer_wakes_the_engine_rarely_and_every_wake_up_moves_time_on() {
    let (data, info) = make_torrent(100_000, 16 * 1024, 14);
    let mut net = Net::new();
    let a = net.add(checked(&info, &vec![0; data.len()], 6));
    let b = net.add(checked(&info, &vec![0; data.len()], 7));
    let b_addr = net.nodes[b].addr;
    net.nodes[a]
        .torrent
        .add_peers(&[b_addr], PeerSource::Tracker, 0);
    let mut wakes = [0; 2];
    loop {
        net.settle();
        let Some(due) = net.nodes.iter().filter_map(Node::poll_timeout).min() else {
            break;
        };
        if due > 600_000 {
            break;
        }
        net.now = net.now.max(due);
        for (i, node) in net.nodes.iter_mut().enumerate() {
            if node.poll_timeout().is_some_and(|d| d <= net.now) {
                node.timeout(net.now);
                wakes[i] += 1;
                let next = node.poll_timeout();
                assert!(
                    next.is_none_or(|d| d > net.now),
                    "due again at once: {next:?}"
                );
            }
        }
    }
    // A choker round every 10 s; keep-alives and PEX fall on the same wake-ups.
    assert!(wakes.iter().all(|&w| (50..100).contains(&w)), "{wakes:?}");
    for node in [a, b] {
        assert_eq!(net.nodes[node].torrent.stats(net.now).peers_connected, 1);
    }
}
