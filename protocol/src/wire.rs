//! The peer wire protocol: the handshake (BEP 3, reserved bits for BEP 10 and BEP 6), every BEP 3
//! and BEP 6 message, `extended` (BEP 10), and an incremental decoder for any split of the stream.

use crate::{InfoHash, PeerId};
use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// The largest message we accept: a 16 KiB block plus header, or a bitfield of a huge torrent,
/// or an extended message carrying a 16 KiB metadata piece. Anything longer is hostile.
pub const DEFAULT_MAX_MESSAGE: u32 = 1 << 20;
pub const BLOCK_SIZE: u32 = 16 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("not a BitTorrent handshake")]
    BadHandshake,
    #[error("message length {0} exceeds the limit")]
    TooLong(u32),
    #[error("message id {id} with invalid length {len}")]
    BadLength { id: u8, len: u32 },
    #[error("unknown message id {0}")]
    UnknownId(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    /// Our handshake: extension protocol and fast extension bits set.
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = PROTOCOL.len() as u8;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    /// Decodes the first 68 bytes of `data`; `BadHandshake` if they are not a handshake.
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        let data = data.get(..HANDSHAKE_LEN).ok_or(WireError::BadHandshake)?;
        if data[..20] != HANDSHAKE_PREFIX {
            return Err(WireError::BadHandshake);
        }
        let mut hs = Handshake {
            reserved: [0; 8],
            info_hash: InfoHash([0; 20]),
            peer_id: PeerId([0; 20]),
        };
        hs.reserved.copy_from_slice(&data[20..28]);
        hs.info_hash.0.copy_from_slice(&data[28..48]);
        hs.peer_id.0.copy_from_slice(&data[48..68]);
        Ok(hs)
    }
}

/// pstrlen and pstr: what every handshake starts with.
const HANDSHAKE_PREFIX: [u8; 20] = {
    let mut p = [0u8; 20];
    p[0] = PROTOCOL.len() as u8;
    let mut i = 0;
    while i < PROTOCOL.len() {
        p[i + 1] = PROTOCOL[i];
        i += 1;
    }
    p
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRequest {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRequest),
    Piece { index: u32, begin: u32, data: Bytes },
    Cancel(BlockRequest),
    Port(u16),
    // BEP 6
    SuggestPiece(u32),
    HaveAll,
    HaveNone,
    RejectRequest(BlockRequest),
    AllowedFast(u32),
    // BEP 10
    Extended { id: u8, payload: Bytes },
}

mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 13;
    pub const HAVE_ALL: u8 = 14;
    pub const HAVE_NONE: u8 = 15;
    pub const REJECT: u8 = 16;
    pub const ALLOWED_FAST: u8 = 17;
    pub const EXTENDED: u8 = 20;
}

impl Message {
    /// Appends the length-prefixed encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn header(out: &mut Vec<u8>, id: u8, payload_len: usize) {
            // Our own payloads are bounded far below 4 GiB (blocks, bitfields, extension dicts).
            out.extend_from_slice(&((payload_len + 1) as u32).to_be_bytes());
            out.push(id);
        }
        fn simple(out: &mut Vec<u8>, id: u8) {
            header(out, id, 0);
        }
        fn with_u32(out: &mut Vec<u8>, id: u8, v: u32) {
            header(out, id, 4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        fn with_block(out: &mut Vec<u8>, id: u8, r: &BlockRequest) {
            header(out, id, 12);
            out.extend_from_slice(&r.index.to_be_bytes());
            out.extend_from_slice(&r.begin.to_be_bytes());
            out.extend_from_slice(&r.length.to_be_bytes());
        }
        match self {
            Message::KeepAlive => out.extend_from_slice(&[0; 4]),
            Message::Choke => simple(out, id::CHOKE),
            Message::Unchoke => simple(out, id::UNCHOKE),
            Message::Interested => simple(out, id::INTERESTED),
            Message::NotInterested => simple(out, id::NOT_INTERESTED),
            Message::Have(i) => with_u32(out, id::HAVE, *i),
            Message::Bitfield(b) => {
                header(out, id::BITFIELD, b.len());
                out.extend_from_slice(b);
            }
            Message::Request(r) => with_block(out, id::REQUEST, r),
            Message::Piece { index, begin, data } => {
                header(out, id::PIECE, 8 + data.len());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&begin.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Cancel(r) => with_block(out, id::CANCEL, r),
            Message::Port(p) => {
                header(out, id::PORT, 2);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Message::SuggestPiece(i) => with_u32(out, id::SUGGEST, *i),
            Message::HaveAll => simple(out, id::HAVE_ALL),
            Message::HaveNone => simple(out, id::HAVE_NONE),
            Message::RejectRequest(r) => with_block(out, id::REJECT, r),
            Message::AllowedFast(i) => with_u32(out, id::ALLOWED_FAST, *i),
            Message::Extended { id: ext, payload } => {
                header(out, id::EXTENDED, 1 + payload.len());
                out.push(*ext);
                out.extend_from_slice(payload);
            }
        }
    }
}

/// Whether `len` (the length prefix, id included) is valid for message `id`.
fn check_length(id: u8, len: u32) -> Result<(), WireError> {
    let ok = match id {
        id::CHOKE
        | id::UNCHOKE
        | id::INTERESTED
        | id::NOT_INTERESTED
        | id::HAVE_ALL
        | id::HAVE_NONE => len == 1,
        id::HAVE | id::SUGGEST | id::ALLOWED_FAST => len == 5,
        id::BITFIELD | id::EXTENDED => len >= 2,
        id::REQUEST | id::CANCEL | id::REJECT => len == 13,
        id::PIECE => len >= 9,
        id::PORT => len == 3,
        _ => return Err(WireError::UnknownId(id)),
    };
    if ok {
        Ok(())
    } else {
        Err(WireError::BadLength { id, len })
    }
}

/// Parses a message body (everything after the id), whose length `check_length` accepted.
fn parse_body(id: u8, mut body: BytesMut) -> Message {
    match id {
        id::CHOKE => Message::Choke,
        id::UNCHOKE => Message::Unchoke,
        id::INTERESTED => Message::Interested,
        id::NOT_INTERESTED => Message::NotInterested,
        id::HAVE => Message::Have(body.get_u32()),
        id::BITFIELD => Message::Bitfield(body.freeze()),
        id::REQUEST => Message::Request(block(&mut body)),
        id::PIECE => {
            let index = body.get_u32();
            let begin = body.get_u32();
            Message::Piece {
                index,
                begin,
                data: body.freeze(),
            }
        }
        id::CANCEL => Message::Cancel(block(&mut body)),
        id::PORT => Message::Port(body.get_u16()),
        id::SUGGEST => Message::SuggestPiece(body.get_u32()),
        id::HAVE_ALL => Message::HaveAll,
        id::HAVE_NONE => Message::HaveNone,
        id::REJECT => Message::RejectRequest(block(&mut body)),
        id::ALLOWED_FAST => Message::AllowedFast(body.get_u32()),
        // check_length let only known ids through, so this is `extended`.
        _ => {
            let ext = body.get_u8();
            Message::Extended {
                id: ext,
                payload: body.freeze(),
            }
        }
    }
}

fn block(body: &mut BytesMut) -> BlockRequest {
    BlockRequest {
        index: body.get_u32(),
        begin: body.get_u32(),
        length: body.get_u32(),
    }
}

/// Incremental decoder: push whatever the socket gave, pull whole messages. A `Piece`'s data is
/// a slice of the decoder's buffer, not a copy.
///
/// Drain it with `next` until `Ok(None)` after every `push`: then the buffer never holds more
/// than one message plus one read. Any error is final for the connection; the offending bytes
/// stay in the buffer.
pub struct Decoder {
    buf: BytesMut,
    max_message: u32,
}

impl Decoder {
    /// `max_message` is capped at 2^31 - 1 so that a length plus its prefix fits a 32-bit usize.
    pub fn new(max_message: u32) -> Self {
        Decoder {
            buf: BytesMut::new(),
            max_message: max_message.min(i32::MAX as u32),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The handshake, once 68 bytes are in; call this once before `next`. Garbage is refused as
    /// soon as its first bytes differ from a handshake's, without waiting for all 68.
    pub fn next_handshake(&mut self) -> Result<Option<Handshake>, WireError> {
        let seen = self.buf.len().min(HANDSHAKE_PREFIX.len());
        if self.buf[..seen] != HANDSHAKE_PREFIX[..seen] {
            return Err(WireError::BadHandshake);
        }
        if self.buf.len() < HANDSHAKE_LEN {
            return Ok(None);
        }
        let hs = Handshake::decode(&self.buf[..HANDSHAKE_LEN])?;
        self.buf.advance(HANDSHAKE_LEN);
        Ok(Some(hs))
    }

    /// The next whole message, `Ok(None)` when more bytes are needed. A length prefix over the
    /// limit is an error before anything is allocated.
    // Not an Iterator: decoding is fallible and `None` means "not yet", not "finished".
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Message>, WireError> {
        let Some(&[a, b, c, d]) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len > self.max_message {
            return Err(WireError::TooLong(len));
        }
        if len == 0 {
            self.buf.advance(4);
            return Ok(Some(Message::KeepAlive));
        }
        let Some(&id) = self.buf.get(4) else {
            return Ok(None);
        };
        check_length(id, len)?;
        // len <= i32::MAX, so this fits even a 32-bit usize.
        let total = 4 + len as usize;
        if self.buf.len() < total {
            // One allocation for the rest of the message, now that its length is known and sane.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total);
        frame.advance(5);
        Ok(Some(parse_body(id, frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Message> {
        let r = BlockRequest {
            index: 7,
            begin: 16384,
            length: BLOCK_SIZE,
        };
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(0xdead_beef),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request(r),
            Message::Piece {
                index: 3,
                begin: 32768,
                data: Bytes::from((0..=255u8).cycle().take(1000).collect::<Vec<_>>()),
            },
            Message::Piece {
                index: 1,
                begin: 0,
                data: Bytes::new(),
            },
            Message::Cancel(r),
            Message::Port(6881),
            Message::SuggestPiece(9),
            Message::HaveAll,
            Message::HaveNone,
            Message::RejectRequest(r),
            Message::AllowedFast(11),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee"),
            },
            Message::Extended {
                id: 3,
                payload: Bytes::new(),
            },
        ]
    }

    fn handshake() -> Handshake {
        Handshake::new(InfoHash([0xab; 20]), PeerId::generate(1))
    }

    fn stream() -> Vec<u8> {
        let mut out = handshake().encode().to_vec();
        for m in all_messages() {
            m.encode(&mut out);
        }
        out
    }

    /// Decodes `data` delivered in the given chunk sizes, handshake first.
    fn decode_in_chunks(
        data: &[u8],
        mut chunk: impl FnMut() -> usize,
    ) -> (Handshake, Vec<Message>) {
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        let mut hs = None;
        let mut msgs = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = chunk().clamp(1, rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            if hs.is_none() {
                hs = d.next_handshake().unwrap();
                if hs.is_none() {
                    continue;
                }
            }
            while let Some(m) = d.next().unwrap() {
                msgs.push(m);
            }
        }
        assert_eq!(d.buffered(), 0);
        (hs.unwrap(), msgs)
    }

    #[test]
    fn handshake_round_trip_and_bits() {
        let hs = handshake();
        let enc = hs.encode();
        assert_eq!(enc[0], 19);
        assert_eq!(&enc[1..20], PROTOCOL);
        let back = Handshake::decode(&enc).unwrap();
        assert_eq!(back, hs);
        assert!(back.supports_extensions() && back.supports_fast());
    }

    #[test]
    fn garbage_handshake_refused() {
        assert_eq!(
            Handshake::decode(b"GET / HTTP/1.1\r\n"),
            Err(WireError::BadHandshake)
        );
        let mut enc = handshake().encode();
        enc[5] = b'X';
        assert_eq!(Handshake::decode(&enc), Err(WireError::BadHandshake));
        assert_eq!(
            Handshake::decode(&handshake().encode()[..67]),
            Err(WireError::BadHandshake)
        );

        // The decoder refuses on the first wrong byte, without waiting for 68.
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&[19, b'B', b'i']);
        assert_eq!(d.next_handshake(), Ok(None));
        d.push(b"X");
        assert_eq!(d.next_handshake(), Err(WireError::BadHandshake));
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        d.push(b"\x13");
        assert_eq!(d.next_handshake(), Ok(None));
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        d.push(b"GET");
        assert_eq!(d.next_handshake(), Err(WireError::BadHandshake));
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            let mut out = Vec::new();
            m.encode(&mut out);
            let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
            d.push(&out);
            assert_eq!(d.next().unwrap(), Some(m.clone()), "{m:?}");
            assert_eq!(d.buffered(), 0);
            assert_eq!(d.next().unwrap(), None);
        }
    }

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        Message::KeepAlive.encode(&mut out);
        Message::Have(1).encode(&mut out);
        Message::Port(0x1ae1).encode(&mut out);
        assert_eq!(
            out,
            [0, 0, 0, 0, 0, 0, 0, 5, 4, 0, 0, 0, 1, 0, 0, 0, 3, 9, 0x1a, 0xe1]
        );
    }

    #[test]
    fn any_split_gives_the_same_messages() {
        let data = stream();
        let expected = (handshake(), all_messages());
        assert_eq!(decode_in_chunks(&data, || data.len()), expected);
        assert_eq!(decode_in_chunks(&data, || 1), expected);
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..200 {
            assert_eq!(decode_in_chunks(&data, || rng.usize(1..80)), expected);
        }
    }

    #[test]
    fn piece_data_is_a_slice_of_the_buffer() {
        let mut out = Vec::new();
        let data = Bytes::from(vec![7u8; 4000]);
        Message::Piece {
            index: 0,
            begin: 0,
            data: data.clone(),
        }
        .encode(&mut out);
        Message::Have(2).encode(&mut out);
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&out);
        let base = d.buf.as_ptr() as usize;
        let Some(Message::Piece { data: got, .. }) = d.next().unwrap() else {
            panic!("not a piece")
        };
        assert_eq!(got, data);
        assert_eq!(got.as_ptr() as usize, base + 13);
        assert_eq!(d.next().unwrap(), Some(Message::Have(2)));
    }

    #[test]
    fn oversize_length_refused_without_allocation() {
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&[0x80, 0, 0, 0]);
        assert_eq!(d.next(), Err(WireError::TooLong(1 << 31)));
        assert!(d.buf.capacity() < 1024, "capacity {}", d.buf.capacity());

        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&(DEFAULT_MAX_MESSAGE + 1).to_be_bytes());
        assert_eq!(d.next(), Err(WireError::TooLong(DEFAULT_MAX_MESSAGE + 1)));

        // Even a caller's huge limit cannot make a prefix overflow the usize arithmetic.
        let mut d = Decoder::new(u32::MAX);
        d.push(&[0xff; 4]);
        assert_eq!(d.next(), Err(WireError::TooLong(u32::MAX)));
    }

    #[test]
    fn bad_lengths_and_ids_refused_before_the_body() {
        let cases: &[(&[u8], WireError)] = &[
            (&[0, 0, 0, 2, 0], WireError::BadLength { id: 0, len: 2 }),
            (&[0, 0, 0, 4, 4], WireError::BadLength { id: 4, len: 4 }),
            (&[0, 0, 0, 6, 4], WireError::BadLength { id: 4, len: 6 }),
            (&[0, 0, 0, 1, 5], WireError::BadLength { id: 5, len: 1 }),
            (&[0, 0, 0, 12, 6], WireError::BadLength { id: 6, len: 12 }),
            (&[0, 0, 0, 8, 7], WireError::BadLength { id: 7, len: 8 }),
            (&[0, 0, 0, 14, 8], WireError::BadLength { id: 8, len: 14 }),
            (&[0, 0, 0, 2, 9], WireError::BadLength { id: 9, len: 2 }),
            (&[0, 0, 0, 2, 14], WireError::BadLength { id: 14, len: 2 }),
            (&[0, 0, 0, 1, 20], WireError::BadLength { id: 20, len: 1 }),
            (&[0, 0, 0, 1, 10], WireError::UnknownId(10)),
            (&[0, 0, 0, 9, 255], WireError::UnknownId(255)),
        ];
        for (bytes, err) in cases {
            let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
            d.push(bytes);
            assert_eq!(d.next().as_ref(), Err(err), "{bytes:?}");
        }
    }

    #[test]
    fn buffer_stays_bounded_when_drained() {
        let mut one = Vec::new();
        Message::Piece {
            index: 0,
            begin: 0,
            data: Bytes::from(vec![1u8; BLOCK_SIZE as usize]),
        }
        .encode(&mut one);
        let data: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE);
        let read = 65536;
        let mut kept = Vec::new();
        for chunk in data.chunks(read) {
            d.push(chunk);
            while let Some(m) = d.next().unwrap() {
                kept.push(m);
            }
            assert!(
                d.buf.capacity() <= DEFAULT_MAX_MESSAGE as usize + 2 * read,
                "capacity {}",
                d.buf.capacity()
            );
        }
        assert_eq!(kept.len(), 64);
    }
}
