//! Strangers at their worst: floods of queries from many addresses, and datagrams of random or
//! mangled bytes. Nothing may panic, and every bound must hold.

use super::{addr_of, Net};
use crate::dht::krpc::{self, Body, Message, Query, Response};
use crate::dht::routing::K;
use crate::dht::{Config, Dht, Event, NodeId, NodeInfo};
use crate::InfoHash;
use std::net::SocketAddr;

fn random_addr(rng: &mut fastrand::Rng) -> SocketAddr {
    SocketAddr::from((rng.u32(..).to_be_bytes(), rng.u16(1..)))
}

fn check_bounds(d: &Dht) {
    let c = &d.config;
    assert!(d.transmits.len() <= c.max_queued);
    assert!(d.events.len() <= c.max_events + c.max_lookups);
    assert!(d.rpc.len() <= c.max_pending + K * c.max_lookups);
    assert!(d.lookups.len() <= c.max_lookups);
    assert!(d.table.len() <= 160 * K);
    assert!(d.store.torrent_count() <= c.max_torrents);
    assert!(d.store.peer_count() <= c.max_torrents * c.max_peers_per_torrent);
}

#[test]
fn a_flood_of_queries_from_many_addresses_stays_within_bounds() {
    let config = Config {
        max_torrents: 50,
        max_peers_per_torrent: 10,
        ..Config::default()
    };
    let mut d = Dht::new(config, 1);
    let mut rng = fastrand::Rng::with_seed(2);
    let mut answers = 0;
    for round in 0..20_000u64 {
        let now = round;
        let from = random_addr(&mut rng);
        let id = NodeId::random(&mut rng);
        let info_hash = InfoHash(NodeId::random(&mut rng).0);
        // Each stranger gets a token and announces with it: a flood of honest-looking
        // announces for ever new info-hashes.
        let q = Message::query(
            b"q1".to_vec(),
            Query::GetPeers {
                id,
                info_hash,
                want: None,
            },
        );
        d.handle_datagram(now, from, &q.encode());
        let mut token = None;
        // The driver drains only now and then, so the queue fills.
        if round % 7 == 0 {
            while let Some((to, bytes)) = d.poll_transmit() {
                answers += 1;
                let m = krpc::decode(&bytes).unwrap();
                match m.body {
                    Body::Response(r) if to == from => token = r.token,
                    // Some pings go out to meet the strangers; a few answer.
                    Body::Query(Query::Ping { .. }) if rng.u8(..) < 40 => {
                        let r = Message::response(
                            m.transaction,
                            Response::new(NodeId::random(&mut rng)),
                        );
                        d.handle_datagram(now, to, &r.encode());
                    }
                    _ => {}
                }
            }
        }
        if let Some(token) = token {
            let a = Message::query(
                b"q2".to_vec(),
                Query::AnnouncePeer {
                    id,
                    info_hash,
                    port: 1,
                    implied_port: false,
                    token,
                },
            );
            d.handle_datagram(now, from, &a.encode());
        }
        if round % 1000 == 0 {
            d.handle_timeout(now);
        }
        check_bounds(&d);
    }
    assert!(answers > 2_000);
    assert!(
        d.store.torrent_count() > 0,
        "honest-looking announces were taken"
    );
    assert!(d.table.len() > 0, "some strangers that answered were met");
    // A get_peers of ours still works afterwards, and ends.
    d.get_peers(30_000, InfoHash([1; 20]));
    let mut now = 30_000;
    for _ in 0..1_000 {
        while d.poll_transmit().is_some() {}
        match d.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                d.handle_timeout(now);
            }
            None => break,
        }
        if std::iter::from_fn(|| d.poll_event()).any(|e| matches!(e, Event::LookupDone { .. })) {
            return;
        }
    }
    panic!("the lookup never ended");
}

/// Valid messages of every kind, some answering what `d` has in flight.
fn valid_messages(d: &mut Dht, rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let id = NodeId::random(rng);
    let info_hash = InfoHash([7; 20]);
    let mut r = Response::new(id);
    r.nodes = (0..8)
        .map(|i| NodeInfo {
            id: NodeId::random(rng),
            addr: addr_of(i),
        })
        .collect();
    r.values = vec![addr_of(99)];
    r.token = Some(vec![1, 2, 3]);
    let mut out = vec![
        Message::query(b"aa".to_vec(), Query::Ping { id }).encode(),
        Message::query(
            b"ab".to_vec(),
            Query::FindNode {
                id,
                target: id,
                want: None,
            },
        )
        .encode(),
        Message::query(
            b"ac".to_vec(),
            Query::GetPeers {
                id,
                info_hash,
                want: Some(krpc::Want { v4: true, v6: true }),
            },
        )
        .encode(),
        Message::query(
            b"ad".to_vec(),
            Query::AnnouncePeer {
                id,
                info_hash,
                port: 80,
                implied_port: false,
                token: vec![0; 8],
            },
        )
        .encode(),
        Message::error(b"ae".to_vec(), 201, "no").encode(),
    ];
    // Answers in the transactions of queries `d` has in flight.
    while let Some((_, bytes)) = d.poll_transmit() {
        if let Ok(m) = krpc::decode(&bytes) {
            if matches!(m.body, Body::Query(_)) {
                out.push(Message::response(m.transaction, r.clone()).encode());
            }
        }
    }
    out
}

fn mutate(bytes: &mut Vec<u8>, rng: &mut fastrand::Rng) {
    for _ in 0..rng.usize(1..4) {
        if bytes.is_empty() {
            bytes.push(rng.u8(..));
        }
        let i = rng.usize(..bytes.len());
        match rng.u8(..6) {
            0 => bytes[i] ^= 1 << rng.u8(..8),
            1 => bytes[i] = rng.u8(..),
            2 => bytes.truncate(i),
            3 => bytes.insert(i, rng.u8(..)),
            4 => {
                // A length prefix made huge or odd.
                let digits = format!("{}", rng.u32(..));
                bytes.splice(i..i, digits.into_bytes());
            }
            _ => {
                let j = rng.usize(i..bytes.len());
                let chunk: Vec<u8> = bytes[i..j].to_vec();
                bytes.splice(j..j, chunk);
            }
        }
    }
}

#[test]
fn random_and_mangled_datagrams_never_panic() {
    let mut net = Net::new(12, 6);
    net.bootstrap_all(60_000);
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..20_000u64 {
        let now = net.now + round;
        let target = rng.usize(..net.nodes.len());
        let d = net.node(target);
        if round % 50 == 0 {
            d.get_peers(now, InfoHash([rng.u8(..); 20]));
        }
        let from = if rng.bool() {
            addr_of(rng.usize(..20))
        } else {
            random_addr(&mut rng)
        };
        let bytes = if rng.u8(..4) == 0 {
            let len = rng.usize(..200);
            (0..len).map(|_| rng.u8(..)).collect()
        } else {
            let mut all = valid_messages(d, &mut rng);
            let mut b = all.swap_remove(rng.usize(..all.len()));
            mutate(&mut b, &mut rng);
            b
        };
        d.handle_datagram(now, from, &bytes);
        if round % 100 == 0 {
            d.handle_timeout(now + 10_000);
        }
        check_bounds(d);
    }
    // The network still works.
    net.run_for(20_000);
    let h = InfoHash([0x42; 20]);
    let now = net.now;
    net.node(2).announce(now, h, Some(4_242));
    let limit = net.now + 30_000;
    assert!(net.run_until(limit, |net| net.lookup_done(2, h).is_some()));
    net.run_for(1_000);
    let now = net.now;
    net.node(9).get_peers(now, h);
    let limit = net.now + 30_000;
    assert!(net.run_until(limit, |net| net.lookup_done(9, h).is_some()));
    assert!(net
        .peers_found(9, h)
        .contains(&"127.0.0.1:4242".parse().unwrap()));
    // Lookups of the mangled phase end too: every one is bounded in queries, hence in time.
    net.run_for(120_000);
    for d in net.nodes.iter().flatten() {
        check_bounds(d);
        assert!(d.lookups.is_empty(), "every lookup ended");
    }
}
