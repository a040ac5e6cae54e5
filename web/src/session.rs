//! One torrent in the Worker: its engine, announcer, store and peer sockets, and the loop that
//! moves events between them.

use crate::announce::{self, Failure, Query};
use crate::hasher;
use crate::js::{now_ms, Obj};
use crate::snapshot::{eta_secs, piece_map, MAX_CELLS};
use crate::socket::{close_reason, PeerSocket};
use crate::store::Store;
use js_sys::{Array, Promise, Uint8Array};
use protocol::engine::{Config, ConnId, Event, PeerSource, Torrent};
use protocol::magnet::Magnet;
use protocol::metainfo::Info;
use protocol::tracker::{AnnounceResponse, Announcer};
use protocol::{InfoHash, PeerId};
use std::collections::HashMap;
use wasm_bindgen::JsValue;

/// A torrent with no connected peer this long after it started says so on the page.
const NO_PEERS_AFTER_MS: u64 = 15_000;
/// While bytes wait in a socket's buffer we look at `bufferedAmount` this often.
const SENT_POLL_MS: u64 = 20;
/// Left we report for a magnet whose size we do not know yet (not 0: that means "seeder").
const UNKNOWN_LEFT: u64 = 16384;

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for the data file to open.
    Opening,
    /// Hashing what the data file already held.
    Checking,
    Ready,
    Failed(String),
}

/// Work a session hands to the app, which runs it asynchronously.
pub enum Task {
    OpenStorage {
        total: u64,
    },
    /// A piece's SHA-1 under way in WebCrypto, for `Torrent::handle_piece_hash`.
    Hash {
        piece: u32,
        job: u64,
        digest: Promise,
    },
    PersistInfo(Vec<u8>),
    Announce {
        url: String,
        path: String,
    },
}

pub struct Session {
    pub id: InfoHash,
    pub hex: String,
    pub engine: Torrent,
    announcer: Announcer,
    peer_id: PeerId,
    magnet: Option<Magnet>,
    pub phase: Phase,
    pub paused: bool,
    /// Allowed to talk to trackers and peers (after the store opened and any check finished).
    started: bool,
    started_ms: u64,
    pub store: Option<Store>,
    conns: HashMap<ConnId, PeerSocket>,
    announcing: bool,
    tracker_error: Option<String>,
    tracker_warning: Option<String>,
    bridge_error: Option<String>,
    last_close: Option<String>,
    /// Sockets closed by us, dropped on the next tick rather than inside their own callbacks.
    graveyard: Vec<PeerSocket>,
    /// A piece read back for hashing; WebCrypto copies it, so one buffer serves every piece.
    hash_buf: Vec<u8>,
    /// Something the page should show now rather than at the next periodic snapshot.
    news: bool,
}

pub fn engine_config() -> Config {
    // The bridge limits tunnels per client; stay below where it answers "busy".
    Config {
        max_peers: 40,
        driver_hashes: hasher::in_driver(),
        ..Config::default()
    }
}

impl Session {
    pub fn new(
        id: InfoHash,
        info: Option<Info>,
        trackers: Vec<Vec<String>>,
        magnet: Option<Magnet>,
        peer_id: PeerId,
        seed: u64,
        paused: bool,
    ) -> Self {
        let has_info = info.is_some();
        let engine = Torrent::new(id, info, peer_id, engine_config(), seed);
        let mut s = Session {
            id,
            hex: id.to_hex(),
            engine,
            announcer: Announcer::new(trackers, seed.rotate_left(17)),
            peer_id,
            magnet,
            phase: if has_info {
                Phase::Opening
            } else {
                Phase::Ready
            },
            paused,
            started: false,
            started_ms: 0,
            store: None,
            conns: HashMap::new(),
            announcing: false,
            tracker_error: None,
            tracker_warning: None,
            bridge_error: None,
            last_close: None,
            graveyard: Vec::new(),
            hash_buf: Vec::new(),
            news: false,
        };
        if paused {
            s.engine.pause();
        }
        if !has_info {
            // A magnet has nothing to check: it goes to the swarm for its metadata at once.
            s.start(now_ms());
        }
        s
    }

    fn start(&mut self, now: u64) {
        self.started = true;
        self.started_ms = now;
        if let Some(m) = &self.magnet {
            if !m.peers.is_empty() {
                self.engine.add_peers(&m.peers, PeerSource::Magnet);
            }
        }
    }

    pub fn name(&self) -> String {
        match (self.engine.info(), &self.magnet) {
            (Some(info), _) => info.name.clone(),
            (None, Some(Magnet { name: Some(n), .. })) => n.clone(),
            _ => self.hex.clone(),
        }
    }

    /// The data file is open: give it to the engine, which then checks what it already holds
    /// (the engine requests nothing before that check ran). A file created just now holds
    /// nothing, so hashing its zeros would only delay the start (seconds per GiB).
    pub fn attach(&mut self, store: Store) {
        self.engine.attach_storage(store.storage());
        let pieces = self.engine.info().map_or(0, |i| i.piece_hashes.len());
        let fresh = store.is_fresh() && self.engine.assume_checked(&vec![false; pieces]);
        self.store = Some(store);
        self.phase = Phase::Checking;
        if fresh {
            self.ready();
        }
    }

    /// The check is over: to the swarm.
    fn ready(&mut self) {
        self.phase = Phase::Ready;
        if !self.started {
            self.start(now_ms());
        }
    }

    pub fn fail(&mut self, why: String) {
        self.phase = Phase::Failed(why);
        self.close_all();
        self.engine.pause();
    }

    /// Hashes stored pieces until `budget_end` (a `now_ms()` value) passes or the check ends.
    /// Without WebCrypto only: otherwise the app checks with it and calls `checked`.
    pub fn check(&mut self, budget_end: u64) {
        if self.phase != Phase::Checking || hasher::in_driver() {
            return;
        }
        loop {
            match self.engine.check_existing(1) {
                Ok(true) => return self.ready(),
                Ok(false) if now_ms() < budget_end => {}
                Ok(false) => return,
                Err(e) => return self.fail(format!("cannot read the downloaded data: {e}")),
            }
        }
    }

    /// The end of a check the app made with WebCrypto: `have[i]` tells whether stored piece `i`
    /// matched its hash.
    pub fn checked(&mut self, have: &[bool]) {
        if self.phase != Phase::Checking {
            return;
        }
        if self.engine.assume_checked(have) {
            self.ready();
        } else {
            self.fail("the check covered the wrong number of pieces".into());
        }
    }

    pub fn on_open(&mut self, conn: ConnId, now: u64) {
        if let Some(s) = self.conns.get_mut(&conn) {
            s.opened = true;
            self.bridge_error = None;
            self.engine.handle_connected(conn, now);
        }
    }

    pub fn on_data(&mut self, conn: ConnId, data: &[u8], now: u64) {
        if self.conns.contains_key(&conn) {
            self.engine.handle_data(conn, data, now);
        }
    }

    pub fn on_sent(&mut self, conn: ConnId, n: u64) {
        if let Some(s) = self.conns.get_mut(&conn) {
            s.on_sent(n);
        }
    }

    pub fn on_closed(&mut self, conn: ConnId, code: u16, reason: &str, now: u64) {
        let Some(sock) = self.conns.remove(&conn) else {
            return;
        };
        let why = close_reason(code);
        // The bridge ends every tunnel with a close frame and a code of its own; 1006 (none)
        // means the bridge itself is gone, or never answered.
        if code == 1006 {
            self.bridge_error = Some(if sock.opened {
                "a tunnel dropped without a close frame".into()
            } else {
                "a WebSocket to /peer could not open".into()
            });
        }
        self.last_close = Some(if reason.is_empty() {
            format!("{}: {why}", sock.addr)
        } else {
            format!("{}: {why} ({reason})", sock.addr)
        });
        sock.close();
        self.graveyard.push(sock);
        self.engine.handle_closed(conn, now);
    }

    pub fn on_announce(&mut self, url: &str, result: Result<AnnounceResponse, Failure>, now: u64) {
        self.announcing = false;
        let result = match result {
            Ok(resp) => {
                self.bridge_error = None;
                self.tracker_error = None;
                self.tracker_warning = resp.warning.clone();
                if !resp.peers.is_empty() && !self.paused && self.phase_runs() {
                    self.engine.add_peers(&resp.peers, PeerSource::Tracker);
                }
                Ok(resp)
            }
            Err(f) => {
                if let Some(why) = &f.bridge {
                    self.bridge_error = Some(format!("/announce failed ({why})"));
                }
                self.tracker_error = Some(format!("{url}: {}", f.error));
                Err(f.error)
            }
        };
        self.announcer.handle_response(url, &result, now);
    }

    fn phase_runs(&self) -> bool {
        !matches!(self.phase, Phase::Failed(_))
    }

    fn network_on(&self) -> bool {
        self.started && !self.paused && self.phase_runs()
    }

    pub fn pause(&mut self) {
        self.paused = true;
        self.engine.pause();
    }

    pub fn resume(&mut self, now: u64) {
        self.paused = false;
        self.started_ms = now;
        self.engine.resume();
    }

    /// Closes every socket and the store: the session is being removed.
    pub fn shutdown(&mut self) {
        self.close_all();
        if let Some(store) = self.store.take() {
            store.close();
        }
    }

    fn close_all(&mut self) {
        for (_, sock) in self.conns.drain() {
            sock.close();
            self.graveyard.push(sock);
        }
    }

    /// The announce telling the tracker we leave, if one ever answered.
    pub fn stopped_announce(&mut self) -> Option<String> {
        let p = self.announcer.stopped()?;
        Some(self.announce_path(&p.url, p.event))
    }

    fn announce_path(&self, url: &str, event: Option<protocol::tracker::AnnounceEvent>) -> String {
        let stats = self.engine.stats();
        let left = match self.engine.info() {
            Some(info) => info.total_length.saturating_sub(stats.verified),
            None => UNKNOWN_LEFT,
        };
        announce::path(&Query {
            tracker: url,
            info_hash: self.id,
            peer_id: self.peer_id,
            uploaded: stats.uploaded,
            downloaded: stats.downloaded,
            left,
            event,
        })
    }

    /// Runs due timers and one slice of checking, then `drive`.
    pub fn tick(&mut self, now: u64, check_until: u64, ws_base: &str, tasks: &mut Vec<Task>) {
        self.graveyard.clear();
        if let Some(Err(e)) = self.store.as_ref().map(Store::write_out) {
            self.fail(format!("storage failed: {e}"));
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.check(check_until);
        self.drive(now, ws_base, tasks);
    }

    /// Moves everything the engine produced to sockets and tasks, until it has nothing more.
    pub fn drive(&mut self, now: u64, ws_base: &str, tasks: &mut Vec<Task>) {
        loop {
            let mut failed = Vec::new();
            while let Some(ev) = self.engine.poll_event() {
                match ev {
                    Event::Connect { conn, addr } => {
                        match PeerSocket::connect(ws_base, self.id, conn, addr) {
                            Ok(sock) => {
                                self.conns.insert(conn, sock);
                            }
                            Err(e) => {
                                self.last_close = Some(format!("{addr}: {e}"));
                                failed.push(conn);
                            }
                        }
                    }
                    Event::Close { conn, .. } => {
                        if let Some(sock) = self.conns.remove(&conn) {
                            sock.close();
                            self.graveyard.push(sock);
                        }
                    }
                    Event::MetadataReceived => {
                        if let Some(info) = self.engine.info() {
                            tasks.push(Task::PersistInfo(info.raw.clone()));
                            tasks.push(Task::OpenStorage {
                                total: info.total_length,
                            });
                            self.phase = Phase::Opening;
                        }
                    }
                    Event::Complete => {
                        self.announcer.completed();
                        self.news = true;
                    }
                    Event::StorageFailed(e) => self.fail(format!("storage failed: {e}")),
                    Event::HashPiece { piece, job } => {
                        let started = self
                            .engine
                            .read_piece(piece, &mut self.hash_buf)
                            .map_err(|e| format!("storage failed: {e}"))
                            .and_then(|()| {
                                hasher::start(&self.hash_buf)
                                    .map_err(|e| format!("hashing failed: {e}"))
                            });
                        match started {
                            Ok(digest) => tasks.push(Task::Hash { piece, job, digest }),
                            Err(e) => self.fail(e),
                        }
                    }
                    Event::PieceVerified(_) | Event::PieceFailed(_) | Event::PeerBanned(_) => {}
                }
            }
            while let Some((conn, data)) = self.engine.poll_transmit() {
                if let Some(sock) = self.conns.get_mut(&conn) {
                    sock.queue(data);
                }
            }
            let mut sent_any = false;
            for (&conn, sock) in self.conns.iter_mut() {
                sock.flush();
                let n = sock.drained();
                if n > 0 {
                    self.engine.handle_sent(conn, n);
                    sent_any = true;
                }
            }
            if failed.is_empty() && !sent_any {
                break;
            }
            for conn in failed {
                self.engine.handle_closed(conn, now);
            }
        }
        if self.network_on() && !self.announcing && !self.announcer.is_empty() {
            if let Some(p) = self.announcer.poll_announce(now) {
                self.announcing = true;
                let path = self.announce_path(&p.url, p.event);
                tasks.push(Task::Announce { url: p.url, path });
            }
        }
    }

    /// Whether something happened that the page should see at once, such as the download
    /// finishing; clears the flag.
    pub fn take_news(&mut self) -> bool {
        std::mem::take(&mut self.news)
    }

    /// When this session next needs a tick.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        let mut due = self.engine.poll_timeout();
        let mut at = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
        if self.phase == Phase::Checking && !hasher::in_driver() {
            at(now);
        }
        if self.conns.values().any(PeerSocket::pending) {
            at(now + SENT_POLL_MS);
        }
        if self.network_on() && !self.announcing {
            if let Some(t) = self.announcer.poll_timeout() {
                at(t);
            }
        }
        due
    }

    fn state(&self) -> &'static str {
        match self.phase {
            Phase::Failed(_) => "error",
            _ if self.paused => "paused",
            _ if self.engine.info().is_none() => "metadata",
            Phase::Opening | Phase::Checking => "checking",
            Phase::Ready if self.engine.is_complete() => "seeding",
            Phase::Ready => "downloading",
        }
    }

    /// What the page should say is wrong, if anything: the worst first.
    fn warning(&self, now: u64) -> Option<String> {
        if let Some(e) = &self.bridge_error {
            return Some(format!(
                "Bridge unreachable: {e}. Is the bridge still running?"
            ));
        }
        if !self.network_on() || self.engine.is_complete() {
            return None;
        }
        let stats = self.engine.stats();
        if stats.peers_connected == 0 && now.saturating_sub(self.started_ms) > NO_PEERS_AFTER_MS {
            let mut msg = String::from("No peers");
            if self.announcer.is_empty() && self.magnet.as_ref().is_none_or(|m| m.peers.is_empty())
            {
                msg.push_str(": this torrent lists no trackers");
            } else if let Some(e) = &self.tracker_error {
                msg.push_str(&format!(": tracker failed: {e}"));
            } else if stats.peers_known == 0 {
                msg.push_str(": the trackers returned none");
            } else if let Some(c) = &self.last_close {
                msg.push_str(&format!(": last attempt {c}"));
            }
            return Some(msg);
        }
        self.tracker_error
            .clone()
            .or_else(|| self.tracker_warning.clone())
    }

    /// This torrent's part of the page's snapshot.
    pub fn snapshot(&self, now: u64) -> JsValue {
        let stats = self.engine.stats();
        let info = self.engine.info();
        let total = info.map_or(0, |i| i.total_length);
        let progress = if total == 0 {
            if info.is_some() && self.engine.is_complete() {
                1.0
            } else {
                0.0
            }
        } else {
            (stats.verified as f64 / total as f64).clamp(0.0, 1.0)
        };
        let eta = match info {
            Some(_) => eta_secs(total.saturating_sub(stats.verified), stats.download_rate),
            None => None,
        };
        let peers = Array::new();
        for p in self.engine.peers() {
            peers.push(
                &Obj::new()
                    .set("addr", p.addr.to_string())
                    .set("client", p.client)
                    .set("down", p.download_rate)
                    .set("up", p.upload_rate)
                    .set("progress", p.progress)
                    .into(),
            );
        }
        let files = Array::new();
        if let Some(info) = info {
            let done = self.engine.file_progress();
            for (i, f) in info.files.iter().enumerate() {
                files.push(
                    &Obj::new()
                        .set("path", f.path.join("/"))
                        .set("size", f.length as f64)
                        .set("done", done.get(i).copied().unwrap_or(0) as f64)
                        .into(),
                );
            }
        }
        let error = match &self.phase {
            Phase::Failed(e) => Some(e.clone()),
            _ => None,
        };
        Obj::new()
            .set("id", self.hex.clone())
            .set("name", self.name())
            .set("size", total as f64)
            .set("progress", progress)
            .set("downloaded", stats.downloaded as f64)
            .set("uploaded", stats.uploaded as f64)
            .set("downRate", stats.download_rate)
            .set("upRate", stats.upload_rate)
            .set_opt("eta", eta)
            .set("state", self.state())
            .set_opt("error", error)
            .set_opt("warning", self.warning(now))
            .set("peerCount", stats.peers_connected as u32)
            .set("peers", peers)
            .set("pieceCount", stats.pieces_total)
            .set(
                "pieces",
                Uint8Array::from(&piece_map(self.engine.have(), MAX_CELLS)[..]),
            )
            .set("files", files)
            .into()
    }
}
