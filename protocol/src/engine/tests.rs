//! Whole swarms in memory on a virtual clock: engines wired to each other through a fake network
//! that splits the byte streams at random; and single engines fed arbitrary messages.

use super::*;
use crate::extension::{
    ExtHandshake, MetadataMsg, PexMsg, METADATA_PIECE, UT_METADATA_ID, UT_PEX_ID,
};
use crate::metainfo::{Info, InfoBuilder};
use crate::storage::{MemoryStorage, Storage, StorageError};
use crate::wire::{BlockRequest, Decoder, Handshake, Message};
use crate::PeerId;
use bytes::Bytes;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use super::picker::{BlockOutcome, Picker, PieceOutcome};
use sha1::{Digest, Sha1};

/// Reads return garbage once `corrupt` is set: a seeder that passed its own check and then
/// serves bad data.
struct CorruptingStorage {
    inner: MemoryStorage,
    corrupt: Rc<Cell<bool>>,
}

impl Storage for CorruptingStorage {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read(offset, buf)?;
        if self.corrupt.get() {
            for b in buf.iter_mut() {
                *b ^= 0x5a;
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.inner.write(offset, data)
    }
}

pub(crate) use crate::testing::{make_torrent, SharedStorage};

struct Node {
    addr: SocketAddr,
    torrent: Torrent,
    events: Vec<Event>,
    /// A peer played by the test instead of `torrent` (which then stays idle).
    script: Option<ScriptedPeer>,
}

/// Each call goes to the scripted peer if the node has one, else to its engine.
impl Node {
    fn incoming(&mut self, from: SocketAddr, now: u64) -> Option<ConnId> {
        match &mut self.script {
            Some(s) => Some(s.incoming()),
            None => self.torrent.handle_incoming(from, now),
        }
    }

    fn closed(&mut self, conn: ConnId, now: u64) {
        match &mut self.script {
            Some(s) => s.closed(conn),
            None => self.torrent.handle_closed(conn, now),
        }
    }

    fn data(&mut self, conn: ConnId, data: &[u8], now: u64) {
        match &mut self.script {
            Some(s) => s.data(conn, data),
            None => self.torrent.handle_data(conn, data, now),
        }
    }

    fn transmit(&mut self, now: u64, buf: &mut Vec<u8>) -> Option<ConnId> {
        match &mut self.script {
            Some(s) => {
                let (conn, bytes) = s.out.pop_front()?;
                *buf = bytes;
                Some(conn)
            }
            None => self.torrent.poll_transmit(now, buf),
        }
    }

    fn hangups(&mut self) -> Vec<ConnId> {
        match &mut self.script {
            Some(s) => std::mem::take(&mut s.hangups),
            None => Vec::new(),
        }
    }

    fn sent(&mut self, conn: ConnId, bytes: usize, now: u64) {
        if self.script.is_none() {
            self.torrent.handle_sent(conn, bytes, now);
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        match self.script {
            Some(_) => None,
            None => self.torrent.poll_event(),
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        match self.script {
            Some(_) => None,
            None => self.torrent.poll_timeout(),
        }
    }

    fn timeout(&mut self, now: u64) {
        if self.script.is_none() {
            self.torrent.handle_timeout(now);
        }
    }
}

/// A peer that lies about a torrent's metadata: it answers the BitTorrent handshake with an
/// extension handshake claiming `metadata_size`, and every ut_metadata request with a piece of
/// `metadata` (which has that size). It accepts connections only.
struct ScriptedPeer {
    info_hash: crate::InfoHash,
    metadata: Vec<u8>,
    conns: BTreeMap<ConnId, (Decoder, bool)>,
    out: VecDeque<(ConnId, Vec<u8>)>,
    next_conn: u64,
    /// ut_metadata requests answered.
    answered: Rc<Cell<u32>>,
    /// Connections it hung up on: bytes that were no plain handshake (an encrypted one), as a
    /// client without encryption does.
    hangups: Vec<ConnId>,
}

impl ScriptedPeer {
    fn new(info_hash: crate::InfoHash, metadata: Vec<u8>) -> Self {
        ScriptedPeer {
            info_hash,
            metadata,
            conns: BTreeMap::new(),
            out: VecDeque::new(),
            next_conn: 1,
            answered: Rc::new(Cell::new(0)),
            hangups: Vec::new(),
        }
    }

    fn incoming(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(conn, (Decoder::new(1 << 20), false));
        conn
    }

    fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    fn data(&mut self, conn: ConnId, data: &[u8]) {
        let Some((decoder, handshaken)) = self.conns.get_mut(&conn) else {
            return;
        };
        decoder.push(data);
        let mut out = Vec::new();
        if !*handshaken {
            match decoder.next_handshake() {
                Ok(Some(hs)) => assert_eq!(hs.info_hash, self.info_hash),
                Ok(None) => return,
                Err(_) => {
                    self.conns.remove(&conn);
                    self.hangups.push(conn);
                    return;
                }
            }
            *handshaken = true;
            out.extend_from_slice(&Handshake::new(self.info_hash, PeerId::generate(666)).encode());
            let ext = ExtHandshake {
                m: [("ut_metadata".into(), 3)].into(),
                metadata_size: Some(self.metadata.len() as u64),
                ..ExtHandshake::default()
            };
            Message::Extended {
                id: 0,
                payload: ext.encode().into(),
            }
            .encode(&mut out);
        }
        while let Some(msg) = decoder.next().unwrap() {
            let Message::Extended { id: 3, payload } = msg else {
                continue;
            };
            let Ok(MetadataMsg::Request { piece }) = MetadataMsg::decode(&payload) else {
                continue;
            };
            let start = (piece as usize * METADATA_PIECE).min(self.metadata.len());
            let end = (start + METADATA_PIECE).min(self.metadata.len());
            let reply = MetadataMsg::Data {
                piece,
                total_size: self.metadata.len() as u64,
                data: Bytes::copy_from_slice(&self.metadata[start..end]),
            };
            Message::Extended {
                id: UT_METADATA_ID,
                payload: reply.encode().into(),
            }
            .encode(&mut out);
            self.answered.set(self.answered.get() + 1);
        }
        if !out.is_empty() {
            self.out.push_back((conn, out));
        }
    }
}

/// The fake network: node index and connection on each end of every link.
struct Net {
    nodes: Vec<Node>,
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Outgoing connections waiting for the other side to accept.
    pending: VecDeque<(usize, ConnId, SocketAddr)>,
    /// `Event::HashPiece` jobs, answered on a later round as a driver's asynchronous hash is.
    hash_jobs: VecDeque<(usize, u32, u64)>,
    /// The first bytes each side sent on each connection (node, conn): plain or MSE.
    first_bytes: BTreeMap<(usize, ConnId), Vec<u8>>,
    now: u64,
    rng: fastrand::Rng,
}

impl Net {
    fn new() -> Self {
        Net {
            nodes: Vec::new(),
            links: BTreeMap::new(),
            pending: VecDeque::new(),
            hash_jobs: VecDeque::new(),
            first_bytes: BTreeMap::new(),
            now: 0,
            rng: fastrand::Rng::with_seed(7),
        }
    }

    fn add(&mut self, torrent: Torrent) -> usize {
        let i = self.nodes.len();
        let addr: SocketAddr = format!("10.0.0.{}:6881", i + 1).parse().unwrap();
        self.nodes.push(Node {
            addr,
            torrent,
            events: Vec::new(),
            script: None,
        });
        i
    }

    fn add_script(&mut self, script: ScriptedPeer) -> usize {
        let idle = Torrent::new(
            script.info_hash,
            None,
            PeerId::generate(0),
            Config::default(),
            0,
        );
        let i = self.add(idle);
        self.nodes[i].script = Some(script);
        i
    }

    /// Delivers everything until no engine has anything more to say.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(ev) = self.nodes[i].poll_event() {
                    busy = true;
                    match &ev {
                        Event::Connect { conn, addr } => self.pending.push_back((i, *conn, *addr)),
                        Event::HashPiece { piece, job } => {
                            self.hash_jobs.push_back((i, *piece, *job))
                        }
                        Event::Close { conn, .. } => {
                            if let Some((j, c)) = self.links.remove(&(i, *conn)) {
                                self.links.remove(&(j, c));
                                self.nodes[j].closed(c, self.now);
                            }
                        }
                        _ => {}
                    }
                    self.nodes[i].events.push(ev);
                }
            }
            while let Some((i, conn, addr)) = self.pending.pop_front() {
                busy = true;
                let from = self.nodes[i].addr;
                let target = self.nodes.iter().position(|n| n.addr == addr);
                match target.and_then(|j| self.nodes[j].incoming(from, self.now).map(|c| (j, c))) {
                    Some((j, c)) => {
                        self.links.insert((i, conn), (j, c));
                        self.links.insert((j, c), (i, conn));
                        self.nodes[i].torrent.handle_connected(conn, self.now);
                    }
                    None => self.nodes[i].torrent.handle_closed(conn, self.now),
                }
            }
            let mut bytes = Vec::new();
            for i in 0..self.nodes.len() {
                while let Some(conn) = self.nodes[i].transmit(self.now, &mut bytes) {
                    busy = true;
                    let len = bytes.len();
                    let first = self.first_bytes.entry((i, conn)).or_default();
                    if first.len() < 20 {
                        first.extend_from_slice(&bytes[..len.min(20 - first.len())]);
                    }
                    if let Some(&(j, c)) = self.links.get(&(i, conn)) {
                        // Random splits exercise the incremental decoder.
                        let mut rest = &bytes[..];
                        while !rest.is_empty() {
                            let n = self.rng.usize(1..=rest.len().min(40_000));
                            self.nodes[j].data(c, &rest[..n], self.now);
                            rest = &rest[n..];
                        }
                    }
                    self.nodes[i].sent(conn, len, self.now);
                }
                for conn in self.nodes[i].hangups() {
                    busy = true;
                    if let Some((j, c)) = self.links.remove(&(i, conn)) {
                        self.links.remove(&(j, c));
                        self.nodes[j].closed(c, self.now);
                    }
                }
            }
            let mut piece = Vec::new();
            while let Some((i, index, job)) = self.hash_jobs.pop_front() {
                busy = true;
                let t = &mut self.nodes[i].torrent;
                t.read_piece(index, &mut piece).unwrap();
                t.handle_piece_hash(index, job, Sha1::digest(&piece).into(), self.now);
            }
            if !busy {
                return;
            }
        }
    }

    /// Runs until `done` or the virtual deadline, advancing the clock to each next timeout.
    fn run_until(&mut self, deadline_ms: u64, done: impl Fn(&Net) -> bool) -> bool {
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.poll_timeout())
                .min()
                .unwrap_or(self.now + 1000);
            self.now = next.max(self.now + 1);
            if self.now > deadline_ms {
                return false;
            }
            for n in &mut self.nodes {
                n.timeout(self.now);
            }
        }
    }
}

/// An engine over a store holding `data`, with every piece that matches already checked.
fn checked(info: &Info, data: &[u8], seed: u64) -> Torrent {
    let mut t = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(seed),
        Config::default(),
        seed,
    );
    t.attach_storage(
        Box::new(MemoryStorage {
            data: data.to_vec(),
        }),
        0,
    );
    assert!(t.check_existing(u32::MAX, 0).unwrap());
    t
}

fn seeder(info: &Info, data: &[u8], seed: u64) -> Torrent {
    let t = checked(info, data, seed);
    assert!(t.is_complete());
    t
}

#[test]
fn leecher_completes_despite_a_corrupt_seeder_and_bans_it() {
    corrupt_seeder_is_banned(Config::default());
}

#[test]
fn driver_hashing_completes_despite_a_corrupt_seeder_and_bans_it() {
    corrupt_seeder_is_banned(Config {
        driver_hashes: true,
        ..Config::default()
    });
}

fn corrupt_seeder_is_banned(leech_config: Config) {
    let (data, info) = make_torrent(3 * 1024 * 1024 + 12345, 64 * 1024, 1);
    let mut net = Net::new();
    let good = net.add(seeder(&info, &data, 11));

    let corrupt_flag = Rc::new(Cell::new(false));
    let mut bad_t = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(12),
        Config::default(),
        12,
    );
    bad_t.attach_storage(
        Box::new(CorruptingStorage {
            inner: MemoryStorage { data: data.clone() },
            corrupt: corrupt_flag.clone(),
        }),
        0,
    );
    assert!(bad_t.check_existing(u32::MAX, 0).unwrap());
    corrupt_flag.set(true);
    let bad = net.add(bad_t);

    let store = SharedStorage(Rc::new(std::cell::RefCell::new(MemoryStorage::new(
        info.total_length,
    ))));
    let mut leech = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(13),
        leech_config,
        13,
    );
    leech.attach_storage(Box::new(store.clone()), 0);
    assert!(leech.check_existing(u32::MAX, 0).unwrap());
    // The corrupt peer first, so that it certainly gets pieces of its own to fail.
    leech.add_peers(
        &[net.nodes[bad].addr, net.nodes[good].addr],
        PeerSource::Manual,
        0,
    );
    let l = net.add(leech);

    assert!(
        net.run_until(600_000, |n| n.nodes[l].torrent.is_complete()),
        "download did not complete"
    );
    assert!(
        store.0.borrow().data == data,
        "downloaded bytes differ from the source"
    );
    let bad_addr = net.nodes[bad].addr;
    assert!(
        net.nodes[l].events.contains(&Event::PeerBanned(bad_addr)),
        "corrupt peer not banned"
    );
    assert!(net.nodes[l]
        .events
        .iter()
        .any(|e| matches!(e, Event::PieceFailed(_))));
    assert!(net.nodes[l].events.contains(&Event::Complete));
    let good_addr = net.nodes[good].addr;
    assert!(!net.nodes[l].events.contains(&Event::PeerBanned(good_addr)));
}

#[test]
fn magnet_fetches_metadata_then_downloads_from_two_seeders() {
    let (data, info) = make_torrent(700_000, 32 * 1024, 2);
    let mut net = Net::new();
    let s1 = net.add(seeder(&info, &data, 21));
    let s2 = net.add(seeder(&info, &data, 22));
    let mut leech = Torrent::new(
        info.info_hash,
        None,
        PeerId::generate(23),
        Config::default(),
        23,
    );
    leech.add_peers(
        &[net.nodes[s1].addr, net.nodes[s2].addr],
        PeerSource::Magnet,
        0,
    );
    let l = net.add(leech);

    assert!(
        net.run_until(60_000, |n| n.nodes[l].torrent.info().is_some()),
        "no metadata"
    );
    assert_eq!(net.nodes[l].torrent.info().unwrap().raw, info.raw);
    let store = SharedStorage(Rc::new(std::cell::RefCell::new(MemoryStorage::new(
        info.total_length,
    ))));
    net.nodes[l]
        .torrent
        .attach_storage(Box::new(store.clone()), net.now);
    assert!(net.nodes[l]
        .torrent
        .check_existing(u32::MAX, net.now)
        .unwrap());
    assert!(
        net.run_until(600_000, |n| n.nodes[l].torrent.is_complete()),
        "download did not complete"
    );
    assert!(store.0.borrow().data == data);
    assert_eq!(net.nodes[l].torrent.file_progress(), vec![1000, 699_000]);
    let stats = net.nodes[l].torrent.stats(net.now);
    assert_eq!(stats.verified, info.total_length);
}

#[test]
fn resume_keeps_verified_pieces() {
    let (data, info) = make_torrent(500_000, 16 * 1024, 3);
    let mut partial = data.clone();
    // Damage the second half: only the first half survives the check.
    for b in &mut partial[250_000..] {
        *b = 0;
    }
    let mut t = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(31),
        Config::default(),
        31,
    );
    t.attach_storage(Box::new(MemoryStorage { data: partial }), 0);
    let mut rounds = 0;
    while !t.check_existing(5, 0).unwrap() {
        rounds += 1;
    }
    assert!(rounds >= 5, "checking is done in slices");
    let have = t.have().iter().filter(|h| **h).count();
    assert_eq!(have, 250_000 / 16384);
    assert!(!t.is_complete());
}

#[test]
fn assume_checked_skips_hashing_and_checks_the_length() {
    let (data, info) = make_torrent(200_000, 16 * 1024, 4);
    let mut t = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(41),
        Config::default(),
        41,
    );
    t.attach_storage(Box::new(MemoryStorage { data }), 0);
    assert!(!t.assume_checked(&[true; 3], 0), "wrong length is refused");
    assert!(!t.is_complete());
    assert!(t.assume_checked(&vec![true; info.num_pieces() as usize], 0));
    assert!(t.is_complete());
    assert_eq!(t.poll_event(), Some(Event::Complete));
}

#[test]
fn a_driver_hash_for_a_piece_given_up_is_ignored() {
    let data = vec![7u8; 20_000];
    let digest: [u8; 20] = Sha1::digest(&data).into();
    let mut picker = Picker::new(32 * 1024, data.len() as u64, vec![digest], 5, true);
    let mut store = MemoryStorage::new(data.len() as u64);
    let mut bits = Bitfield::new(1);
    bits.set(0);
    let from: SocketAddr = "10.0.0.9:6881".parse().unwrap();
    let mut download = |picker: &mut Picker| {
        let mut reqs = Vec::new();
        // Two blocks, no endgame duplicates: one request each.
        picker.pick(ConnId(1), &bits, 2, &|_| false, &mut reqs);
        assert_eq!(reqs.len(), 2);
        let mut last = None;
        for r in reqs {
            let block = &data[r.begin as usize..(r.begin + r.length) as usize];
            last = match picker.block_received(0, r.begin, block, from, &mut store) {
                Ok(BlockOutcome::Stored { piece, .. }) => piece,
                _ => panic!("block not stored"),
            };
        }
        match last {
            Some(PieceOutcome::NeedsHash { job }) => job,
            _ => panic!("the driver is not asked to hash"),
        }
    };
    let stale = download(&mut picker);
    // A pause gives the piece up; it is downloaded again under a new job.
    picker.clear_partials();
    let current = download(&mut picker);
    assert_ne!(stale, current);
    assert!(picker.piece_hashed(0, stale, digest).is_none());
    assert!(!picker.has(0));
    assert!(matches!(
        picker.piece_hashed(0, current, [0; 20]),
        Some(PieceOutcome::Failed { .. })
    ));
    assert!(!picker.has(0));
    let again = download(&mut picker);
    assert!(matches!(
        picker.piece_hashed(0, again, digest),
        Some(PieceOutcome::Verified)
    ));
    assert!(picker.has(0));
}

#[test]
fn one_pick_that_reaches_endgame_never_asks_the_same_peer_twice_for_a_block() {
    // Three pieces of two blocks: one pick for more than that takes every free block, then
    // finds itself in endgame. The blocks it just took are not yet among the peer's requests.
    let piece = 32 * 1024;
    let mut picker = Picker::new(piece, 3 * piece as u64, vec![[0; 20]; 3], 5, true);
    let mut bits = Bitfield::new(3);
    for i in 0..3 {
        bits.set(i);
    }
    let mut reqs = Vec::new();
    picker.pick(ConnId(1), &bits, 100, &|_| false, &mut reqs);
    let unique: std::collections::BTreeSet<_> = reqs.iter().copied().collect();
    assert_eq!((reqs.len(), unique.len()), (6, 6), "{reqs:?}");
    // A second peer may still duplicate them, once each.
    let mut other = Vec::new();
    picker.pick(ConnId(2), &bits, 100, &|_| false, &mut other);
    assert_eq!(other.len(), 6, "{other:?}");
}

/// A message a hostile or broken peer might send: the right framing, arbitrary contents. Unless
/// `wild`, its numbers are within the torrent's bounds, so a peer can live long enough to be
/// unchoked and served; `wild` ones reach the other side of every check. Before the engine has
/// the metadata, a tame peer sends nothing that refers to blocks.
fn arbitrary_message(rng: &mut fastrand::Rng, info: &Info, wild: bool, blocks: bool) -> Message {
    let pieces = info.num_pieces();
    let index = |rng: &mut fastrand::Rng| match wild {
        true => rng.u32(..),
        false => rng.u32(..pieces),
    };
    let block = |rng: &mut fastrand::Rng| {
        if wild {
            return BlockRequest {
                index: rng.u32(..pieces + 2),
                begin: rng.u32(..4) * 16 * 1024 + rng.u32(..2),
                length: match rng.bool() {
                    true => rng.u32(..),
                    false => rng.u32(..64 * 1024),
                },
            };
        }
        let index = rng.u32(..pieces);
        let len = if index + 1 == pieces {
            info.total_length - index as u64 * info.piece_length as u64
        } else {
            info.piece_length as u64
        } as u32;
        let begin = rng.u32(..len.div_ceil(16 * 1024)) * 16 * 1024;
        BlockRequest {
            index,
            begin,
            length: (len - begin).min(16 * 1024),
        }
    };
    let bytes = |rng: &mut fastrand::Rng, max: usize| -> Bytes {
        let len = rng.usize(..=max);
        (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>().into()
    };
    match rng.u8(..20) {
        9..=13 | 16 if !wild && !blocks => Message::KeepAlive,
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3..=5 => Message::Interested,
        6 => Message::NotInterested,
        7 => Message::Have(index(rng)),
        8 => Message::Bitfield(match wild {
            true => bytes(rng, pieces as usize / 8 + 3),
            false => {
                let mut bits = vec![0u8; (pieces as usize).div_ceil(8)];
                for i in 0..pieces as usize {
                    if rng.bool() {
                        bits[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                bits.into()
            }
        }),
        9..=11 => Message::Request(block(rng)),
        12 => {
            let b = block(rng);
            Message::Piece {
                index: b.index,
                begin: b.begin,
                data: bytes(rng, b.length.min(17 * 1024) as usize),
            }
        }
        13 => Message::Cancel(block(rng)),
        14 => Message::HaveAll,
        15 => Message::HaveNone,
        16 => Message::RejectRequest(block(rng)),
        17 => Message::AllowedFast(index(rng)),
        18 => Message::SuggestPiece(index(rng)),
        _ => {
            let (id, payload) = arbitrary_extension(rng, info, wild);
            Message::Extended { id, payload }
        }
    }
}

/// An extension message under the id our engine announces for it (any id if `wild`).
fn arbitrary_extension(rng: &mut fastrand::Rng, info: &Info, wild: bool) -> (u8, Bytes) {
    let size = match wild {
        true => rng.u64(..),
        false => info.raw.len() as u64,
    };
    let kind = rng.u8(..4 + wild as u8);
    let payload: Bytes = match kind {
        0 => {
            let mut hs = ExtHandshake::default();
            hs.m.insert("ut_metadata".into(), rng.u8(..4));
            hs.m.insert("ut_pex".into(), rng.u8(..4));
            hs.metadata_size = rng.bool().then_some(size);
            hs.reqq = rng.bool().then(|| rng.u32(..));
            hs.encode().into()
        }
        1 => MetadataMsg::Request {
            piece: rng.u32(..(info.raw.len() / METADATA_PIECE) as u32 + 1 + wild as u32),
        }
        .encode()
        .into(),
        2 => {
            let piece = rng.u32(..(info.raw.len() / METADATA_PIECE) as u32 + 1 + wild as u32);
            let start = (piece as usize * METADATA_PIECE).min(info.raw.len());
            let end = (start + METADATA_PIECE).min(info.raw.len());
            let mut data = info.raw[start..end].to_vec();
            if wild && !data.is_empty() {
                let at = rng.usize(..data.len());
                data[at] ^= 1;
            }
            MetadataMsg::Data {
                piece,
                total_size: size,
                data: data.into(),
            }
            .encode()
            .into()
        }
        3 => {
            let added: Vec<SocketAddr> = (0..rng.usize(..300))
                .map(|_| SocketAddr::from(([10, rng.u8(..), rng.u8(..), rng.u8(..)], rng.u16(..))))
                .collect();
            PexMsg {
                added,
                dropped: Vec::new(),
            }
            .encode()
            .into()
        }
        _ => (0..rng.usize(..200))
            .map(|_| rng.u8(..))
            .collect::<Vec<u8>>()
            .into(),
    };
    let id = match (wild, kind) {
        (true, _) => rng.u8(..4),
        (false, 0) => 0,
        (false, 3) => UT_PEX_ID,
        (false, _) => UT_METADATA_ID,
    };
    (id, payload)
}

#[test]
fn arbitrary_messages_from_a_peer_never_break_the_engine_or_its_uploads() {
    let (data, info) = make_torrent(300_000, 16 * 1024, 5);
    let piece_length = info.piece_length as usize;
    let mut rng = fastrand::Rng::with_seed(0xbad);
    let addr: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    let (mut blocks_checked, mut closed, mut metadata) = (0, 0, 0);
    for round in 0..300u64 {
        // A seeder, a leecher with half the pieces, and a magnet without metadata yet.
        let mut t = match round % 3 {
            0 => seeder(&info, &data, round),
            1 => {
                let mut half = data.clone();
                half[data.len() / 2..].fill(0);
                checked(&info, &half, round)
            }
            _ => Torrent::new(
                info.info_hash,
                None,
                PeerId::generate(round),
                Config::default(),
                round,
            ),
        };
        let conn = t.handle_incoming(addr, 0).expect("a free slot");
        let hs = Handshake::new(info.info_hash, PeerId::generate(1000 + round));
        t.handle_data(conn, &hs.encode(), 0);
        // Like a real peer, it opens with its extension handshake.
        let ext = ExtHandshake {
            m: [("ut_metadata".into(), 3), ("ut_pex".into(), 4)].into(),
            metadata_size: Some(info.raw.len() as u64),
            ..ExtHandshake::default()
        };
        let mut frame = Vec::new();
        Message::Extended {
            id: 0,
            payload: ext.encode().into(),
        }
        .encode(&mut frame);
        t.handle_data(conn, &frame, 0);
        let mut from_engine = Decoder::new(1 << 20);
        let mut out = Vec::new();
        let mut handshaken = false;
        let mut now = 0;
        // From peers that are nearly well-behaved to peers that are mostly noise.
        let wildness = [0, 1, 5, 30][round as usize % 4];
        'messages: for _ in 0..200 {
            let mut frame = Vec::new();
            let wild = rng.u8(..100) < wildness;
            arbitrary_message(&mut rng, &info, wild, t.info().is_some()).encode(&mut frame);
            if wild && rng.bool() {
                let at = rng.usize(..frame.len());
                frame[at] = rng.u8(..);
            }
            // Any split of the stream must be the same to the engine.
            let mut rest = &frame[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                t.handle_data(conn, &rest[..n], now);
                rest = &rest[n..];
            }
            now += rng.u64(..3000);
            t.handle_timeout(now);
            while let Some(c) = t.poll_transmit(now, &mut out) {
                assert_eq!(c, conn);
                t.handle_sent(c, out.len(), now);
                from_engine.push(&out);
            }
            if !handshaken {
                handshaken = from_engine.next_handshake().unwrap().is_some();
            }
            // Every block the engine uploads must be the source's bytes.
            if handshaken {
                while let Some(msg) = from_engine
                    .next()
                    .expect("the engine sends well-formed messages")
                {
                    if let Message::Piece {
                        index,
                        begin,
                        data: block,
                    } = msg
                    {
                        let at = index as usize * piece_length + begin as usize;
                        assert!(
                            data.get(at..at + block.len()) == Some(&block[..]),
                            "uploaded a block that is not the source's bytes"
                        );
                        blocks_checked += 1;
                    }
                }
            }
            // Other events (connections to peers learnt through PEX, pieces) need no answer.
            while let Some(ev) = t.poll_event() {
                if ev == Event::MetadataReceived {
                    assert_eq!(t.info().map(|i| &i.raw), Some(&info.raw));
                    metadata += 1;
                }
                if let Event::Close { conn: c, reason } = ev {
                    if c == conn {
                        // A seed closes a peer that says it has every piece: both are seeds.
                        let both_seeds = reason == CloseReason::BothSeeds;
                        assert!(
                            wildness > 0 || both_seeds,
                            "a peer within bounds was dropped: {reason}"
                        );
                        closed += 1;
                        break 'messages;
                    }
                }
            }
        }
        // Whatever the peer did, the engine stays usable.
        let _ = (t.stats(now), t.peers(now), t.file_progress());
    }
    assert!(blocks_checked > 50, "only {blocks_checked} uploads checked");
    assert!(closed > 100, "only {closed} of 300 peers dropped");
    assert!(metadata > 10, "metadata received only {metadata} times");
}

/// A torrent with many long file names: its metadata takes several ut_metadata pieces.
fn make_torrent_with_big_metadata(seed: u64) -> (Vec<u8>, Info) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let files: Vec<(Vec<String>, u64)> = (0..250)
        .map(|i| (vec![format!("{i:03}-{}.bin", "x".repeat(150))], 1000))
        .collect();
    let len = files.iter().map(|f| f.1).sum::<u64>() as usize;
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let mut b = InfoBuilder::new("big metadata", files, 16 * 1024, false);
    b.update(&data);
    (data, b.finish())
}

/// A magnet leecher connects first to a scripted peer that serves `lie` as the metadata, then to
/// an honest seeder (after the liar has answered, or at once if not `liar_alone_first`): it gets
/// the metadata all the same, downloads the data, and bans the liar.
fn magnet_beats_a_metadata_liar(data: &[u8], info: &Info, lie: Vec<u8>, liar_alone_first: bool) {
    let mut net = Net::new();
    let script = ScriptedPeer::new(info.info_hash, lie);
    let answered = script.answered.clone();
    let liar = net.add_script(script);
    let honest = net.add(seeder(info, data, 51));
    let liar_addr = net.nodes[liar].addr;
    let honest_addr = net.nodes[honest].addr;
    // Plain handshakes: the scripted liar speaks no MSE, and a fallback would change who answers
    // first, which this scenario is about.
    let config = Config {
        encryption: Encryption::Off,
        ..Config::default()
    };
    let leech = Torrent::new(info.info_hash, None, PeerId::generate(52), config, 52);
    let l = net.add(leech);
    // The liar first, so that its size is the first reported.
    net.nodes[l]
        .torrent
        .add_peers(&[liar_addr], PeerSource::Magnet, net.now);
    if liar_alone_first {
        net.settle();
        assert!(answered.get() > 0, "the liar was not asked");
    }
    net.nodes[l]
        .torrent
        .add_peers(&[honest_addr], PeerSource::Magnet, net.now);

    assert!(
        net.run_until(120_000, |n| n.nodes[l].torrent.info().is_some()),
        "no metadata"
    );
    assert_eq!(net.nodes[l].torrent.info().unwrap().raw, info.raw);
    let store = SharedStorage(Rc::new(std::cell::RefCell::new(MemoryStorage::new(
        info.total_length,
    ))));
    net.nodes[l]
        .torrent
        .attach_storage(Box::new(store.clone()), net.now);
    assert!(net.nodes[l]
        .torrent
        .check_existing(u32::MAX, net.now)
        .unwrap());
    assert!(
        net.run_until(600_000, |n| n.nodes[l].torrent.is_complete()),
        "download did not complete"
    );
    assert!(store.0.borrow().data == data, "downloaded bytes differ");

    let events = &net.nodes[l].events;
    let banned_at = events
        .iter()
        .position(|e| *e == Event::PeerBanned(liar_addr))
        .expect("the liar is banned");
    assert!(!events.contains(&Event::PeerBanned(honest_addr)));
    assert!(
        !events[banned_at..]
            .iter()
            .any(|e| matches!(e, Event::Connect { addr, .. } if *addr == liar_addr)),
        "the liar was dialled again"
    );
    // The honest seeder was never dropped for its metadata, only once both were seeds.
    let honest_conns: Vec<ConnId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Connect { conn, addr } if *addr == honest_addr => Some(*conn),
            _ => None,
        })
        .collect();
    for e in events {
        if let Event::Close { conn, reason } = e {
            if honest_conns.contains(conn) {
                assert_eq!(*reason, CloseReason::BothSeeds);
            }
        }
    }
}

#[test]
fn magnet_completes_when_its_first_peer_lies_about_metadata_size_and_the_liar_is_banned() {
    let (data, info) = make_torrent(700_000, 32 * 1024, 6);
    assert!(info.raw.len() < METADATA_PIECE);
    // Three pieces of junk where the metadata takes one.
    let mut rng = fastrand::Rng::with_seed(66);
    let lie: Vec<u8> = (0..2 * METADATA_PIECE + 100).map(|_| rng.u8(..)).collect();
    magnet_beats_a_metadata_liar(&data, &info, lie, true);
}

#[test]
fn magnet_completes_when_a_peer_sends_bad_metadata_of_the_right_size_and_the_liar_is_banned() {
    // One piece: the liar alone supplies it.
    let (data, info) = make_torrent(700_000, 32 * 1024, 7);
    let mut lie = info.raw.clone();
    lie[10] ^= 1;
    magnet_beats_a_metadata_liar(&data, &info, lie, true);

    // Several pieces, asked of both peers at once: the first failure names nobody, so every piece
    // is fetched again from one peer.
    let (data, info) = make_torrent_with_big_metadata(8);
    assert!(info.raw.len() > 2 * METADATA_PIECE);
    let mut lie = info.raw.clone();
    for piece in lie.chunks_mut(METADATA_PIECE) {
        piece[0] ^= 1;
    }
    magnet_beats_a_metadata_liar(&data, &info, lie, false);
}

#[test]
fn a_complete_torrent_dials_a_leecher_it_learns_of() {
    let (data, info) = make_torrent(400_000, 16 * 1024, 9);
    let mut net = Net::new();
    // The leecher knows nobody: it can only be reached.
    let store = SharedStorage(Rc::new(std::cell::RefCell::new(MemoryStorage::new(
        info.total_length,
    ))));
    let mut leech = Torrent::new(
        info.info_hash,
        Some(info.clone()),
        PeerId::generate(91),
        Config::default(),
        91,
    );
    leech.attach_storage(Box::new(store.clone()), 0);
    assert!(leech.check_existing(u32::MAX, 0).unwrap());
    let l = net.add(leech);
    let s = net.add(seeder(&info, &data, 92));
    let leech_addr = net.nodes[l].addr;
    net.nodes[s]
        .torrent
        .add_peers(&[leech_addr], PeerSource::Tracker, net.now);
    assert!(
        net.run_until(120_000, |n| n.nodes[l].torrent.is_complete()),
        "the seed never served the leecher"
    );
    assert!(store.0.borrow().data == data);
    assert!(!net.nodes[l]
        .events
        .iter()
        .any(|e| matches!(e, Event::Connect { .. })));
}

#[test]
fn a_seed_does_not_redial_a_seed() {
    let (data, info) = make_torrent(100_000, 16 * 1024, 10);
    let mut net = Net::new();
    let a = net.add(seeder(&info, &data, 101));
    let b = net.add(seeder(&info, &data, 102));
    let b_addr = net.nodes[b].addr;
    net.nodes[a]
        .torrent
        .add_peers(&[b_addr], PeerSource::Tracker, net.now);
    net.run_until(3_600_000, |_| false);
    let events = &net.nodes[a].events;
    let connects = events
        .iter()
        .filter(|e| matches!(e, Event::Connect { .. }))
        .count();
    assert_eq!(connects, 1, "{events:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Close { reason, .. } if *reason == CloseReason::BothSeeds
    )));
    // The address is still known, only not dialled.
    assert_eq!(net.nodes[a].torrent.stats(net.now).peers_known, 1);
}

mod encryption;
mod timers;
mod transmit;
