//! Helpers shared by the crate's in-memory tests.

use crate::metainfo::{Info, InfoBuilder};
use crate::storage::{MemoryStorage, Storage, StorageError};
use std::cell::RefCell;
use std::rc::Rc;

/// Shares one memory store between an engine and the test, to compare bytes at the end.
#[derive(Clone)]
pub(crate) struct SharedStorage(pub Rc<RefCell<MemoryStorage>>);

impl Storage for SharedStorage {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.0.borrow_mut().read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.0.borrow_mut().write(offset, data)
    }
}

/// `len` random bytes (from `seed`) as a two-file torrent of `piece_length` pieces.
pub(crate) fn make_torrent(len: usize, piece_length: u32, seed: u64) -> (Vec<u8>, Info) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let files = vec![
        (vec!["a.bin".to_string()], 1000),
        (vec!["b.bin".to_string()], len as u64 - 1000),
    ];
    let mut b = InfoBuilder::new("swarm", files, piece_length, false);
    b.update(&data);
    (data, b.finish())
}
