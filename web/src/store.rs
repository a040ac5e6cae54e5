//! Where a torrent's bytes live in the browser: an OPFS file, or memory where OPFS is missing.

use crate::js::err_text;
use crate::opfs::{copy_to_blob, named, slice_of, Opfs, OpfsStorage};
use crate::write_behind::{WriteBehind, SPAN, SPANS};
use js_sys::{Array, Uint8Array};
use protocol::storage::{MemoryStorage, Storage, StorageError};
use std::cell::RefCell;
use std::rc::Rc;
use web_sys::{Blob, File, FileSystemFileHandle, FileSystemSyncAccessHandle};

/// Without OPFS the whole torrent sits in the wasm heap, which cannot grow past 4 GiB; we stay
/// well below that.
pub const MAX_MEMORY_TORRENT: u64 = 1 << 30;

#[derive(Clone)]
pub enum Store {
    Opfs {
        file: FileSystemFileHandle,
        sync: FileSystemSyncAccessHandle,
        /// The engine's writes, gathered before they reach `sync`.
        writes: Rc<RefCell<WriteBehind<OpfsStorage>>>,
        /// The file was just created: it holds no piece, so there is nothing to check.
        fresh: bool,
    },
    Memory(Rc<RefCell<MemoryStorage>>),
}

/// A store shared between the engine (which owns its `Box<dyn Storage>`) and us (to save files
/// from it, and to write out held bytes).
struct Shared<S>(Rc<RefCell<S>>);

impl<S: Storage> Storage for Shared<S> {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.0.borrow_mut().read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.0.borrow_mut().write(offset, data)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        self.0.borrow_mut().flush()
    }
}

/// Opens (creating it if needed) the data file of torrent `hex` of `total` bytes.
pub async fn open(opfs: Option<Opfs>, hex: &str, total: u64) -> Result<Store, String> {
    let Some(opfs) = opfs else {
        if total > MAX_MEMORY_TORRENT {
            return Err(format!(
                "this browser has no Origin Private File System, and the torrent ({total} bytes) is too large to hold in memory"
            ));
        }
        let mem = MemoryStorage::new(total);
        return Ok(Store::Memory(Rc::new(RefCell::new(mem))));
    };
    let file = opfs
        .file(hex, true)
        .await
        .map_err(|e| format!("cannot create the download file: {}", err_text(&e)))?;
    let sync = opfs
        .sync_handle(&file)
        .await
        .map_err(|e| format!("cannot open the download file: {e}"))?;
    let size = sync.get_size().map_err(|e| err_text(&e))?;
    let fresh = size == 0.0;
    if size != total as f64 {
        // Reserving the full length up front turns a lack of quota into one early, clear error.
        if let Err(e) = sync.truncate_with_f64(total as f64) {
            sync.close();
            return Err(format!(
                "cannot reserve {total} bytes in browser storage: {}",
                err_text(&e)
            ));
        }
    }
    let writes = WriteBehind::new(OpfsStorage::new(sync.clone()), SPAN, SPANS);
    Ok(Store::Opfs {
        file,
        sync,
        writes: Rc::new(RefCell::new(writes)),
        fresh,
    })
}

impl Store {
    /// The engine's view of this store.
    pub fn storage(&self) -> Box<dyn Storage> {
        match self {
            Store::Opfs { writes, .. } => Box::new(Shared(writes.clone())),
            Store::Memory(m) => Box::new(Shared(m.clone())),
        }
    }

    /// True for a data file created just now: no piece can be in it yet.
    pub fn is_fresh(&self) -> bool {
        matches!(self, Store::Opfs { fresh: true, .. })
    }

    /// Hands the writes held back in memory to the file, so they do not linger there.
    pub fn write_out(&self) -> Result<(), String> {
        match self {
            Store::Opfs { writes, .. } => writes.borrow_mut().write_out().map_err(|e| e.0),
            Store::Memory(_) => Ok(()),
        }
    }

    /// Releases the file's exclusive lock.
    pub fn close(&self) {
        if let Store::Opfs { sync, .. } = self {
            let _ = self.write_out();
            let _ = sync.flush();
            sync.close();
        }
    }

    /// The bytes `offset..offset+len` of the torrent as a File named `name`. `stable` says no
    /// more writes will happen (the torrent is complete): then the OPFS file itself is sliced,
    /// without a copy; otherwise its bytes are copied, since a later write would invalidate a
    /// snapshot of the file before the page has read it.
    pub async fn export(
        &self,
        offset: u64,
        len: u64,
        name: &str,
        stable: bool,
    ) -> Result<File, String> {
        let blob: Blob = match self {
            Store::Opfs { file, sync, .. } => {
                self.write_out()?;
                let _ = sync.flush();
                let sliced = if stable {
                    slice_of(file, offset, offset + len).await.ok()
                } else {
                    None
                };
                match sliced {
                    Some(b) => b,
                    None => copy_to_blob(sync, offset, len)?,
                }
            }
            Store::Memory(m) => {
                let m = m.borrow();
                let start = usize::try_from(offset).map_err(|_| "offset too large".to_string())?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| start.checked_add(l))
                    .filter(|&e| e <= m.data.len());
                let end = end.ok_or_else(|| "file lies beyond the torrent's data".to_string())?;
                let parts = Array::of1(&Uint8Array::from(&m.data[start..end]));
                Blob::new_with_u8_array_sequence(&parts).map_err(|e| err_text(&e))?
            }
        };
        named(&blob, name)
    }
}
