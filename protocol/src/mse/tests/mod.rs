//! Initiator against responder in memory, every byte stream split at random points, and both fed
//! forged, mutated, truncated and random streams.

mod forged;

use super::*;
use crate::wire::Handshake;
use crate::PeerId;
use std::mem;

const IH: InfoHash = InfoHash([0x5a; 20]);

fn seed(n: u64) -> [u8; SEED_LEN] {
    let mut rng = fastrand::Rng::with_seed(n);
    core::array::from_fn(|_| rng.u8(..))
}

/// Whether a `handle_data` result completed the handshake (`Outcome` has no `PartialEq`).
fn done(r: Result<Option<Outcome>, MseError>) -> Result<bool, MseError> {
    r.map(|o| o.is_some())
}

fn bt_handshake(peer: u64) -> Vec<u8> {
    Handshake::new(IH, PeerId::generate(peer)).encode().to_vec()
}

/// Either side, for the shuttle below.
trait Side {
    fn handle(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError>;
    fn transmit(&mut self) -> Option<Vec<u8>>;
}

impl Side for Initiator {
    fn handle(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError> {
        self.handle_data(data)
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
}

impl Side for Responder {
    fn handle(&mut self, data: &[u8]) -> Result<Option<Outcome>, MseError> {
        self.handle_data(data)
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
}

/// One end of the in-memory connection.
struct End<S> {
    hs: S,
    result: Option<Result<Outcome, MseError>>,
    /// Payload sent once established, in the clear.
    post: Vec<u8>,
    /// Payload received after the handshake, decrypted (the outcome's remainder first).
    received: Vec<u8>,
    /// Every byte this end put on the wire.
    wire: Vec<u8>,
}

impl<S: Side> End<S> {
    fn new(hs: S, post: &[u8]) -> Self {
        End {
            hs,
            result: None,
            post: post.to_vec(),
            received: Vec::new(),
            wire: Vec::new(),
        }
    }

    fn outcome(&self) -> &Outcome {
        match &self.result {
            Some(Ok(o)) => o,
            other => panic!("no outcome: {other:?}"),
        }
    }

    fn error(&self) -> Option<&MseError> {
        self.result.as_ref().and_then(|r| r.as_ref().err())
    }

    /// Moves what this end wants to send into `pipe`.
    fn send(&mut self, pipe: &mut Vec<u8>) {
        while let Some(t) = self.hs.transmit() {
            self.wire.extend_from_slice(&t);
            pipe.extend_from_slice(&t);
        }
    }

    /// Feeds a chunk from the peer; returns true if the handshake just completed.
    fn receive(&mut self, chunk: &[u8]) -> bool {
        match &mut self.result {
            Some(Ok(o)) => {
                let mut chunk = chunk.to_vec();
                o.cipher.decrypt(&mut chunk);
                self.received.extend_from_slice(&chunk);
                false
            }
            Some(Err(_)) => false,
            None => match self.hs.handle(chunk) {
                Ok(None) => false,
                Ok(Some(o)) => {
                    self.received.extend_from_slice(&o.remainder);
                    self.result = Some(Ok(o));
                    true
                }
                Err(e) => {
                    self.result = Some(Err(e));
                    false
                }
            },
        }
    }

    /// Once established, encrypts `post` into `pipe`.
    fn send_post(&mut self, pipe: &mut Vec<u8>) {
        if let Some(Ok(o)) = &mut self.result {
            let mut post = mem::take(&mut self.post);
            o.cipher.encrypt(&mut post);
            self.wire.extend_from_slice(&post);
            pipe.extend_from_slice(&post);
        }
    }
}

/// Runs both ends until neither can move, each pipe delivered in chunks of random size.
fn shuttle<A: Side, B: Side>(a: &mut End<A>, b: &mut End<B>, rng: &mut fastrand::Rng) {
    let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
    for _ in 0..100_000 {
        a.send(&mut a_to_b);
        b.send(&mut b_to_a);
        let mut moved = false;
        if !a_to_b.is_empty() {
            let n = rng.usize(1..=a_to_b.len());
            let chunk: Vec<u8> = a_to_b.drain(..n).collect();
            b.send(&mut b_to_a);
            if b.receive(&chunk) {
                b.send(&mut b_to_a);
                b.send_post(&mut b_to_a);
            }
            moved = true;
        }
        if !b_to_a.is_empty() {
            let n = rng.usize(1..=b_to_a.len());
            let chunk: Vec<u8> = b_to_a.drain(..n).collect();
            if a.receive(&chunk) {
                a.send(&mut a_to_b);
                a.send_post(&mut a_to_b);
            }
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("the exchange did not settle");
}

type Pair = (End<Initiator>, End<Responder>);

fn connect(ip: Policy, rp: Policy, known: &[InfoHash], ia: &[u8], n: u64) -> Pair {
    let mut rng = fastrand::Rng::with_seed(n);
    let mut a = End::new(
        Initiator::new(IH, ip, seed(n), ia).unwrap(),
        b"initiator payload",
    );
    let mut b = End::new(
        Responder::new(known, rp, seed(n ^ 0xffff)),
        &bt_handshake(2),
    );
    shuttle(&mut a, &mut b, &mut rng);
    (a, b)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[test]
fn rc4_is_negotiated_and_carries_both_directions() {
    use Policy::*;
    let ia = bt_handshake(1);
    for (n, (ip, rp)) in [
        (PreferRc4, PreferRc4),
        (RequireRc4, PreferRc4),
        (PreferRc4, RequireRc4),
        (RequireRc4, RequireRc4),
    ]
    .into_iter()
    .cycle()
    .take(200)
    .enumerate()
    {
        let (a, b) = connect(ip, rp, &[InfoHash([1; 20]), IH], &ia, n as u64);
        let (ao, bo) = (a.outcome(), b.outcome());
        assert_eq!(
            (ao.method, bo.method),
            (CryptoMethod::Rc4, CryptoMethod::Rc4)
        );
        assert_eq!(ao.cipher.method(), CryptoMethod::Rc4);
        assert_eq!((ao.info_hash, bo.info_hash), (IH, IH));
        assert_eq!(bo.initial_payload, ia, "IA arrives decrypted");
        assert!(ao.initial_payload.is_empty());
        assert_eq!(a.received, bt_handshake(2), "seed {n}");
        assert_eq!(b.received, b"initiator payload", "seed {n}");
        for wire in [&a.wire, &b.wire] {
            assert!(!contains(wire, &IH.0), "the info-hash never shows");
            assert!(!contains(wire, b"BitTorrent protocol"));
            assert!(!contains(wire, b"payload"));
        }
    }
}

#[test]
fn plaintext_is_negotiated_and_only_ia_is_encrypted() {
    use Policy::*;
    let ia = bt_handshake(1);
    for (n, (ip, rp)) in [
        (PlaintextOnly, PreferRc4),
        (PreferRc4, PlaintextOnly),
        (PlaintextOnly, PlaintextOnly),
    ]
    .into_iter()
    .cycle()
    .take(60)
    .enumerate()
    {
        let (a, b) = connect(ip, rp, &[IH], &ia, 1000 + n as u64);
        let (ao, bo) = (a.outcome(), b.outcome());
        let plain = CryptoMethod::Plaintext;
        assert_eq!(
            (ao.method, bo.method, ao.cipher.method()),
            (plain, plain, plain)
        );
        assert_eq!(bo.initial_payload, ia);
        assert_eq!(a.received, bt_handshake(2));
        assert_eq!(b.received, b"initiator payload");
        assert!(
            !contains(&a.wire, &IH.0),
            "IA and the info-hash stay hidden"
        );
        assert!(
            contains(&a.wire, b"initiator payload"),
            "the payload is clear"
        );
        assert!(contains(&b.wire, &bt_handshake(2)));
    }
}

#[test]
fn empty_and_largest_initial_payloads() {
    for (n, ia) in [Vec::new(), vec![7u8; 65535]].into_iter().enumerate() {
        let (_, b) = connect(Policy::PreferRc4, Policy::PreferRc4, &[IH], &ia, n as u64);
        assert_eq!(b.outcome().initial_payload, ia);
    }
    assert_eq!(
        Initiator::new(IH, Policy::PreferRc4, seed(0), &[0; 65536]).err(),
        Some(MseError::InitialPayloadTooLong(65536))
    );
}

#[test]
fn policy_mismatches_name_both_sides() {
    let (a, b) = connect(Policy::PlaintextOnly, Policy::RequireRc4, &[IH], &[], 1);
    let want = MseError::NoCommonMethod {
        provided: 0x01,
        accepted: 0x02,
    };
    assert_eq!(b.error(), Some(&want));
    assert!(a.result.is_none(), "the initiator only sees silence");

    let (_, b) = connect(Policy::RequireRc4, Policy::PlaintextOnly, &[IH], &[], 2);
    let want = MseError::NoCommonMethod {
        provided: 0x02,
        accepted: 0x01,
    };
    assert_eq!(b.error(), Some(&want));
}

#[test]
fn an_info_hash_we_do_not_serve_is_refused() {
    let (_, b) = connect(
        Policy::PreferRc4,
        Policy::PreferRc4,
        &[InfoHash([1; 20])],
        &[],
        3,
    );
    assert_eq!(b.error(), Some(&MseError::UnknownInfoHash));
    let (_, b) = connect(Policy::PreferRc4, Policy::PreferRc4, &[], &[], 4);
    assert_eq!(b.error(), Some(&MseError::UnknownInfoHash));
}

#[test]
fn a_lookup_finds_the_torrent() {
    let mut a = End::new(
        Initiator::new(IH, Policy::PreferRc4, seed(5), &[]).unwrap(),
        b"",
    );
    let lookup = Box::new(|h: &[u8; 20]| (*h == skey_hash(&IH)).then_some(IH));
    let mut b = End::new(
        Responder::with_lookup(lookup, Policy::PreferRc4, seed(6)),
        b"",
    );
    shuttle(&mut a, &mut b, &mut fastrand::Rng::with_seed(5));
    assert_eq!(b.outcome().info_hash, IH);
}

/// A stream cut anywhere waits for more; it never fails or panics.
#[test]
fn truncated_streams_wait() {
    let (a, b) = connect(
        Policy::PreferRc4,
        Policy::PreferRc4,
        &[IH],
        &bt_handshake(1),
        7,
    );
    let to_b = &a.wire[..a.wire.len() - b"initiator payload".len()];
    for cut in 0..to_b.len() {
        let mut r = Responder::new(&[IH], Policy::PreferRc4, seed(7 ^ 0xffff));
        assert_eq!(done(r.handle_data(&to_b[..cut])), Ok(false), "cut at {cut}");
    }
    // The responder's stream only completes against the initiator's own key.
    let mut i = Initiator::new(IH, Policy::PreferRc4, seed(7), &bt_handshake(1)).unwrap();
    let first_post = b.wire.len() - bt_handshake(2).len();
    for cut in 0..first_post {
        let mut i2 = Initiator::new(IH, Policy::PreferRc4, seed(7), &bt_handshake(1)).unwrap();
        assert_eq!(
            done(i2.handle_data(&b.wire[..cut])),
            Ok(false),
            "cut at {cut}"
        );
    }
    assert!(i.handle_data(&b.wire[..first_post]).unwrap().is_some());
    assert_eq!(i.handle_data(b"x").err(), Some(MseError::AlreadyDone));
}

/// Random bytes end in an error once past the padding bounds, in any split, without panicking.
#[test]
fn garbage_fails_within_bounds() {
    let mut rng = fastrand::Rng::with_seed(8);
    for n in 0..300u64 {
        let len = rng.usize(..2000);
        let garbage: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let mut i = Initiator::new(IH, Policy::PreferRc4, seed(n), &[]).unwrap();
        let mut r = Responder::new(&[IH], Policy::PreferRc4, seed(n));
        let (mut ri, mut rr) = (Ok(false), Ok(false));
        let mut rest = &garbage[..];
        while !rest.is_empty() {
            let k = rng.usize(1..=rest.len());
            ri = done(i.handle_data(&rest[..k]));
            rr = done(r.handle_data(&rest[..k]));
            rest = &rest[k..];
        }
        let (vc_bound, sync_bound) = (KEY_LEN + MAX_PAD + 8, KEY_LEN + MAX_PAD + 20);
        assert_eq!(ri.is_err(), len >= vc_bound, "{len} bytes: {ri:?}");
        assert_eq!(rr.is_err(), len >= sync_bound, "{len} bytes: {rr:?}");
        if len >= vc_bound {
            assert_eq!(ri, Err(MseError::VcNotFound));
            assert_eq!(
                done(i.handle_data(&[])),
                Err(MseError::VcNotFound),
                "errors stick"
            );
        }
        if len >= sync_bound {
            assert_eq!(rr, Err(MseError::SyncNotFound));
        }
    }
}

/// A valid exchange with bytes flipped, dropped or repeated: any result but a panic or a hang.
#[test]
fn mutated_streams_never_panic() {
    let mut rng = fastrand::Rng::with_seed(9);
    let (a, b) = connect(
        Policy::PreferRc4,
        Policy::PreferRc4,
        &[IH],
        &bt_handshake(1),
        9,
    );
    for _ in 0..500 {
        for (wire, to_responder) in [(&a.wire, true), (&b.wire, false)] {
            let mut m = wire.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..m.len());
                match rng.u8(..3) {
                    0 => m[at] ^= 1 << rng.u8(..8),
                    1 => {
                        m.drain(at..(at + rng.usize(1..40)).min(m.len()));
                    }
                    _ => m.splice(at..at, [rng.u8(..); 16]).for_each(drop),
                }
            }
            let mut rest = &m[..];
            let mut i = Initiator::new(IH, Policy::PreferRc4, seed(9), &bt_handshake(1)).unwrap();
            let mut r = Responder::new(&[IH], Policy::PreferRc4, seed(9 ^ 0xffff));
            while !rest.is_empty() {
                let k = rng.usize(1..=rest.len());
                let result = if to_responder {
                    r.handle_data(&rest[..k])
                } else {
                    i.handle_data(&rest[..k])
                };
                if !matches!(result, Ok(None)) {
                    break;
                }
                rest = &rest[k..];
            }
        }
    }
}

#[test]
fn policies_select_and_accept() {
    use CryptoMethod::*;
    use Policy::*;
    assert_eq!(PreferRc4.select(0x03), Some(Rc4));
    assert_eq!(PreferRc4.select(0x01), Some(Plaintext));
    assert_eq!(PreferRc4.select(0xf0), None);
    assert_eq!(RequireRc4.select(0x01), None);
    assert_eq!(PlaintextOnly.select(0x03), Some(Plaintext));
    assert_eq!(PlaintextOnly.select(0x02), None);
    assert!(!RequireRc4.accepts_unencrypted_handshake());
    assert!(PreferRc4.accepts_unencrypted_handshake());
}

#[test]
fn classify_tells_plain_handshakes_from_mse() {
    let hs = bt_handshake(1);
    assert_eq!(classify(&hs), Incoming::Plaintext);
    assert_eq!(classify(&hs[..20]), Incoming::Plaintext);
    assert_eq!(classify(&hs[..5]), Incoming::Undecided);
    assert_eq!(classify(&[]), Incoming::Undecided);
    assert_eq!(classify(&[19, b'B', b'x']), Incoming::Encrypted);
    let mut i = Initiator::new(IH, Policy::PreferRc4, seed(14), &[]).unwrap();
    assert_eq!(classify(&i.poll_transmit().unwrap()), Incoming::Encrypted);
}
