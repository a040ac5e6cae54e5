//! One connection's state: the handshake, choke and interest flags, requests both ways, rates.

use super::bitfield::Bitfield;
use super::crypto::Crypto;
use super::rate::RateMeter;
use super::{ConnId, PeerSource};
use crate::extension::PeerExtensions;
use crate::wire::{BlockRequest, Decoder, DEFAULT_MAX_MESSAGE};
use crate::PeerId;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Outgoing, the driver is still connecting.
    Connecting,
    /// Waiting for the peer's BitTorrent handshake.
    Handshake,
    Active,
}

pub struct Peer {
    pub conn: ConnId,
    pub addr: SocketAddr,
    pub source: PeerSource,
    pub outgoing: bool,
    pub stage: Stage,
    pub decoder: Decoder,
    /// The encryption layer between the socket and `decoder`.
    pub crypto: Crypto,
    pub out: Vec<u8>,
    /// Bytes at the front of `out` already in their wire form (an MSE handshake's), which the
    /// connection's cipher must not touch.
    pub raw_out: usize,
    /// Bytes handed to the driver and not yet reported sent.
    pub unsent: usize,
    pub peer_id: Option<PeerId>,
    pub fast: bool,
    pub extended: bool,
    pub ext: PeerExtensions,
    pub client: Option<String>,
    /// The peer's `reqq`: requests it holds at most.
    pub reqq: u32,
    pub bits: Bitfield,
    /// Before a magnet's metadata arrives the piece count is unknown: keep what the peer said.
    pub early_bitfield: Option<Bytes>,
    pub early_have_all: bool,
    pub early_haves: Vec<u32>,
    /// Pieces the peer has that we lack: interest without rescanning the bitfield.
    pub useful: u32,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Our requests to the peer, oldest first, with the time they were sent.
    pub requests: VecDeque<(BlockRequest, u64)>,
    /// The peer's requests to us, waiting to be served.
    pub incoming: VecDeque<BlockRequest>,
    pub down: RateMeter,
    pub up: RateMeter,
    pub connected_at: u64,
    pub last_recv: u64,
    pub last_send: u64,
    /// No block arrived in time: it gets one request at a time until it delivers again.
    pub snubbed: bool,
    /// ut_metadata piece we asked this peer for, and when.
    pub metadata_request: Option<(u32, u64)>,
    /// The `metadata_size` of the peer's extension handshake, and the order in which peers
    /// reported theirs (first come wins a tie between sizes).
    pub metadata_size: Option<u64>,
    pub metadata_size_seq: u64,
    /// The peer rejected or left unanswered a ut_metadata request: its size counts only when no
    /// other peer reports one.
    pub metadata_refused: bool,
    /// Peers listed to this peer in our last ut_pex message.
    pub pex_sent: Vec<SocketAddr>,
}

impl Peer {
    pub fn new(
        conn: ConnId,
        addr: SocketAddr,
        source: PeerSource,
        outgoing: bool,
        now_ms: u64,
    ) -> Self {
        Peer {
            conn,
            addr,
            source,
            outgoing,
            stage: if outgoing {
                Stage::Connecting
            } else {
                Stage::Handshake
            },
            decoder: Decoder::new(DEFAULT_MAX_MESSAGE),
            crypto: Crypto::Plain,
            out: Vec::new(),
            raw_out: 0,
            unsent: 0,
            peer_id: None,
            fast: false,
            extended: false,
            ext: PeerExtensions::default(),
            client: None,
            reqq: 250,
            bits: Bitfield::default(),
            early_bitfield: None,
            early_have_all: false,
            early_haves: Vec::new(),
            useful: 0,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            requests: VecDeque::new(),
            incoming: VecDeque::new(),
            down: RateMeter::default(),
            up: RateMeter::default(),
            connected_at: now_ms,
            last_recv: now_ms,
            last_send: now_ms,
            snubbed: false,
            metadata_request: None,
            metadata_size: None,
            metadata_size_seq: 0,
            metadata_refused: false,
            pex_sent: Vec::new(),
        }
    }

    /// Requests to keep outstanding: about three seconds of the measured rate, at least a few
    /// to get going, never more than the peer accepts.
    pub fn queue_target(&self, now_ms: u64, cap: u32) -> usize {
        if self.snubbed {
            return 1;
        }
        let by_rate = (self.down.rate(now_ms) * 3.0 / crate::wire::BLOCK_SIZE as f64) as u32;
        by_rate.max(16).min(self.reqq).min(cap) as usize
    }

    /// The peer has every piece (known only once the piece count is).
    pub fn is_seed(&self) -> bool {
        self.bits.is_full() && !self.bits.is_empty()
    }

    /// Removes an outstanding request; false if we never asked for it.
    pub fn take_request(&mut self, index: u32, begin: u32, length: u32) -> bool {
        let found = self
            .requests
            .iter()
            .position(|(r, _)| r.index == index && r.begin == begin && r.length == length);
        match found {
            Some(pos) => {
                self.requests.remove(pos);
                true
            }
            None => false,
        }
    }

    /// A client name from the peer id when the extension handshake gave none
    /// (Azureus-style `-XX1234-`).
    pub fn client_name(&self) -> String {
        if let Some(v) = &self.client {
            return v.clone();
        }
        match self.peer_id {
            Some(PeerId(id))
                if id[0] == b'-'
                    && id[7] == b'-'
                    && id[1..7].iter().all(u8::is_ascii_alphanumeric) =>
            {
                String::from_utf8_lossy(&id[1..7]).into_owned()
            }
            Some(_) => "unknown".into(),
            None => String::new(),
        }
    }
}
