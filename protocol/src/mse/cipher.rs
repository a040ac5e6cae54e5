//! The hashes of the MSE handshake and the RC4 streams of an established connection.

use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

use super::dh::KEY_LEN;
use super::CryptoMethod;
use crate::InfoHash;

/// RC4's first keystream bytes leak key material (the Fluhrer-Mantin-Shamir bias); the spec drops
/// this many from each direction before the first byte is encrypted.
const DISCARD: usize = 1024;

/// SHA-1 of the concatenated parts: every `HASH(...)` of the spec.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HASH('req2', SKEY): what the responder recovers from the third message, to find the torrent.
/// A session serving many torrents keeps a map from this to the info-hash and answers
/// [`super::Responder::with_lookup`] from it.
pub fn skey_hash(info_hash: &InfoHash) -> [u8; 20] {
    hash(&[b"req2", &info_hash.0])
}

/// HASH('req1', S): the initiator's synchronisation marker.
pub(crate) fn sync_hash(secret: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req1", secret])
}

/// HASH('req2', SKEY) xor HASH('req3', S): the info-hash, hidden from anyone without S.
pub(crate) fn obfuscated_skey(secret: &[u8; KEY_LEN], skey_hash: &[u8; 20]) -> [u8; 20] {
    xor(skey_hash, &hash(&[b"req3", secret]))
}

pub(crate) fn xor(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

/// The two RC4 streams of a connection, `(send, recv)` for our side: the initiator sends with
/// HASH('keyA', S, SKEY) and receives with HASH('keyB', S, SKEY), the responder the other way.
pub(crate) fn streams(secret: &[u8; KEY_LEN], info_hash: &InfoHash, initiator: bool) -> (Rc4, Rc4) {
    let a = keystream(&hash(&[b"keyA", secret, &info_hash.0]));
    let b = keystream(&hash(&[b"keyB", secret, &info_hash.0]));
    if initiator {
        (a, b)
    } else {
        (b, a)
    }
}

/// RC4 keyed with `key`, its first 1024 bytes already spent.
fn keystream(key: &[u8; 20]) -> Rc4 {
    let mut rc4 = Rc4::new_from_slice(key).expect("RC4 takes 1 to 256 key bytes; this is 20");
    rc4.apply_keystream(&mut [0u8; DISCARD]);
    rc4
}

/// One direction of a connection after the handshake: RC4 or nothing.
pub struct CipherHalf(Option<Rc4>);

impl CipherHalf {
    /// Encrypts or decrypts `buf` in place (RC4 is its own inverse) and moves the stream on by
    /// its length; a plaintext half leaves it as is. Every byte of the direction must pass through
    /// here exactly once and in order.
    pub fn apply(&mut self, buf: &mut [u8]) {
        if let Some(rc4) = &mut self.0 {
            rc4.apply_keystream(buf);
        }
    }

    pub fn method(&self) -> CryptoMethod {
        match self.0 {
            Some(_) => CryptoMethod::Rc4,
            None => CryptoMethod::Plaintext,
        }
    }
}

impl core::fmt::Debug for CipherHalf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key stream's state.
        write!(f, "CipherHalf({:?})", self.method())
    }
}

/// What sits between the socket and the wire decoder once a handshake is done: `encrypt` what
/// goes out, `decrypt` what comes in. With plaintext selected both are no-ops.
#[derive(Debug)]
pub struct Cipher {
    send: CipherHalf,
    recv: CipherHalf,
}

impl Cipher {
    pub(crate) fn new(method: CryptoMethod, send: Rc4, recv: Rc4) -> Self {
        match method {
            CryptoMethod::Rc4 => Cipher {
                send: CipherHalf(Some(send)),
                recv: CipherHalf(Some(recv)),
            },
            CryptoMethod::Plaintext => Cipher {
                send: CipherHalf(None),
                recv: CipherHalf(None),
            },
        }
    }

    pub fn method(&self) -> CryptoMethod {
        self.send.method()
    }

    /// Encrypts bytes about to be sent, in place.
    pub fn encrypt(&mut self, buf: &mut [u8]) {
        self.send.apply(buf);
    }

    /// Decrypts bytes just received, in place.
    pub fn decrypt(&mut self, buf: &mut [u8]) {
        self.recv.apply(buf);
    }

    /// `(send, recv)`, for a driver that reads and writes the socket from different tasks.
    pub fn split(self) -> (CipherHalf, CipherHalf) {
        (self.send, self.recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The handshake's hashes and both RC4-drop-1024 streams for S = the secret of the test in
    /// `dh.rs` and SKEY = 20 bytes of 0xAA, as computed by this Python, with RC4 written out by
    /// hand and checked against the `cryptography` package's ARC4 (which agreed):
    /// ```python
    /// def rc4(key, n):
    ///     S = list(range(256)); j = 0
    ///     for i in range(256):
    ///         j = (j + S[i] + key[i % len(key)]) % 256; S[i], S[j] = S[j], S[i]
    ///     i = j = 0; out = bytearray()
    ///     for _ in range(n):
    ///         i = (i + 1) % 256; j = (j + S[i]) % 256; S[i], S[j] = S[j], S[i]
    ///         out.append(S[(S[i] + S[j]) % 256])
    ///     return bytes(out)
    /// assert rc4(bytes([1, 2, 3, 4, 5]), 16).hex() == "b2396305f03dc027ccc3524a0a1118a8"  # RFC 6229
    /// h = lambda *p: hashlib.sha1(b"".join(p)).digest()
    /// h(b"req1", S); xor(h(b"req2", SKEY), h(b"req3", S))
    /// for name in (b"keyA", b"keyB"): rc4(h(name, S, SKEY), 1024 + 16)[1024:]
    /// ```
    #[test]
    fn hashes_and_keystreams_match_python() {
        let secret: [u8; KEY_LEN] = unhex(concat!(
            "5917579ce2d55052a2a452b675b39e7ff3070e196554ccd1da9b0f129b43e29e",
            "3e0eb6781f69fc6fa75fcff637015dd4996193e8198392c261797fed789dc882",
            "b4e48dd0951d5f029eb0c78ae51cf876d9ba390097d0228aae05fc7365314c44"
        ))
        .try_into()
        .unwrap();
        let ih = InfoHash([0xAA; 20]);
        assert_eq!(
            sync_hash(&secret).to_vec(),
            unhex("8f2f3a345de4f8434a1dc400854a15d0d1b8c762")
        );
        assert_eq!(
            obfuscated_skey(&secret, &skey_hash(&ih)).to_vec(),
            unhex("663c7f953f2ff107f1369ba03b0cc2ebb0122d67")
        );
        let (mut a_send, mut a_recv) = streams(&secret, &ih, true);
        let mut block = [0u8; 16];
        a_send.apply_keystream(&mut block);
        assert_eq!(block.to_vec(), unhex("96085ec6efa4ed6a1917a8fda14c7af6"));
        let mut block = [0u8; 16];
        a_recv.apply_keystream(&mut block);
        assert_eq!(block.to_vec(), unhex("4ff4b9c08e2ea1a2107ec428199212bc"));
    }

    #[test]
    fn plain_rc4_matches_rfc_6229() {
        let mut rc4 = Rc4::new_from_slice(&[1, 2, 3, 4, 5]).unwrap();
        let mut block = [0u8; 16];
        rc4.apply_keystream(&mut block);
        assert_eq!(block.to_vec(), unhex("b2396305f03dc027ccc3524a0a1118a8"));
    }

    #[test]
    fn the_two_sides_mirror_each_other() {
        let secret = [9u8; KEY_LEN];
        let ih = InfoHash([1; 20]);
        let (s, r) = streams(&secret, &ih, true);
        let mut initiator = Cipher::new(CryptoMethod::Rc4, s, r);
        let (s, r) = streams(&secret, &ih, false);
        let mut responder = Cipher::new(CryptoMethod::Rc4, s, r);
        for len in [1usize, 7, 300, 0, 5000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = plain.clone();
            initiator.encrypt(&mut buf);
            if len > 8 {
                assert_ne!(buf, plain);
            }
            responder.decrypt(&mut buf);
            assert_eq!(buf, plain);
            responder.encrypt(&mut buf);
            initiator.decrypt(&mut buf);
            assert_eq!(buf, plain);
        }
        let (s, r) = streams(&secret, &ih, true);
        let mut plain = Cipher::new(CryptoMethod::Plaintext, s, r);
        let mut buf = *b"hello";
        plain.encrypt(&mut buf);
        plain.decrypt(&mut buf);
        assert_eq!(&buf, b"hello");
        assert_eq!(plain.method(), CryptoMethod::Plaintext);
    }
}
