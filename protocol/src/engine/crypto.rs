//! A connection's Message Stream Encryption layer (`crate::mse`) between the socket and the wire
//! decoder: an outgoing handshake, an incoming one told apart from a plain BitTorrent handshake by
//! its first bytes, then RC4 (or plaintext, as the two sides chose) both ways.

use super::close::CloseReason;
use super::Encryption;
use crate::mse::{self, CipherHalf, Incoming, Initiator, MseError, Outcome, Responder};
use crate::InfoHash;

pub enum Crypto {
    /// Plain BitTorrent bytes both ways.
    Plain,
    /// Incoming, before its first bytes tell a plain handshake from an MSE one.
    Undecided(Vec<u8>),
    Initiating(Box<Initiator>),
    Responding(Box<Responder>),
    /// After an MSE handshake (either method).
    Ciphered(Box<Ciphers>),
}

/// A connection's two RC4 streams (no-ops when the handshake chose plaintext).
pub struct Ciphers {
    send: CipherHalf,
    recv: CipherHalf,
}

impl Crypto {
    /// An outgoing MSE handshake under way: a failure means the peer may not speak MSE.
    pub fn initiating(&self) -> bool {
        matches!(self, Crypto::Initiating(_))
    }

    /// RC4 runs on the connection (an MSE handshake may also have chosen plaintext).
    pub fn encrypted(&self) -> bool {
        matches!(self, Crypto::Ciphered(c) if c.send.method() == mse::CryptoMethod::Rc4)
    }
}

/// What a connection needs to make or answer a handshake.
pub struct Context<'a> {
    pub info_hash: InfoHash,
    pub encryption: Encryption,
    /// Randomness for this connection's DH key and padding.
    pub seed: [u8; mse::SEED_LEN],
    pub our_handshake: &'a [u8],
}

/// Starts an outgoing connection: an MSE handshake carrying our BitTorrent handshake, or the
/// plain handshake. Appends what to send to `out` and returns the layer.
pub fn start_outgoing(ctx: &Context, plain: bool, out: &mut Vec<u8>) -> Crypto {
    let policy = match ctx.encryption.mse_policy() {
        Some(p) if !plain => p,
        _ => {
            out.extend_from_slice(ctx.our_handshake);
            return Crypto::Plain;
        }
    };
    match Initiator::new(ctx.info_hash, policy, ctx.seed, ctx.our_handshake) {
        Ok(mut init) => {
            while let Some(b) = init.poll_transmit() {
                out.extend_from_slice(&b);
            }
            Crypto::Initiating(Box::new(init))
        }
        // Only an initial payload over 64 KiB fails, and a handshake is 68 bytes.
        Err(_) => {
            out.extend_from_slice(ctx.our_handshake);
            Crypto::Plain
        }
    }
}

pub fn start_incoming(encryption: Encryption) -> Crypto {
    match encryption {
        Encryption::Off => Crypto::Plain,
        _ => Crypto::Undecided(Vec::new()),
    }
}

/// Takes received bytes through the layer: appends the plaintext BitTorrent bytes they yield to
/// `plain` and any handshake bytes to send to `out` (already as they go on the wire).
pub fn receive(
    crypto: &mut Crypto,
    ctx: &Context,
    data: &[u8],
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), CloseReason> {
    match crypto {
        Crypto::Plain => plain.extend_from_slice(data),
        Crypto::Ciphered(c) => {
            let start = plain.len();
            plain.extend_from_slice(data);
            c.recv.apply(&mut plain[start..]);
        }
        Crypto::Undecided(seen) => {
            seen.extend_from_slice(data);
            match mse::classify(seen) {
                Incoming::Undecided => {}
                Incoming::Plaintext => {
                    if ctx.encryption == Encryption::Require {
                        return Err(CloseReason::protocol(
                            "a plain handshake, and we require encryption",
                        ));
                    }
                    plain.extend_from_slice(seen);
                    *crypto = Crypto::Plain;
                }
                Incoming::Encrypted => {
                    let Some(policy) = ctx.encryption.mse_policy() else {
                        return Err(CloseReason::protocol(
                            "an encrypted handshake, and ours are off",
                        ));
                    };
                    let seen = std::mem::take(seen);
                    let resp = Responder::new(&[ctx.info_hash], policy, ctx.seed);
                    *crypto = Crypto::Responding(Box::new(resp));
                    return receive(crypto, ctx, &seen, plain, out);
                }
            }
        }
        Crypto::Initiating(init) => {
            let done = init.handle_data(data).map_err(mse_failed)?;
            while let Some(b) = init.poll_transmit() {
                out.extend_from_slice(&b);
            }
            if let Some(outcome) = done {
                *crypto = finish(outcome, plain);
            }
        }
        Crypto::Responding(resp) => {
            let done = resp.handle_data(data).map_err(mse_failed)?;
            while let Some(b) = resp.poll_transmit() {
                out.extend_from_slice(&b);
            }
            if let Some(outcome) = done {
                *crypto = finish(outcome, plain);
            }
        }
    }
    Ok(())
}

/// The handshake is over: what the peer sent along (its BitTorrent handshake in the initial
/// payload, then whatever followed) is plaintext from here.
fn finish(outcome: Outcome, plain: &mut Vec<u8>) -> Crypto {
    plain.extend_from_slice(&outcome.initial_payload);
    plain.extend_from_slice(&outcome.remainder);
    let (send, recv) = outcome.cipher.split();
    Crypto::Ciphered(Box::new(Ciphers { send, recv }))
}

fn mse_failed(e: MseError) -> CloseReason {
    CloseReason::protocol(format!("encryption handshake failed: {e}"))
}

/// Encrypts the bytes about to leave, past the first `raw` (handshake bytes already on their
/// wire form).
pub fn send(crypto: &mut Crypto, buf: &mut [u8], raw: usize) {
    if let Crypto::Ciphered(c) = crypto {
        if raw < buf.len() {
            c.send.apply(&mut buf[raw..]);
        }
    }
}
