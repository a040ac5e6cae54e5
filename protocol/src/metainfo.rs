//! `.torrent` files (BEP 3, BEP 12 `announce-list`, BEP 27 `private`) and building them.

use crate::bencode::{self, Value};
use crate::InfoHash;
use sha1::{Digest, Sha1};
use thiserror::Error;

/// Piece lengths accepted in a torrent.
const MIN_PIECE_LENGTH: u64 = 16 * 1024;
const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;
/// Refused beyond these: no real torrent comes near, and they bound the work a hostile one causes.
const MAX_FILES: usize = 1_000_000;
const MAX_TOTAL_LENGTH: u64 = 1 << 50;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MetainfoError {
    #[error("not a torrent file: {0}")]
    Bencode(#[from] crate::bencode::BencodeError),
    #[error("torrent has no info dictionary")]
    NoInfo,
    #[error("torrent field `{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("torrent piece length {0} is not a power of two between 16 KiB and 64 MiB")]
    PieceLength(u64),
    #[error("torrent `pieces` holds {got} hashes but its files need {want}")]
    PieceCount { got: usize, want: usize },
    #[error("torrent file path {0:?} is unsafe (empty, `.`, `..`, absolute or with a separator)")]
    UnsafePath(String),
    #[error("torrent is too large")]
    TooLarge,
    #[error("metadata does not match the info-hash")]
    HashMismatch,
    #[error("torrent holds no data (all its files are empty)")]
    Empty,
}

/// A parsed `.torrent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info: Info,
    /// Tiers of tracker URLs: `announce-list` if present, else `[[announce]]`.
    pub trackers: Vec<Vec<String>>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
}

/// The `info` dictionary, with the raw bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub info_hash: InfoHash,
    /// The bencoded `info` dictionary exactly as received: served to ut_metadata peers.
    pub raw: Vec<u8>,
    pub name: String,
    pub piece_length: u32,
    pub piece_hashes: Vec<[u8; 20]>,
    /// In torrent order. `path` is relative to the output folder and already validated: for a
    /// single-file torrent `[name]`, for a multi-file one `[name, dir.., file]`.
    pub files: Vec<FileEntry>,
    pub total_length: u64,
    pub private: bool,
    /// True when the torrent has a `files` list (it then lands in a folder named `name`).
    pub multi_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: Vec<String>,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte stream.
    pub offset: u64,
}

impl Metainfo {
    pub fn from_bytes(data: &[u8]) -> Result<Self, MetainfoError> {
        let root = bencode::decode(data)?;
        if !root.is_dict() {
            return Err(bencode::BencodeError::NotADict.into());
        }
        let span = bencode::dict_value_span(data, b"info")?.ok_or(MetainfoError::NoInfo)?;
        let info = Info::from_bytes(&data[span])?;
        Ok(Metainfo {
            info,
            trackers: trackers(&root),
            comment: text(&root, "comment"),
            created_by: text(&root, "created by"),
        })
    }
}

/// BEP 12 tiers, else `[[announce]]`. Trackers are hints, so malformed entries are dropped rather
/// than failing the torrent; a flat list of URLs (a common mistake) counts as one URL per tier.
fn trackers(root: &Value) -> Vec<Vec<String>> {
    let url = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
    };
    let tiers: Vec<Vec<String>> = root
        .get("announce-list")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .map(|tier| match tier.as_list() {
            Some(urls) => urls.iter().filter_map(url).collect(),
            None => url(tier).into_iter().collect(),
        })
        .filter(|tier: &Vec<String>| !tier.is_empty())
        .collect();
    if !tiers.is_empty() {
        return tiers;
    }
    root.get("announce")
        .and_then(url)
        .map(|u| vec![vec![u]])
        .unwrap_or_default()
}

/// A free-text field, its `.utf-8` variant first.
fn text(dict: &Value, key: &str) -> Option<String> {
    let v = dict
        .get(&format!("{key}.utf-8"))
        .or_else(|| dict.get(key))?;
    Some(String::from_utf8_lossy(v.as_bytes()?).into_owned())
}

/// A path component (or the torrent name), refused unless it is a plain file name on every OS.
fn safe_component(v: &Value) -> Result<String, MetainfoError> {
    let bytes = v.as_bytes().ok_or(MetainfoError::Field("path"))?;
    let s = String::from_utf8_lossy(bytes).into_owned();
    let b = s.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    let bad = s.is_empty() || s == "." || s == ".." || drive || s.contains(['/', '\\', '\0']);
    if bad {
        return Err(MetainfoError::UnsafePath(s));
    }
    Ok(s)
}

fn sha1(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

impl Info {
    /// Parses a raw `info` dictionary (from a .torrent or from ut_metadata).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, MetainfoError> {
        use MetainfoError::Field;
        let info = bencode::decode(raw)?;
        if !info.is_dict() {
            return Err(Field("info"));
        }
        let name_value = info
            .get("name.utf-8")
            .or_else(|| info.get("name"))
            .ok_or(Field("name"))?;
        let name = safe_component(name_value).map_err(|e| match e {
            Field(_) => Field("name"),
            e => e,
        })?;

        let piece_length = info
            .get("piece length")
            .and_then(Value::as_int)
            .ok_or(Field("piece length"))?;
        let piece_length = u64::try_from(piece_length).unwrap_or(0);
        if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&piece_length)
            || !piece_length.is_power_of_two()
        {
            return Err(MetainfoError::PieceLength(piece_length));
        }

        let pieces = info
            .get("pieces")
            .and_then(Value::as_bytes)
            .ok_or(Field("pieces"))?;
        if !pieces.len().is_multiple_of(20) {
            return Err(Field("pieces"));
        }

        let length = |v: Option<&Value>, field| {
            let n = v.and_then(Value::as_int).ok_or(Field(field))?;
            let n = u64::try_from(n).map_err(|_| Field(field))?;
            if n > MAX_TOTAL_LENGTH {
                return Err(MetainfoError::TooLarge);
            }
            Ok(n)
        };
        let (multi_file, layout) = match (info.get("files"), info.get("length")) {
            (Some(_), Some(_)) | (None, None) => return Err(Field("length")),
            (None, Some(len)) => (
                false,
                vec![(vec![name.clone()], length(Some(len), "length")?)],
            ),
            (Some(files), None) => {
                let files = files.as_list().ok_or(Field("files"))?;
                if files.len() > MAX_FILES {
                    return Err(MetainfoError::TooLarge);
                }
                let mut layout = Vec::with_capacity(files.len());
                for file in files {
                    let len = length(file.get("length"), "length")?;
                    let components = file
                        .get("path.utf-8")
                        .or_else(|| file.get("path"))
                        .and_then(Value::as_list)
                        .ok_or(Field("path"))?;
                    if components.is_empty() {
                        return Err(MetainfoError::UnsafePath(String::new()));
                    }
                    let mut path = Vec::with_capacity(components.len() + 1);
                    path.push(name.clone());
                    for c in components {
                        path.push(safe_component(c)?);
                    }
                    layout.push((path, len));
                }
                (true, layout)
            }
        };

        let mut files = Vec::with_capacity(layout.len());
        let mut total_length: u64 = 0;
        for (path, length) in layout {
            files.push(FileEntry {
                path,
                length,
                offset: total_length,
            });
            total_length = total_length
                .checked_add(length)
                .filter(|&t| t <= MAX_TOTAL_LENGTH)
                .ok_or(MetainfoError::TooLarge)?;
        }
        if total_length == 0 {
            return Err(MetainfoError::Empty);
        }
        let want = total_length.div_ceil(piece_length);
        let got = pieces.len() / 20;
        if want != got as u64 {
            return Err(MetainfoError::PieceCount {
                got,
                want: usize::try_from(want).unwrap_or(usize::MAX),
            });
        }
        let piece_hashes = pieces
            .chunks_exact(20)
            .map(|c| c.try_into().expect("chunks of 20"))
            .collect();

        Ok(Info {
            info_hash: InfoHash(sha1(raw)),
            raw: raw.to_vec(),
            name,
            piece_length: piece_length as u32,
            piece_hashes,
            files,
            total_length,
            private: info.get("private").and_then(Value::as_int) == Some(1),
            multi_file,
        })
    }

    /// Parses metadata fetched for a magnet, refusing it unless its SHA-1 is `expected`.
    pub fn from_metadata(raw: &[u8], expected: InfoHash) -> Result<Self, MetainfoError> {
        // Hash first: a peer's bytes are only worth parsing if they are the torrent we asked for.
        if sha1(raw) != expected.0 {
            return Err(MetainfoError::HashMismatch);
        }
        Self::from_bytes(raw)
    }

    pub fn num_pieces(&self) -> u32 {
        self.piece_hashes.len() as u32
    }

    /// Length of piece `index`: `piece_length` except for a shorter last piece.
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length as u64;
        (self.total_length - start).min(self.piece_length as u64) as u32
    }

    pub fn piece_offset(&self, index: u32) -> u64 {
        index as u64 * self.piece_length as u64
    }
}

/// Piece length for a new torrent of `total` bytes: aims at roughly 1000-2000 pieces, between
/// 16 KiB and 16 MiB.
pub fn piece_length_for(total: u64) -> u32 {
    const MAX_NEW: u64 = 16 * 1024 * 1024;
    let mut length = MIN_PIECE_LENGTH;
    while length < MAX_NEW && total.div_ceil(length) > 2000 {
        length *= 2;
    }
    length as u32
}

/// Builds the `info` dictionary of a new torrent from its file list and the data, fed in order.
/// Sans-IO: the caller reads the files and passes the bytes to [`InfoBuilder::update`].
pub struct InfoBuilder {
    name: String,
    files: Vec<(Vec<String>, u64)>,
    piece_length: u32,
    private: bool,
    total_length: u64,
    fed: u64,
    /// Bytes of the current piece hashed so far.
    in_piece: u32,
    hasher: Sha1,
    piece_hashes: Vec<[u8; 20]>,
}

impl InfoBuilder {
    /// `files` are paths relative to the torrent's root (empty for a single-file torrent, whose
    /// only file is `name`) with their lengths, in the order their data will be fed.
    pub fn new(
        name: &str,
        files: Vec<(Vec<String>, u64)>,
        piece_length: u32,
        private: bool,
    ) -> Self {
        assert!(piece_length > 0, "piece length must be positive");
        let total_length = files.iter().map(|(_, len)| len).sum();
        InfoBuilder {
            name: name.to_string(),
            files,
            piece_length,
            private,
            total_length,
            fed: 0,
            in_piece: 0,
            hasher: Sha1::new(),
            piece_hashes: Vec::new(),
        }
    }

    /// Feeds the next bytes of the torrent's data; panics if more bytes arrive than the files hold.
    pub fn update(&mut self, mut data: &[u8]) {
        let fed = self.fed + data.len() as u64;
        assert!(
            fed <= self.total_length,
            "InfoBuilder fed {fed} bytes, files hold {}",
            self.total_length
        );
        self.fed = fed;
        while !data.is_empty() {
            let room = (self.piece_length - self.in_piece) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.hasher.update(now);
            self.in_piece += now.len() as u32;
            if self.in_piece == self.piece_length {
                self.piece_hashes.push(self.hasher.finalize_reset().into());
                self.in_piece = 0;
            }
            data = rest;
        }
    }

    /// The finished info dictionary; panics if fewer bytes were fed than the files hold.
    pub fn finish(mut self) -> Info {
        assert_eq!(
            self.fed, self.total_length,
            "InfoBuilder fed fewer bytes than the files hold"
        );
        if self.in_piece > 0 {
            self.piece_hashes.push(self.hasher.finalize_reset().into());
        }
        let multi_file = !(self.files.len() == 1 && self.files[0].0.is_empty());

        // Canonical bencoding: keys in byte order.
        let mut raw = Vec::new();
        raw.push(b'd');
        if multi_file {
            put_str(&mut raw, b"files");
            raw.push(b'l');
            for (path, length) in &self.files {
                raw.push(b'd');
                put_str(&mut raw, b"length");
                put_int(&mut raw, *length);
                put_str(&mut raw, b"path");
                raw.push(b'l');
                for component in path {
                    put_str(&mut raw, component.as_bytes());
                }
                raw.extend_from_slice(b"ee");
            }
            raw.push(b'e');
        } else {
            put_str(&mut raw, b"length");
            put_int(&mut raw, self.total_length);
        }
        put_str(&mut raw, b"name");
        put_str(&mut raw, self.name.as_bytes());
        put_str(&mut raw, b"piece length");
        put_int(&mut raw, u64::from(self.piece_length));
        put_str(&mut raw, b"pieces");
        put_str(&mut raw, &self.piece_hashes.concat());
        if self.private {
            put_str(&mut raw, b"private");
            put_int(&mut raw, 1);
        }
        raw.push(b'e');

        let mut offset = 0;
        let files = self
            .files
            .into_iter()
            .map(|(path, length)| {
                let path = if multi_file {
                    std::iter::once(self.name.clone()).chain(path).collect()
                } else {
                    vec![self.name.clone()]
                };
                let entry = FileEntry {
                    path,
                    length,
                    offset,
                };
                offset += length;
                entry
            })
            .collect();
        Info {
            info_hash: InfoHash(sha1(&raw)),
            raw,
            name: self.name,
            piece_length: self.piece_length,
            piece_hashes: self.piece_hashes,
            files,
            total_length: self.total_length,
            private: self.private,
            multi_file,
        }
    }
}

/// A whole `.torrent` file for `info` announcing to `trackers` (tiers).
pub fn torrent_file_bytes(info: &Info, trackers: &[Vec<String>]) -> Vec<u8> {
    let tiers: Vec<&Vec<String>> = trackers.iter().filter(|t| !t.is_empty()).collect();
    let mut out = Vec::with_capacity(info.raw.len() + 256);
    out.push(b'd');
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        put_str(&mut out, b"announce");
        put_str(&mut out, first.as_bytes());
    }
    if tiers.iter().map(|t| t.len()).sum::<usize>() > 1 {
        put_str(&mut out, b"announce-list");
        out.push(b'l');
        for tier in &tiers {
            out.push(b'l');
            for url in tier.iter() {
                put_str(&mut out, url.as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
    }
    put_str(&mut out, b"created by");
    put_str(
        &mut out,
        concat!("bittorrent-in-a-tab/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    // The exact bytes, so the info-hash survives the round trip.
    put_str(&mut out, b"info");
    out.extend_from_slice(&info.raw);
    out.push(b'e');
    out
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn put_int(out: &mut Vec<u8>, n: u64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn build(name: &str, files: &[(Vec<&str>, Vec<u8>)], piece_length: u32, private: bool) -> Info {
        let list = files
            .iter()
            .map(|(p, d)| (p.iter().map(|s| s.to_string()).collect(), d.len() as u64))
            .collect();
        let mut b = InfoBuilder::new(name, list, piece_length, private);
        for (_, d) in files {
            // Uneven chunks to cross piece boundaries mid-update.
            for chunk in d.chunks(7777) {
                b.update(chunk);
            }
        }
        b.finish()
    }

    fn multi_file_sample() -> (Info, Vec<u8>) {
        let files = vec![
            (vec!["empty.txt"], Vec::new()),
            (vec!["one.bin"], data(1, 1)),
            (vec!["sub", "dir", "odd.bin"], data(16383, 2)),
            (vec!["big.bin"], data(100_000, 3)),
        ];
        let all: Vec<u8> = files.iter().flat_map(|(_, d)| d.clone()).collect();
        (build("Sample", &files, 16384, false), all)
    }

    fn torrent(info_body: &str) -> Vec<u8> {
        format!("d8:announce9:http://t/4:info{info_body}e").into_bytes()
    }

    #[test]
    fn round_trip_multi_file() {
        let (info, all) = multi_file_sample();
        assert!(info.multi_file);
        assert_eq!(info.total_length, 116_384);
        assert_eq!(info.num_pieces(), 8);
        assert_eq!(info.piece_size(7), 116_384 - 7 * 16384);
        for (i, chunk) in all.chunks(16384).enumerate() {
            assert_eq!(info.piece_hashes[i], sha1(chunk));
        }
        let offsets: Vec<u64> = info.files.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, [0, 0, 1, 16384]);
        assert_eq!(info.files[2].path, ["Sample", "sub", "dir", "odd.bin"]);

        let trackers = vec![
            vec!["http://a/announce".to_string(), "udp://b:1".to_string()],
            vec![],
            vec!["http://c/".to_string()],
        ];
        let bytes = torrent_file_bytes(&info, &trackers);
        let parsed = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.info, info);
        assert_eq!(
            parsed.trackers,
            [vec!["http://a/announce", "udp://b:1"], vec!["http://c/"]]
        );
        assert!(parsed.created_by.is_some());
        assert_eq!(parsed.comment, None);
        // Canonical: the info dictionary re-encodes to itself through serde_bencode.
        let v: serde_bencode::value::Value = serde_bencode::from_bytes(&info.raw).unwrap();
        assert_eq!(serde_bencode::to_bytes(&v).unwrap(), info.raw);
    }

    #[test]
    fn round_trip_single_file_private_one_tracker() {
        let info = build("file.iso", &[(vec![], data(40_000, 9))], 32768, true);
        assert!(!info.multi_file && info.private);
        assert_eq!(
            info.files,
            [FileEntry {
                path: vec!["file.iso".into()],
                length: 40_000,
                offset: 0
            }]
        );
        let bytes = torrent_file_bytes(&info, &[vec!["http://t/a".to_string()]]);
        assert!(!bytes.windows(13).any(|w| w == b"announce-list"));
        let parsed = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.info.info_hash, info.info_hash);
        assert_eq!(parsed.info, info);
        assert_eq!(parsed.trackers, [vec!["http://t/a"]]);
        assert_eq!(
            Info::from_metadata(&info.raw, info.info_hash),
            Ok(info.clone())
        );
        assert_eq!(
            Info::from_metadata(&info.raw, InfoHash([0; 20])),
            Err(MetainfoError::HashMismatch)
        );
        // No trackers at all is still a valid file.
        assert_eq!(
            Metainfo::from_bytes(&torrent_file_bytes(&info, &[]))
                .unwrap()
                .trackers,
            Vec::<Vec<String>>::new()
        );
    }

    #[test]
    fn info_hash_is_of_the_raw_bytes_even_when_unsorted() {
        // Keys out of order and an unknown key: a re-encoding would change the hash.
        let body = format!(
            "d4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:{}1:zi0ee",
            "A".repeat(20)
        );
        let t = torrent(&body);
        let m = Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.info.info_hash.0, sha1(body.as_bytes()));
        assert_eq!(m.info.raw, body.as_bytes());
        assert_eq!(m.trackers, [vec!["http://t/"]]);
    }

    #[test]
    fn announce_list_tiers_drop_empties() {
        let info = format!(
            "d6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces20:{}e",
            "B".repeat(20)
        );
        let t = format!(
            "d8:announce5:http:13:announce-listll0:el1:ai1e1:beli5eee7:comment2:hi4:info{info}e"
        );
        let m = Metainfo::from_bytes(t.as_bytes()).unwrap();
        assert_eq!(m.trackers, [vec!["a", "b"]]);
        assert_eq!(m.comment.as_deref(), Some("hi"));
        // All tiers empty: fall back to announce.
        let t = format!("d8:announce5:http:13:announce-listllee4:info{info}e");
        assert_eq!(
            Metainfo::from_bytes(t.as_bytes()).unwrap().trackers,
            [vec!["http:"]]
        );
    }

    fn files_body(paths: &str) -> String {
        format!(
            "d5:filesld6:lengthi1e4:path{paths}ee4:name1:x12:piece lengthi16384e6:pieces20:{}e",
            "C".repeat(20)
        )
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for paths in [
            "l2:..e",
            "l1:a2:..1:be",
            "l11:/etc/passwde",
            "l0:e",
            "l1:a0:e",
            "le",
            "l1:.e",
            "l3:a\\be",
            "l2:C:e",
            "l4:c:fue",
            "l3:a\0be",
        ] {
            let r = Info::from_bytes(files_body(paths).as_bytes());
            assert!(
                matches!(r, Err(MetainfoError::UnsafePath(_))),
                "{paths:?}: {r:?}"
            );
        }
        assert!(Info::from_bytes(files_body("l1:a5:b.c:de").as_bytes()).is_ok());
        for name in ["2:..", "0:", "3:a/b"] {
            let body = format!(
                "d6:lengthi1e4:name{name}12:piece lengthi16384e6:pieces20:{}e",
                "D".repeat(20)
            );
            assert!(
                matches!(
                    Info::from_bytes(body.as_bytes()),
                    Err(MetainfoError::UnsafePath(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn path_utf8_is_preferred() {
        let body = format!(
            "d5:filesld6:lengthi1e4:pathl3:bade10:path.utf-8l4:goodeee4:name1:x12:piece lengthi16384e6:pieces20:{}e",
            "E".repeat(20)
        );
        let info = Info::from_bytes(body.as_bytes()).unwrap();
        assert_eq!(info.files[0].path, ["x", "good"]);
    }

    #[test]
    fn piece_count_and_length_are_checked() {
        let body = |len: u64, pl: u64, n: usize| {
            format!(
                "d6:lengthi{len}e4:name1:x12:piece lengthi{pl}e6:pieces{}:{}e",
                n * 20,
                "F".repeat(n * 20)
            )
        };
        assert!(Info::from_bytes(body(16384, 16384, 1).as_bytes()).is_ok());
        assert!(Info::from_bytes(body(16385, 16384, 2).as_bytes()).is_ok());
        assert_eq!(
            Info::from_bytes(body(16385, 16384, 1).as_bytes()),
            Err(MetainfoError::PieceCount { got: 1, want: 2 })
        );
        assert_eq!(
            Info::from_bytes(body(1, 16384, 2).as_bytes()),
            Err(MetainfoError::PieceCount { got: 2, want: 1 })
        );
        assert_eq!(
            Info::from_bytes(body(1, 8192, 1).as_bytes()),
            Err(MetainfoError::PieceLength(8192))
        );
        assert_eq!(
            Info::from_bytes(body(1, 20000, 1).as_bytes()),
            Err(MetainfoError::PieceLength(20000))
        );
        assert_eq!(
            Info::from_bytes(body(1, 1 << 27, 1).as_bytes()),
            Err(MetainfoError::PieceLength(1 << 27))
        );
        assert!(Info::from_bytes(body(1, 1 << 26, 1).as_bytes()).is_ok());
        assert_eq!(
            Info::from_bytes(body(0, 16384, 0).as_bytes()),
            Err(MetainfoError::Empty)
        );
        assert_eq!(
            Info::from_bytes(body(1 << 51, 1 << 26, 1).as_bytes()),
            Err(MetainfoError::TooLarge)
        );
        let odd = "d6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces19:GGGGGGGGGGGGGGGGGGGe";
        assert_eq!(
            Info::from_bytes(odd.as_bytes()),
            Err(MetainfoError::Field("pieces"))
        );
        let neg = "d6:lengthi-1e4:name1:x12:piece lengthi16384e6:pieces0:e";
        assert_eq!(
            Info::from_bytes(neg.as_bytes()),
            Err(MetainfoError::Field("length"))
        );
    }

    #[test]
    fn garbage_and_missing_parts_are_errors() {
        assert_eq!(
            Metainfo::from_bytes(b"d8:announce1:xe"),
            Err(MetainfoError::NoInfo)
        );
        assert!(matches!(
            Metainfo::from_bytes(b"li1ee"),
            Err(MetainfoError::Bencode(_))
        ));
        assert!(matches!(
            Metainfo::from_bytes(b""),
            Err(MetainfoError::Bencode(_))
        ));
        assert!(matches!(
            Metainfo::from_bytes(b"<html>not a torrent</html>"),
            Err(MetainfoError::Bencode(_))
        ));
        assert!(matches!(
            Metainfo::from_bytes(&vec![b'l'; 100_000]),
            Err(MetainfoError::Bencode(_))
        ));
        assert_eq!(
            Metainfo::from_bytes(b"d4:infoi1ee"),
            Err(MetainfoError::Field("info"))
        );
        assert_eq!(Info::from_bytes(b"de"), Err(MetainfoError::Field("name")));
        let mut nested = b"d4:infod4:name".to_vec();
        nested.extend(vec![b'l'; 100_000]);
        assert!(matches!(
            Metainfo::from_bytes(&nested),
            Err(MetainfoError::Bencode(_))
        ));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let (info, _) = multi_file_sample();
        let bytes = torrent_file_bytes(&info, &[vec!["http://t/".into()]]);
        for end in 0..bytes.len() {
            assert!(
                Metainfo::from_bytes(&bytes[..end]).is_err(),
                "truncated at {end}"
            );
        }
        // Single-byte corruption may still parse (it may hit a hash), but must never panic.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..3000 {
            let mut b = bytes.clone();
            let i = rng.usize(..b.len());
            b[i] = rng.u8(..);
            let _ = Metainfo::from_bytes(&b);
        }
    }

    #[test]
    fn piece_length_for_aims_at_1000_to_2000_pieces() {
        assert_eq!(piece_length_for(0), 16384);
        assert_eq!(piece_length_for(1_000_000), 16384);
        assert_eq!(piece_length_for(u64::MAX), 16 << 20);
        for total in [50_000_000u64, 700_000_000, 4_000_000_000, 20_000_000_000] {
            let pl = piece_length_for(total);
            assert!(pl.is_power_of_two());
            let n = total.div_ceil(pl as u64);
            assert!((1000..=2000).contains(&n), "{total}: {pl} gives {n} pieces");
        }
    }
}
