//! A tiny bencode writer for hand-made (and deliberately hostile) `.torrent` files.
//!
//! Kept apart from the protocol crate on purpose: the tests must not trust the encoder they test.

use sha1::{Digest, Sha1};

use crate::InfoHash;

/// A bencode value. Dictionary keys are written in the order given, so a test can also build
/// files that are not canonical.
#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs, keys sorted as bencode requires.
    pub fn dict(pairs: Vec<(&str, Value)>) -> Value {
        let mut pairs: Vec<(Vec<u8>, Value)> = pairs
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Dict(pairs)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                out.push(b'l');
                for v in items {
                    v.write(out);
                }
                out.push(b'e');
            }
            Value::Dict(pairs) => {
                out.push(b'd');
                for (k, v) in pairs {
                    Value::Bytes(k.clone()).write(out);
                    v.write(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// One file of a hand-made multi-file torrent: its path components and its bytes.
pub struct TorrentFile<'a> {
    pub path: Vec<&'a str>,
    pub data: &'a [u8],
}

/// A hand-made multi-file `.torrent` and its info-hash.
pub fn multi_file_torrent(
    name: &str,
    piece_length: usize,
    files: &[TorrentFile<'_>],
    announce: Option<&str>,
) -> (Vec<u8>, InfoHash) {
    let all: Vec<u8> = files.iter().flat_map(|f| f.data.iter().copied()).collect();
    let pieces: Vec<u8> = all
        .chunks(piece_length)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    let file_list = files
        .iter()
        .map(|f| {
            Value::dict(vec![
                ("length", Value::Int(f.data.len() as i64)),
                (
                    "path",
                    Value::List(f.path.iter().map(|c| Value::str(c)).collect()),
                ),
            ])
        })
        .collect();
    let info = Value::dict(vec![
        ("files", Value::List(file_list)),
        ("name", Value::str(name)),
        ("piece length", Value::Int(piece_length as i64)),
        ("pieces", Value::Bytes(pieces)),
    ]);
    let info_bytes = info.encode();
    let hash = InfoHash(Sha1::digest(&info_bytes).into());
    let mut top = vec![("info", info)];
    if let Some(url) = announce {
        top.push(("announce", Value::str(url)));
    }
    (Value::dict(top).encode(), hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_sorted_dictionaries() {
        let v = Value::dict(vec![
            ("b", Value::Int(-3)),
            ("a", Value::List(vec![Value::str("xy")])),
        ]);
        assert_eq!(v.encode(), b"d1:al2:xye1:bi-3ee");
    }

    #[test]
    fn info_hash_covers_the_info_bytes() {
        let (bytes, hash) = multi_file_torrent(
            "t",
            16384,
            &[TorrentFile {
                path: vec!["a"],
                data: b"hello",
            }],
            None,
        );
        let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
        let info = &bytes[start..bytes.len() - 1];
        assert_eq!(hash.0, <[u8; 20]>::from(Sha1::digest(info)));
    }
}
