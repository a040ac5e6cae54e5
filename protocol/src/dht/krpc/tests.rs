//! KRPC against the examples of BEP 5, and against what strangers send.

use super::*;

fn id(s: &[u8; 20]) -> NodeId {
    NodeId(*s)
}

/// The examples of BEP 5, byte for byte, both ways.
#[test]
fn bep5_examples_round_trip() {
    let cases: Vec<(&[u8], Message)> = vec![
        (
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
            Message::query(
                b"aa".to_vec(),
                Query::Ping {
                    id: id(b"abcdefghij0123456789"),
                },
            ),
        ),
        (
            b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
            Message::response(b"aa".to_vec(), Response::new(id(b"mnopqrstuvwxyz123456"))),
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e\
              1:q9:find_node1:t2:aa1:y1:qe",
            Message::query(
                b"aa".to_vec(),
                Query::FindNode {
                    id: id(b"abcdefghij0123456789"),
                    target: id(b"mnopqrstuvwxyz123456"),
                    want: None,
                },
            ),
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e\
              1:q9:get_peers1:t2:aa1:y1:qe",
            Message::query(
                b"aa".to_vec(),
                Query::GetPeers {
                    id: id(b"abcdefghij0123456789"),
                    info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                    want: None,
                },
            ),
        ),
        (
            b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:\
              mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer\
              1:t2:aa1:y1:qe",
            Message::query(
                b"aa".to_vec(),
                Query::AnnouncePeer {
                    id: id(b"abcdefghij0123456789"),
                    info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                    port: 6881,
                    implied_port: true,
                    token: b"aoeusnth".to_vec(),
                },
            ),
        ),
        (
            b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
            Message::error(b"aa".to_vec(), 201, "A Generic Error Ocurred"),
        ),
    ];
    for (bytes, message) in cases {
        assert_eq!(decode(bytes).as_ref(), Ok(&message));
        assert_eq!(message.encode(), bytes, "{message:?}");
    }
}

#[test]
fn responses_carry_nodes_values_and_token() {
    let mut r = Response::new(NodeId([1; 20]));
    r.nodes = vec![NodeInfo {
        id: NodeId([2; 20]),
        addr: "10.1.2.3:4000".parse().unwrap(),
    }];
    r.nodes6 = vec![NodeInfo {
        id: NodeId([3; 20]),
        addr: "[2001:db8::7]:4001".parse().unwrap(),
    }];
    r.values = vec!["1.2.3.4:5".parse().unwrap(), "[::1]:6".parse().unwrap()];
    r.token = Some(b"tok".to_vec());
    let mut m = Message::response(vec![0, 1, 2, 3], r);
    m.ip = Some("127.0.0.1:9".parse().unwrap());
    m.version = Some(b"LT\x02\x08".to_vec());
    m.read_only = true;
    let bytes = m.encode();
    bencode::validate(&bytes).unwrap();
    assert_eq!(decode(&bytes), Ok(m));
}

#[test]
fn want_is_read_and_written() {
    let q = Message::query(
        b"t".to_vec(),
        Query::GetPeers {
            id: NodeId([1; 20]),
            info_hash: InfoHash([2; 20]),
            want: Some(Want { v4: true, v6: true }),
        },
    );
    let bytes = q.encode();
    assert!(bytes.windows(15).any(|w| w == b"4:wantl2:n42:n6"));
    assert_eq!(decode(&bytes), Ok(q));
}

#[test]
fn bad_queries_get_203_or_204_in_their_transaction() {
    let unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q4:vote1:t2:xy1:y1:qe";
    let e = decode(unknown).unwrap_err();
    assert_eq!(e.kind, KrpcError::UnknownMethod("vote".into()));
    let reply = e.reply().unwrap();
    assert_eq!(reply.transaction, b"xy");
    assert!(matches!(
        reply.body,
        Body::Error(ErrorReply { code: 204, .. })
    ));

    for (bad, arg) in [
        (&b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe"[..], "id"),
        (b"d1:q4:ping1:t2:xy1:y1:qe", "a"),
        (
            b"d1:ad2:id20:abcdefghij01234567896:target2:mne1:q9:find_node1:t2:xy1:y1:qe",
            "target",
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e\
              5:token1:xe1:q13:announce_peer1:t2:xy1:y1:qe",
            "port",
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1e\
              e1:q13:announce_peer1:t2:xy1:y1:qe",
            "token",
        ),
    ] {
        let e = decode(bad).unwrap_err();
        assert_eq!(e.kind, KrpcError::BadArgument(arg));
        let reply = e.reply().unwrap();
        assert!(matches!(
            reply.body,
            Body::Error(ErrorReply { code: 203, .. })
        ));
    }
}

#[test]
fn implied_port_needs_no_port() {
    let q = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:\
              mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe";
    let m = decode(q).unwrap();
    assert!(matches!(
        m.body,
        Body::Query(Query::AnnouncePeer {
            port: 0,
            implied_port: true,
            ..
        })
    ));
}

#[test]
fn broken_responses_and_errors_get_no_reply() {
    for bad in [
        &b"d1:rd2:id2:xxe1:t2:aa1:y1:re"[..],
        b"d1:t2:aa1:y1:re",
        b"d1:eli201ee1:t2:aa1:y1:ee",
        b"d1:e3:abc1:t2:aa1:y1:ee",
        b"d1:t2:aa1:y1:ze",
        b"d1:y1:qe",
        b"li1ee",
        b"d1:t",
    ] {
        match decode(bad) {
            Ok(m) => assert!(matches!(m.body, Body::Error(_)), "{m:?}"),
            Err(e) => assert_eq!(e.reply(), None, "{e}"),
        }
    }
    let long_t = format!("d1:t17:{}1:y1:qe", "x".repeat(17));
    assert_eq!(
        decode(long_t.as_bytes()).unwrap_err().kind,
        KrpcError::NoTransaction
    );
    let big = vec![b'x'; MAX_DATAGRAM + 1];
    assert_eq!(
        decode(&big).unwrap_err().kind,
        KrpcError::TooLarge(MAX_DATAGRAM + 1)
    );
}

#[test]
fn lists_are_cut_and_odd_entries_skipped() {
    let mut values = b"d1:rd2:id20:abcdefghij01234567896:valuesl".to_vec();
    for i in 0..(MAX_VALUES + 50) {
        values.extend(b"6:");
        values.extend([10, 0, (i >> 8) as u8, i as u8, 0, 1]);
    }
    values.extend(b"3:abc7:1234567e5:token");
    values.extend(format!("{}:", MAX_TOKEN + 1).as_bytes());
    values.extend(vec![b'k'; MAX_TOKEN + 1]);
    values.extend(b"e1:t2:aa1:y1:re");
    let m = decode(&values).unwrap();
    let Body::Response(r) = m.body else {
        panic!("{m:?}")
    };
    assert_eq!(r.values.len(), MAX_VALUES);
    assert_eq!(r.token, None, "an oversized token is not kept");

    let mut nodes = b"d1:rd2:id20:abcdefghij01234567895:nodes".to_vec();
    let n = MAX_NODES + 10;
    nodes.extend(format!("{}:", n * 26).as_bytes());
    for i in 0..n {
        nodes.extend([i as u8; 20]);
        nodes.extend([10, 0, 0, 1, 0, 1]);
    }
    nodes.extend(b"e1:t2:aa1:y1:re");
    let Body::Response(r) = decode(&nodes).unwrap().body else {
        panic!()
    };
    assert_eq!(r.nodes.len(), MAX_NODES);
}

#[test]
fn error_text_is_bounded() {
    let text = "e".repeat(5000);
    let m = Message::error(b"a".to_vec(), 202, &text);
    let Body::Error(e) = decode(&m.encode()).unwrap().body else {
        panic!()
    };
    assert_eq!(e.code, 202);
    assert_eq!(e.message.len(), MAX_ERROR_TEXT);
}
