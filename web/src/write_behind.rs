//! Gathers the engine's 16 KiB block writes into larger ones. Each OPFS `write` call costs tens of
//! microseconds whatever its size (measured in Chromium: 16 KiB writes reach ~500 MB/s, 256 KiB
//! ones ~2.5 GB/s), and a peer's blocks arrive in order within a piece, so consecutive writes are
//! held back and handed to the store as one. A read of held bytes is served from memory (the
//! engine reads a piece back to hash it just after writing it); a read that only partly overlaps
//! them writes them out first, so the engine always reads what it wrote.

use protocol::storage::{Storage, StorageError};

/// At most this many bytes wait in memory per torrent.
pub const WRITE_BEHIND: usize = 1 << 20;

pub struct WriteBehind<S> {
    inner: S,
    /// Torrent offset of `held[0]`.
    at: u64,
    held: Vec<u8>,
    cap: usize,
}

impl<S: Storage> WriteBehind<S> {
    pub fn new(inner: S, cap: usize) -> Self {
        WriteBehind {
            inner,
            at: 0,
            held: Vec::new(),
            cap,
        }
    }

    /// Writes out what is held (without asking the store to sync).
    pub fn write_out(&mut self) -> Result<(), StorageError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let result = self.inner.write(self.at, &self.held);
        // On failure the bytes are dropped too: the engine stops on a storage error, and a
        // reload re-checks whatever reached the file.
        self.held.clear();
        result
    }

    fn held_end(&self) -> u64 {
        self.at + self.held.len() as u64
    }

    fn overlaps(&self, offset: u64, len: usize) -> bool {
        !self.held.is_empty() && offset < self.held_end() && self.at < offset + len as u64
    }
}

impl<S: Storage> Storage for WriteBehind<S> {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        if !self.held.is_empty()
            && offset >= self.at
            && offset + buf.len() as u64 <= self.held_end()
        {
            let start = (offset - self.at) as usize;
            buf.copy_from_slice(&self.held[start..start + buf.len()]);
            return Ok(());
        }
        if self.overlaps(offset, buf.len()) {
            self.write_out()?;
        }
        self.inner.read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let extends = !self.held.is_empty() && offset == self.held_end();
        if extends && self.held.len() + data.len() <= self.cap {
            self.held.extend_from_slice(data);
            return Ok(());
        }
        self.write_out()?;
        if data.len() >= self.cap {
            return self.inner.write(offset, data);
        }
        self.at = offset;
        self.held.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.write_out()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::storage::MemoryStorage;

    /// A memory store that counts the writes reaching it.
    struct Counting {
        mem: MemoryStorage,
        writes: Vec<(u64, usize)>,
    }

    impl Storage for Counting {
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
            self.mem.read(offset, buf)
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
            self.writes.push((offset, data.len()));
            self.mem.write(offset, data)
        }
    }

    fn store(len: u64, cap: usize) -> WriteBehind<Counting> {
        WriteBehind::new(
            Counting {
                mem: MemoryStorage::new(len),
                writes: Vec::new(),
            },
            cap,
        )
    }

    #[test]
    fn consecutive_writes_become_one() {
        let mut s = store(1000, 100);
        s.write(10, &[1; 20]).unwrap();
        s.write(30, &[2; 20]).unwrap();
        s.write(50, &[3; 20]).unwrap();
        assert!(s.inner.writes.is_empty());
        s.flush().unwrap();
        assert_eq!(s.inner.writes, vec![(10, 60)]);
        assert_eq!(
            &s.inner.mem.data[10..70],
            &[[1; 20], [2; 20], [3; 20]].concat()[..]
        );
    }

    #[test]
    fn a_gap_or_a_full_buffer_writes_out() {
        let mut s = store(1000, 50);
        s.write(0, &[1; 30]).unwrap();
        s.write(100, &[2; 30]).unwrap();
        assert_eq!(s.inner.writes, vec![(0, 30)]);
        s.write(130, &[3; 30]).unwrap();
        assert_eq!(s.inner.writes, vec![(0, 30), (100, 30)]);
        // At least the cap goes straight through.
        s.write(500, &[4; 60]).unwrap();
        assert_eq!(
            s.inner.writes,
            vec![(0, 30), (100, 30), (130, 30), (500, 60)]
        );
        s.write_out().unwrap();
        assert_eq!(s.inner.writes.len(), 4);
    }

    #[test]
    fn a_read_of_held_bytes_comes_from_memory() {
        let mut s = store(1000, 100);
        s.write(0, &[1; 30]).unwrap();
        s.write(30, &[2; 30]).unwrap();
        let mut buf = [0; 40];
        s.read(10, &mut buf).unwrap();
        assert_eq!(buf, [[1; 20], [2; 20]].concat()[..]);
        assert!(s.inner.writes.is_empty(), "nothing written out");
        // Partly outside what is held: written out first, then read from the store.
        s.read(50, &mut buf).unwrap();
        assert_eq!(s.inner.writes, vec![(0, 60)]);
    }

    #[test]
    fn reads_see_held_bytes_and_match_an_unbuffered_store() {
        let mut x = 7u64;
        let mut next = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut s = store(4096, 512);
        let mut plain = MemoryStorage::new(4096);
        for round in 0..2000u32 {
            // Mostly consecutive writes, as blocks arrive, with jumps and reads between.
            let offset = if next(3) == 0 {
                next(4000)
            } else {
                s.held_end().min(3999)
            };
            let len = 1 + next((4096 - offset).min(300)) as usize;
            if next(2) == 0 {
                let data: Vec<u8> = (0..len).map(|i| (round as usize + i) as u8).collect();
                s.write(offset, &data).unwrap();
                plain.write(offset, &data).unwrap();
            } else {
                let (mut a, mut b) = (vec![0; len], vec![0; len]);
                s.read(offset, &mut a).unwrap();
                plain.read(offset, &mut b).unwrap();
                assert_eq!(a, b, "round {round}: read {offset}+{len}");
            }
        }
        s.flush().unwrap();
        assert_eq!(s.inner.mem.data, plain.data);
    }

    #[test]
    fn errors_surface_on_the_next_call() {
        let mut s = store(100, 50);
        s.write(90, &[1; 20]).unwrap();
        assert!(s.flush().is_err());
        // The failed bytes are not retried forever.
        assert!(s.flush().is_ok());
    }
}
