//! The Diffie-Hellman exchange of MSE: the 768-bit prime P of the spec, generator 2, and 160-bit
//! private exponents.
//!
//! Exponentiation is constant-time (crypto-bigint's Montgomery form), so the time taken says
//! nothing about our private key.

use crypto_bigint::modular::ConstMontyForm;
use crypto_bigint::zeroize::Zeroize;
use crypto_bigint::{U192, U768};

/// Bytes of a public key or shared secret on the wire: big-endian, left-padded with zeros.
pub const KEY_LEN: usize = 96;
/// Bytes of a private exponent (160 bits, as the spec asks).
pub const PRIVATE_LEN: usize = 20;

crypto_bigint::const_monty_params!(
    Prime,
    U768,
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    "The MSE prime P (768 bits)."
);

type Residue = ConstMontyForm<Prime, { U768::LIMBS }>;

/// Our half of the exchange.
pub(crate) struct KeyPair {
    private: U192,
    public: [u8; KEY_LEN],
}

impl KeyPair {
    /// `private` must come from a cryptographic source. Its top bit is set so that the exponent
    /// has its full 160 bits: a driver bug that hands in zeros then still gives no trivial key.
    pub(crate) fn new(private: [u8; PRIVATE_LEN]) -> Self {
        let mut wide = [0u8; U192::BYTES];
        wide[U192::BYTES - PRIVATE_LEN..].copy_from_slice(&private);
        wide[U192::BYTES - PRIVATE_LEN] |= 0x80;
        let private = U192::from_be_slice(&wide);
        wide.zeroize();
        let public = encode(&Residue::new(&U768::from_u8(2)).pow(&private).retrieve());
        KeyPair { private, public }
    }

    pub(crate) fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// S = Y^x mod P from the peer's public key. Any 96 bytes are accepted: a value at or above P
    /// is reduced, and a degenerate key (0, 1, P-1) only weakens the peer's own privacy, which a
    /// peer can throw away in many other ways.
    pub(crate) fn shared_secret(&self, peer_public: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        let y = U768::from_be_slice(peer_public);
        encode(&Residue::new(&y).pow(&self.private).retrieve())
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

fn encode(n: &U768) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(n.to_be_bytes().as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Python computes the same with its own big integers:
    /// ```python
    /// P = int("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2251"
    ///         "4A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C"
    ///         "42E9A63A36210000000000090563", 16)
    /// x = int.from_bytes(bytes(range(1, 21)), "big") | (1 << 159)
    /// y = int.from_bytes(bytes(range(101, 121)), "big") | (1 << 159)
    /// pow(2, x, P).to_bytes(96, "big").hex()
    /// pow(pow(2, y, P), x, P).to_bytes(96, "big").hex()
    /// ```
    #[test]
    fn public_key_and_secret_match_python() {
        let a = KeyPair::new(core::array::from_fn(|i| i as u8 + 1));
        let b = KeyPair::new(core::array::from_fn(|i| i as u8 + 101));
        assert_eq!(a.public().as_slice(), hex(PUBLIC_A).as_slice());
        let s = a.shared_secret(b.public());
        assert_eq!(s.as_slice(), hex(SECRET_AB).as_slice());
        assert_eq!(b.shared_secret(a.public()), s);
    }

    #[test]
    fn degenerate_peer_keys_do_not_panic() {
        let a = KeyPair::new([7; PRIVATE_LEN]);
        assert_eq!(a.shared_secret(&[0; KEY_LEN]), [0; KEY_LEN]);
        let mut one = [0; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        assert_eq!(a.shared_secret(&one), one);
        // Above P: reduced, not refused.
        let _ = a.shared_secret(&[0xff; KEY_LEN]);
    }

    const PUBLIC_A: &str = concat!(
        "e936f34224b7ec29a5a97221f10e8b811e37ba9a7bcb0b808323933052defe43",
        "1512848565898126c41d10c7dd4b563cb5b6e48eabdfe68b32a0911a82a54cc6",
        "81a9ba8f61e26653ed1e244b06219cdefb628c0b5bfa4fd75df781d6ef2a81f3"
    );
    const SECRET_AB: &str = concat!(
        "5917579ce2d55052a2a452b675b39e7ff3070e196554ccd1da9b0f129b43e29e",
        "3e0eb6781f69fc6fa75fcff637015dd4996193e8198392c261797fed789dc882",
        "b4e48dd0951d5f029eb0c78ae51cf876d9ba390097d0228aae05fc7365314c44"
    );
}
