//! `.torrent` files (BEP 3, BEP 12 `announce-list`, BEP 27 `private`) and building them.

use crate::InfoHash;
use thiserror::Error;

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
        let _ = data;
        todo!()
    }
}

impl Info {
    /// Parses a raw `info` dictionary (from a .torrent or from ut_metadata).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, MetainfoError> {
        let _ = raw;
        todo!()
    }

    /// Parses metadata fetched for a magnet, refusing it unless its SHA-1 is `expected`.
    pub fn from_metadata(raw: &[u8], expected: InfoHash) -> Result<Self, MetainfoError> {
        let _ = (raw, expected);
        todo!()
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
    let _ = total;
    todo!()
}

/// Builds the `info` dictionary of a new torrent from its file list and the data, fed in order.
/// Sans-IO: the caller reads the files and passes the bytes to [`InfoBuilder::update`].
pub struct InfoBuilder {
    _private: (),
}

impl InfoBuilder {
    /// `files` are paths relative to the torrent's root (empty for a single-file torrent, whose
    /// only file is `name`) with their lengths, in the order their data will be fed.
    pub fn new(name: &str, files: Vec<(Vec<String>, u64)>, piece_length: u32, private: bool) -> Self {
        let _ = (name, files, piece_length, private);
        todo!()
    }

    pub fn update(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }

    /// The finished info dictionary; panics if fewer bytes were fed than the files hold.
    pub fn finish(self) -> Info {
        todo!()
    }
}

/// A whole `.torrent` file for `info` announcing to `trackers` (tiers).
pub fn torrent_file_bytes(info: &Info, trackers: &[Vec<String>]) -> Vec<u8> {
    let _ = (info, trackers);
    todo!()
}
