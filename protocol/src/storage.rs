//! Where piece data lives. The engine reads and writes at offsets into the torrent's byte stream
//! (all files concatenated); a store maps that onto whatever it has: memory here, files in the
//! bridge, OPFS in the browser. Calls are synchronous on purpose: OPFS sync access handles in a
//! Worker and the page cache on native are both fast enough, and it keeps the engine sans-IO.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

pub trait Storage {
    /// Fills `buf` with the bytes at `offset`. Bytes never written read as zeros or as whatever
    /// was there before (a resumed download); the engine only trusts verified pieces.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError>;
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError>;
    /// Called when the torrent completes or stops, so that a store can sync.
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The whole torrent in one buffer: for tests and as the browser's fallback without OPFS.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    pub data: Vec<u8>,
}

impl MemoryStorage {
    pub fn new(len: u64) -> Self {
        MemoryStorage {
            data: vec![0; len as usize],
        }
    }
}

impl Storage for MemoryStorage {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let range = range(offset, buf.len(), self.data.len())?;
        buf.copy_from_slice(&self.data[range]);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let range = range(offset, data.len(), self.data.len())?;
        self.data[range].copy_from_slice(data);
        Ok(())
    }
}

fn range(offset: u64, len: usize, total: usize) -> Result<std::ops::Range<usize>, StorageError> {
    let start = usize::try_from(offset).map_err(|_| StorageError("offset too large".into()))?;
    match start.checked_add(len) {
        Some(end) if end <= total => Ok(start..end),
        _ => Err(StorageError(format!(
            "range {offset}+{len} beyond {total} bytes"
        ))),
    }
}

/// Maps the torrent's byte stream onto its files: a piece may span several of them.
#[derive(Debug, Clone)]
pub struct FileLayout {
    /// (offset in the torrent, length) per file, in torrent order.
    spans: Vec<(u64, u64)>,
}

/// One contiguous part of a read or write that falls into one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    pub file: usize,
    pub file_offset: u64,
    /// Where this slice starts inside the caller's buffer.
    pub buf_offset: usize,
    pub len: usize,
}

impl FileLayout {
    pub fn new(lengths: impl IntoIterator<Item = u64>) -> Self {
        let mut offset = 0;
        let spans = lengths
            .into_iter()
            .map(|len| {
                let span = (offset, len);
                offset += len;
                span
            })
            .collect();
        FileLayout { spans }
    }

    pub fn total_length(&self) -> u64 {
        self.spans.last().map_or(0, |&(o, l)| o + l)
    }

    /// The file slices covering `len` bytes at torrent offset `offset`; empty files are skipped.
    pub fn slices(&self, offset: u64, len: usize) -> Vec<FileSlice> {
        let end = offset + len as u64;
        // First file whose end lies past `offset`.
        let first = self.spans.partition_point(|&(o, l)| o + l <= offset);
        let mut out = Vec::new();
        for (file, &(o, l)) in self.spans.iter().enumerate().skip(first) {
            if o >= end {
                break;
            }
            if l == 0 {
                continue;
            }
            let start = offset.max(o);
            let stop = end.min(o + l);
            out.push(FileSlice {
                file,
                file_offset: start - o,
                buf_offset: (start - offset) as usize,
                len: (stop - start) as usize,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cross_file_boundaries_and_skip_empty_files() {
        let layout = FileLayout::new([0, 1, 16383, 0, 5]);
        assert_eq!(layout.total_length(), 16389);
        let s = layout.slices(0, 16389);
        assert_eq!(
            s,
            vec![
                FileSlice {
                    file: 1,
                    file_offset: 0,
                    buf_offset: 0,
                    len: 1
                },
                FileSlice {
                    file: 2,
                    file_offset: 0,
                    buf_offset: 1,
                    len: 16383
                },
                FileSlice {
                    file: 4,
                    file_offset: 0,
                    buf_offset: 16384,
                    len: 5
                },
            ]
        );
        let s = layout.slices(16383, 3);
        assert_eq!(
            s,
            vec![
                FileSlice {
                    file: 2,
                    file_offset: 16382,
                    buf_offset: 0,
                    len: 1
                },
                FileSlice {
                    file: 4,
                    file_offset: 0,
                    buf_offset: 1,
                    len: 2
                },
            ]
        );
    }

    #[test]
    fn memory_storage_bounds() {
        let mut m = MemoryStorage::new(10);
        m.write(8, &[1, 2]).unwrap();
        assert!(m.write(9, &[1, 2]).is_err());
        let mut b = [0; 2];
        m.read(8, &mut b).unwrap();
        assert_eq!(b, [1, 2]);
    }
}
