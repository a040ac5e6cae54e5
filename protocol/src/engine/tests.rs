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
mod hostile;
mod metadata;
mod timers;
mod transmit;
