//! Peers built by hand, to put padding at its longest and fields out of range.

use super::{done, seed, IH};
use crate::mse::cipher::{obfuscated_skey, streams, sync_hash};
use crate::mse::dh::KeyPair;
use crate::mse::*;
use rc4::StreamCipher;

/// Stands in for a peer whose padding lengths and fields the test chooses.
struct Forged {
    keys: KeyPair,
}

impl Forged {
    fn new() -> Self {
        Forged {
            keys: KeyPair::new([3; 20]),
        }
    }

    /// Yb, PadB of `pad` bytes, ENCRYPT(VC, select, len(PadD), PadD) for an initiator whose Ya
    /// starts `ya`.
    fn responder_stream(&self, ya: &[u8], pad: usize, select: u32, pad_d: u16) -> Vec<u8> {
        let secret = self.keys.shared_secret(ya[..KEY_LEN].try_into().unwrap());
        let (mut send, _) = streams(&secret, &IH, false);
        let mut out = self.keys.public().to_vec();
        out.resize(out.len() + pad, 0xee);
        let mut tail = VC.to_vec();
        tail.extend_from_slice(&select.to_be_bytes());
        tail.extend_from_slice(&pad_d.to_be_bytes());
        send.apply_keystream(&mut tail);
        out.extend_from_slice(&tail);
        out
    }

    /// Ya, PadA of `pad` bytes, then message 3 with the given fields (VC as `vc`).
    fn initiator_stream(&self, yb: &[u8], pad: usize, vc: [u8; 8], provide: u32) -> Vec<u8> {
        let secret = self.keys.shared_secret(yb[..KEY_LEN].try_into().unwrap());
        let (mut send, _) = streams(&secret, &IH, true);
        let mut out = vec![0xee; pad];
        out.extend_from_slice(&sync_hash(&secret));
        out.extend_from_slice(&obfuscated_skey(&secret, &skey_hash(&IH)));
        let mut tail = vc.to_vec();
        tail.extend_from_slice(&provide.to_be_bytes());
        tail.extend_from_slice(&[0, 0, 0, 0]);
        send.apply_keystream(&mut tail);
        out.extend_from_slice(&tail);
        out
    }
}

#[test]
fn the_initiator_finds_vc_behind_the_longest_padding_and_no_further() {
    let forged = Forged::new();
    for (pad, ok) in [(0, true), (MAX_PAD, true), (MAX_PAD + 1, false)] {
        let mut i = Initiator::new(IH, Policy::PreferRc4, seed(10), &[]).unwrap();
        let ya = i.poll_transmit().unwrap();
        let stream = forged.responder_stream(&ya, pad, 0x02, 0);
        let result = i.handle_data(&stream);
        if ok {
            assert_eq!(result.unwrap().unwrap().method, CryptoMethod::Rc4);
        } else {
            assert_eq!(result.err(), Some(MseError::VcNotFound));
        }
    }
}

#[test]
fn the_initiator_refuses_a_bad_choice() {
    let forged = Forged::new();
    let cases = [
        (
            Policy::RequireRc4,
            0x01,
            0,
            MseError::BadSelect {
                selected: 0x01,
                provided: 0x02,
            },
        ),
        (
            Policy::PreferRc4,
            0x03,
            0,
            MseError::BadSelect {
                selected: 0x03,
                provided: 0x03,
            },
        ),
        (
            Policy::PreferRc4,
            0x00,
            0,
            MseError::BadSelect {
                selected: 0,
                provided: 0x03,
            },
        ),
        (Policy::PreferRc4, 0x02, 513, MseError::PadTooLong(513)),
        (
            Policy::PreferRc4,
            0x02,
            u16::MAX,
            MseError::PadTooLong(u16::MAX),
        ),
    ];
    for (policy, select, pad_d, want) in cases {
        let mut i = Initiator::new(IH, policy, seed(11), &[]).unwrap();
        let ya = i.poll_transmit().unwrap();
        let stream = forged.responder_stream(&ya, 5, select, pad_d);
        assert_eq!(i.handle_data(&stream).err(), Some(want));
    }
}

#[test]
fn the_responder_checks_sync_vc_and_lengths() {
    let forged = Forged::new();
    let cases = [
        (MAX_PAD, [0; 8], 0x02, None),
        (MAX_PAD + 1, [0; 8], 0x02, Some(MseError::SyncNotFound)),
        (
            0,
            [0, 0, 0, 0, 0, 0, 0, 1],
            0x02,
            Some(MseError::BadVerificationConstant),
        ),
        (
            0,
            [0; 8],
            0x04,
            Some(MseError::NoCommonMethod {
                provided: 0x04,
                accepted: 0x03,
            }),
        ),
    ];
    for (pad, vc, provide, want) in cases {
        let mut r = Responder::new(&[IH], Policy::PreferRc4, seed(12));
        let mut ya = forged.keys.public().to_vec();
        assert_eq!(done(r.handle_data(&ya)), Ok(false));
        let yb = r.poll_transmit().unwrap();
        ya = forged.initiator_stream(&yb, pad, vc, provide);
        let result = r.handle_data(&ya);
        match want {
            None => assert_eq!(result.unwrap().unwrap().method, CryptoMethod::Rc4),
            Some(e) => assert_eq!(result.err(), Some(e)),
        }
    }
}

#[test]
fn the_responder_refuses_a_long_pad_c() {
    let forged = Forged::new();
    let mut r = Responder::new(&[IH], Policy::PreferRc4, seed(13));
    assert_eq!(done(r.handle_data(forged.keys.public())), Ok(false));
    let yb = r.poll_transmit().unwrap();
    let secret = forged.keys.shared_secret(yb[..KEY_LEN].try_into().unwrap());
    let (mut send, _) = streams(&secret, &IH, true);
    let mut m = sync_hash(&secret).to_vec();
    m.extend_from_slice(&obfuscated_skey(&secret, &skey_hash(&IH)));
    let mut tail = vec![0; 8];
    tail.extend_from_slice(&[0, 0, 0, 2, 0x02, 0x01]);
    send.apply_keystream(&mut tail);
    m.extend_from_slice(&tail);
    assert_eq!(done(r.handle_data(&m)), Err(MseError::PadTooLong(0x0201)));
    assert_eq!(done(r.handle_data(&[1])), Err(MseError::PadTooLong(0x0201)));
}
