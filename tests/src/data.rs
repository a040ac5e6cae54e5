//! Test data: deterministic random files, and byte-for-byte comparison of file trees.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A fresh directory under the system's temporary folder, removed on drop.
pub fn temp_dir(label: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bt-e2e-{label}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// Writes `len` pseudo-random bytes to `path` (parents created): the same `seed` gives the same
/// bytes on every run, so a failure can be reproduced.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent directories");
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        rng.fill(&mut block[..n]);
        out.write_all(&block[..n]).expect("write random data");
        left -= n as u64;
    }
    out.flush().expect("flush random data");
}

/// Builds a folder of random files from `(relative path, length)` pairs, each with its own seed.
pub fn write_random_tree(root: &Path, files: &[(&str, u64)], seed: u64) {
    for (i, (rel, len)) in files.iter().enumerate() {
        write_random_file(&root.join(rel), *len, seed.wrapping_add(i as u64));
    }
}

/// Every regular file under `root` (or `root` itself if it is a file), as relative paths, sorted.
pub fn list_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("read directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    if root.is_file() {
        out.push(PathBuf::new());
    } else {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// Panics unless `actual` holds exactly the files of `expected` with the same bytes. Works on a
/// single file or a folder. The message names the first difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    assert!(
        actual.exists(),
        "{} does not exist (expected a copy of {})",
        actual.display(),
        expected.display()
    );
    let want = list_files(expected);
    let got = list_files(actual);
    assert_eq!(
        want,
        got,
        "the files under {} differ from those under {}",
        actual.display(),
        expected.display()
    );
    for rel in &want {
        // A single file lists itself as the empty path, which join() would turn into "file/".
        let (a, b) = if rel.as_os_str().is_empty() {
            (expected.to_path_buf(), actual.to_path_buf())
        } else {
            (expected.join(rel), actual.join(rel))
        };
        if let Some(diff) = first_difference(&a, &b).expect("read files to compare") {
            panic!("{} differs from {}: {diff}", b.display(), a.display());
        }
    }
}

/// `None` when both files hold the same bytes, otherwise where they first differ.
pub fn first_difference(a: &Path, b: &Path) -> io::Result<Option<String>> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    if la != lb {
        return Ok(Some(format!("{lb} bytes instead of {la}")));
    }
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m {
            return Ok(Some(format!(
                "the file changed size while read at {offset}"
            )));
        }
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(format!(
                "first different byte at offset {}",
                offset + i as u64
            )));
        }
        offset += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_files_are_reproducible_and_compare() {
        let dir = temp_dir("data");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write_random_tree(&a, &[("x/one", 1), ("two", 3_000_000), ("empty", 0)], 7);
        write_random_tree(&b, &[("x/one", 1), ("two", 3_000_000), ("empty", 0)], 7);
        assert_same_tree(&a, &b);
        assert_eq!(
            list_files(&a),
            vec![
                PathBuf::from("empty"),
                PathBuf::from("two"),
                PathBuf::from("x/one")
            ]
        );

        write_random_file(&b.join("two"), 3_000_000, 99);
        let diff = first_difference(&a.join("two"), &b.join("two")).unwrap();
        assert!(diff.unwrap().contains("offset"));
    }
}
