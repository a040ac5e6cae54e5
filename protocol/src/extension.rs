//! The BEP 10 extension protocol, ut_metadata (BEP 9) and ut_pex (BEP 11).

use crate::bencode::{self, Value};
use crate::InfoHash;
use bytes::Bytes;
use serde_bencode::value::Value as OwnedValue;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// The ids we ask peers to use when they send to us (our `m` dictionary).
pub const UT_METADATA_ID: u8 = 1;
pub const UT_PEX_ID: u8 = 2;
/// ut_metadata pieces are 16 KiB.
pub const METADATA_PIECE: usize = 16 * 1024;
/// Metadata larger than this is refused (a `metadata_size` is a peer's claim).
pub const MAX_METADATA: u64 = 64 << 20;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ExtensionError {
    #[error("bad extension message: {0}")]
    Malformed(String),
}

/// The extension handshake dictionary (message id 0 inside `extended`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name -> the id the sender wants to receive it under; 0 disables it.
    pub m: BTreeMap<String, u8>,
    pub p: Option<u16>,
    pub v: Option<String>,
    pub yourip: Option<Vec<u8>>,
    pub ipv4: Option<[u8; 4]>,
    pub ipv6: Option<[u8; 16]>,
    pub reqq: Option<u32>,
    pub metadata_size: Option<u64>,
}

impl ExtHandshake {
    pub fn encode(&self) -> Vec<u8> {
        let m = self
            .m
            .iter()
            .map(|(name, id)| (name.as_bytes().to_vec(), OwnedValue::Int(i64::from(*id))))
            .collect();
        let mut d = Dict::new();
        d.insert(b"m".to_vec(), OwnedValue::Dict(m));
        if let Some(p) = self.p {
            d.insert(b"p".to_vec(), OwnedValue::Int(i64::from(p)));
        }
        if let Some(v) = &self.v {
            d.insert(b"v".to_vec(), OwnedValue::Bytes(v.as_bytes().to_vec()));
        }
        if let Some(ip) = &self.yourip {
            d.insert(b"yourip".to_vec(), OwnedValue::Bytes(ip.clone()));
        }
        if let Some(ip) = self.ipv4 {
            d.insert(b"ipv4".to_vec(), OwnedValue::Bytes(ip.to_vec()));
        }
        if let Some(ip) = self.ipv6 {
            d.insert(b"ipv6".to_vec(), OwnedValue::Bytes(ip.to_vec()));
        }
        if let Some(q) = self.reqq {
            d.insert(b"reqq".to_vec(), OwnedValue::Int(i64::from(q)));
        }
        if let Some(size) = self.metadata_size {
            // Sizes above i64::MAX cannot be bencoded; no real metadata comes near.
            if let Ok(size) = i64::try_from(size) {
                d.insert(b"metadata_size".to_vec(), OwnedValue::Int(size));
            }
        }
        bencode::to_bytes(&OwnedValue::Dict(d))
    }

    /// Unknown keys are ignored; keys of the wrong type are treated as absent.
    ///
    /// So are values out of range: an `m` id above 255 or negative drops that entry, a port or a
    /// `reqq` of 0 is absent, `yourip` must be 4 or 16 bytes, `ipv4` 4 and `ipv6` 16.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let root = decode_dict(payload)?;
        let mut hs = ExtHandshake::default();
        if let Some(Value::Dict(entries)) = root.get("m") {
            for (name, id) in entries {
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), int::<u8>(Some(id))) else {
                    continue;
                };
                hs.m.insert(name.to_owned(), id);
            }
        }
        hs.p = int::<u16>(root.get("p")).filter(|&p| p != 0);
        hs.v = root
            .get("v")
            .and_then(Value::as_bytes)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        hs.yourip = root
            .get("yourip")
            .and_then(Value::as_bytes)
            .filter(|ip| ip.len() == 4 || ip.len() == 16)
            .map(<[u8]>::to_vec);
        hs.ipv4 = fixed::<4>(root.get("ipv4"));
        hs.ipv6 = fixed::<16>(root.get("ipv6"));
        hs.reqq = int::<u32>(root.get("reqq")).filter(|&q| q != 0);
        hs.metadata_size = int::<u64>(root.get("metadata_size"));
        Ok(hs)
    }
}

type Dict = HashMap<Vec<u8>, OwnedValue>;

fn malformed(what: impl std::fmt::Display) -> ExtensionError {
    ExtensionError::Malformed(what.to_string())
}

/// Decodes `data` as exactly one bencoded dictionary.
fn decode_dict(data: &[u8]) -> Result<Value<'_>, ExtensionError> {
    let root = bencode::decode(data).map_err(malformed)?;
    if !root.is_dict() {
        return Err(malformed("not a dictionary"));
    }
    Ok(root)
}

/// An integer that fits `T`; anything else is absent.
fn int<T: TryFrom<i64>>(v: Option<&Value<'_>>) -> Option<T> {
    T::try_from(v?.as_int()?).ok()
}

/// A byte string of exactly `N` bytes; anything else is absent.
fn fixed<const N: usize>(v: Option<&Value<'_>>) -> Option<[u8; N]> {
    v?.as_bytes()?.try_into().ok()
}

/// What a peer told us in its handshakes: the ids to send each extension under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerExtensions {
    ids: BTreeMap<String, u8>,
}

impl PeerExtensions {
    /// Applies a (possibly later) handshake: additive, and an id of 0 removes that extension.
    pub fn update(&mut self, hs: &ExtHandshake) {
        for (name, &id) in &hs.m {
            if id == 0 {
                self.ids.remove(name);
            } else {
                self.ids.insert(name.clone(), id);
            }
        }
    }

    /// The id to send `name` under, if the peer supports it.
    pub fn id(&self, name: &str) -> Option<u8> {
        self.ids.get(name).copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

impl MetadataMsg {
    pub fn encode(&self) -> Vec<u8> {
        let (msg_type, piece) = match self {
            MetadataMsg::Request { piece } => (0, piece),
            MetadataMsg::Data { piece, .. } => (1, piece),
            MetadataMsg::Reject { piece } => (2, piece),
        };
        let mut d = Dict::new();
        d.insert(b"msg_type".to_vec(), OwnedValue::Int(msg_type));
        d.insert(b"piece".to_vec(), OwnedValue::Int(i64::from(*piece)));
        if let MetadataMsg::Data { total_size, .. } = self {
            d.insert(
                b"total_size".to_vec(),
                OwnedValue::Int(i64::try_from(*total_size).unwrap_or(i64::MAX)),
            );
        }
        let mut out = bencode::to_bytes(&OwnedValue::Dict(d));
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// A data message's piece is a slice of `payload`; it may hold at most 16 KiB.
    pub fn decode(payload: &Bytes) -> Result<Self, ExtensionError> {
        let dict_len = bencode::value_len(payload).map_err(malformed)?;
        let dict = payload
            .get(..dict_len)
            .ok_or_else(|| malformed("ut_metadata dictionary overruns the message"))?;
        let root = decode_dict(dict)?;
        let piece = int::<u32>(root.get("piece"))
            .ok_or_else(|| malformed("ut_metadata without a valid piece"))?;
        match int::<u8>(root.get("msg_type")) {
            Some(0) => Ok(MetadataMsg::Request { piece }),
            Some(1) => {
                let total_size = int::<u64>(root.get("total_size"))
                    .ok_or_else(|| malformed("ut_metadata data without a valid total_size"))?;
                let data = payload.slice(dict_len..);
                if data.len() > METADATA_PIECE {
                    return Err(malformed(format!(
                        "ut_metadata piece of {} bytes",
                        data.len()
                    )));
                }
                Ok(MetadataMsg::Data {
                    piece,
                    total_size,
                    data,
                })
            }
            Some(2) => Ok(MetadataMsg::Reject { piece }),
            _ => Err(malformed("ut_metadata without a valid msg_type")),
        }
    }
}

/// Collects ut_metadata pieces for a magnet and checks the result against the info-hash.
pub struct MetadataAssembler {
    info_hash: InfoHash,
    size: u64,
    /// Filled as pieces arrive, so memory follows what peers actually sent, not their claims.
    pieces: Vec<Option<Vec<u8>>>,
}

impl MetadataAssembler {
    /// `None` if `size` is 0 or above [`MAX_METADATA`].
    pub fn new(info_hash: InfoHash, size: u64) -> Option<Self> {
        if size == 0 || size > MAX_METADATA {
            return None;
        }
        // size <= 64 MiB, so the count is at most 4096.
        let count = size.div_ceil(METADATA_PIECE as u64) as usize;
        Some(MetadataAssembler {
            info_hash,
            size,
            pieces: vec![None; count],
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn num_pieces(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Pieces not yet received, in order.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.num_pieces())
            .filter(|&i| self.pieces[i as usize].is_none())
            .collect()
    }

    /// The exact length piece `piece` must have.
    fn piece_len(&self, piece: u32) -> Option<usize> {
        let start = u64::from(piece).checked_mul(METADATA_PIECE as u64)?;
        let left = self.size.checked_sub(start).filter(|&l| l > 0)?;
        Some(left.min(METADATA_PIECE as u64) as usize)
    }

    /// Stores a piece; wrong sizes or indexes are an error. A repeated piece replaces the first.
    pub fn add(&mut self, piece: u32, data: &[u8]) -> Result<(), ExtensionError> {
        let Some(want) = self.piece_len(piece) else {
            return Err(malformed(format!(
                "metadata piece {piece} of {}",
                self.num_pieces()
            )));
        };
        if data.len() != want {
            return Err(malformed(format!(
                "metadata piece {piece} has {} bytes, expected {want}",
                data.len()
            )));
        }
        self.pieces[piece as usize] = Some(data.to_vec());
        Ok(())
    }

    /// Once every piece is in: `Some(Ok(raw info))` if the SHA-1 matches, `Some(Err)` (and the
    /// pieces are cleared) if not; `None` while pieces are missing.
    pub fn finish(&mut self) -> Option<Result<Vec<u8>, ExtensionError>> {
        if self.pieces.iter().any(Option::is_none) {
            return None;
        }
        let mut info = Vec::with_capacity(self.size as usize);
        for piece in &mut self.pieces {
            info.extend_from_slice(&piece.take().unwrap_or_default());
        }
        if Sha1::digest(&info).as_slice() == self.info_hash.0 {
            Some(Ok(info))
        } else {
            Some(Err(malformed("metadata does not match the info-hash")))
        }
    }
}

/// A ut_pex message: peers added and dropped since the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMsg {
    pub added: Vec<SocketAddr>,
    pub dropped: Vec<SocketAddr>,
}

/// Peers kept from one ut_pex message, for `added` and for `dropped` each (v4 and v6 together).
pub const PEX_MAX_PEERS: usize = 200;

impl PexMsg {
    /// Compact `added`/`added.f`/`dropped` and their IPv6 forms.
    pub fn encode(&self) -> Vec<u8> {
        let (added4, added6) = encode_compact(&self.added);
        let (dropped4, dropped6) = encode_compact(&self.dropped);
        let mut d = Dict::new();
        // One flag byte per added peer; 0 claims nothing (no encryption, seed or uTP hints).
        d.insert(
            b"added.f".to_vec(),
            OwnedValue::Bytes(vec![0; added4.len() / 6]),
        );
        d.insert(
            b"added6.f".to_vec(),
            OwnedValue::Bytes(vec![0; added6.len() / 18]),
        );
        d.insert(b"added".to_vec(), OwnedValue::Bytes(added4));
        d.insert(b"added6".to_vec(), OwnedValue::Bytes(added6));
        d.insert(b"dropped".to_vec(), OwnedValue::Bytes(dropped4));
        d.insert(b"dropped6".to_vec(), OwnedValue::Bytes(dropped6));
        bencode::to_bytes(&OwnedValue::Dict(d))
    }

    /// At most a few hundred peers are kept from one message: [`PEX_MAX_PEERS`] added and as many
    /// dropped. Entries with port 0 are skipped; a list whose length is not a whole number of
    /// entries is malformed.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let root = decode_dict(payload)?;
        let list = |key: &str| -> Result<Vec<SocketAddr>, ExtensionError> {
            let Some(data) = root.get(key).and_then(Value::as_bytes) else {
                return Ok(Vec::new());
            };
            let entry = if key.ends_with('6') { 18 } else { 6 };
            decode_compact(data, entry, PEX_MAX_PEERS).ok_or_else(|| {
                malformed(format!(
                    "pex {key} of {} bytes is not a list of {entry}-byte peers",
                    data.len()
                ))
            })
        };
        let mut added = list("added")?;
        added.extend(list("added6")?);
        added.truncate(PEX_MAX_PEERS);
        let mut dropped = list("dropped")?;
        dropped.extend(list("dropped6")?);
        dropped.truncate(PEX_MAX_PEERS);
        Ok(PexMsg { added, dropped })
    }
}

/// Compact peers (BEP 23 / BEP 7): 6 bytes per IPv4 peer or 18 per IPv6 peer, address then port,
/// big-endian. `None` if `data` is not a whole number of `entry`-byte peers (6 or 18). Port 0
/// entries are skipped: nobody can be reached there. At most `max` peers are returned.
pub fn decode_compact(data: &[u8], entry: usize, max: usize) -> Option<Vec<SocketAddr>> {
    if entry != 6 && entry != 18 {
        return None;
    }
    let chunks = data.chunks_exact(entry);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let peers = chunks
        .filter_map(|c| {
            let (ip, port) = c.split_at(entry - 2);
            let port = u16::from_be_bytes([port[0], port[1]]);
            let ip = match <[u8; 4]>::try_from(ip) {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?)),
            };
            (port != 0).then_some(SocketAddr::new(ip, port))
        })
        .take(max)
        .collect();
    Some(peers)
}

/// The compact IPv4 and IPv6 forms of `peers`; IPv4-mapped IPv6 addresses go in the IPv4 list.
pub fn encode_compact(peers: &[SocketAddr]) -> (Vec<u8>, Vec<u8>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for peer in peers {
        let ip = match peer.ip() {
            IpAddr::V6(ip) => ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
            ip => ip,
        };
        let out = match ip {
            IpAddr::V4(ip) => {
                v4.extend_from_slice(&ip.octets());
                &mut v4
            }
            IpAddr::V6(ip) => {
                v6.extend_from_slice(&ip.octets());
                &mut v6
            }
        };
        out.extend_from_slice(&peer.port().to_be_bytes());
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn handshake_round_trip_sorted_and_only_set_fields() {
        let mut hs = ExtHandshake::default();
        hs.m.insert("ut_pex".into(), UT_PEX_ID);
        hs.m.insert("ut_metadata".into(), UT_METADATA_ID);
        hs.v = Some("bw 0.1".into());
        hs.reqq = Some(250);
        hs.metadata_size = Some(31235);
        let enc = hs.encode();
        assert_eq!(
            enc,
            b"d1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei31235e4:reqqi250e1:v6:bw 0.1e"
        );
        assert_eq!(ExtHandshake::decode(&enc).unwrap(), hs);

        let full = ExtHandshake {
            p: Some(6881),
            yourip: Some(vec![127, 0, 0, 1]),
            ipv4: Some([10, 0, 0, 1]),
            ipv6: Some([0xfe; 16]),
            ..hs
        };
        assert_eq!(ExtHandshake::decode(&full.encode()).unwrap(), full);
        assert_eq!(ExtHandshake::default().encode(), b"d1:mdee");
    }

    #[test]
    fn handshake_unknown_keys_wrong_types_and_ranges() {
        let payload = b"d\
            1:ei1e\
            1:md11:ut_metadatai3e6:ut_pexi300e5:lt_dhi-1e4:xyzz3:abc7:upload_i0ee\
            13:metadata_size3:big\
            1:pi70000e\
            4:reqqi-5e\
            1:vli1ee\
            4:ipv44:\x01\x02\x03\x04\
            4:ipv63:abc\
            6:yourip5:abcde\
            3:zzzd1:ai1eee";
        let hs = ExtHandshake::decode(payload).unwrap();
        let m: Vec<_> = hs.m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(m, [("upload_", 0), ("ut_metadata", 3)]);
        assert_eq!(hs.p, None);
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.v, None);
        assert_eq!(hs.metadata_size, None);
        assert_eq!(hs.ipv4, Some([1, 2, 3, 4]));
        assert_eq!(hs.ipv6, None);
        assert_eq!(hs.yourip, None);

        // m of the wrong type: absent, not an error.
        assert_eq!(
            ExtHandshake::decode(b"d1:mi5ee").unwrap(),
            ExtHandshake::default()
        );
        // Not a dictionary, or not bencode at all: an error.
        assert!(ExtHandshake::decode(b"li1ee").is_err());
        assert!(ExtHandshake::decode(b"d1:m").is_err());
        assert!(ExtHandshake::decode(b"").is_err());
    }

    #[test]
    fn peer_extensions_additive_and_disabled_by_zero() {
        let hs = |pairs: &[(&str, u8)]| ExtHandshake {
            m: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        };
        let mut peer = PeerExtensions::default();
        peer.update(&hs(&[("ut_metadata", 3), ("ut_pex", 1)]));
        assert_eq!(peer.id("ut_metadata"), Some(3));
        assert_eq!(peer.id("ut_pex"), Some(1));
        // A later handshake mentioning only some names leaves the others.
        peer.update(&hs(&[("lt_donthave", 7), ("ut_metadata", 4)]));
        assert_eq!(peer.id("ut_metadata"), Some(4));
        assert_eq!(peer.id("ut_pex"), Some(1));
        assert_eq!(peer.id("lt_donthave"), Some(7));
        peer.update(&hs(&[("ut_pex", 0), ("unknown", 0)]));
        assert_eq!(peer.id("ut_pex"), None);
        assert_eq!(peer.id("unknown"), None);
        assert_eq!(peer.id("ut_metadata"), Some(4));
    }

    #[test]
    fn metadata_messages_round_trip_with_zero_copy_data() {
        let data = Bytes::from(vec![0x65u8; 1000]); // 'e' bytes must not confuse the split
        let msgs = [
            MetadataMsg::Request { piece: 0 },
            MetadataMsg::Reject { piece: 5 },
            MetadataMsg::Data {
                piece: 2,
                total_size: 33768,
                data: data.clone(),
            },
        ];
        for m in &msgs {
            let enc = Bytes::from(m.encode());
            assert_eq!(&MetadataMsg::decode(&enc).unwrap(), m);
        }
        let enc = Bytes::from(msgs[2].encode());
        assert!(enc.starts_with(b"d8:msg_typei1e5:piecei2e10:total_sizei33768ee"));
        let Ok(MetadataMsg::Data { data: got, .. }) = MetadataMsg::decode(&enc) else {
            panic!("not data")
        };
        assert_eq!(got.as_ptr(), enc[enc.len() - 1000..].as_ptr());
    }

    #[test]
    fn metadata_messages_malformed() {
        for bad in [
            &b"d8:msg_typei0ee"[..],
            b"d5:piecei0ee",
            b"d8:msg_typei3e5:piecei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"d8:msg_typei1e5:piecei0e10:total_sizei-3ee",
            b"d8:msg_typei0e5:piece",
            b"i3e",
            b"",
        ] {
            assert!(
                MetadataMsg::decode(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        big.extend(vec![0; METADATA_PIECE + 1]);
        assert!(MetadataMsg::decode(&Bytes::from(big)).is_err());
    }

    fn sample_info(len: usize) -> (Vec<u8>, InfoHash) {
        let info: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let hash = InfoHash(Sha1::digest(&info).into());
        (info, hash)
    }

    #[test]
    fn assembler_collects_and_verifies() {
        let (info, hash) = sample_info(2 * METADATA_PIECE + 100);
        let mut asm = MetadataAssembler::new(hash, info.len() as u64).unwrap();
        assert_eq!(asm.size(), info.len() as u64);
        assert_eq!(asm.num_pieces(), 3);
        assert_eq!(asm.missing(), [0, 1, 2]);
        asm.add(2, &info[2 * METADATA_PIECE..]).unwrap();
        assert!(asm.finish().is_none());
        // Wrong sizes for the index, and indexes past the end.
        assert!(asm.add(0, &info[..100]).is_err());
        assert!(asm.add(1, &info[..METADATA_PIECE + 1]).is_err());
        assert!(asm.add(2, &info[..METADATA_PIECE]).is_err());
        assert!(asm.add(3, &info[..100]).is_err());
        assert!(asm.add(u32::MAX, &info[..100]).is_err());
        assert_eq!(asm.missing(), [0, 1]);
        asm.add(0, &info[..METADATA_PIECE]).unwrap();
        asm.add(1, &info[METADATA_PIECE..2 * METADATA_PIECE])
            .unwrap();
        assert!(asm.missing().is_empty());
        assert_eq!(asm.finish(), Some(Ok(info)));
    }

    #[test]
    fn assembler_hash_mismatch_clears() {
        let (info, hash) = sample_info(METADATA_PIECE + 1);
        let mut asm = MetadataAssembler::new(hash, info.len() as u64).unwrap();
        let mut bad = info.clone();
        bad[5] ^= 1;
        asm.add(0, &bad[..METADATA_PIECE]).unwrap();
        asm.add(1, &bad[METADATA_PIECE..]).unwrap();
        assert!(matches!(asm.finish(), Some(Err(_))));
        assert_eq!(asm.missing(), [0, 1]);
        assert!(asm.finish().is_none());
        asm.add(0, &info[..METADATA_PIECE]).unwrap();
        asm.add(1, &info[METADATA_PIECE..]).unwrap();
        assert_eq!(asm.finish(), Some(Ok(info)));
    }

    #[test]
    fn assembler_refuses_bad_sizes() {
        let hash = InfoHash([0; 20]);
        assert!(MetadataAssembler::new(hash, 0).is_none());
        assert!(MetadataAssembler::new(hash, MAX_METADATA + 1).is_none());
        let exact = MetadataAssembler::new(hash, METADATA_PIECE as u64).unwrap();
        assert_eq!(exact.num_pieces(), 1);
        assert_eq!(
            MetadataAssembler::new(hash, MAX_METADATA)
                .unwrap()
                .num_pieces(),
            4096
        );
    }

    #[test]
    fn pex_round_trip_v4_and_v6() {
        let msg = PexMsg {
            added: vec![
                addr("1.2.3.4:6881"),
                addr("[2001:db8::1]:51413"),
                addr("10.0.0.2:1"),
            ],
            dropped: vec![addr("[::1]:80"), addr("5.6.7.8:65535")],
        };
        let enc = msg.encode();
        let back = PexMsg::decode(&enc).unwrap();
        // Each family keeps its order; IPv4 comes first.
        assert_eq!(
            back.added,
            [
                addr("1.2.3.4:6881"),
                addr("10.0.0.2:1"),
                addr("[2001:db8::1]:51413")
            ]
        );
        assert_eq!(back.dropped, [addr("5.6.7.8:65535"), addr("[::1]:80")]);
        assert!(enc.windows(13).any(|w| w == b"7:added.f2:\0\0"));
        assert_eq!(
            PexMsg::decode(&PexMsg::default().encode()).unwrap(),
            PexMsg::default()
        );

        // IPv4-mapped addresses travel as IPv4.
        let mapped = PexMsg {
            added: vec![addr("[::ffff:1.2.3.4]:5")],
            dropped: vec![],
        };
        assert_eq!(
            PexMsg::decode(&mapped.encode()).unwrap().added,
            [addr("1.2.3.4:5")]
        );
    }

    #[test]
    fn pex_malformed_bounded_and_port_zero() {
        assert!(PexMsg::decode(b"d5:added5:abcdee").is_err());
        assert!(PexMsg::decode(b"d6:added66:abcdefe").is_err());
        assert!(PexMsg::decode(b"d7:dropped7:abcdefge").is_err());
        assert!(PexMsg::decode(b"le").is_err());
        // Wrong types are absent.
        assert_eq!(PexMsg::decode(b"d5:addedi3ee").unwrap(), PexMsg::default());

        let mut added = Vec::new();
        for i in 0..300u32 {
            added.extend_from_slice(&(0x0a00_0000 + i).to_be_bytes());
            added.extend_from_slice(&(if i == 0 { 0u16 } else { 7u16 }).to_be_bytes());
        }
        let mut payload = format!("d5:added{}:", added.len()).into_bytes();
        payload.extend_from_slice(&added);
        payload.extend_from_slice(b"7:dropped6:\x01\x02\x03\x04\x00\x00e");
        let msg = PexMsg::decode(&payload).unwrap();
        assert_eq!(msg.added.len(), PEX_MAX_PEERS);
        assert_eq!(msg.added[0], addr("10.0.0.1:7"));
        assert!(msg.dropped.is_empty());
    }
}
