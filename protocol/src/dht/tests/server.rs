//! One node answering queries from a hand-driven stranger.

use super::addr_of;
use crate::dht::krpc::{self, code, Body, ErrorReply, Message, Query, Response};
use crate::dht::routing::K;
use crate::dht::tokens::ROTATE_MS;
use crate::dht::{Config, Dht, NodeId};
use crate::InfoHash;
use std::net::SocketAddr;

const STRANGER: NodeId = NodeId([0x55; 20]);

fn stranger(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 6881))
}

/// Sends `query` to `d` from `from` and returns its answer (the ping `d` may send back to
/// meet the stranger is skipped).
fn ask(d: &mut Dht, now: u64, from: SocketAddr, query: Query) -> Body {
    d.handle_datagram(now, from, &Message::query(b"qq".to_vec(), query).encode());
    answer(d, from)
}

fn answer(d: &mut Dht, from: SocketAddr) -> Body {
    while let Some((to, bytes)) = d.poll_transmit() {
        let m = krpc::decode(&bytes).expect("we send valid KRPC");
        if m.transaction == b"qq" {
            assert_eq!(to, from);
            return m.body;
        }
    }
    panic!("no answer")
}

fn response(body: Body) -> Response {
    match body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

/// A node that knows `n` others (each answered a ping).
fn node_with_table(n: usize) -> Dht {
    let mut d = Dht::new(Config::default(), 7);
    let mut rng = fastrand::Rng::with_seed(8);
    for i in 0..n {
        d.add_node(0, addr_of(i));
        let (to, bytes) = d.poll_transmit().unwrap();
        let q = krpc::decode(&bytes).unwrap();
        let r = Response::new(NodeId::random(&mut rng));
        d.handle_datagram(1, to, &Message::response(q.transaction, r).encode());
    }
    assert!(d.node_count() >= n.min(K));
    d
}

#[test]
fn ping_and_find_node_answer_with_our_id_and_the_closest_nodes() {
    let mut d = node_with_table(40);
    let r = response(ask(&mut d, 10, stranger(1), Query::Ping { id: STRANGER }));
    assert_eq!(r.id, d.id());
    let target = NodeId([0x12; 20]);
    let r = response(ask(
        &mut d,
        10,
        stranger(1),
        Query::FindNode {
            id: STRANGER,
            target,
            want: None,
        },
    ));
    assert_eq!(r.nodes.len(), K);
    assert!(r.nodes6.is_empty(), "an IPv4 querier gets IPv4 nodes");
    let mut all: Vec<_> = d.export_nodes().into_iter().map(|(id, _)| id).collect();
    all.sort_by_key(|id| target.distance(id));
    let got: Vec<_> = r.nodes.iter().map(|n| n.id).collect();
    assert_eq!(got, all[..K]);
}

#[test]
fn answers_carry_the_querier_address_and_our_version() {
    let mut d = node_with_table(0);
    let q = Message::query(b"qq".to_vec(), Query::Ping { id: STRANGER });
    d.handle_datagram(0, stranger(2), &q.encode());
    let m = std::iter::from_fn(|| d.poll_transmit())
        .map(|(_, bytes)| krpc::decode(&bytes).unwrap())
        .find(|m| m.transaction == b"qq")
        .unwrap();
    assert_eq!(m.ip, Some(stranger(2)));
    assert_eq!(m.version.as_deref(), Some(&b"BW\x00\x01"[..]));
}

#[test]
fn announce_needs_a_token_given_to_that_ip_within_ten_minutes() {
    let mut d = node_with_table(20);
    let h = InfoHash([0xab; 20]);
    let get_peers = Query::GetPeers {
        id: STRANGER,
        info_hash: h,
        want: None,
    };
    let r = response(ask(&mut d, 0, stranger(1), get_peers.clone()));
    let token = r.token.expect("get_peers always gives a token");
    assert!(r.values.is_empty());
    assert_eq!(r.nodes.len(), K, "no peers yet: the closest nodes");
    let announce = |token: Vec<u8>| Query::AnnouncePeer {
        id: STRANGER,
        info_hash: h,
        port: 5000,
        implied_port: false,
        token,
    };
    let refused = |body: Body| {
        assert!(
            matches!(
                body,
                Body::Error(ErrorReply {
                    code: code::PROTOCOL,
                    ..
                })
            ),
            "{body:?}"
        )
    };
    refused(ask(&mut d, 1, stranger(1), announce(b"made up".to_vec())));
    refused(ask(&mut d, 1, stranger(2), announce(token.clone())));
    response(ask(&mut d, 1, stranger(1), announce(token.clone())));

    let r = response(ask(&mut d, 2, stranger(3), get_peers.clone()));
    assert_eq!(r.values, vec![SocketAddr::from(([10, 0, 0, 1], 5000))]);
    assert!(r.nodes.is_empty(), "values instead of nodes");

    // The secret turns over every five minutes and the one before still counts.
    response(ask(
        &mut d,
        ROTATE_MS + 1,
        stranger(1),
        announce(token.clone()),
    ));
    refused(ask(
        &mut d,
        2 * ROTATE_MS + 1,
        stranger(1),
        announce(token.clone()),
    ));
    let fresh = response(ask(&mut d, 2 * ROTATE_MS + 2, stranger(1), get_peers))
        .token
        .unwrap();
    assert_ne!(fresh, token);
    response(ask(&mut d, 2 * ROTATE_MS + 3, stranger(1), announce(fresh)));
}

#[test]
fn implied_port_takes_the_source_port_and_peers_expire() {
    let mut d = node_with_table(0);
    let h = InfoHash([0xcd; 20]);
    let from = SocketAddr::from(([10, 0, 0, 9], 4321));
    let get_peers = Query::GetPeers {
        id: STRANGER,
        info_hash: h,
        want: None,
    };
    let token = response(ask(&mut d, 0, from, get_peers.clone()))
        .token
        .unwrap();
    response(ask(
        &mut d,
        0,
        from,
        Query::AnnouncePeer {
            id: STRANGER,
            info_hash: h,
            port: 1,
            implied_port: true,
            token,
        },
    ));
    let r = response(ask(&mut d, 10, stranger(1), get_peers.clone()));
    assert_eq!(r.values, vec![from]);
    let ttl = Config::default().peer_ttl_ms;
    let r = response(ask(&mut d, ttl + 1, stranger(1), get_peers));
    assert!(r.values.is_empty(), "gone after {ttl} ms");
}

#[test]
fn malformed_and_unknown_queries_get_203_and_204() {
    let mut d = node_with_table(0);
    let cases: [(&[u8], i64); 3] = [
        (
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:vote1:t2:qq1:y1:qe",
            code::METHOD_UNKNOWN,
        ),
        (b"d1:ad2:id3:abce1:q4:ping1:t2:qq1:y1:qe", code::PROTOCOL),
        (
            b"d1:ad2:id20:abcdefghij0123456789e1:q9:get_peers1:t2:qq1:y1:qe",
            code::PROTOCOL,
        ),
    ];
    for (bytes, want) in cases {
        d.handle_datagram(0, stranger(1), bytes);
        match answer(&mut d, stranger(1)) {
            Body::Error(e) => assert_eq!(e.code, want, "{}", e.message),
            other => panic!("{other:?}"),
        }
    }
    // Broken responses and errors, and non-KRPC, get nothing back.
    for bytes in [
        &b"d1:rd2:id2:xxe1:t2:qq1:y1:re"[..],
        b"d1:eli201e1:xe1:t2:qq1:y1:ee",
        b"garbage",
        b"d1:t2:qq1:y1:qe",
    ] {
        d.handle_datagram(0, stranger(1), bytes);
    }
    // (The last one has no `q`: a query we cannot read, answered with 203.)
    let left: Vec<_> = std::iter::from_fn(|| d.poll_transmit()).collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn an_unknown_querier_is_pinged_once_and_joins_when_it_answers() {
    let mut d = node_with_table(0);
    let from = stranger(4);
    let q = Message::query(b"qq".to_vec(), Query::Ping { id: STRANGER }).encode();
    d.handle_datagram(0, from, &q);
    d.handle_datagram(1, from, &q);
    let sent: Vec<_> = std::iter::from_fn(|| d.poll_transmit()).collect();
    let pings: Vec<_> = sent
        .iter()
        .map(|(_, b)| krpc::decode(b).unwrap())
        .filter(|m| matches!(m.body, Body::Query(Query::Ping { .. })))
        .collect();
    assert_eq!(pings.len(), 1, "one ping, not one per query");
    assert_eq!(d.node_count(), 0, "not before it answers");
    let r = Message::response(pings[0].transaction.clone(), Response::new(STRANGER));
    d.handle_datagram(2, stranger(5), &r.encode());
    assert_eq!(
        d.node_count(),
        0,
        "an answer from another address does not count"
    );
    d.handle_datagram(3, from, &r.encode());
    assert_eq!(d.node_count(), 1);
    // A read-only node (BEP 43) is answered but not met.
    let mut ro = Message::query(
        b"qq".to_vec(),
        Query::Ping {
            id: NodeId([9; 20]),
        },
    );
    ro.read_only = true;
    d.handle_datagram(4, stranger(6), &ro.encode());
    assert_eq!(std::iter::from_fn(|| d.poll_transmit()).count(), 1);
}
