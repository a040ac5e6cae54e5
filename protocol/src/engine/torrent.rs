//! The per-torrent state machine behind [`Torrent`]: handshakes, messages, requests, uploads,
//! metadata for magnets, the choker, peer exchange and timers.

use super::bitfield::Bitfield;
use super::choker;
use super::peer::{Peer, Stage};
use super::picker::{BlockOutcome, Picker, PieceOutcome};
use super::rate::RateMeter;
use super::{Config, ConnId, Event, PeerInfo, PeerSource, Stats};
use crate::extension::{
    ExtHandshake, MetadataAssembler, MetadataMsg, PexMsg, MAX_METADATA, METADATA_PIECE,
    UT_METADATA_ID, UT_PEX_ID,
};
use crate::metainfo::Info;
use crate::storage::{Storage, StorageError};
use crate::wire::{BlockRequest, Handshake, Message};
use crate::{InfoHash, PeerId};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

/// Upload data is produced while fewer than this many bytes wait in a peer's socket.
const UPLOAD_WINDOW: usize = 1 << 20;
/// Requests longer than this are refused (clients send 16 KiB; some up to 128 KiB).
const MAX_REQUEST_LEN: u32 = 128 * 1024;
const TICK_MS: u64 = 1000;
const HANDSHAKE_TIMEOUT_MS: u64 = 20_000;
const CONNECT_TIMEOUT_MS: u64 = 30_000;
const CHOKE_INTERVAL_MS: u64 = 10_000;
const OPTIMISTIC_INTERVAL_MS: u64 = 30_000;
const PEX_INTERVAL_MS: u64 = 60_000;
const METADATA_TIMEOUT_MS: u64 = 20_000;
/// Candidate addresses we remember at most (trackers and PEX are untrusted sources).
const MAX_CANDIDATES: usize = 2000;
/// Bad pieces a peer may send alone before it is banned.
const STRIKES_TO_BAN: u32 = 2;
/// `have` messages kept for a peer before the piece count is known.
const MAX_EARLY_HAVES: usize = 100_000;

struct Candidate {
    source: PeerSource,
    failures: u32,
    next_try: u64,
    in_use: bool,
    /// Found to be a seed while we were complete: not dialled while we are.
    seed: bool,
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
    now: u64,
    next_tick: u64,
    next_choke: u64,
    next_optimistic: u64,
    optimistic: Option<ConnId>,
    next_pex: u64,
    down: RateMeter,
    up: RateMeter,
    complete_reported: bool,
    scratch: Vec<BlockRequest>,
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
            next_tick: 0,
            next_choke: CHOKE_INTERVAL_MS,
            next_optimistic: OPTIMISTIC_INTERVAL_MS,
            optimistic: None,
            next_pex: PEX_INTERVAL_MS,
            down: RateMeter::default(),
            up: RateMeter::default(),
            complete_reported: false,
            scratch: Vec::new(),
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
    pub fn attach_storage(&mut self, storage: Box<dyn Storage>) {
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
    pub fn check_existing(&mut self, max_pieces: u32) -> Result<bool, StorageError> {
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
        }
        Ok(self.checked)
    }

    /// Ends the check without hashing: `have[i]` says whether piece `i` is already in storage.
    /// For data the driver vouches for: a file it just created (nothing had) or a torrent it just
    /// built from the data (everything had). Returns false, changing nothing, if the length is not
    /// the piece count.
    pub fn assume_checked(&mut self, have: &[bool]) -> bool {
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
    pub fn add_peers(&mut self, addrs: &[SocketAddr], source: PeerSource) {
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
            });
        }
        self.maybe_connect();
    }

    /// An outgoing connection from `Event::Connect` is established.
    pub fn handle_connected(&mut self, conn: ConnId, now_ms: u64) {
        self.now = now_ms;
        let handshake = Handshake::new(self.info_hash, self.peer_id).encode();
        if let Some(peer) = self.peers.get_mut(&conn) {
            if peer.stage == Stage::Connecting {
                peer.stage = Stage::Handshake;
                peer.connected_at = now_ms;
                peer.last_recv = now_ms;
                peer.out.extend_from_slice(&handshake);
            }
        }
    }

    /// A peer connected to us; `None` refuses it (full or banned) and the driver closes it.
    pub fn handle_incoming(&mut self, addr: SocketAddr, now_ms: u64) -> Option<ConnId> {
        self.now = now_ms;
        if self.paused || self.banned.contains(&addr) || self.peers.len() >= self.config.max_peers {
            return None;
        }
        let conn = self.alloc_conn();
        self.peers.insert(
            conn,
            Peer::new(conn, addr, PeerSource::Incoming, false, now_ms),
        );
        Some(conn)
    }

    fn alloc_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        conn
    }

    /// Bytes received on `conn`, in any split.
    pub fn handle_data(&mut self, conn: ConnId, data: &[u8], now_ms: u64) {
        self.now = now_ms;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        peer.last_recv = now_ms;
        peer.decoder.push(data);
        if peer.stage == Stage::Handshake {
            match peer.decoder.next_handshake() {
                Ok(Some(hs)) => {
                    if let Err(reason) = self.on_handshake(conn, hs) {
                        return self.close(conn, reason);
                    }
                }
                Ok(None) => return,
                Err(e) => return self.close(conn, e.to_string()),
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
                Err(e) => return self.close(conn, e.to_string()),
            }
        }
        self.fill_requests(conn);
    }

    /// The connection failed or the peer closed it.
    pub fn handle_closed(&mut self, conn: ConnId, now_ms: u64) {
        self.now = now_ms;
        self.remove_peer(conn);
        self.maybe_connect();
    }

    /// `bytes` handed out by `poll_transmit` for `conn` have left through the socket: upload
    /// data is produced only while few bytes sit unsent, so a slow peer never fills our memory.
    pub fn handle_sent(&mut self, conn: ConnId, bytes: usize) {
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.unsent = peer.unsent.saturating_sub(bytes);
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now = now_ms;
        if now_ms < self.next_tick {
            return;
        }
        self.next_tick = now_ms + TICK_MS;
        self.expire_peers();
        if now_ms >= self.next_choke {
            self.next_choke = now_ms + CHOKE_INTERVAL_MS;
            let rotate = now_ms >= self.next_optimistic;
            if rotate {
                self.next_optimistic = now_ms + OPTIMISTIC_INTERVAL_MS;
            }
            self.run_choker(rotate);
        }
        if now_ms >= self.next_pex {
            self.next_pex = now_ms + PEX_INTERVAL_MS;
            self.send_pex();
        }
        self.maybe_connect();
        self.request_metadata();
        self.refill_all();
    }

    /// When the engine next wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_tick)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send on a connection. Connections take turns, so one busy upload cannot starve
    /// the others' requests.
    pub fn poll_transmit(&mut self) -> Option<(ConnId, Vec<u8>)> {
        let start = self.transmit_cursor;
        let found = match take_output(
            self.peers.range_mut(start..),
            self.picker.as_ref(),
            &mut self.storage,
            &mut self.up,
            self.now,
        ) {
            Ok(None) => take_output(
                self.peers.range_mut(..start),
                self.picker.as_ref(),
                &mut self.storage,
                &mut self.up,
                self.now,
            ),
            other => other,
        };
        match found {
            Ok(Some((conn, out))) => {
                self.transmit_cursor = ConnId(conn.0 + 1);
                Some((conn, out))
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
    pub fn handle_piece_hash(&mut self, piece: u32, job: u64, digest: [u8; 20]) {
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

    pub fn stats(&self) -> Stats {
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
            download_rate: self.down.rate(self.now),
            upload_rate: self.up.rate(self.now),
            peers_connected: self
                .peers
                .values()
                .filter(|p| p.stage == Stage::Active)
                .count(),
            peers_known: self.candidates.len(),
        }
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        let pieces = self.picker.as_ref().map_or(0, Picker::num_pieces);
        self.peers
            .values()
            .filter(|p| p.stage == Stage::Active)
            .map(|p| PeerInfo {
                addr: p.addr,
                client: p.client_name(),
                download_rate: p.down.rate(self.now),
                upload_rate: p.up.rate(self.now),
                progress: if pieces == 0 {
                    0.0
                } else {
                    p.bits.count() as f64 / pieces as f64
                },
                choking_us: p.peer_choking,
                interested_in_us: p.peer_interested,
                source: p.source,
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
    pub fn pause(&mut self) {
        self.paused = true;
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.close(conn, "paused".into());
        }
        if let Some(p) = self.picker.as_mut() {
            p.clear_partials();
        }
    }

    pub fn resume(&mut self) {
        self.paused = false;
        for c in self.candidates.values_mut() {
            c.next_try = 0;
        }
        self.maybe_connect();
    }

    // ----- connections -----

    /// Dials candidates while slots are free. A complete torrent dials too (a leecher may not
    /// be reachable for incoming connections), but not the seeds it has met.
    fn maybe_connect(&mut self) {
        if self.paused {
            return;
        }
        let complete = self.is_complete();
        let mut connecting = self
            .peers
            .values()
            .filter(|p| p.stage == Stage::Connecting)
            .count();
        while self.peers.len() < self.config.max_peers && connecting < self.config.max_connecting {
            let now = self.now;
            let Some((&addr, cand)) = self
                .candidates
                .iter_mut()
                .filter(|(_, c)| !c.in_use && c.next_try <= now && !(complete && c.seed))
                .min_by_key(|(_, c)| c.failures)
            else {
                break;
            };
            cand.in_use = true;
            let source = cand.source;
            let conn = self.alloc_conn();
            self.peers
                .insert(conn, Peer::new(conn, addr, source, true, now));
            self.events.push_back(Event::Connect { conn, addr });
            connecting += 1;
        }
    }

    /// Drops a peer: its requests go back to the picker and its address may be retried.
    fn remove_peer(&mut self, conn: ConnId) -> Option<Peer> {
        let peer = self.peers.remove(&conn)?;
        if let Some(picker) = self.picker.as_mut() {
            picker.peer_gone(&peer.bits);
            for (req, _) in &peer.requests {
                picker.request_dropped(*req);
            }
            picker.release_owner(conn);
        }
        if self.optimistic == Some(conn) {
            self.optimistic = None;
        }
        if peer.outgoing {
            let now = self.now;
            if let Some(c) = self.candidates.get_mut(&peer.addr) {
                c.in_use = false;
                if peer.stage == Stage::Active {
                    c.failures = 0;
                    c.next_try = now + 30_000;
                } else {
                    c.failures += 1;
                    c.next_try = now + (15_000u64 << c.failures.min(6));
                }
                if c.failures >= 5 {
                    self.candidates.remove(&peer.addr);
                }
            }
        }
        // Requests the peer held may now go to others.
        self.refill_all();
        Some(peer)
    }

    fn close(&mut self, conn: ConnId, reason: String) {
        if self.remove_peer(conn).is_some() {
            self.events.push_back(Event::Close { conn, reason });
        }
    }

    fn expire_peers(&mut self) {
        let now = self.now;
        let mut to_close = Vec::new();
        let mut dropped = Vec::new();
        for peer in self.peers.values_mut() {
            let idle = now.saturating_sub(peer.last_recv);
            match peer.stage {
                Stage::Connecting if now.saturating_sub(peer.connected_at) > CONNECT_TIMEOUT_MS => {
                    to_close.push((peer.conn, "connect timed out".to_string()));
                    continue;
                }
                Stage::Handshake if idle > HANDSHAKE_TIMEOUT_MS => {
                    to_close.push((peer.conn, "handshake timed out".to_string()));
                    continue;
                }
                Stage::Active if idle > self.config.peer_timeout_ms => {
                    to_close.push((peer.conn, "timed out".to_string()));
                    continue;
                }
                _ => {}
            }
            if peer.stage != Stage::Active {
                continue;
            }
            if now.saturating_sub(peer.last_send) >= self.config.keepalive_ms && peer.out.is_empty()
            {
                Message::KeepAlive.encode(&mut peer.out);
                peer.last_send = now;
            }
            // A peer that sits on our requests is snubbed: its requests go to others.
            if let Some(&(_, sent)) = peer.requests.front() {
                if now.saturating_sub(sent) > self.config.request_timeout_ms {
                    peer.snubbed = true;
                    dropped.extend(peer.requests.drain(..).map(|(r, _)| r));
                }
            }
            if let Some((piece, sent)) = peer.metadata_request {
                if now.saturating_sub(sent) > METADATA_TIMEOUT_MS {
                    peer.metadata_request = None;
                    // A request left unanswered (a reject is marked when it arrives).
                    if piece != u32::MAX {
                        peer.metadata_refused = true;
                    }
                }
            }
        }
        if let Some(picker) = self.picker.as_mut() {
            for req in dropped {
                picker.request_dropped(req);
            }
        }
        for (conn, reason) in to_close {
            self.close(conn, reason);
        }
    }

    // ----- handshakes -----

    fn on_handshake(&mut self, conn: ConnId, hs: Handshake) -> Result<(), String> {
        if hs.info_hash != self.info_hash {
            return Err("handshake for another torrent".into());
        }
        if hs.peer_id == self.peer_id {
            let addr = self.peers.get(&conn).map(|p| p.addr);
            if let Some(addr) = addr {
                self.self_addrs.insert(addr);
                self.candidates.remove(&addr);
            }
            return Err("connected to ourselves".into());
        }
        if self.banned_ids.contains(&hs.peer_id.0) {
            return Err("banned peer".into());
        }
        if self
            .peers
            .values()
            .any(|p| p.conn != conn && p.peer_id == Some(hs.peer_id))
        {
            return Err("already connected to this peer".into());
        }
        let our_handshake = Handshake::new(self.info_hash, self.peer_id).encode();
        let ext = hs.supports_extensions().then(|| self.ext_handshake(conn));
        let opening = self.opening_bitfield(hs.supports_fast());
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        if !peer.outgoing {
            peer.out.extend_from_slice(&our_handshake);
        }
        peer.peer_id = Some(hs.peer_id);
        peer.fast = hs.supports_fast();
        peer.extended = hs.supports_extensions();
        peer.stage = Stage::Active;
        if let Some(picker) = &self.picker {
            peer.bits = Bitfield::new(picker.num_pieces());
        }
        // BEP 3 wants the bitfield first; the extension handshake follows at once.
        if let Some(msg) = opening {
            msg.encode(&mut peer.out);
        }
        if let Some(ext) = ext {
            Message::Extended {
                id: 0,
                payload: Bytes::from(ext),
            }
            .encode(&mut peer.out);
        }
        Ok(())
    }

    fn opening_bitfield(&self, fast: bool) -> Option<Message> {
        let Some(picker) = self.picker.as_ref().filter(|_| self.checked) else {
            return fast.then_some(Message::HaveNone);
        };
        let n = picker.num_pieces();
        match picker.have_count() {
            0 if fast => Some(Message::HaveNone),
            0 => None,
            c if c == n && fast => Some(Message::HaveAll),
            _ => {
                let mut bits = Bitfield::new(n);
                for (i, &h) in picker.have().iter().enumerate() {
                    if h {
                        bits.set(i as u32);
                    }
                }
                Some(Message::Bitfield(Bytes::copy_from_slice(bits.as_bytes())))
            }
        }
    }

    fn ext_handshake(&self, conn: ConnId) -> Vec<u8> {
        let mut hs = ExtHandshake::default();
        hs.m.insert("ut_metadata".into(), UT_METADATA_ID);
        if !self.is_private() {
            hs.m.insert("ut_pex".into(), UT_PEX_ID);
        }
        hs.v = Some(self.config.client_name.clone());
        hs.reqq = Some(self.config.max_incoming_requests);
        hs.p = self.config.listen_port;
        hs.metadata_size = self.info.as_ref().map(|i| i.raw.len() as u64);
        if let Some(peer) = self.peers.get(&conn) {
            hs.yourip = Some(match peer.addr.ip() {
                std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
                std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
            });
        }
        hs.encode()
    }

    fn is_private(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.private)
    }

    // ----- messages -----

    fn on_message(&mut self, conn: ConnId, msg: Message) -> Result<(), String> {
        let n = self.picker.as_ref().map(Picker::num_pieces);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        match msg {
            Message::KeepAlive
            | Message::Port(_)
            | Message::SuggestPiece(_)
            | Message::AllowedFast(_) => {}
            Message::Choke => {
                peer.peer_choking = true;
                // Without the fast extension a choke silently cancels our requests; with it the
                // peer rejects each one explicitly.
                if !peer.fast {
                    let dropped: Vec<BlockRequest> =
                        peer.requests.drain(..).map(|(r, _)| r).collect();
                    if let Some(picker) = self.picker.as_mut() {
                        for r in dropped {
                            picker.request_dropped(r);
                        }
                    }
                }
            }
            Message::Unchoke => peer.peer_choking = false,
            Message::Interested => {
                peer.peer_interested = true;
                self.quick_unchoke(conn);
            }
            Message::NotInterested => peer.peer_interested = false,
            Message::Have(i) => match n {
                Some(n) if i >= n => return Err(format!("have for piece {i} of {n}")),
                Some(_) => {
                    if peer.bits.set(i) {
                        let picker = self.picker.as_mut().expect("piece count known");
                        picker.peer_has(i);
                        if !picker.has(i) {
                            peer.useful += 1;
                        }
                        self.update_interest(conn);
                        self.close_if_both_seeds(conn);
                    }
                }
                None => {
                    if peer.early_haves.len() >= MAX_EARLY_HAVES {
                        return Err("too many have messages".into());
                    }
                    peer.early_haves.push(i);
                }
            },
            Message::Bitfield(bits) => match n {
                Some(n) => {
                    let bits = Bitfield::from_wire(&bits, n).ok_or("malformed bitfield")?;
                    self.set_peer_bits(conn, bits);
                }
                None => peer.early_bitfield = Some(bits),
            },
            Message::HaveAll => match n {
                Some(n) => self.set_peer_bits(conn, Bitfield::full(n)),
                None => peer.early_have_all = true,
            },
            Message::HaveNone => {}
            Message::Request(req) => self.on_request(conn, req)?,
            Message::Piece { index, begin, data } => self.on_block(conn, index, begin, data)?,
            Message::Cancel(req) => {
                if let Some(pos) = peer.incoming.iter().position(|r| *r == req) {
                    peer.incoming.remove(pos);
                }
            }
            Message::RejectRequest(req) => {
                if peer.take_request(req.index, req.begin, req.length) {
                    if let Some(picker) = self.picker.as_mut() {
                        picker.request_dropped(req);
                    }
                }
            }
            Message::Extended { id, payload } => self.on_extended(conn, id, payload)?,
        }
        Ok(())
    }

    fn set_peer_bits(&mut self, conn: ConnId, bits: Bitfield) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let Some(picker) = self.picker.as_mut() else {
            return;
        };
        picker.peer_gone(&peer.bits);
        picker.peer_has_all(&bits);
        peer.bits = bits;
        self.recount_useful(conn);
        self.update_interest(conn);
        self.close_if_both_seeds(conn);
    }

    fn recount_useful(&mut self, conn: ConnId) {
        let (Some(peer), Some(picker)) = (self.peers.get_mut(&conn), self.picker.as_ref()) else {
            return;
        };
        peer.useful = peer.bits.iter_set().filter(|&i| !picker.has(i)).count() as u32;
    }

    fn update_interest(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.stage != Stage::Active {
            return;
        }
        let want = peer.useful > 0 && !self.paused;
        if want != peer.am_interested {
            peer.am_interested = want;
            let msg = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            msg.encode(&mut peer.out);
        }
    }

    fn on_request(&mut self, conn: ConnId, req: BlockRequest) -> Result<(), String> {
        let max_queue = self.config.max_incoming_requests as usize;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        let Some(picker) = self.picker.as_ref() else {
            return Err("request before we have metadata".into());
        };
        if req.index >= picker.num_pieces()
            || req.length == 0
            || req.length > MAX_REQUEST_LEN
            || req.begin as u64 + req.length as u64 > picker.piece_size(req.index) as u64
        {
            return Err(format!("invalid request {req:?}"));
        }
        let servable = picker.has(req.index) && !peer.am_choking && peer.incoming.len() < max_queue;
        if servable && self.storage.is_some() {
            peer.incoming.push_back(req);
        } else if peer.fast {
            Message::RejectRequest(req).encode(&mut peer.out);
        }
        Ok(())
    }

    fn on_block(
        &mut self,
        conn: ConnId,
        index: u32,
        begin: u32,
        data: Bytes,
    ) -> Result<(), String> {
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        // Data we did not ask for (or cancelled in endgame) is dropped, not stored.
        if !peer.take_request(index, begin, data.len() as u32) {
            return Ok(());
        }
        peer.down.add(data.len() as u64, now);
        peer.snubbed = false;
        self.down.add(data.len() as u64, now);
        let addr = peer.addr;
        let (Some(picker), Some(storage)) = (self.picker.as_mut(), self.storage.as_mut()) else {
            return Ok(());
        };
        let outcome = match picker.block_received(index, begin, &data, addr, storage.as_mut()) {
            Ok(o) => o,
            Err(e) => {
                self.storage_failed(e);
                return Ok(());
            }
        };
        let BlockOutcome::Stored { duplicates, piece } = outcome else {
            return Ok(());
        };
        if duplicates {
            let req = BlockRequest {
                index,
                begin,
                length: data.len() as u32,
            };
            for other in self.peers.values_mut() {
                if other.conn != conn && other.take_request(index, begin, req.length) {
                    Message::Cancel(req).encode(&mut other.out);
                }
            }
        }
        if let Some(outcome) = piece {
            self.on_piece_outcome(index, outcome);
        }
        Ok(())
    }

    fn on_piece_outcome(&mut self, index: u32, outcome: PieceOutcome) {
        match outcome {
            PieceOutcome::Verified => self.on_piece_verified(index),
            PieceOutcome::Failed { contributors } => {
                self.events.push_back(Event::PieceFailed(index));
                // Only a piece with one source proves who sent bad data.
                if let [culprit] = contributors[..] {
                    self.strike(culprit);
                }
            }
            PieceOutcome::NeedsHash { job } => self
                .events
                .push_back(Event::HashPiece { piece: index, job }),
        }
    }

    fn on_piece_verified(&mut self, index: u32) {
        self.events.push_back(Event::PieceVerified(index));
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            let Some(peer) = self.peers.get_mut(&conn) else {
                continue;
            };
            if peer.stage != Stage::Active {
                continue;
            }
            // A seed wants nothing from us: a `have` to it would be one more send per piece.
            if !peer.is_seed() {
                Message::Have(index).encode(&mut peer.out);
            }
            if peer.bits.get(index) {
                peer.useful = peer.useful.saturating_sub(1);
                self.update_interest(conn);
            }
        }
        self.maybe_complete();
    }

    fn maybe_complete(&mut self) {
        if self.complete_reported || !self.is_complete() {
            return;
        }
        self.complete_reported = true;
        if let Some(storage) = self.storage.as_mut() {
            if let Err(e) = storage.flush() {
                return self.storage_failed(e);
            }
        }
        self.events.push_back(Event::Complete);
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.close_if_both_seeds(conn);
        }
    }

    /// Seeds have nothing to gain from other seeds: while we are complete, a peer that has
    /// every piece is closed and its address is not dialled again.
    fn close_if_both_seeds(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        if !peer.is_seed() || !self.is_complete() {
            return;
        }
        if let Some(c) = self.candidates.get_mut(&peer.addr) {
            c.seed = true;
        }
        self.close(conn, "both of us are seeds".into());
    }

    fn strike(&mut self, addr: SocketAddr) {
        let strikes = self.strikes.entry(addr).or_insert(0);
        *strikes += 1;
        if *strikes < STRIKES_TO_BAN {
            return;
        }
        self.ban(addr);
    }

    /// Bans `addr` for sending bad data: its connections close and it is never dialled again.
    fn ban(&mut self, addr: SocketAddr) {
        if self.banned.insert(addr) {
            self.events.push_back(Event::PeerBanned(addr));
        }
        self.candidates.remove(&addr);
        let conns: Vec<ConnId> = self
            .peers
            .values()
            .filter(|p| p.addr == addr)
            .map(|p| p.conn)
            .collect();
        for conn in conns {
            if let Some(id) = self.peers.get(&conn).and_then(|p| p.peer_id) {
                self.banned_ids.insert(id.0);
            }
            self.close(conn, "banned: sent bad data".into());
        }
    }

    fn storage_failed(&mut self, e: StorageError) {
        self.events.push_back(Event::StorageFailed(e.0));
        self.pause();
    }

    // ----- requests and uploads -----

    fn refill_all(&mut self) {
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.fill_requests(conn);
        }
    }

    fn fill_requests(&mut self, conn: ConnId) {
        if self.paused || self.storage.is_none() || !self.checked {
            return;
        }
        let now = self.now;
        let cap = self.config.max_requests_per_peer;
        let (Some(peer), Some(picker)) = (self.peers.get_mut(&conn), self.picker.as_mut()) else {
            return;
        };
        if peer.stage != Stage::Active || peer.peer_choking || !peer.am_interested {
            return;
        }
        let target = peer.queue_target(now, cap);
        if peer.requests.len() >= target {
            return;
        }
        // Top up in batches of an eighth of the queue (at least 4): one request at a time would
        // make a pick and a send per block; at speed every send costs the driver (a browser
        // WebSocket send is ~100 us) while the queue still holds seconds of data.
        let batch = (target / 8).max(4);
        if peer.requests.len() > target / 2 && peer.requests.len() + batch > target {
            return;
        }
        self.scratch.clear();
        let requests = &peer.requests;
        let mine = |r: &BlockRequest| requests.iter().any(|(x, _)| x == r);
        picker.pick(
            conn,
            &peer.bits,
            target - peer.requests.len(),
            &mine,
            &mut self.scratch,
        );
        for &req in &self.scratch {
            peer.requests.push_back((req, now));
            Message::Request(req).encode(&mut peer.out);
        }
    }

    // ----- choking -----

    fn unchoked_count(&self) -> usize {
        self.peers.values().filter(|p| !p.am_choking).count()
    }

    /// A newly interested peer gets a free slot at once instead of waiting for the next round.
    fn quick_unchoke(&mut self, conn: ConnId) {
        if self.unchoked_count() < self.config.unchoke_slots + 1 {
            self.set_choke(conn, false);
        }
    }

    fn run_choker(&mut self, rotate_optimistic: bool) {
        let now = self.now;
        let seeding = self.is_complete();
        let candidates: Vec<choker::Candidate> = self
            .peers
            .values()
            .filter(|p| p.stage == Stage::Active && p.peer_interested)
            .map(|p| choker::Candidate {
                conn: p.conn,
                rate: if seeding {
                    p.up.rate(now)
                } else {
                    p.down.rate(now)
                },
            })
            .collect();
        if rotate_optimistic
            || self
                .optimistic
                .is_none_or(|c| !candidates.iter().any(|x| x.conn == c))
        {
            self.optimistic = None;
        }
        let decision = choker::choose(
            candidates,
            self.config.unchoke_slots,
            self.optimistic,
            &mut self.rng,
        );
        self.optimistic = decision.optimistic;
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            let unchoke = decision.unchoked.contains(&conn);
            self.set_choke(conn, !unchoke);
        }
    }

    fn set_choke(&mut self, conn: ConnId, choke: bool) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.am_choking == choke || peer.stage != Stage::Active {
            return;
        }
        peer.am_choking = choke;
        if choke {
            Message::Choke.encode(&mut peer.out);
            // With the fast extension every dropped request is rejected explicitly.
            let queued: Vec<BlockRequest> = peer.incoming.drain(..).collect();
            if peer.fast {
                for req in queued {
                    Message::RejectRequest(req).encode(&mut peer.out);
                }
            }
        } else {
            Message::Unchoke.encode(&mut peer.out);
        }
    }

    // ----- extensions -----

    fn on_extended(&mut self, conn: ConnId, id: u8, payload: Bytes) -> Result<(), String> {
        match id {
            0 => {
                let hs = ExtHandshake::decode(&payload).map_err(|e| e.to_string())?;
                let Some(peer) = self.peers.get_mut(&conn) else {
                    return Ok(());
                };
                peer.ext.update(&hs);
                if let Some(v) = &hs.v {
                    peer.client = Some(v.chars().take(64).collect());
                }
                if let Some(reqq) = hs.reqq {
                    peer.reqq = reqq.clamp(1, 2000);
                }
                // A later handshake without a size leaves the one reported before.
                if let Some(size) = hs.metadata_size.filter(|&s| peer.metadata_size != Some(s)) {
                    peer.metadata_size = Some(size);
                    peer.metadata_size_seq = self.metadata_seq;
                    peer.metadata_refused = false;
                    self.metadata_seq += 1;
                }
                if let (Some(port), false) = (hs.p, peer.outgoing) {
                    let listen = SocketAddr::new(peer.addr.ip(), port);
                    self.add_peers(&[listen], PeerSource::Incoming);
                }
                self.request_metadata();
            }
            UT_METADATA_ID => {
                let msg = MetadataMsg::decode(&payload).map_err(|e| e.to_string())?;
                self.on_metadata_msg(conn, msg)?;
            }
            // Private torrents (BEP 27) take peers from their trackers only.
            UT_PEX_ID if !self.is_private() => {
                let pex = PexMsg::decode(&payload).map_err(|e| e.to_string())?;
                self.add_peers(&pex.added, PeerSource::Pex);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_metadata_msg(&mut self, conn: ConnId, msg: MetadataMsg) -> Result<(), String> {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        let reply_id = peer.ext.id("ut_metadata");
        match msg {
            MetadataMsg::Request { piece } => {
                let Some(id) = reply_id else { return Ok(()) };
                let reply = match &self.info {
                    Some(info) if (piece as usize) * METADATA_PIECE < info.raw.len() => {
                        let start = piece as usize * METADATA_PIECE;
                        let end = (start + METADATA_PIECE).min(info.raw.len());
                        MetadataMsg::Data {
                            piece,
                            total_size: info.raw.len() as u64,
                            data: Bytes::copy_from_slice(&info.raw[start..end]),
                        }
                    }
                    _ => MetadataMsg::Reject { piece },
                };
                Message::Extended {
                    id,
                    payload: Bytes::from(reply.encode()),
                }
                .encode(&mut peer.out);
            }
            MetadataMsg::Reject { piece } => {
                if peer.metadata_request.is_some_and(|(p, _)| p == piece) {
                    // Leave the stamp in place so this peer is not asked again until it expires.
                    peer.metadata_request = Some((u32::MAX, self.now));
                    peer.metadata_refused = true;
                }
            }
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => {
                // Only what we asked for counts, so every piece has a known supplier. Data for
                // another size than the one being assembled is ignored: the peer may be honest
                // and the size we follow the lie.
                let asked = peer.metadata_request.is_some_and(|(p, _)| p == piece);
                if asked {
                    peer.metadata_request = None;
                }
                let addr = peer.addr;
                let from_source = !self.metadata_single || self.metadata_source == Some(conn);
                // A piece of the wrong length for its index is ignored too.
                let stored = match self.metadata.as_mut() {
                    Some(a) if asked && from_source && a.size() == total_size => {
                        a.add(piece, &data).is_ok()
                    }
                    _ => false,
                };
                if stored {
                    peer.metadata_refused = false;
                    self.metadata_from[piece as usize] = Some(addr);
                    match self.metadata.as_mut().and_then(MetadataAssembler::finish) {
                        Some(Ok(raw)) => match Info::from_metadata(&raw, self.info_hash) {
                            Ok(info) => {
                                self.on_metadata(info);
                                return Ok(());
                            }
                            Err(e) => {
                                self.metadata = None;
                                return Err(format!("metadata rejected: {e}"));
                            }
                        },
                        Some(Err(_)) => self.metadata_failed(),
                        None => {}
                    }
                }
                self.request_metadata();
            }
        }
        Ok(())
    }

    /// The metadata pieces did not hash to the info-hash. A single supplier lied and is banned;
    /// otherwise every piece is fetched again from one peer, so that the next failure names the
    /// culprit. The size is chosen again from the peers still connected.
    fn metadata_failed(&mut self) {
        let mut suppliers: Vec<SocketAddr> = self.metadata_from.iter().flatten().copied().collect();
        suppliers.sort();
        suppliers.dedup();
        self.metadata = None;
        self.metadata_from = Vec::new();
        self.metadata_source = None;
        match suppliers[..] {
            [liar] => self.ban(liar),
            _ => {
                self.metadata_single = true;
                self.metadata_suspects = suppliers;
            }
        }
    }

    /// Whether `peer` may be asked for metadata of `size`.
    fn metadata_eligible(peer: &Peer, size: u64, lenient: bool) -> bool {
        peer.stage == Stage::Active
            && peer.ext.id("ut_metadata").is_some()
            && peer.metadata_size == Some(size)
            && (lenient || !peer.metadata_refused)
    }

    /// The metadata size to assemble: the one most peers report, first come on ties. Peers that
    /// refused our requests count only if no other peer reports a size (then `true`).
    fn metadata_vote(&self) -> Option<(u64, bool)> {
        for lenient in [false, true] {
            // size -> (peers, first report)
            let mut tally: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
            for peer in self.peers.values() {
                let Some(size) = peer.metadata_size.filter(|&s| s > 0 && s <= MAX_METADATA) else {
                    continue;
                };
                if !Self::metadata_eligible(peer, size, lenient) {
                    continue;
                }
                let entry = tally.entry(size).or_insert((0, u64::MAX));
                entry.0 += 1;
                entry.1 = entry.1.min(peer.metadata_size_seq);
            }
            let best = tally
                .into_iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)));
            if let Some((size, _)) = best {
                return Some((size, lenient));
            }
        }
        None
    }

    /// Sizes the assembler by what peers report and asks the peers that reported that size for
    /// the pieces nobody is fetching yet (all of them from one peer after a mixed failure).
    fn request_metadata(&mut self) {
        if self.info.is_some() {
            return;
        }
        let Some((size, lenient)) = self.metadata_vote() else {
            return;
        };
        if self.metadata.as_ref().is_none_or(|a| a.size() != size) {
            self.metadata = MetadataAssembler::new(self.info_hash, size);
            let count = self.metadata.as_ref().map_or(0, |a| a.num_pieces());
            self.metadata_from = vec![None; count as usize];
        }
        let Some(assembler) = self.metadata.as_ref() else {
            return;
        };
        if self.metadata_single {
            let valid = self
                .metadata_source
                .and_then(|c| self.peers.get(&c))
                .is_some_and(|p| Self::metadata_eligible(p, size, lenient));
            if !valid {
                let eligible = || {
                    self.peers
                        .values()
                        .filter(|p| Self::metadata_eligible(p, size, lenient))
                };
                self.metadata_source = eligible()
                    .find(|p| self.metadata_suspects.contains(&p.addr))
                    .or_else(|| eligible().next())
                    .map(|p| p.conn);
            }
        }
        let now = self.now;
        let asked: HashSet<u32> = self
            .peers
            .values()
            .filter(|p| p.metadata_size == Some(size))
            .filter(|p| !self.metadata_single || self.metadata_source == Some(p.conn))
            .filter_map(|p| p.metadata_request.map(|(i, _)| i))
            .collect();
        let mut missing = assembler
            .missing()
            .into_iter()
            .filter(|i| !asked.contains(i));
        for peer in self.peers.values_mut() {
            if peer.metadata_request.is_some() || !Self::metadata_eligible(peer, size, lenient) {
                continue;
            }
            if self.metadata_single && self.metadata_source != Some(peer.conn) {
                continue;
            }
            let Some(id) = peer.ext.id("ut_metadata") else {
                continue;
            };
            let Some(piece) = missing.next() else { break };
            let msg = MetadataMsg::Request { piece };
            Message::Extended {
                id,
                payload: Bytes::from(msg.encode()),
            }
            .encode(&mut peer.out);
            peer.metadata_request = Some((piece, now));
        }
    }

    fn on_metadata(&mut self, info: Info) {
        self.set_info(info);
        self.events.push_back(Event::MetadataReceived);
        let n = self.picker.as_ref().map_or(0, Picker::num_pieces);
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            let Some(peer) = self.peers.get_mut(&conn) else {
                continue;
            };
            peer.metadata_request = None;
            let mut bits = if peer.early_have_all {
                Bitfield::full(n)
            } else if let Some(raw) = peer.early_bitfield.take() {
                match Bitfield::from_wire(&raw, n) {
                    Some(b) => b,
                    None => {
                        self.close(conn, "malformed bitfield".into());
                        continue;
                    }
                }
            } else {
                Bitfield::new(n)
            };
            for i in std::mem::take(&mut peer.early_haves) {
                if i >= n {
                    self.close(conn, format!("have for piece {i} of {n}"));
                    break;
                }
                bits.set(i);
            }
            if self.peers.contains_key(&conn) {
                self.peers.get_mut(&conn).expect("peer").bits = Bitfield::new(n);
                self.set_peer_bits(conn, bits);
            }
        }
    }

    fn send_pex(&mut self) {
        if self.is_private() {
            return;
        }
        let listed: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.stage == Stage::Active && p.outgoing)
            .map(|p| p.addr)
            .take(50)
            .collect();
        for peer in self.peers.values_mut() {
            let Some(id) = peer.ext.id("ut_pex") else {
                continue;
            };
            let added: Vec<SocketAddr> = listed
                .iter()
                .filter(|a| **a != peer.addr && !peer.pex_sent.contains(a))
                .copied()
                .collect();
            let dropped: Vec<SocketAddr> = peer
                .pex_sent
                .iter()
                .filter(|a| !listed.contains(a))
                .copied()
                .collect();
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            let msg = PexMsg { added, dropped };
            Message::Extended {
                id,
                payload: Bytes::from(msg.encode()),
            }
            .encode(&mut peer.out);
            peer.pex_sent = listed
                .iter()
                .filter(|a| **a != peer.addr)
                .copied()
                .collect();
        }
    }
}

/// The first connection in `peers` with bytes to send, after topping up its uploads.
fn take_output<'a>(
    peers: impl Iterator<Item = (&'a ConnId, &'a mut Peer)>,
    picker: Option<&Picker>,
    storage: &mut Option<Box<dyn Storage>>,
    up: &mut RateMeter,
    now: u64,
) -> Result<Option<(ConnId, Vec<u8>)>, StorageError> {
    for (&conn, peer) in peers {
        if peer.stage == Stage::Connecting {
            continue;
        }
        if let (Some(picker), Some(storage)) = (picker, storage.as_mut()) {
            fill_uploads(peer, picker, storage.as_mut(), up, now)?;
        }
        if !peer.out.is_empty() {
            let out = std::mem::take(&mut peer.out);
            peer.unsent += out.len();
            peer.last_send = now;
            return Ok(Some((conn, out)));
        }
    }
    Ok(None)
}

/// Serves queued requests while the socket keeps up.
fn fill_uploads(
    peer: &mut Peer,
    picker: &Picker,
    storage: &mut dyn Storage,
    up: &mut RateMeter,
    now: u64,
) -> Result<(), StorageError> {
    while peer.unsent + peer.out.len() < UPLOAD_WINDOW {
        let Some(req) = peer.incoming.pop_front() else {
            break;
        };
        // Header of a `piece` message, then the block read straight into the send buffer.
        let len = req.length as usize;
        peer.out.reserve(13 + len);
        peer.out.extend_from_slice(&(9 + req.length).to_be_bytes());
        peer.out.push(7);
        peer.out.extend_from_slice(&req.index.to_be_bytes());
        peer.out.extend_from_slice(&req.begin.to_be_bytes());
        let start = peer.out.len();
        peer.out.resize(start + len, 0);
        storage.read(
            picker.piece_offset(req.index) + req.begin as u64,
            &mut peer.out[start..],
        )?;
        peer.up.add(len as u64, now);
        up.add(len as u64, now);
    }
    Ok(())
}
