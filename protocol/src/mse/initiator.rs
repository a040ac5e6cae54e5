//! The side that opens the connection: sends Ya and PadA at once, message 3 as soon as Yb is in,
//! then finds the responder's encrypted VC behind PadB and reads its choice.

use std::mem;

use rc4::{Rc4, StreamCipher};

use super::cipher::{obfuscated_skey, skey_hash, streams, sync_hash, Cipher};
use super::dh::{KeyPair, KEY_LEN};
use super::{
    be_u16, be_u32, find, push_pad, split_seed, take, CryptoMethod, MseError, Outcome, Policy,
    MAX_PAD, SEED_LEN, VC,
};
use crate::InfoHash;

enum State {
    AwaitKey(KeyPair),
    /// Scanning PadB for ENCRYPT(VC), whose bytes are `marker`.
    SyncVc {
        marker: [u8; 8],
        send: Rc4,
        recv: Rc4,
    },
    AwaitSelect {
        send: Rc4,
        recv: Rc4,
    },
    AwaitPadD {
        method: CryptoMethod,
        len: usize,
        send: Rc4,
        recv: Rc4,
    },
    Done,
    Failed(MseError),
}

/// An outgoing MSE handshake.
pub struct Initiator {
    info_hash: InfoHash,
    policy: Policy,
    rng: fastrand::Rng,
    /// IA, until message 3 carries it.
    initial_payload: Vec<u8>,
    state: State,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

impl Initiator {
    /// Starts a handshake for `info_hash`; Ya and PadA are ready in [`Initiator::poll_transmit`]
    /// at once. `initial_payload` (IA) goes in message 3, typically our BitTorrent handshake; it
    /// must fit in 65535 bytes. `seed`: see [`super::SEED_LEN`].
    pub fn new(
        info_hash: InfoHash,
        policy: Policy,
        seed: [u8; SEED_LEN],
        initial_payload: &[u8],
    ) -> Result<Self, MseError> {
        if initial_payload.len() > usize::from(u16::MAX) {
            return Err(MseError::InitialPayloadTooLong(initial_payload.len()));
        }
        let (private, mut rng) = split_seed(&seed);
        let keys = KeyPair::new(private);
        let mut outbox = keys.public().to_vec();
        push_pad(&mut outbox, &mut rng, true);
        Ok(Initiator {
            info_hash,
            policy,
            rng,
            initial_payload: initial_payload.to_vec(),
            state: State::AwaitKey(keys),
            inbox: Vec::new(),
            outbox,
        })
    }

    /// Bytes to send to the responder, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.outbox.is_empty()).then(|| mem::take(&mut self.outbox))
    }

    /// Feeds bytes from the responder. `Ok(Some(_))` once the handshake is complete; after an
    /// error the connection is to be closed (later calls repeat the error).
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
                    let Some(yb) = take(&mut self.inbox, KEY_LEN) else {
                        self.state = State::AwaitKey(keys);
                        return Ok(None);
                    };
                    let yb: [u8; KEY_LEN] = yb.try_into().expect("took KEY_LEN bytes");
                    self.send_third_message(&keys.shared_secret(&yb))
                }
                State::SyncVc { marker, send, recv } => {
                    // ENCRYPT(VC) starts within PadB: at most 512 bytes after Yb.
                    let window = self.inbox.len().min(MAX_PAD + VC.len());
                    match find(&self.inbox[..window], &marker) {
                        Some(at) => {
                            self.inbox.drain(..at + VC.len());
                            State::AwaitSelect { send, recv }
                        }
                        None if window == MAX_PAD + VC.len() => return Err(MseError::VcNotFound),
                        None => {
                            self.state = State::SyncVc { marker, send, recv };
                            return Ok(None);
                        }
                    }
                }
                State::AwaitSelect { send, mut recv } => {
                    let Some(mut field) = take(&mut self.inbox, 6) else {
                        self.state = State::AwaitSelect { send, recv };
                        return Ok(None);
                    };
                    recv.apply_keystream(&mut field);
                    let selected = be_u32(&field);
                    let provided = self.policy.provide();
                    let method = [CryptoMethod::Plaintext, CryptoMethod::Rc4]
                        .into_iter()
                        .find(|m| m.bits() == selected && selected & provided != 0)
                        .ok_or(MseError::BadSelect { selected, provided })?;
                    let len = be_u16(&field[4..]);
                    if usize::from(len) > MAX_PAD {
                        return Err(MseError::PadTooLong(len));
                    }
                    State::AwaitPadD {
                        method,
                        len: len.into(),
                        send,
                        recv,
                    }
                }
                State::AwaitPadD {
                    method,
                    len,
                    send,
                    mut recv,
                } => {
                    let Some(mut pad) = take(&mut self.inbox, len) else {
                        self.state = State::AwaitPadD {
                            method,
                            len,
                            send,
                            recv,
                        };
                        return Ok(None);
                    };
                    // Only to keep the stream in step: PadD means nothing.
                    recv.apply_keystream(&mut pad);
                    let mut cipher = Cipher::new(method, send, recv);
                    let mut remainder = mem::take(&mut self.inbox);
                    cipher.decrypt(&mut remainder);
                    return Ok(Some(Outcome {
                        method,
                        info_hash: self.info_hash,
                        initial_payload: Vec::new(),
                        remainder,
                        cipher,
                    }));
                }
                State::Done | State::Failed(_) => unreachable!("handle_data returns first"),
            };
        }
    }

    /// Queues message 3 and returns the state that waits for the responder's VC.
    fn send_third_message(&mut self, secret: &[u8; KEY_LEN]) -> State {
        let (mut send, mut recv) = streams(secret, &self.info_hash, true);
        self.outbox.extend_from_slice(&sync_hash(secret));
        self.outbox
            .extend_from_slice(&obfuscated_skey(secret, &skey_hash(&self.info_hash)));
        let start = self.outbox.len();
        self.outbox.extend_from_slice(&VC);
        self.outbox
            .extend_from_slice(&self.policy.provide().to_be_bytes());
        let len_at = self.outbox.len();
        self.outbox.extend_from_slice(&[0, 0]);
        let pad_len = push_pad(&mut self.outbox, &mut self.rng, false);
        self.outbox[len_at..len_at + 2].copy_from_slice(&pad_len.to_be_bytes());
        let ia = mem::take(&mut self.initial_payload);
        // `new` checked that IA fits.
        self.outbox
            .extend_from_slice(&(ia.len() as u16).to_be_bytes());
        self.outbox.extend_from_slice(&ia);
        send.apply_keystream(&mut self.outbox[start..]);

        let mut marker = VC;
        recv.apply_keystream(&mut marker);
        State::SyncVc { marker, send, recv }
    }
}
