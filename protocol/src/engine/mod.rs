//! The torrent engine: one sans-IO state machine per torrent.
//!
//! The driver feeds it connection events, bytes and the time (`handle_*`), and drains what it
//! must do (`poll_*`): connections to open or close, bytes to send, events to report. It never
//! blocks and never reads a clock; `poll_timeout` says when it next wants `handle_timeout`.

mod bitfield;
mod choker;
mod close;
mod crypto;
mod peer;
mod picker;
mod rate;
#[cfg(test)]
mod tests;
mod torrent;

pub use bitfield::Bitfield;
pub use close::CloseReason;
pub use torrent::Torrent;

use std::net::SocketAddr;

/// Whether connections use Message Stream Encryption (`crate::mse`), as users of every client
/// know the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Outgoing: try MSE (RC4 preferred) and fall back to a plain handshake with a peer that
    /// refuses it; incoming: accept both.
    #[default]
    Prefer,
    /// MSE with RC4 only, both ways; plain handshakes are refused.
    Require,
    /// Plain BitTorrent handshakes only.
    Off,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "prefer" => Some(Encryption::Prefer),
            "require" => Some(Encryption::Require),
            "off" => Some(Encryption::Off),
            _ => None,
        }
    }

    /// What we offer in an MSE handshake, if we make one.
    pub fn mse_policy(self) -> Option<crate::mse::Policy> {
        match self {
            Encryption::Prefer => Some(crate::mse::Policy::PreferRc4),
            Encryption::Require => Some(crate::mse::Policy::RequireRc4),
            Encryption::Off => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Connected and connecting peers at most.
    pub max_peers: usize,
    /// Outgoing connection attempts in flight at most.
    pub max_connecting: usize,
    /// Regular unchoke slots (one more is the optimistic slot).
    pub unchoke_slots: usize,
    /// Requests we queue per peer at most, whatever its rate (and never past its `reqq`).
    pub max_requests_per_peer: u32,
    /// Requests from a peer we hold at most (our `reqq`); more are rejected or dropped.
    pub max_incoming_requests: u32,
    /// A peer that sends nothing for this long is disconnected.
    pub peer_timeout_ms: u64,
    /// We send a keep-alive after this long without sending anything.
    pub keepalive_ms: u64,
    /// A request unanswered for this long is given to another peer.
    pub request_timeout_ms: u64,
    /// Our client name in the extension handshake `v`.
    pub client_name: String,
    /// The port we accept peers on, sent as `p` in the extension handshake.
    pub listen_port: Option<u16>,
    /// The driver hashes each downloaded piece: the engine emits `Event::HashPiece` and waits for
    /// `handle_piece_hash`. For platforms whose fastest SHA-1 is asynchronous or off the engine's
    /// thread (WebCrypto in a browser); otherwise the engine hashes blocks as they arrive.
    pub driver_hashes: bool,
    /// Message Stream Encryption of connections.
    pub encryption: Encryption,
    /// Randomness from the driver for the keys of encrypted connections (the crate has none of
    /// its own); each connection's seed is derived from it.
    pub entropy: [u8; 32],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_peers: 60,
            max_connecting: 16,
            unchoke_slots: 4,
            max_requests_per_peer: 500,
            max_incoming_requests: 500,
            peer_timeout_ms: 120_000,
            keepalive_ms: 60_000,
            request_timeout_ms: 30_000,
            client_name: concat!("bt-tab ", env!("CARGO_PKG_VERSION")).to_string(),
            listen_port: None,
            driver_hashes: false,
            encryption: Encryption::default(),
            entropy: [0; 32],
        }
    }
}

/// A connection, named by the engine (outgoing) or handed out by it (incoming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSource {
    Tracker,
    Pex,
    Magnet,
    Incoming,
    Manual,
    /// Found by a DHT lookup (BEP 5).
    Dht,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Open a connection to `addr`; answer with `handle_connected` or `handle_closed`.
    Connect {
        conn: ConnId,
        addr: SocketAddr,
    },
    /// Close this connection; the engine has already forgotten it.
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    /// A magnet's metadata arrived and matched the info-hash: `info()` is now set, and the driver
    /// should `attach_storage`.
    MetadataReceived,
    /// With `Config::driver_hashes`: every block of `piece` is stored. Read it with
    /// `read_piece`, hash it, and answer with `handle_piece_hash(piece, job, digest)`.
    HashPiece {
        piece: u32,
        job: u64,
    },
    PieceVerified(u32),
    /// A piece failed its hash check and will be downloaded again.
    PieceFailed(u32),
    PeerBanned(SocketAddr),
    /// Every piece is verified.
    Complete,
    /// The store failed to read or write: the torrent stops (paused) with this message.
    StorageFailed(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Payload bytes received and sent (blocks only).
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes of verified pieces.
    pub verified: u64,
    pub total: u64,
    pub pieces_have: u32,
    pub pieces_total: u32,
    /// Bytes per second over the last few seconds.
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers_connected: usize,
    pub peers_known: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// From the extension handshake `v`, else guessed from the peer id.
    pub client: String,
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Fraction of pieces the peer has, 0.0 to 1.0.
    pub progress: f64,
    pub choking_us: bool,
    pub interested_in_us: bool,
    pub source: PeerSource,
    /// The connection is RC4-encrypted (MSE).
    pub encrypted: bool,
}
