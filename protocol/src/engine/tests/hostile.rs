//! Engines fed arbitrary messages by peers: no panic, and only the source's bytes uploaded.

use super::*;

/// A message a hostile or broken peer might send: the right framing, arbitrary contents. Unless
/// `wild`, its numbers are within the torrent's bounds, so a peer can live long enough to be
/// unchoked and served; `wild` ones reach the other side of every check. Before the engine has
/// the metadata, a tame peer sends nothing that refers to blocks.
fn arbitrary_message(rng: &mut fastrand::Rng, info: &Info, wild: bool, blocks: bool) -> Message {
    let pieces = info.num_pieces();
    let index = |rng: &mut fastrand::Rng| match wild {
        true => rng.u32(..),
        false => rng.u32(..pieces),
    };
    let block = |rng: &mut fastrand::Rng| {
        if wild {
            return BlockRequest {
                index: rng.u32(..pieces + 2),
                begin: rng.u32(..4) * 16 * 1024 + rng.u32(..2),
                length: match rng.bool() {
                    true => rng.u32(..),
                    false => rng.u32(..64 * 1024),
                },
            };
        }
        let index = rng.u32(..pieces);
        let len = if index + 1 == pieces {
            info.total_length - index as u64 * info.piece_length as u64
        } else {
            info.piece_length as u64
        } as u32;
        let begin = rng.u32(..len.div_ceil(16 * 1024)) * 16 * 1024;
        BlockRequest {
            index,
            begin,
            length: (len - begin).min(16 * 1024),
        }
    };
    let bytes = |rng: &mut fastrand::Rng, max: usize| -> Bytes {
        let len = rng.usize(..=max);
        (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>().into()
    };
    match rng.u8(..20) {
        9..=13 | 16 if !wild && !blocks => Message::KeepAlive,
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3..=5 => Message::Interested,
        6 => Message::NotInterested,
        7 => Message::Have(index(rng)),
        8 => Message::Bitfield(match wild {
            true => bytes(rng, pieces as usize / 8 + 3),
            false => {
                let mut bits = vec![0u8; (pieces as usize).div_ceil(8)];
                for i in 0..pieces as usize {
                    if rng.bool() {
                        bits[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                bits.into()
            }
        }),
        9..=11 => Message::Request(block(rng)),
        12 => {
            let b = block(rng);
            Message::Piece {
                index: b.index,
                begin: b.begin,
                data: bytes(rng, b.length.min(17 * 1024) as usize),
            }
        }
        13 => Message::Cancel(block(rng)),
        14 => Message::HaveAll,
        15 => Message::HaveNone,
        16 => Message::RejectRequest(block(rng)),
        17 => Message::AllowedFast(index(rng)),
        18 => Message::SuggestPiece(index(rng)),
        _ => {
            let (id, payload) = arbitrary_extension(rng, info, wild);
            Message::Extended { id, payload }
        }
    }
}

/// An extension message under the id our engine announces for it (any id if `wild`).
fn arbitrary_extension(rng: &mut fastrand::Rng, info: &Info, wild: bool) -> (u8, Bytes) {
    let size = match wild {
        true => rng.u64(..),
        false => info.raw.len() as u64,
    };
    let kind = rng.u8(..4 + wild as u8);
    let payload: Bytes = match kind {
        0 => {
            let mut hs = ExtHandshake::default();
            hs.m.insert("ut_metadata".into(), rng.u8(..4));
            hs.m.insert("ut_pex".into(), rng.u8(..4));
            hs.metadata_size = rng.bool().then_some(size);
            hs.reqq = rng.bool().then(|| rng.u32(..));
            hs.encode().into()
        }
        1 => MetadataMsg::Request {
            piece: rng.u32(..(info.raw.len() / METADATA_PIECE) as u32 + 1 + wild as u32),
        }
        .encode()
        .into(),
        2 => {
            let piece = rng.u32(..(info.raw.len() / METADATA_PIECE) as u32 + 1 + wild as u32);
            let start = (piece as usize * METADATA_PIECE).min(info.raw.len());
            let end = (start + METADATA_PIECE).min(info.raw.len());
            let mut data = info.raw[start..end].to_vec();
            if wild && !data.is_empty() {
                let at = rng.usize(..data.len());
                data[at] ^= 1;
            }
            MetadataMsg::Data {
                piece,
                total_size: size,
                data: data.into(),
            }
            .encode()
            .into()
        }
        3 => {
            let added: Vec<SocketAddr> = (0..rng.usize(..300))
                .map(|_| SocketAddr::from(([10, rng.u8(..), rng.u8(..), rng.u8(..)], rng.u16(..))))
                .collect();
            PexMsg {
                added,
                dropped: Vec::new(),
            }
            .encode()
            .into()
        }
        _ => (0..rng.usize(..200))
            .map(|_| rng.u8(..))
            .collect::<Vec<u8>>()
            .into(),
    };
    let id = match (wild, kind) {
        (true, _) => rng.u8(..4),
        (false, 0) => 0,
        (false, 3) => UT_PEX_ID,
        (false, _) => UT_METADATA_ID,
    };
    (id, payload)
}

#[test]
fn arbitrary_messages_from_a_peer_never_break_the_engine_or_its_uploads() {
    let (data, info) = make_torrent(300_000, 16 * 1024, 5);
    let piece_length = info.piece_length as usize;
    let mut rng = fastrand::Rng::with_seed(0xbad);
    let addr: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    let (mut blocks_checked, mut closed, mut metadata) = (0, 0, 0);
    for round in 0..300u64 {
        // A seeder, a leecher with half the pieces, and a magnet without metadata yet.
        let mut t = match round % 3 {
            0 => seeder(&info, &data, round),
            1 => {
                let mut half = data.clone();
                half[data.len() / 2..].fill(0);
                checked(&info, &half, round)
            }
            _ => Torrent::new(
                info.info_hash,
                None,
                PeerId::generate(round),
                Config::default(),
                round,
            ),
        };
        let conn = t.handle_incoming(addr, 0).expect("a free slot");
        let hs = Handshake::new(info.info_hash, PeerId::generate(1000 + round));
        t.handle_data(conn, &hs.encode(), 0);
        // Like a real peer, it opens with its extension handshake.
        let ext = ExtHandshake {
            m: [("ut_metadata".into(), 3), ("ut_pex".into(), 4)].into(),
            metadata_size: Some(info.raw.len() as u64),
            ..ExtHandshake::default()
        };
        let mut frame = Vec::new();
        Message::Extended {
            id: 0,
            payload: ext.encode().into(),
        }
        .encode(&mut frame);
        t.handle_data(conn, &frame, 0);
        let mut from_engine = Decoder::new(1 << 20);
        let mut out = Vec::new();
        let mut handshaken = false;
        let mut now = 0;
        // From peers that are nearly well-behaved to peers that are mostly noise.
        let wildness = [0, 1, 5, 30][round as usize % 4];
        'messages: for _ in 0..200 {
            let mut frame = Vec::new();
            let wild = rng.u8(..100) < wildness;
            arbitrary_message(&mut rng, &info, wild, t.info().is_some()).encode(&mut frame);
            if wild && rng.bool() {
                let at = rng.usize(..frame.len());
                frame[at] = rng.u8(..);
            }
            // Any split of the stream must be the same to the engine.
            let mut rest = &frame[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                t.handle_data(conn, &rest[..n], now);
                rest = &rest[n..];
            }
            now += rng.u64(..3000);
            t.handle_timeout(now);
            while let Some(c) = t.poll_transmit(now, &mut out) {
                assert_eq!(c, conn);
                t.handle_sent(c, out.len(), now);
                from_engine.push(&out);
            }
            if !handshaken {
                handshaken = from_engine.next_handshake().unwrap().is_some();
            }
            // Every block the engine uploads must be the source's bytes.
            if handshaken {
                while let Some(msg) = from_engine
                    .next()
                    .expect("the engine sends well-formed messages")
                {
                    if let Message::Piece {
                        index,
                        begin,
                        data: block,
                    } = msg
                    {
                        let at = index as usize * piece_length + begin as usize;
                        assert!(
                            data.get(at..at + block.len()) == Some(&block[..]),
                            "uploaded a block that is not the source's bytes"
                        );
                        blocks_checked += 1;
                    }
                }
            }
            // Other events (connections to peers learnt through PEX, pieces) need no answer.
            while let Some(ev) = t.poll_event() {
                if ev == Event::MetadataReceived {
                    assert_eq!(t.info().map(|i| &i.raw), Some(&info.raw));
                    metadata += 1;
                }
                if let Event::Close { conn: c, reason } = ev {
                    if c == conn {
                        // A seed closes a peer that says it has every piece: both are seeds.
                        let both_seeds = reason == CloseReason::BothSeeds;
                        assert!(
                            wildness > 0 || both_seeds,
                            "a peer within bounds was dropped: {reason}"
                        );
                        closed += 1;
                        break 'messages;
                    }
                }
            }
        }
        // Whatever the peer did, the engine stays usable.
        let _ = (t.stats(now), t.peers(now), t.file_progress());
    }
    assert!(blocks_checked > 50, "only {blocks_checked} uploads checked");
    assert!(closed > 100, "only {closed} of 300 peers dropped");
    assert!(metadata > 10, "metadata received only {metadata} times");
}
