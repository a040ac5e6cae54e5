//! Gathers the engine's 16 KiB block writes into larger ones. Each OPFS `write` costs Chromium an
//! `fstat`, an `fcntl` and an IPC to the browser besides the `pwrite`, so 16 KiB writes reach only
//! ~500 MB/s where 256 KiB ones reach ~2.5 GB/s. Blocks do not arrive in order, even from one
//! peer: libtorrent reads them on several disk threads and sends each when its read completes
//! (a trace of the tab showed most writes at 16 KiB when only consecutive blocks were joined).
//! So bytes are held in aligned spans, each filled in any order and written out as one call per
//! contiguous run when it is evicted, least recently written first.
//!
//! A read of bytes that are all held is served from memory: the engine reads a piece back to hash
//! it just after its last block is stored. Any other read first writes out the spans it touches,
//! so the engine always reads what it wrote.

use protocol::storage::{Storage, StorageError};

/// Bytes per span: aligned, so a piece of a power-of-two length up to this size lies in one.
///
/// The size trades the browser's work against the kernel's. Every OPFS `write` sends the browser
/// an IPC (`OnContentsModified`), so fewer, larger writes save the browser's CPU. On one host the
/// kernel's copy into fresh page cache cost more per byte in large `pwrite`s (1 GiB: 0.22-0.26 s
/// of system time in 64 KiB writes, 0.5 s in 256 KiB ones, 1.85 s in 1 MiB ones). On another,
/// the engine Worker's system time was the same for 64 KiB to 1 MiB spans, and 256 KiB spans
/// against 64 KiB ones halved the browser's CPU (0.8-0.9 to 0.4 s per GiB) and cut the CPU of
/// the whole download by about a tenth (`scripts/cpu-by-thread.py`, 3 interleaved pairs).
pub const SPAN: usize = 256 << 10;
/// Spans held per torrent (4 MiB): a peer's pipeline of 500 blocks covers about 8 MiB, in which
/// pieces complete nearly in the order they were requested, so most pieces are still held when
/// the engine reads them back to hash them.
pub const SPANS: usize = 16;

struct Span {
    /// Torrent offset of `buf[0]`, a multiple of the span size.
    start: u64,
    buf: Vec<u8>,
    /// Filled ranges of `buf`, sorted, disjoint and not touching.
    filled: Vec<(usize, usize)>,
    /// When it was last written to, to evict the least recently written.
    used: u64,
}

impl Span {
    fn fill(&mut self, at: usize, data: &[u8]) {
        let (a, b) = (at, at + data.len());
        self.buf[a..b].copy_from_slice(data);
        // Merge with every range that overlaps or touches [a, b).
        let first = self.filled.partition_point(|&(_, e)| e < a);
        let last = self.filled.partition_point(|&(s, _)| s <= b);
        let (mut lo, mut hi) = (a, b);
        if first < last {
            lo = lo.min(self.filled[first].0);
            hi = hi.max(self.filled[last - 1].1);
        }
        self.filled.splice(first..last, [(lo, hi)]);
    }

    fn covers(&self, a: usize, b: usize) -> bool {
        let i = self.filled.partition_point(|&(_, e)| e < b);
        self.filled.get(i).is_some_and(|&(s, e)| s <= a && b <= e)
    }
}

pub struct WriteBehind<S> {
    inner: S,
    span: usize,
    max_spans: usize,
    spans: Vec<Span>,
    /// Buffers of evicted spans, kept for the next ones.
    spare: Vec<Vec<u8>>,
    clock: u64,
}

impl<S: Storage> WriteBehind<S> {
    pub fn new(inner: S, span: usize, max_spans: usize) -> Self {
        WriteBehind {
            inner,
            span: span.max(1),
            max_spans: max_spans.max(1),
            spans: Vec::new(),
            spare: Vec::new(),
            clock: 0,
        }
    }

    /// Writes out everything held (without asking the store to sync).
    pub fn write_out(&mut self) -> Result<(), StorageError> {
        let mut result = Ok(());
        while !self.spans.is_empty() {
            let r = self.evict(0);
            result = result.and(r);
        }
        result
    }

    /// Writes out span `i` and lets it go. On failure its bytes are dropped too: the engine stops
    /// on a storage error, and a reload re-checks whatever reached the file.
    fn evict(&mut self, i: usize) -> Result<(), StorageError> {
        let span = self.spans.swap_remove(i);
        let mut result = Ok(());
        for &(a, b) in &span.filled {
            if result.is_ok() {
                result = self.inner.write(span.start + a as u64, &span.buf[a..b]);
            }
        }
        self.spare.push(span.buf);
        result
    }

    fn find(&self, start: u64) -> Option<usize> {
        self.spans.iter().position(|s| s.start == start)
    }
}

/// The parts of `offset..offset+len` by aligned span of `span` bytes: (span start, offset in span,
/// length).
fn parts(span: usize, offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let span = span as u64;
    let end = offset + len as u64;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let start = at - at % span;
        let n = (end.min(start + span) - at) as usize;
        let part = (start, (at - start) as usize, n);
        at += n as u64;
        Some(part)
    })
}

impl<S: Storage> Storage for WriteBehind<S> {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let held = parts(self.span, offset, buf.len()).all(|(start, at, n)| {
            self.find(start)
                .is_some_and(|i| self.spans[i].covers(at, at + n))
        });
        if held {
            let mut done = 0;
            for (start, at, n) in parts(self.span, offset, buf.len()) {
                let i = self.find(start).expect("checked above");
                buf[done..done + n].copy_from_slice(&self.spans[i].buf[at..at + n]);
                done += n;
            }
            return Ok(());
        }
        for (start, _, _) in parts(self.span, offset, buf.len()) {
            if let Some(i) = self.find(start) {
                self.evict(i)?;
            }
        }
        self.inner.read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut done = 0;
        for (start, at, n) in parts(self.span, offset, data.len()) {
            self.clock += 1;
            let i = match self.find(start) {
                Some(i) => i,
                None => {
                    if self.spans.len() >= self.max_spans {
                        let oldest = (0..self.spans.len())
                            .min_by_key(|&i| self.spans[i].used)
                            .expect("at least one span");
                        self.evict(oldest)?;
                    }
                    let mut buf = self.spare.pop().unwrap_or_default();
                    buf.resize(self.span, 0);
                    self.spans.push(Span {
                        start,
                        buf,
                        filled: Vec::new(),
                        used: 0,
                    });
                    self.spans.len() - 1
                }
            };
            let span = &mut self.spans[i];
            span.used = self.clock;
            span.fill(at, &data[done..done + n]);
            done += n;
        }
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

    fn store(len: u64, span: usize, spans: usize) -> WriteBehind<Counting> {
        WriteBehind::new(
            Counting {
                mem: MemoryStorage::new(len),
                writes: Vec::new(),
            },
            span,
            spans,
        )
    }

    #[test]
    fn blocks_in_any_order_become_one_write() {
        let mut s = store(1000, 100, 4);
        s.write(30, &[2; 20]).unwrap();
        s.write(10, &[1; 20]).unwrap();
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
    fn a_gap_is_written_as_two_runs() {
        let mut s = store(1000, 100, 4);
        s.write(0, &[1; 10]).unwrap();
        s.write(50, &[2; 10]).unwrap();
        s.write_out().unwrap();
        let mut w = s.inner.writes.clone();
        w.sort();
        assert_eq!(w, vec![(0, 10), (50, 10)]);
    }

    #[test]
    fn the_least_recently_written_span_goes_first() {
        let mut s = store(1000, 100, 2);
        s.write(0, &[1; 100]).unwrap();
        s.write(100, &[2; 50]).unwrap();
        s.write(150, &[3; 50]).unwrap();
        assert!(s.inner.writes.is_empty());
        // A third span evicts the first, which was written to longest ago.
        s.write(200, &[4; 10]).unwrap();
        assert_eq!(s.inner.writes, vec![(0, 100)]);
        s.write(100, &[5; 10]).unwrap();
        s.write(300, &[6; 10]).unwrap();
        assert_eq!(s.inner.writes, vec![(0, 100), (200, 10)]);
    }

    #[test]
    fn a_write_across_spans_is_split() {
        let mut s = store(1000, 100, 4);
        s.write(90, &[7; 120]).unwrap();
        s.write_out().unwrap();
        let mut w = s.inner.writes.clone();
        w.sort();
        assert_eq!(w, vec![(90, 10), (100, 100), (200, 10)]);
        assert_eq!(&s.inner.mem.data[90..210], &[7; 120][..]);
    }

    #[test]
    fn a_read_of_held_bytes_comes_from_memory() {
        let mut s = store(1000, 100, 4);
        s.write(60, &[2; 60]).unwrap();
        s.write(0, &[1; 60]).unwrap();
        let mut buf = [0; 40];
        // Across two spans, all held.
        s.read(80, &mut buf).unwrap();
        assert_eq!(buf, [2; 40]);
        s.read(40, &mut buf).unwrap();
        assert_eq!(buf, [[1; 20], [2; 20]].concat()[..]);
        assert!(s.inner.writes.is_empty(), "nothing written out");
        // Partly outside what is held: the spans it touches are written out, then it is read
        // from the store.
        s.read(110, &mut buf).unwrap();
        assert_eq!(buf[..], [vec![2; 10], vec![0; 30]].concat()[..]);
        assert_eq!(s.inner.writes, vec![(100, 20)]);
        s.write_out().unwrap();
        assert_eq!(s.inner.writes, vec![(100, 20), (0, 100)]);
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
        let mut s = store(4096, 256, 3);
        let mut plain = MemoryStorage::new(4096);
        let mut last = 0u64;
        for round in 0..4000u32 {
            // Writes mostly near the last one, as blocks arrive, with jumps and reads between.
            let offset = if next(3) == 0 {
                next(4000)
            } else {
                (last + next(64)).min(3999)
            };
            let len = 1 + next((4096 - offset).min(300)) as usize;
            if next(2) == 0 {
                let data: Vec<u8> = (0..len).map(|i| (round as usize + i) as u8).collect();
                s.write(offset, &data).unwrap();
                plain.write(offset, &data).unwrap();
                last = offset + len as u64;
            } else {
                let (mut a, mut b) = (vec![0; len], vec![0; len]);
                s.read(offset, &mut a).unwrap();
                plain.read(offset, &mut b).unwrap();
                assert_eq!(a, b, "round {round}: read {offset}+{len}");
            }
            assert!(s.spans.len() <= 3);
            for span in &s.spans {
                assert!(span.filled.windows(2).all(|w| w[0].1 < w[1].0));
            }
        }
        s.flush().unwrap();
        assert_eq!(s.inner.mem.data, plain.data);
    }

    #[test]
    fn errors_surface_on_the_next_call() {
        let mut s = store(100, 50, 4);
        s.write(90, &[1; 20]).unwrap();
        assert!(s.flush().is_err());
        // The failed bytes are not retried forever.
        assert!(s.flush().is_ok());
    }
}
