//! Message Stream Encryption (MSE/PE, the Vuze and libtorrent "protocol encryption"), sans-IO.
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//! Y is a Diffie-Hellman public key over a 768-bit prime, S the shared secret, SKEY the
//! info-hash, VC eight zero bytes, ENCRYPT RC4 with the first 1024 bytes of keystream dropped and
//! ENCRYPT2 the method the responder selected (RC4 again, or plaintext). IA, the initial payload,
//! lets the initiator's BitTorrent handshake ride in message 3; it is always RC4-encrypted, since
//! the initiator does not know yet what will be selected.
//!
//! [`Initiator`] and [`Responder`] take the peer's bytes through `handle_data` in any split and
//! hand back what to send through `poll_transmit`; the call that completes the handshake returns
//! an [`Outcome`] with a [`Cipher`] that then sits between the socket and the wire decoder.
//!
//! Everything a peer sends is bounded before it is buffered: padding is at most 512 bytes, so
//! each side gives up on finding the other's marker after that much; lengths are checked before
//! the bytes they announce are awaited; IA is at most 65535 bytes by its 2-byte length. Driver
//! timeouts still apply: a peer that stops sending mid-handshake is silent, not wrong.

mod cipher;
mod dh;
mod initiator;
mod responder;
#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::wire::PROTOCOL;
use crate::InfoHash;

pub use cipher::{skey_hash, Cipher, CipherHalf};
pub use dh::KEY_LEN;
pub use initiator::Initiator;
pub use responder::{Lookup, Responder};

/// Bytes of randomness a handshake takes from its driver: 20 for the private key, the rest for
/// padding. They must come from a cryptographic source (`getrandom`, `crypto.getRandomValues`):
/// this crate has none of its own.
pub const SEED_LEN: usize = 32;
/// The longest PadA, PadB, PadC or PadD the spec allows.
pub const MAX_PAD: usize = 512;
/// The verification constant: eight zero bytes, encrypted, that mark where RC4 starts.
const VC: [u8; 8] = [0; 8];

const PROVIDE_PLAINTEXT: u32 = 0x01;
const PROVIDE_RC4: u32 = 0x02;

/// How the payload travels after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoMethod {
    /// Only the handshake was encrypted (the info-hash hidden), the payload is not.
    Plaintext,
    /// The payload is RC4 both ways.
    Rc4,
}

impl CryptoMethod {
    /// The bit of `crypto_provide` / `crypto_select` that names this method.
    pub fn bits(self) -> u32 {
        match self {
            CryptoMethod::Plaintext => PROVIDE_PLAINTEXT,
            CryptoMethod::Rc4 => PROVIDE_RC4,
        }
    }
}

/// What we offer as initiator, and what we select as responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Offer both, select RC4 when the peer offers it and plaintext otherwise.
    PreferRc4,
    /// Offer and select RC4 only.
    RequireRc4,
    /// Offer and select plaintext only (after the obfuscated handshake).
    PlaintextOnly,
}

impl Policy {
    /// Our `crypto_provide` bits.
    pub fn provide(self) -> u32 {
        match self {
            Policy::PreferRc4 => PROVIDE_PLAINTEXT | PROVIDE_RC4,
            Policy::RequireRc4 => PROVIDE_RC4,
            Policy::PlaintextOnly => PROVIDE_PLAINTEXT,
        }
    }

    /// The method we select from the peer's `crypto_provide`, if any.
    pub fn select(self, provided: u32) -> Option<CryptoMethod> {
        let common = provided & self.provide();
        if common & PROVIDE_RC4 != 0 {
            Some(CryptoMethod::Rc4)
        } else if common & PROVIDE_PLAINTEXT != 0 {
            Some(CryptoMethod::Plaintext)
        } else {
            None
        }
    }

    /// Whether an incoming connection that starts with a plain BitTorrent handshake (no MSE at
    /// all) is acceptable: not when RC4 is required.
    pub fn accepts_unencrypted_handshake(self) -> bool {
        self != Policy::RequireRc4
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MseError {
    #[error("no verification constant within {MAX_PAD} bytes of padding after the peer's key")]
    VcNotFound,
    #[error("no synchronisation hash within {MAX_PAD} bytes of padding after the peer's key")]
    SyncNotFound,
    #[error("the peer asked for a torrent we do not serve")]
    UnknownInfoHash,
    #[error("the verification constant did not decrypt to zeros")]
    BadVerificationConstant,
    #[error("no method in common: the peer provides {provided:#x}, we accept {accepted:#x}")]
    NoCommonMethod { provided: u32, accepted: u32 },
    #[error("the peer selected {selected:#x}, not one of the methods {provided:#x} we provided")]
    BadSelect { selected: u32, provided: u32 },
    #[error("padding of {0} bytes is longer than {MAX_PAD}")]
    PadTooLong(u16),
    #[error("an initial payload of {0} bytes does not fit its 2-byte length")]
    InitialPayloadTooLong(usize),
    #[error("the handshake is already over")]
    AlreadyDone,
}

/// A completed handshake.
#[derive(Debug)]
pub struct Outcome {
    pub method: CryptoMethod,
    /// The torrent: ours as initiator, the one the peer asked for as responder.
    pub info_hash: InfoHash,
    /// The initiator's IA, decrypted (usually its BitTorrent handshake). Always empty on the
    /// initiator's side.
    pub initial_payload: Vec<u8>,
    /// Bytes that arrived after the handshake, already decrypted: the start of the payload
    /// stream, for the wire decoder.
    pub remainder: Vec<u8>,
    /// For every byte sent and received from now on.
    pub cipher: Cipher,
}

/// What the first bytes of an incoming connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A BitTorrent handshake in the clear: byte 19, then "BitTorrent protocol".
    Plaintext,
    /// Anything else: an MSE public key (for a [`Responder`]) or garbage.
    Encrypted,
    /// Too few bytes to tell, and all of them match a plain handshake so far.
    Undecided,
}

/// Tells a plain BitTorrent handshake from an MSE one on an incoming connection, from its first
/// 20 bytes at most. A random public key starts like a handshake with odds of 2^-160.
pub fn classify(first_bytes: &[u8]) -> Incoming {
    let mut prefix = [0u8; 20];
    prefix[0] = PROTOCOL.len() as u8;
    prefix[1..].copy_from_slice(PROTOCOL);
    let seen = first_bytes.len().min(prefix.len());
    if first_bytes[..seen] != prefix[..seen] {
        Incoming::Encrypted
    } else if seen < prefix.len() {
        Incoming::Undecided
    } else {
        Incoming::Plaintext
    }
}

/// Splits the driver's seed into the private key and a generator for padding. Padding needs no
/// secrecy, only to vary; it never draws on the key's bytes.
fn split_seed(seed: &[u8; SEED_LEN]) -> ([u8; dh::PRIVATE_LEN], fastrand::Rng) {
    let mut private = [0u8; dh::PRIVATE_LEN];
    private.copy_from_slice(&seed[..dh::PRIVATE_LEN]);
    let mut rest = [0u8; 8];
    rest.copy_from_slice(&seed[SEED_LEN - 8..]);
    (private, fastrand::Rng::with_seed(u64::from_le_bytes(rest)))
}

/// Appends 0-511 bytes of padding. PadA and PadB go out in the clear and are random; PadC and PadD
/// are encrypted, and the spec asks for zeros in them. The spec allows 512, and we accept 512; we
/// send at most 511 because a peer that stops its sync search once it has scanned 512 bytes would
/// miss a marker behind exactly 512 (suspected, not proven, in the one libtorrent handshake of a
/// CI run that was closed right after the keys).
fn push_pad(out: &mut Vec<u8>, rng: &mut fastrand::Rng, random: bool) -> u16 {
    let len = rng.usize(..MAX_PAD);
    let start = out.len();
    out.resize(start + len, 0);
    if random {
        rng.fill(&mut out[start..]);
    }
    len as u16
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first `n` bytes of `inbox`, removed from it, if there are that many.
fn take(inbox: &mut Vec<u8>, n: usize) -> Option<Vec<u8>> {
    (inbox.len() >= n).then(|| inbox.drain(..n).collect())
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
