//! The BEP 10 extension protocol, ut_metadata (BEP 9) and ut_pex (BEP 11).

use crate::InfoHash;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use thiserror::Error;

/// The ids we ask peers to use when they send to us (our `m` dictionary).
pub const UT_METADATA_ID: u8 = 1;
pub const UT_PEX_ID: u8 = 2;
/// ut_metadata pieces are 16 KiB.
pub const METADATA_PIECE: usize = 16 * 1024;
/// Metadata larger than this is refused (a `metadata_size` is a peer's claim).
pub const MAX_METADATA: u64 = 64 << 20;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ExtensionError {
    #[error("bad extension message: {0}")]
    Malformed(String),
}

/// The extension handshake dictionary (message id 0 inside `extended`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name -> the id the sender wants to receive it under; 0 disables it.
    pub m: BTreeMap<String, u8>,
    pub p: Option<u16>,
    pub v: Option<String>,
    pub yourip: Option<Vec<u8>>,
    pub ipv4: Option<[u8; 4]>,
    pub ipv6: Option<[u8; 16]>,
    pub reqq: Option<u32>,
    pub metadata_size: Option<u64>,
}

impl ExtHandshake {
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    /// Unknown keys are ignored; keys of the wrong type are treated as absent.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let _ = payload;
        todo!()
    }
}

/// What a peer told us in its handshakes: the ids to send each extension under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerExtensions {
    ids: BTreeMap<String, u8>,
}

impl PeerExtensions {
    /// Applies a (possibly later) handshake: additive, and an id of 0 removes that extension.
    pub fn update(&mut self, hs: &ExtHandshake) {
        let _ = hs;
        todo!()
    }

    /// The id to send `name` under, if the peer supports it.
    pub fn id(&self, name: &str) -> Option<u8> {
        let _ = name;
        todo!()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg {
    Request { piece: u32 },
    Data { piece: u32, total_size: u64, data: Bytes },
    Reject { piece: u32 },
}

impl MetadataMsg {
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    pub fn decode(payload: &Bytes) -> Result<Self, ExtensionError> {
        let _ = payload;
        todo!()
    }
}

/// Collects ut_metadata pieces for a magnet and checks the result against the info-hash.
pub struct MetadataAssembler {
    _private: (),
}

impl MetadataAssembler {
    /// `None` if `size` is 0 or above [`MAX_METADATA`].
    pub fn new(info_hash: InfoHash, size: u64) -> Option<Self> {
        let _ = (info_hash, size);
        todo!()
    }

    pub fn size(&self) -> u64 {
        todo!()
    }

    pub fn num_pieces(&self) -> u32 {
        todo!()
    }

    /// Pieces not yet received, in order.
    pub fn missing(&self) -> Vec<u32> {
        todo!()
    }

    /// Stores a piece; wrong sizes or indexes are an error.
    pub fn add(&mut self, piece: u32, data: &[u8]) -> Result<(), ExtensionError> {
        let _ = (piece, data);
        todo!()
    }

    /// Once every piece is in: `Some(Ok(raw info))` if the SHA-1 matches, `Some(Err)` (and the
    /// pieces are cleared) if not; `None` while pieces are missing.
    pub fn finish(&mut self) -> Option<Result<Vec<u8>, ExtensionError>> {
        todo!()
    }
}

/// A ut_pex message: peers added and dropped since the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMsg {
    pub added: Vec<SocketAddr>,
    pub dropped: Vec<SocketAddr>,
}

impl PexMsg {
    /// Compact `added`/`added.f`/`dropped` and their IPv6 forms.
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    /// At most a few hundred peers are kept from one message.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let _ = payload;
        todo!()
    }
}
