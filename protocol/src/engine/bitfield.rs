//! A peer's pieces, packed as on the wire (high bit of the first byte is piece 0).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    count: u32,
}

impl Bitfield {
    pub fn new(len: u32) -> Self {
        Bitfield {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
            count: 0,
        }
    }

    pub fn full(len: u32) -> Self {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parses a `bitfield` message for a torrent of `len` pieces: the length must match and the
    /// spare bits must be clear (BEP 3), else the peer is broken or hostile.
    pub fn from_wire(data: &[u8], len: u32) -> Option<Self> {
        if data.len() != len.div_ceil(8) as usize {
            return None;
        }
        let spare = (data.len() * 8) as u32 - len;
        if spare > 0 && data[data.len() - 1] & ((1u8 << spare) - 1) != 0 {
            return None;
        }
        let count = data.iter().map(|b| b.count_ones()).sum();
        Some(Bitfield {
            bytes: data.to_vec(),
            len,
            count,
        })
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns false if it was already set or is out of range.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_checked() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(Bitfield::from_wire(&[0x80, 0x40], 10), Some(b));
        assert_eq!(
            Bitfield::from_wire(&[0x80, 0x60], 10),
            None,
            "spare bit set"
        );
        assert_eq!(Bitfield::from_wire(&[0x80], 10), None, "short");
        assert!(Bitfield::full(10).is_full());
    }
}
