//! The per-torrent state machine behind [`Torrent`]: its state and public API here; the
//! handling itself by concern in the submodules: connections and timers, handshakes and
//! messages, requests and uploads, the choker, metadata and peer exchange.

use super::crypto::{self, Crypto};
use super::peer::{Peer, Stage};
use super::picker::Picker;
use super::rate::RateMeter;
use super::{CloseReason, Config, ConnId, Event, PeerInfo, PeerSource, Stats};
use crate::extension::MetadataAssembler;
use crate::metainfo::Info;
use crate::storage::{Storage, StorageError};
use crate::wire::{BlockRequest, Handshake};
use crate::{InfoHash, PeerId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

mod choking;
mod connections;
mod messages;
mod metadata;
mod requests;
mod timers;

use requests::take_output;
use timers::Rounds;

/// Candidate addresses we remember at most (trackers and PEX are untrusted sources).
const MAX_CANDIDATES: usize = 2000;

struct Candidate {
    source: PeerSource,
    failures: u32,
    next_try: u64,
    in_use: bool,
    /// Found to be a seed while we were complete: not dialled while we are.
    seed: bool,
    /// An encrypted handshake with it failed: it is dialled with a plain one.
    plain: bool,
}

pub struct Torrent {
    info_hash: InfoHash,
    info: Option<Info>,
    peer_id: PeerId,
    config: Config,
    rng: fastrand::Rng,
    storage: Option<Box<dyn Storage>>,
    picker: Option<Picker>,
    peers: BTreeMap<ConnId, Peer>,
    candidates: BTreeMap<SocketAddr, Candidate>,
    banned: HashSet<SocketAddr>,
    banned_ids: HashSet<[u8; 20]>,
    self_addrs: HashSet<SocketAddr>,
    strikes: HashMap<SocketAddr, u32>,
    next_conn: u64,
    events: VecDeque<Event>,
    metadata: Option<MetadataAssembler>,
    /// Who supplied each piece held in `metadata`.
    metadata_from: Vec<Option<SocketAddr>>,
    /// After a failed metadata hash with several suppliers, every piece comes from one peer,
    /// `metadata_source`, so that the next failure names the culprit.
    metadata_single: bool,
    metadata_source: Option<ConnId>,
    /// The suppliers of the last failed metadata: first choice as the single source.
    metadata_suspects: Vec<SocketAddr>,
    /// Counts `metadata_size` reports, to order them.
    metadata_seq: u64,
    check_next: u32,
    checked: bool,
    paused: bool,
    /// The time given with the latest call: every method whose behaviour depends on time takes
    /// it, so it is only read across calls as the time at which `catch_up_due` fell due.
    now: u64,
    rounds: Rounds,
    /// See `work_freed`.
    catch_up_due: bool,
    optimistic: Option<ConnId>,
    down: RateMeter,
    up: RateMeter,
    complete_reported: bool,
    scratch: Vec<BlockRequest>,
    /// Decrypted bytes on their way to a decoder.
    crypt_scratch: Vec<u8>,
    /// Where the next `poll_transmit` starts looking, so connections take turns.
    transmit_cursor: ConnId,
}

impl Torrent {
    /// `info` is `None` for a magnet: the engine then fetches it with ut_metadata. `seed` feeds
    /// the engine's random choices (piece order, optimistic unchoke).
    pub fn new(
        info_hash: InfoHash,
        info: Option<Info>,
        peer_id: PeerId,
        config: Config,
        seed: u64,
    ) -> Self {
        let mut t = Torrent {
            info_hash,
            info: None,
            peer_id,
            config,
            rng: fastrand::Rng::with_seed(seed),
            storage: None,
            picker: None,
            peers: BTreeMap::new(),
            candidates: BTreeMap::new(),
            banned: HashSet::new(),
            banned_ids: HashSet::new(),
            self_addrs: HashSet::new(),
            strikes: HashMap::new(),
            next_conn: 1,
            events: VecDeque::new(),
            metadata: None,
            metadata_from: Vec::new(),
            metadata_single: false,
            metadata_source: None,
            metadata_suspects: Vec::new(),
            metadata_seq: 0,
            check_next: 0,
            checked: false,
            paused: false,
            now: 0,
            rounds: Rounds::default(),
            catch_up_due: false,
            optimistic: None,
            down: RateMeter::default(),
            up: RateMeter::default(),
            complete_reported: false,
            scratch: Vec::new(),
            crypt_scratch: Vec::new(),
            transmit_cursor: ConnId(0),
        };
        if let Some(info) = info {
            t.set_info(info);
        }
        t
    }

    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    pub fn info(&self) -> Option<&Info> {
        self.info.as_ref()
    }

    fn set_info(&mut self, info: Info) {
        let seed = self.rng.u64(..);
        self.picker = Some(Picker::new(
            info.piece_length,
            info.total_length,
            info.piece_hashes.clone(),
            seed,
            self.config.driver_hashes,
        ));
        self.info = Some(info);
        self.metadata = None;
        self.metadata_from = Vec::new();
        self.metadata_single = false;
        self.metadata_source = None;
        self.metadata_suspects = Vec::new();
    }

    /// Gives the engine its store. Until then (a magnet waiting for metadata) no piece is
    /// requested or served.
    pub fn attach_storage(&mut self, storage: Box<dyn Storage>, now_ms: u64) {
        self.now = now_ms;
        self.storage = Some(storage);
        self.check_next = 0;
        self.checked = false;
        if self.picker.as_ref().is_some_and(|p| p.num_pieces() == 0) {
            self.checked = true;
        }
        self.refill_all();
    }

    /// Hashes up to `max_pieces` pieces already in storage (resume) and marks the good ones as
    /// had. Returns true once every piece has been checked. Call before connecting to peers, or
    /// interleaved with the driver's loop so a big check never blocks it.
    pub fn check_existing(&mut self, max_pieces: u32, now_ms: u64) -> Result<bool, StorageError> {
        self.now = now_ms;
        let (Some(picker), Some(storage)) = (self.picker.as_mut(), self.storage.as_mut()) else {
            return Ok(false);
        };
        let end = picker
            .num_pieces()
            .min(self.check_next.saturating_add(max_pieces));
        while self.check_next < end {
            picker.check_piece(self.check_next, storage.as_mut())?;
            self.check_next += 1;
        }
        if self.check_next >= picker.num_pieces() && !self.checked {
            self.checked = true;
            self.after_check();
            // Requests wait for the check.
            self.refill_all();
        }
        Ok(self.checked)
    }

    /// Ends the check without hashing: `have[i]` says whether piece `i` is already in storage.
    /// For data the driver vouches for: a file it just created (nothing had) or a torrent it just
    /// built from the data (everything had). Returns false, changing nothing, if the length is not
    /// the piece count.
    pub fn assume_checked(&mut self, have: &[bool], now_ms: u64) -> bool {
        self.now = now_ms;
        let Some(picker) = self.picker.as_mut() else {
            return false;
        };
        if have.len() != picker.num_pieces() as usize {
            return false;
        }
        for (i, _) in have.iter().enumerate().filter(|(_, h)| **h) {
            picker.mark_have(i as u32);
        }
        self.check_next = picker.num_pieces();
        if !self.checked {
            self.checked = true;
            self.after_check();
        }
        self.refill_all();
        true
    }

    /// Pieces found on disk count as had: tell connected peers and fix interest.
    fn after_check(&mut self) {
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.recount_useful(conn);
            self.update_interest(conn);
        }
        self.maybe_complete();
    }

    /// Candidate peer addresses: the engine connects to them as slots free up.
    pub fn add_peers(&mut self, addrs: &[SocketAddr], source: PeerSource, now_ms: u64) {
        self.now = now_ms;
        for &addr in addrs {
            if self.candidates.len() >= MAX_CANDIDATES {
                break;
            }
            if addr.port() == 0 || self.banned.contains(&addr) || self.self_addrs.contains(&addr) {
                continue;
            }
            self.candidates.entry(addr).or_insert(Candidate {
                source,
                failures: 0,
                next_try: 0,
                in_use: false,
                seed: false,
                plain: false,
            });
        }
        self.maybe_connect();
    }

    /// An outgoing connection from `Event::Connect` is established.
    pub fn handle_connected(&mut self, conn: ConnId, now_ms: u64) {
        self.now = now_ms;
        let handshake = Handshake::new(self.info_hash, self.peer_id).encode();
        let seed = self.mse_seed(conn);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.stage != Stage::Connecting {
            return;
        }
        peer.stage = Stage::Handshake;
        peer.connected_at = now_ms;
        peer.last_recv = now_ms;
        let plain = self.candidates.get(&peer.addr).is_some_and(|c| c.plain);
        let ctx = crypto::Context {
            info_hash: self.info_hash,
            encryption: self.config.encryption,
            seed,
            our_handshake: &handshake,
        };
        peer.crypto = crypto::start_outgoing(&ctx, plain, &mut peer.out);
        if !matches!(peer.crypto, Crypto::Plain) {
            peer.raw_out = peer.out.len();
        }
        // One attempt fewer in flight: another may start.
        self.work_freed();
    }

    /// Randomness for one connection's encryption handshake, from the driver's entropy.
    fn mse_seed(&self, conn: ConnId) -> [u8; crate::mse::SEED_LEN] {
        use sha1::{Digest, Sha1};
        let mut seed = [0u8; crate::mse::SEED_LEN];
        for (i, chunk) in seed.chunks_mut(20).enumerate() {
            let mut h = Sha1::new();
            h.update(self.config.entropy);
            h.update(self.info_hash.0);
            h.update(conn.0.to_be_bytes());
            h.update([i as u8]);
            let d = h.finalize();
            chunk.copy_from_slice(&d[..chunk.len()]);
        }
        seed
    }

    /// A peer connected to us; `None` refuses it (full or banned) and the driver closes it.
    pub fn handle_incoming(&mut self, addr: SocketAddr, now_ms: u64) -> Option<ConnId> {
        self.now = now_ms;
        if self.paused || self.banned.contains(&addr) || self.peers.len() >= self.config.max_peers {
            return None;
        }
        let conn = self.alloc_conn();
        let mut peer = Peer::new(conn, addr, PeerSource::Incoming, false, now_ms);
        peer.crypto = crypto::start_incoming(self.config.encryption);
        self.peers.insert(conn, peer);
        Some(conn)
    }

    /// Bytes received on `conn`, in any split.
    pub fn handle_data(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        self.now = now_ms;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        peer.last_recv = now_ms;
        if matches!(peer.crypto, Crypto::Plain) {
            peer.decoder.push(data);
        } else if let Err(reason) = self.decrypt(conn, data) {
            return self.close(conn, reason);
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.stage == Stage::Handshake {
            match peer.decoder.next_handshake() {
                Ok(Some(hs)) => {
                    if let Err(reason) = self.on_handshake(conn, hs) {
                        return self.close(conn, reason);
                    }
                }
                Ok(None) => return,
                Err(e) => return self.close(conn, CloseReason::protocol(e)),
            }
        }
        loop {
            let Some(peer) = self.peers.get_mut(&conn) else {
                return;
            };
            if peer.stage != Stage::Active {
                return;
            }
            match peer.decoder.next() {
                Ok(Some(msg)) => {
                    if let Err(reason) = self.on_message(conn, msg) {
                        return self.close(conn, reason);
                    }
                }
                Ok(None) => break,
                Err(e) => return self.close(conn, CloseReason::protocol(e)),
            }
        }
        self.fill_requests(conn);
    }

    /// Received bytes through the connection's encryption layer into its decoder.
    fn decrypt(&mut self, conn: ConnId, data: &[u8]) -> Result<(), CloseReason> {
        let handshake = Handshake::new(self.info_hash, self.peer_id).encode();
        let seed = self.mse_seed(conn);
        let ctx = crypto::Context {
            info_hash: self.info_hash,
            encryption: self.config.encryption,
            seed,
            our_handshake: &handshake,
        };
        let mut plain = std::mem::take(&mut self.crypt_scratch);
        plain.clear();
        let result = match self.peers.get_mut(&conn) {
            Some(peer) => {
                let was_raw = peer.out.len();
                let r = crypto::receive(&mut peer.crypto, &ctx, data, &mut plain, &mut peer.out);
                // Handshake bytes join the raw front of `out` (nothing else is queued before
                // the peer's handshake is in).
                if peer.out.len() > was_raw {
                    peer.raw_out = peer.out.len();
                }
                peer.decoder.push(&plain);
                r
            }
            None => Ok(()),
        };
        self.crypt_scratch = plain;
        result
    }

    /// The connection failed or the peer closed it.
    pub fn handle_closed(&mut self, conn: ConnId, now_ms: u64) {
        self.now = now_ms;
        self.remove_peer(conn);
        self.catch_up();
    }

    /// `bytes` handed out by `poll_transmit` for `conn` have left through the socket: upload
    /// data is produced only while few bytes sit unsent, so a slow peer never fills our memory.
    pub fn handle_sent(&mut self, conn: ConnId, bytes: usize, now_ms: u64) {
        self.now = now_ms;
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.unsent = peer.unsent.saturating_sub(bytes);
        }
    }

    /// Does what is due at `now_ms`: timeouts, keep-alives, the choker and PEX rounds, dialling.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now = now_ms;
        self.run_timers();
    }

    /// When the engine next wants `handle_timeout`: the earliest deadline, or `None` while
    /// nothing is pending. Once `handle_timeout` has run at a time, the next deadline is later
    /// unless new input made something due at once.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_deadline()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send on a connection, swapped into `buf`: what `buf` held is dropped, and its
    /// allocation is reused for that connection's next messages, so a driver that hands the
    /// same buffers back never allocates per send. Connections take turns, so one busy upload
    /// cannot starve the others' requests.
    pub fn poll_transmit(&mut self, now_ms: u64, buf: &mut Vec<u8>) -> Option<ConnId> {
        self.now = now_ms;
        let start = self.transmit_cursor;
        let found = match take_output(
            self.peers.range_mut(start..),
            self.picker.as_ref(),
            &mut self.storage,
            &mut self.up,
            now_ms,
            buf,
        ) {
            Ok(None) => take_output(
                self.peers.range_mut(..start),
                self.picker.as_ref(),
                &mut self.storage,
                &mut self.up,
                now_ms,
                buf,
            ),
            other => other,
        };
        match found {
            Ok(Some(conn)) => {
                self.transmit_cursor = ConnId(conn.0 + 1);
                Some(conn)
            }
            Ok(None) => None,
            Err(e) => {
                self.storage_failed(e);
                None
            }
        }
    }

    /// Reads piece `piece` from storage into `buf` (resized to the piece), for the driver to hash
    /// after `Event::HashPiece`.
    pub fn read_piece(&mut self, piece: u32, buf: &mut Vec<u8>) -> Result<(), StorageError> {
        let (Some(picker), Some(storage)) = (self.picker.as_ref(), self.storage.as_mut()) else {
            return Err(StorageError("no storage attached".into()));
        };
        if piece >= picker.num_pieces() {
            return Err(StorageError(format!("no piece {piece}")));
        }
        buf.resize(picker.piece_size(piece) as usize, 0);
        storage.read(picker.piece_offset(piece), buf)
    }

    /// The driver's SHA-1 of a piece it was asked to hash (`Event::HashPiece`). An answer for a
    /// job no longer awaited (the piece was dropped by a pause meanwhile) is ignored.
    pub fn handle_piece_hash(&mut self, piece: u32, job: u64, digest: [u8; 20], now_ms: u64) {
        self.now = now_ms;
        let Some(outcome) = self
            .picker
            .as_mut()
            .and_then(|p| p.piece_hashed(piece, job, digest))
        else {
            return;
        };
        self.on_piece_outcome(piece, outcome);
        self.refill_all();
    }

    pub fn is_complete(&self) -> bool {
        self.checked && self.picker.as_ref().is_some_and(Picker::is_complete)
    }

    /// The counters, with the rates as of `now_ms`.
    pub fn stats(&self, now_ms: u64) -> Stats {
        let (verified, total, have, pieces) = match (&self.picker, &self.info) {
            (Some(p), Some(i)) => (
                p.verified_bytes(),
                i.total_length,
                p.have_count(),
                p.num_pieces(),
            ),
            _ => (0, 0, 0, 0),
        };
        Stats {
            downloaded: self.down.total(),
            uploaded: self.up.total(),
            verified,
            total,
            pieces_have: have,
            pieces_total: pieces,
            download_rate: self.down.rate(now_ms),
            upload_rate: self.up.rate(now_ms),
            peers_connected: self
                .peers
                .values()
                .filter(|p| p.stage == Stage::Active)
                .count(),
            peers_known: self.candidates.len(),
        }
    }

    /// The connected peers, with their rates as of `now_ms`.
    pub fn peers(&self, now_ms: u64) -> Vec<PeerInfo> {
        let pieces = self.picker.as_ref().map_or(0, Picker::num_pieces);
        self.peers
            .values()
            .filter(|p| p.stage == Stage::Active)
            .map(|p| PeerInfo {
                addr: p.addr,
                client: p.client_name(),
                download_rate: p.down.rate(now_ms),
                upload_rate: p.up.rate(now_ms),
                progress: if pieces == 0 {
                    0.0
                } else {
                    p.bits.count() as f64 / pieces as f64
                },
                choking_us: p.peer_choking,
                interested_in_us: p.peer_interested,
                source: p.source,
                encrypted: p.crypto.encrypted(),
            })
            .collect()
    }

    /// One flag per piece: verified or not (the page's piece map).
    pub fn have(&self) -> &[bool] {
        self.picker.as_ref().map_or(&[], Picker::have)
    }

    /// Verified bytes per file, in `info().files` order.
    pub fn file_progress(&self) -> Vec<u64> {
        let (Some(info), Some(picker)) = (&self.info, &self.picker) else {
            return Vec::new();
        };
        info.files
            .iter()
            .map(|f| {
                if f.length == 0 {
                    return 0;
                }
                let first = (f.offset / info.piece_length as u64) as u32;
                let last = ((f.offset + f.length - 1) / info.piece_length as u64) as u32;
                (first..=last)
                    .filter(|&i| picker.has(i))
                    .map(|i| {
                        let start = picker.piece_offset(i).max(f.offset);
                        let end = (picker.piece_offset(i) + picker.piece_size(i) as u64)
                            .min(f.offset + f.length);
                        end - start
                    })
                    .sum()
            })
            .collect()
    }

    /// Stops requesting and closes every connection (events follow); `resume` reconnects.
    pub fn pause(&mut self, now_ms: u64) {
        self.now = now_ms;
        self.paused = true;
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.close(conn, CloseReason::Paused);
        }
        if let Some(p) = self.picker.as_mut() {
            p.clear_partials();
        }
    }

    pub fn resume(&mut self, now_ms: u64) {
        self.now = now_ms;
        self.paused = false;
        for c in self.candidates.values_mut() {
            c.next_try = 0;
        }
        self.maybe_connect();
    }
}
