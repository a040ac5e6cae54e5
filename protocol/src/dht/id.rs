//! Node ids and the XOR metric of BEP 5: the distance between two 160-bit keys is their XOR read
//! as a big-endian number, so comparing the XOR arrays byte by byte orders distances.

use crate::types::hex;
use crate::InfoHash;
use std::fmt;

/// Bits in an id, and so the most buckets a routing table can have.
pub const ID_BITS: usize = 160;

/// A 160-bit DHT key: a node's id, or an info-hash looked up in the same space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// A random id. The crate has no randomness of its own, so the bits come from the caller's
    /// generator (seeded by the driver).
    pub fn random(rng: &mut fastrand::Rng) -> NodeId {
        let mut id = [0u8; 20];
        rng.fill(&mut id);
        NodeId(id)
    }

    /// The XOR distance to `other`, ordered as a number by `Ord` on the array.
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }

    /// How many leading bits `self` and `other` share (160 when equal).
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        ID_BITS
    }

    /// Bit `i` counted from the most significant.
    pub fn bit(&self, i: usize) -> bool {
        self.0[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// A random id sharing exactly the first `prefix` bits with `self` and differing at bit
    /// `prefix` when `flip` (so it lands in the bucket for that prefix length), or sharing at
    /// least `prefix` bits when not.
    pub fn random_with_prefix(&self, prefix: usize, flip: bool, rng: &mut fastrand::Rng) -> NodeId {
        let prefix = prefix.min(ID_BITS);
        let mut out = NodeId::random(rng);
        for i in 0..prefix {
            out.set_bit(i, self.bit(i));
        }
        if flip && prefix < ID_BITS {
            out.set_bit(prefix, !self.bit(prefix));
        }
        out
    }

    fn set_bit(&mut self, i: usize, on: bool) {
        let mask = 0x80 >> (i % 8);
        if on {
            self.0[i / 8] |= mask;
        } else {
            self.0[i / 8] &= !mask;
        }
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> NodeId {
        NodeId(h.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_orders_as_a_number() {
        let zero = NodeId([0; 20]);
        let mut one = [0u8; 20];
        one[19] = 1;
        let mut high = [0u8; 20];
        high[0] = 0x80;
        assert!(zero.distance(&NodeId(one)) < zero.distance(&NodeId(high)));
        assert_eq!(zero.distance(&zero), [0; 20]);
        assert_eq!(NodeId(high).distance(&NodeId(high)), [0; 20]);
    }

    #[test]
    fn common_prefix_len_counts_bits() {
        let a = NodeId([0; 20]);
        assert_eq!(a.common_prefix_len(&a), 160);
        let mut b = [0u8; 20];
        b[0] = 0x80;
        assert_eq!(a.common_prefix_len(&NodeId(b)), 0);
        let mut c = [0u8; 20];
        c[2] = 0x01;
        assert_eq!(a.common_prefix_len(&NodeId(c)), 23);
    }

    #[test]
    fn random_with_prefix_lands_where_asked() {
        let mut rng = fastrand::Rng::with_seed(3);
        let own = NodeId::random(&mut rng);
        for prefix in [0, 1, 7, 8, 9, 100, 159] {
            let id = own.random_with_prefix(prefix, true, &mut rng);
            assert_eq!(own.common_prefix_len(&id), prefix);
            let id = own.random_with_prefix(prefix, false, &mut rng);
            assert!(own.common_prefix_len(&id) >= prefix);
        }
        assert_eq!(own.random_with_prefix(160, true, &mut rng), own);
    }
}
