//! The torrent's bytes in real files under an output folder.
//!
//! Paths come from the torrent (hostile input), so each component is checked again here even
//! though the metainfo parser already validated them: a store must never write outside its root.

use protocol::metainfo::Info;
use protocol::storage::{FileLayout, Storage, StorageError};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

/// Open files kept at once: a torrent may hold thousands of files, the process has a limit.
const MAX_OPEN_FILES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Downloading: folders and files are created (existing data is kept for resume).
    ReadWrite,
    /// Seeding files the user already has: nothing is created or written.
    ReadOnly,
}

pub struct FileStorage {
    paths: Vec<PathBuf>,
    lengths: Vec<u64>,
    layout: FileLayout,
    access: Access,
    open: HashMap<usize, File>,
    /// Bytes that were on disk before we started: none means there is nothing to check.
    existing: u64,
}

impl FileStorage {
    /// Maps `info.files` under `root`. With [`Access::ReadWrite`] it creates every folder and
    /// file now (0-byte files too); data already there stays.
    pub fn new(root: &Path, info: &Info, access: Access) -> Result<Self, StorageError> {
        let mut paths = Vec::with_capacity(info.files.len());
        for f in &info.files {
            paths.push(safe_join(root, &f.path)?);
        }
        let lengths: Vec<u64> = info.files.iter().map(|f| f.length).collect();
        let mut existing = 0;
        if access == Access::ReadWrite {
            for (path, &len) in paths.iter().zip(&lengths) {
                existing += create_file(path, len)?;
            }
        }
        Ok(FileStorage {
            paths,
            layout: FileLayout::new(lengths.iter().copied()),
            lengths,
            access,
            open: HashMap::new(),
            existing,
        })
    }

    /// True when a download starts from nothing, so the resume check can be skipped.
    pub fn is_fresh(&self) -> bool {
        self.access == Access::ReadWrite && self.existing == 0
    }

    fn file(&mut self, index: usize) -> Result<&File, StorageError> {
        if !self.open.contains_key(&index) {
            if self.open.len() >= MAX_OPEN_FILES {
                // Any victim will do: files are reopened on demand and the OS caches the data.
                if let Some(&victim) = self.open.keys().next() {
                    self.open.remove(&victim);
                }
            }
            let path = &self.paths[index];
            let file = OpenOptions::new()
                .read(true)
                .write(self.access == Access::ReadWrite)
                .open(path)
                .map_err(|e| StorageError(format!("cannot open {}: {e}", path.display())))?;
            self.open.insert(index, file);
        }
        Ok(&self.open[&index])
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<(), StorageError> {
        let total = self.layout.total_length();
        match offset.checked_add(len as u64) {
            Some(end) if end <= total => Ok(()),
            _ => Err(StorageError(format!(
                "range {offset}+{len} beyond {total} bytes"
            ))),
        }
    }
}

impl Storage for FileStorage {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.check_range(offset, buf.len())?;
        for s in self.layout.slices(offset, buf.len()) {
            let part = &mut buf[s.buf_offset..s.buf_offset + s.len];
            let path_len = self.lengths[s.file];
            let file = self.file(s.file)?;
            let mut done = 0;
            while done < part.len() {
                match file.read_at(&mut part[done..], s.file_offset + done as u64) {
                    // A file shorter than it should be (a fresh or partial download) reads as
                    // zeros: the engine trusts only pieces whose hash matches.
                    Ok(0) => {
                        part[done..].fill(0);
                        break;
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(StorageError(format!(
                            "cannot read file {} of {path_len} bytes at {}: {e}",
                            s.file, s.file_offset
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if self.access == Access::ReadOnly {
            return Err(StorageError(
                "the files being seeded are opened read-only".into(),
            ));
        }
        self.check_range(offset, data.len())?;
        for s in self.layout.slices(offset, data.len()) {
            let part = &data[s.buf_offset..s.buf_offset + s.len];
            let file = self.file(s.file)?;
            file.write_all_at(part, s.file_offset).map_err(|e| {
                StorageError(format!(
                    "cannot write file {} at {}: {e}",
                    s.file, s.file_offset
                ))
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.access == Access::ReadOnly {
            return Ok(());
        }
        for (&i, f) in &self.open {
            f.sync_data().map_err(|e| {
                StorageError(format!("cannot sync {}: {e}", self.paths[i].display()))
            })?;
        }
        Ok(())
    }
}

/// `root` joined with `components`, each of which must be one plain name (no `..`, `.`, root,
/// separator or NUL), so the result always lies inside `root`.
pub fn safe_join(root: &Path, components: &[String]) -> Result<PathBuf, StorageError> {
    if components.is_empty() {
        return Err(StorageError("empty file path in torrent".into()));
    }
    let mut path = root.to_path_buf();
    for c in components {
        let mut parts = Path::new(c).components();
        let single_normal = matches!(parts.next(), Some(Component::Normal(n)) if n == c.as_str())
            && parts.next().is_none();
        if !single_normal || c.contains('/') || c.contains('\0') {
            return Err(StorageError(format!(
                "unsafe file path component {c:?} in torrent"
            )));
        }
        path.push(c);
    }
    Ok(path)
}

/// Creates `path` if needed; returns how many of its bytes were already there.
fn create_file(path: &Path, len: u64) -> Result<u64, StorageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError(format!("cannot create folder {}: {e}", dir.display())))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StorageError(format!("cannot create {}: {e}", path.display())))?;
    let current = file
        .metadata()
        .map_err(|e| StorageError(format!("cannot stat {}: {e}", path.display())))?
        .len();
    // A shorter file is left to grow with the writes: reads past its end are zeros without a
    // system call, which makes the resume check of a fresh download cheap. A longer leftover is
    // cut to the torrent's length.
    if current > len {
        file.set_len(len).map_err(|e| {
            StorageError(format!(
                "cannot size {} to {len} bytes: {e}",
                path.display()
            ))
        })?;
    }
    Ok(current.min(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::metainfo::FileEntry;
    use protocol::InfoHash;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "bridge-fs-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn info(files: &[(&[&str], u64)]) -> Info {
        let mut offset = 0;
        let files: Vec<FileEntry> = files
            .iter()
            .map(|(p, len)| {
                let e = FileEntry {
                    path: p.iter().map(|s| s.to_string()).collect(),
                    length: *len,
                    offset,
                };
                offset += len;
                e
            })
            .collect();
        Info {
            info_hash: InfoHash([0; 20]),
            raw: Vec::new(),
            name: files[0].path[0].clone(),
            piece_length: 16384,
            piece_hashes: Vec::new(),
            total_length: offset,
            private: false,
            multi_file: files.len() > 1,
            files,
        }
    }

    #[test]
    fn creates_files_including_empty_ones_and_crosses_boundaries() {
        let dir = TempDir::new("cross");
        let i = info(&[
            (&["t", "a"], 3),
            (&["t", "empty"], 0),
            (&["t", "sub", "b"], 5),
        ]);
        let mut s = FileStorage::new(&dir.0, &i, Access::ReadWrite).unwrap();
        assert_eq!(std::fs::metadata(dir.0.join("t/empty")).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(dir.0.join("t/sub/b")).unwrap().len(), 0);

        s.write(1, b"xyzuv").unwrap();
        let mut buf = [9u8; 8];
        s.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"\0xyzuv\0\0");
        s.write(7, b"!").unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read(dir.0.join("t/a")).unwrap(), b"\0xy");
        assert_eq!(std::fs::read(dir.0.join("t/sub/b")).unwrap(), b"zuv\0!");

        assert!(s.write(6, b"abc").is_err());
        assert!(s.read(u64::MAX, &mut [0u8; 2]).is_err());
    }

    #[test]
    fn keeps_existing_data_for_resume_and_reads_short_files_as_zeros() {
        let dir = TempDir::new("resume");
        std::fs::write(dir.0.join("f"), b"abc").unwrap();
        std::fs::write(dir.0.join("long"), b"abcdefgh").unwrap();
        FileStorage::new(&dir.0, &info(&[(&["long"], 2)]), Access::ReadWrite).unwrap();
        assert_eq!(std::fs::read(dir.0.join("long")).unwrap(), b"ab");
        let i = info(&[(&["f"], 6)]);
        let mut s = FileStorage::new(&dir.0, &i, Access::ReadWrite).unwrap();
        let mut buf = [1u8; 6];
        s.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abc\0\0\0");

        std::fs::write(dir.0.join("g"), b"ab").unwrap();
        let mut r = FileStorage::new(&dir.0, &info(&[(&["g"], 4)]), Access::ReadOnly).unwrap();
        let mut buf = [1u8; 4];
        r.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"ab\0\0");
        assert!(r.write(0, b"x").is_err());
    }

    #[test]
    fn refuses_unsafe_components() {
        let root = Path::new("/tmp/root");
        for bad in ["..", ".", "", "/etc", "a/b", "a\0b"] {
            assert!(
                safe_join(root, &["ok".into(), bad.into()]).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(safe_join(root, &[]).is_err());
        assert_eq!(
            safe_join(root, &["a".into(), "b c".into()]).unwrap(),
            Path::new("/tmp/root/a/b c")
        );
    }

    #[test]
    fn many_files_stay_within_the_open_file_limit() {
        let dir = TempDir::new("many");
        let names: Vec<String> = (0..MAX_OPEN_FILES + 10).map(|i| format!("f{i}")).collect();
        let list: Vec<([&str; 2], u64)> = names.iter().map(|n| (["d", n.as_str()], 1)).collect();
        let refs: Vec<(&[&str], u64)> = list.iter().map(|(p, l)| (&p[..], *l)).collect();
        let mut s = FileStorage::new(&dir.0, &info(&refs), Access::ReadWrite).unwrap();
        let data: Vec<u8> = (0..names.len() as u8).collect();
        s.write(0, &data).unwrap();
        assert!(s.open.len() <= MAX_OPEN_FILES);
        let mut back = vec![0; data.len()];
        s.read(0, &mut back).unwrap();
        assert_eq!(back, data);
    }
}
