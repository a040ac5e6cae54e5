//! announce_peer tokens (BEP 5): a get_peers answer carries a token bound to the querier's IP,
//! and an announce_peer is taken only with a token we gave that IP recently. The token is a hash
//! of the IP and a secret; the secret changes every five minutes and the one before it is still
//! honoured, so a token lives five to ten minutes and nothing per querier is stored.

use sha1::{Digest, Sha1};
use std::net::IpAddr;

pub const ROTATE_MS: u64 = 5 * 60_000;
pub const TOKEN_LEN: usize = 8;

pub struct Tokens {
    rng: fastrand::Rng,
    current: [u8; 16],
    previous: [u8; 16],
    /// When `current` was made; rotation is lazy, on the next use after its five minutes.
    since: u64,
}

impl Tokens {
    pub fn new(seed: u64) -> Tokens {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut current = [0u8; 16];
        let mut previous = [0u8; 16];
        rng.fill(&mut current);
        rng.fill(&mut previous);
        Tokens {
            rng,
            current,
            previous,
            since: 0,
        }
    }

    /// The token for `ip` now.
    pub fn issue(&mut self, ip: IpAddr, now: u64) -> [u8; TOKEN_LEN] {
        self.rotate(now);
        token(&self.current, ip)
    }

    /// Whether `token` was issued to `ip` under the current or the previous secret.
    pub fn check(&mut self, ip: IpAddr, given: &[u8], now: u64) -> bool {
        self.rotate(now);
        given == token(&self.current, ip) || given == token(&self.previous, ip)
    }

    fn rotate(&mut self, now: u64) {
        let periods = now.saturating_sub(self.since) / ROTATE_MS;
        if periods == 0 {
            return;
        }
        if periods == 1 {
            self.previous = self.current;
        } else {
            // Both secrets are older than ten minutes: no token given out is still good.
            self.rng.fill(&mut self.previous);
        }
        self.rng.fill(&mut self.current);
        self.since = self.since.saturating_add(periods.saturating_mul(ROTATE_MS));
    }
}

fn token(secret: &[u8; 16], ip: IpAddr) -> [u8; TOKEN_LEN] {
    let mut h = Sha1::new();
    h.update(secret);
    match ip {
        IpAddr::V4(ip) => h.update(ip.octets()),
        IpAddr::V6(ip) => h.update(ip.octets()),
    }
    let digest = h.finalize();
    let mut out = [0u8; TOKEN_LEN];
    out.copy_from_slice(&digest[..TOKEN_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_token_is_bound_to_its_ip() {
        let mut t = Tokens::new(1);
        let tok = t.issue(A, 1_000);
        assert!(t.check(A, &tok, 1_000));
        assert!(!t.check(B, &tok, 1_000));
        assert!(!t.check(A, &tok[..4], 1_000));
        assert!(!t.check(A, b"", 1_000));
    }

    #[test]
    fn a_token_outlives_one_rotation_but_not_two() {
        let mut t = Tokens::new(2);
        let tok = t.issue(A, 4 * 60_000);
        assert!(t.check(A, &tok, ROTATE_MS), "after one rotation");
        assert!(t.check(A, &tok, 2 * ROTATE_MS - 1));
        assert!(!t.check(A, &tok, 2 * ROTATE_MS), "after two");
        let tok = t.issue(A, 2 * ROTATE_MS);
        assert!(
            !t.check(A, &tok, 100 * ROTATE_MS),
            "a long silence forgets both"
        );
        let tok = t.issue(A, 100 * ROTATE_MS);
        assert!(t.check(A, &tok, 100 * ROTATE_MS));
    }

    #[test]
    fn tokens_differ_between_nodes() {
        let tok1 = Tokens::new(1).issue(A, 0);
        let tok2 = Tokens::new(2).issue(A, 0);
        assert_ne!(tok1, tok2);
        assert!(!Tokens::new(2).check(A, &tok1, 0));
    }
}
