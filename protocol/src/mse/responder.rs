//! The side that accepted the connection: answers Ya with Yb and PadB, finds HASH('req1', S)
//! behind PadA, recognises the torrent from the obfuscated SKEY, selects a method and reads IA.

use std::mem;

use rc4::{Rc4, StreamCipher};

use super::cipher::{hash, skey_hash, streams, sync_hash, xor, Cipher};
use super::dh::{KeyPair, KEY_LEN};
use super::{
    be_u16, be_u32, find, push_pad, split_seed, take, CryptoMethod, MseError, Outcome, Policy,
    MAX_PAD, SEED_LEN, VC,
};
use crate::InfoHash;

/// Maps HASH('req2', SKEY) (see [`super::skey_hash`]) to the info-hash we serve under it.
pub type Lookup = Box<dyn FnMut(&[u8; 20]) -> Option<InfoHash> + Send>;

enum State {
    AwaitKey(KeyPair),
    /// Scanning PadA for HASH('req1', S), which is `marker`.
    SyncHash {
        secret: [u8; KEY_LEN],
        marker: [u8; 20],
    },
    /// HASH('req2', SKEY) xor HASH('req3', S), then ENCRYPT(VC).
    AwaitSkey {
        secret: [u8; KEY_LEN],
    },
    AwaitProvide(Streams),
    /// PadC and len(IA).
    AwaitPadC {
        streams: Streams,
        method: CryptoMethod,
        len: usize,
    },
    AwaitIa {
        streams: Streams,
        method: CryptoMethod,
        len: usize,
    },
    Done,
    Failed(MseError),
}

struct Streams {
    info_hash: InfoHash,
    send: Rc4,
    recv: Rc4,
}

/// An incoming MSE handshake.
pub struct Responder {
    lookup: Lookup,
    policy: Policy,
    rng: fastrand::Rng,
    state: State,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

impl Responder {
    /// Answers for any of `info_hashes`. `seed`: see [`super::SEED_LEN`].
    pub fn new(info_hashes: &[InfoHash], policy: Policy, seed: [u8; SEED_LEN]) -> Self {
        let known: Vec<([u8; 20], InfoHash)> =
            info_hashes.iter().map(|ih| (skey_hash(ih), *ih)).collect();
        let lookup = move |h: &[u8; 20]| known.iter().find(|(k, _)| k == h).map(|(_, ih)| *ih);
        Self::with_lookup(Box::new(lookup), policy, seed)
    }

    /// Answers for whatever `lookup` recognises, for a session whose torrents come and go.
    pub fn with_lookup(lookup: Lookup, policy: Policy, seed: [u8; SEED_LEN]) -> Self {
        let (private, rng) = split_seed(&seed);
        Responder {
            lookup,
            policy,
            rng,
            state: State::AwaitKey(KeyPair::new(private)),
            inbox: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Bytes to send to the initiator, if any. Drain it after every `handle_data`, the one that
    /// returns the [`Outcome`] included: message 4 may still be here then.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.outbox.is_empty()).then(|| mem::take(&mut self.outbox))
    }

    /// Feeds bytes from the initiator, from the first byte of the connection on. `Ok(Some(_))`
    /// once the handshake is complete; after an error the connection is to be closed (later
    /// calls repeat the error).
    pub fn handle_data(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Done => return Err(MseError::AlreadyDone),
            _ => {}
        }
        self.inbox.extend_from_slice(data);
        self.advance().inspect_err(|e| {
            self.state = State::Failed(e.clone());
            self.inbox = Vec::new();
        })
    }

    fn advance(&mut self) -> Result<Option<Outcome>, MseError> {
        loop {
            // Each arm puts the state back or moves it on; `Done` is the placeholder between.
            self.state = match mem::replace(&mut self.state, State::Done) {
                State::AwaitKey(keys) => {
                    let Some(ya) = take(&mut self.inbox, KEY_LEN) else {
                        self.state = State::AwaitKey(keys);
                        return Ok(None);
                    };
                    let ya: [u8; KEY_LEN] = ya.try_into().expect("took KEY_LEN bytes");
                    self.outbox.extend_from_slice(keys.public());
                    push_pad(&mut self.outbox, &mut self.rng, true);
                    let secret = keys.shared_secret(&ya);
                    State::SyncHash {
                        secret,
                        marker: sync_hash(&secret),
                    }
                }
                State::SyncHash { secret, marker } => {
                    // HASH('req1', S) starts within PadA: at most 512 bytes after Ya.
                    let window = self.inbox.len().min(MAX_PAD + marker.len());
                    match find(&self.inbox[..window], &marker) {
                        Some(at) => {
                            self.inbox.drain(..at + marker.len());
                            State::AwaitSkey { secret }
                        }
                        None if window == MAX_PAD + marker.len() => {
                            return Err(MseError::SyncNotFound)
                        }
                        None => {
                            self.state = State::SyncHash { secret, marker };
                            return Ok(None);
                        }
                    }
                }
                State::AwaitSkey { secret } => {
                    let Some(field) = take(&mut self.inbox, 20 + VC.len()) else {
                        self.state = State::AwaitSkey { secret };
                        return Ok(None);
                    };
                    let obfuscated: [u8; 20] = field[..20].try_into().expect("20 of 28 bytes");
                    let wanted = xor(&obfuscated, &hash(&[b"req3", &secret]));
                    let info_hash = (self.lookup)(&wanted).ok_or(MseError::UnknownInfoHash)?;
                    let (send, mut recv) = streams(&secret, &info_hash, false);
                    let mut vc = [0u8; 8];
                    vc.copy_from_slice(&field[20..]);
                    recv.apply_keystream(&mut vc);
                    if vc != VC {
                        return Err(MseError::BadVerificationConstant);
                    }
                    State::AwaitProvide(Streams {
                        info_hash,
                        send,
                        recv,
                    })
                }
                State::AwaitProvide(mut streams) => {
                    let Some(mut field) = take(&mut self.inbox, 6) else {
                        self.state = State::AwaitProvide(streams);
                        return Ok(None);
                    };
                    streams.recv.apply_keystream(&mut field);
                    let provided = be_u32(&field);
                    let method = self
                        .policy
                        .select(provided)
                        .ok_or(MseError::NoCommonMethod {
                            provided,
                            accepted: self.policy.provide(),
                        })?;
                    let len = be_u16(&field[4..]);
                    if usize::from(len) > MAX_PAD {
                        return Err(MseError::PadTooLong(len));
                    }
                    // Our choice can go now; the initiator waits for it before its payload.
                    self.send_fourth_message(&mut streams.send, method);
                    State::AwaitPadC {
                        streams,
                        method,
                        len: len.into(),
                    }
                }
                State::AwaitPadC {
                    mut streams,
                    method,
                    len,
                } => {
                    let Some(mut field) = take(&mut self.inbox, len + 2) else {
                        self.state = State::AwaitPadC {
                            streams,
                            method,
                            len,
                        };
                        return Ok(None);
                    };
                    streams.recv.apply_keystream(&mut field);
                    State::AwaitIa {
                        streams,
                        method,
                        len: be_u16(&field[len..]).into(),
                    }
                }
                State::AwaitIa {
                    mut streams,
                    method,
                    len,
                } => {
                    let Some(mut initial_payload) = take(&mut self.inbox, len) else {
                        self.state = State::AwaitIa {
                            streams,
                            method,
                            len,
                        };
                        return Ok(None);
                    };
                    // IA is RC4 whatever was selected: the initiator could not know yet.
                    streams.recv.apply_keystream(&mut initial_payload);
                    let mut cipher = Cipher::new(method, streams.send, streams.recv);
                    let mut remainder = mem::take(&mut self.inbox);
                    cipher.decrypt(&mut remainder);
                    return Ok(Some(Outcome {
                        method,
                        info_hash: streams.info_hash,
                        initial_payload,
                        remainder,
                        cipher,
                    }));
                }
                State::Done | State::Failed(_) => unreachable!("handle_data returns first"),
            };
        }
    }

    fn send_fourth_message(&mut self, send: &mut Rc4, method: CryptoMethod) {
        let start = self.outbox.len();
        self.outbox.extend_from_slice(&VC);
        self.outbox.extend_from_slice(&method.bits().to_be_bytes());
        let len_at = self.outbox.len();
        self.outbox.extend_from_slice(&[0, 0]);
        let pad_len = push_pad(&mut self.outbox, &mut self.rng, false);
        self.outbox[len_at..len_at + 2].copy_from_slice(&pad_len.to_be_bytes());
        send.apply_keystream(&mut self.outbox[start..]);
    }
}
