//! The peer wire protocol: the handshake (BEP 3, reserved bits for BEP 10 and BEP 6), every BEP 3
//! and BEP 6 message, `extended` (BEP 10), and an incremental decoder for any split of the stream.

use crate::{InfoHash, PeerId};
use bytes::Bytes;
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
        Handshake { reserved, info_hash, peer_id }
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        todo!()
    }

    /// Decodes the first 68 bytes of `data`; `BadHandshake` if they are not a handshake.
    pub fn decode(data: &[u8]) -> Result<Self, WireError> {
        let _ = data;
        todo!()
    }
}

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

impl Message {
    /// Appends the length-prefixed encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}

/// Incremental decoder: push whatever the socket gave, pull whole messages. A `Piece`'s data is
/// a slice of the decoder's buffer, not a copy.
pub struct Decoder {
    _private: (),
}

impl Decoder {
    pub fn new(max_message: u32) -> Self {
        let _ = max_message;
        todo!()
    }

    pub fn push(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        todo!()
    }

    /// The handshake, once 68 bytes are in; call this once before `next`.
    pub fn next_handshake(&mut self) -> Result<Option<Handshake>, WireError> {
        todo!()
    }

    /// The next whole message, `Ok(None)` when more bytes are needed. A length prefix over the
    /// limit is an error before anything is allocated.
    pub fn next(&mut self) -> Result<Option<Message>, WireError> {
        todo!()
    }
}
