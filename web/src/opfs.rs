//! The Origin Private File System: one data file per torrent, named by its info-hash in hex,
//! written through a `FileSystemSyncAccessHandle` (synchronous, so it fits the engine's
//! `Storage` trait), plus small side files that let a reload find the torrents again.

use crate::js::{err_name, err_text, get, global, sleep};
use js_sys::{Array, Uint8Array};
use protocol::storage::{Storage, StorageError};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemSyncAccessHandle,
};

/// A reloaded page starts a new Worker while the old one may still hold the file's exclusive
/// lock for a moment; we retry this long before giving up.
const LOCK_RETRIES: u32 = 40;
const LOCK_RETRY_MS: i32 = 150;

/// Side files are small (a .torrent, a magnet); anything larger is not ours.
pub const MAX_SIDE_FILE: usize = 32 << 20;

#[derive(Clone)]
pub struct Opfs {
    root: FileSystemDirectoryHandle,
}

impl Opfs {
    /// The origin's private directory, or `None` where the browser lacks OPFS or sync access
    /// handles (then the caller falls back to memory).
    pub async fn open() -> Option<Opfs> {
        let nav = global().navigator();
        if !get(&nav, "storage").is_object() {
            return None;
        }
        let proto = get(&get(&global(), "FileSystemFileHandle"), "prototype");
        if !get(&proto, "createSyncAccessHandle").is_function() {
            return None;
        }
        let root = JsFuture::from(nav.storage().get_directory()).await.ok()?;
        Some(Opfs {
            root: root.unchecked_into(),
        })
    }

    pub async fn file(&self, name: &str, create: bool) -> Result<FileSystemFileHandle, JsValue> {
        let opts = FileSystemGetFileOptions::new();
        opts.set_create(create);
        let handle = JsFuture::from(self.root.get_file_handle_with_options(name, &opts)).await?;
        Ok(handle.unchecked_into())
    }

    /// Opens `name` for synchronous access, waiting out a lock left by a previous Worker.
    pub async fn sync_handle(
        &self,
        file: &FileSystemFileHandle,
    ) -> Result<FileSystemSyncAccessHandle, String> {
        let mut tries = 0;
        loop {
            match JsFuture::from(file.create_sync_access_handle()).await {
                Ok(h) => return Ok(h.unchecked_into()),
                Err(e)
                    if err_name(&e).as_deref() == Some("NoModificationAllowedError")
                        && tries < LOCK_RETRIES =>
                {
                    tries += 1;
                    sleep(LOCK_RETRY_MS).await;
                }
                Err(e) => return Err(err_text(&e)),
            }
        }
    }

    /// Replaces the whole content of a small side file.
    pub async fn write_small(&self, name: &str, data: &[u8]) -> Result<(), String> {
        let file = self.file(name, true).await.map_err(|e| err_text(&e))?;
        let h = self.sync_handle(&file).await?;
        let result = (|| {
            h.truncate_with_u32(0)?;
            let opts = FileSystemReadWriteOptions::new();
            opts.set_at(0.0);
            h.write_with_u8_array_and_options(data, &opts)?;
            h.flush()
        })();
        h.close();
        result.map_err(|e| err_text(&e))
    }

    /// The bytes of a small side file, `None` if it does not exist.
    pub async fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let file = match self.file(name, false).await {
            Ok(f) => f,
            Err(e) if err_name(&e).as_deref() == Some("NotFoundError") => return Ok(None),
            Err(e) => return Err(err_text(&e)),
        };
        let blob: Blob = JsFuture::from(file.get_file())
            .await
            .map_err(|e| err_text(&e))?
            .unchecked_into();
        if blob.size() > MAX_SIDE_FILE as f64 {
            return Err(format!("{name} is larger than {MAX_SIDE_FILE} bytes"));
        }
        let buf = JsFuture::from(blob.array_buffer())
            .await
            .map_err(|e| err_text(&e))?;
        Ok(Some(Uint8Array::new(&buf).to_vec()))
    }

    /// Removes `name`; a missing file is not an error.
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        match JsFuture::from(self.root.remove_entry(name)).await {
            Ok(_) => Ok(()),
            Err(e) if err_name(&e).as_deref() == Some("NotFoundError") => Ok(()),
            Err(e) => Err(err_text(&e)),
        }
    }

    /// Names of the files in the directory.
    pub async fn list(&self) -> Result<Vec<String>, String> {
        let iter = self.root.keys();
        let mut names = Vec::new();
        loop {
            let step = iter.next().map_err(|e| err_text(&e))?;
            let step = JsFuture::from(step).await.map_err(|e| err_text(&e))?;
            if get(&step, "done").is_truthy() {
                return Ok(names);
            }
            if let Some(name) = get(&step, "value").as_string() {
                names.push(name);
            }
        }
    }
}

/// A torrent's bytes in one OPFS file at their torrent offsets.
pub struct OpfsStorage {
    handle: FileSystemSyncAccessHandle,
}

impl OpfsStorage {
    pub fn new(handle: FileSystemSyncAccessHandle) -> Self {
        OpfsStorage { handle }
    }
}

fn at(offset: u64) -> FileSystemReadWriteOptions {
    let opts = FileSystemReadWriteOptions::new();
    // Offsets up to 2^53 are exact in an f64: far past any torrent.
    opts.set_at(offset as f64);
    opts
}

impl Storage for OpfsStorage {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let n = self
            .handle
            .read_with_u8_array_and_options(buf, &at(offset))
            .map_err(|e| StorageError(err_text(&e)))?;
        // Past the end of the file reads come back short: those bytes were never written.
        let n = (n.max(0.0) as usize).min(buf.len());
        buf[n..].fill(0);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut done = 0usize;
        while done < data.len() {
            let n = self
                .handle
                .write_with_u8_array_and_options(&data[done..], &at(offset + done as u64))
                .map_err(|e| StorageError(err_text(&e)))?;
            if n < 1.0 {
                return Err(StorageError(
                    "OPFS write made no progress (disk full?)".into(),
                ));
            }
            done += (n as usize).min(data.len() - done);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.handle.flush().map_err(|e| StorageError(err_text(&e)))
    }
}

/// Copies `len` bytes at `offset` of a sync handle into a Blob, in chunks outside wasm memory,
/// so a large file never sits in the wasm heap.
pub fn copy_to_blob(
    handle: &FileSystemSyncAccessHandle,
    offset: u64,
    len: u64,
) -> Result<Blob, String> {
    const CHUNK: u64 = 8 << 20;
    let parts = Array::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK);
        let chunk = Uint8Array::new_with_length(n as u32);
        let got = handle
            .read_with_js_u8_array_and_options(&chunk, &at(offset + done))
            .map_err(|e| err_text(&e))?;
        if (got as u64) < n {
            return Err("the downloaded data is shorter than the file".into());
        }
        parts.push(&chunk);
        done += n;
    }
    Blob::new_with_u8_array_sequence(&parts).map_err(|e| err_text(&e))
}

/// `blob` as a File named `name`, so the page's download gets the right name.
pub fn named(blob: &Blob, name: &str) -> Result<File, String> {
    let parts = Array::of1(blob);
    let opts = web_sys::FilePropertyBag::new();
    opts.set_type("application/octet-stream");
    File::new_with_blob_sequence_and_options(&parts, name, &opts).map_err(|e| err_text(&e))
}

/// `file.slice(start, end)` of the OPFS file behind `handle`: lazy, no copy.
pub async fn slice_of(handle: &FileSystemFileHandle, start: u64, end: u64) -> Result<Blob, String> {
    let file: Blob = JsFuture::from(handle.get_file())
        .await
        .map_err(|e| err_text(&e))?
        .unchecked_into();
    if file.size() < end as f64 {
        return Err("the OPFS file is shorter than the torrent".into());
    }
    file.slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(|e| err_text(&e))
}
