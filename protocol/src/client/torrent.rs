//! One torrent of the session: its engine, its trackers and where it is in its life.

use super::contract::AnnounceError;
use super::{Action, AddTorrent, Config, Event, Out, Prefill};
use crate::engine::{self, ConnId, PeerSource, Torrent};
use crate::storage::Storage;
use crate::tracker::{AnnounceEvent, AnnounceRequest, AnnounceResponse, Announcer, TrackerError};
use crate::{InfoHash, PeerId};
use std::collections::HashMap;
use std::net::SocketAddr;

mod report;

/// `left` for a magnet whose size is not known yet: not 0, which says "seeder".
const UNKNOWN_LEFT: u64 = 16384;
/// Bytes a native resume check hashes per `handle_timeout`, so a big check never blocks the loop.
const CHECK_SLICE_BYTES: u64 = 8 << 20;
/// Hashes a driver that hashes asynchronously has under way at once during a check.
const CHECK_JOBS: u32 = 4;
/// Hash jobs of a check are numbered from here, apart from the engine's own.
const CHECK_JOB: u64 = u64::MAX;
/// Stalls, starvation and the like are looked at this often.
const TICK_MS: u64 = 1000;
/// Fewer connected peers than this is starving: ask the trackers again, as early as they allow.
const STARVED_BELOW: usize = 4;
/// The first starved re-announce waits this long after the last, doubling up to the cap.
const STARVED_BACKOFF_MS: u64 = 30_000;
const STARVED_BACKOFF_MAX_MS: u64 = 30 * 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// A magnet asking peers for its metadata.
    Metadata,
    /// The driver is opening the data (`Action::OpenStorage`).
    Opening,
    /// Hashing what the data already holds.
    Checking,
    Ready,
    Failed(String),
}

/// A check whose hashing the driver does (`engine::Config::driver_hashes`).
struct DriverCheck {
    next: u32,
    in_flight: u32,
    have: Vec<bool>,
}

pub(super) struct Entry {
    id: InfoHash,
    pub(super) engine: Torrent,
    announcer: Announcer,
    peer_id: PeerId,
    key: u32,
    listen: Option<SocketAddr>,
    numwant: u32,
    driver_hashes: bool,
    name_hint: Option<String>,
    /// Addresses that came with the torrent: handed to the engine when it goes to the swarm.
    initial_peers: Vec<(SocketAddr, PeerSource)>,
    phase: Phase,
    paused: bool,
    /// Gone to the swarm: a magnet at once, a torrent once its data was checked.
    in_swarm: bool,
    /// When the swarm was last joined (start or resume): "no peers" counts from here.
    joined_at: u64,
    check: Option<DriverCheck>,
    /// The data's check is over (or was not needed).
    checked: bool,
    /// Addresses of the engine's connections, for the words of the last failed attempt.
    addrs: HashMap<ConnId, SocketAddr>,
    /// Addresses came with the torrent: a source of peers besides trackers.
    given_peers: bool,
    /// The session has a DHT: a source of peers for a public torrent.
    dht_on: bool,
    /// The torrent was incomplete after its check: its completion is news to trackers.
    was_incomplete: bool,
    complete_seen: bool,
    tracker_error: Option<String>,
    tracker_warning: Option<String>,
    pub(super) bridge_error: Option<String>,
    last_close: Option<String>,
    /// When bytes last moved, and the counters then.
    last_progress: u64,
    progress_mark: (u64, u64, bool),
    next_tick: u64,
    starved_at: u64,
    starved_rounds: u32,
    /// The latest time the session was given: `Session::stats` is asked without one, and the
    /// engine's rates need one.
    seen: u64,
}

impl Entry {
    pub(super) fn new(
        add: AddTorrent,
        config: &Config,
        peer_id: PeerId,
        key: u32,
        seed: u64,
    ) -> Self {
        let mut engine_config = config.engine.clone();
        engine_config.listen_port = config.listen.map(|a| a.port());
        let phase = if add.info.is_some() {
            Phase::Opening
        } else {
            Phase::Metadata
        };
        Entry {
            id: add.info_hash,
            engine: Torrent::new(add.info_hash, add.info, peer_id, engine_config, seed),
            announcer: Announcer::new(add.trackers, seed.rotate_left(17)),
            peer_id,
            key,
            listen: config.listen,
            // Enough to fill our slots twice over, as failed dials are common.
            numwant: (config.engine.max_peers as u32)
                .saturating_mul(2)
                .clamp(50, 200),
            driver_hashes: config.engine.driver_hashes,
            name_hint: add.name,
            given_peers: !add.peers.is_empty(),
            dht_on: config.dht.is_some(),
            initial_peers: add.peers,
            phase,
            paused: add.paused,
            in_swarm: false,
            joined_at: 0,
            check: None,
            checked: false,
            addrs: HashMap::new(),
            was_incomplete: false,
            complete_seen: false,
            tracker_error: None,
            tracker_warning: None,
            bridge_error: None,
            last_close: None,
            last_progress: 0,
            progress_mark: (0, 0, false),
            next_tick: 0,
            starved_at: 0,
            starved_rounds: 0,
            seen: 0,
        }
    }

    pub(super) fn start(&mut self, now: u64, out: &mut Out) {
        if self.paused {
            self.engine.pause(now);
        }
        match self.phase {
            Phase::Opening => out
                .actions
                .push_back(Action::OpenStorage { torrent: self.id }),
            // A magnet has nothing to check: it goes to the swarm for its metadata at once.
            _ => self.join_swarm(now),
        }
    }

    fn join_swarm(&mut self, now: u64) {
        self.joined_at = now;
        self.last_progress = now;
        if self.in_swarm {
            return;
        }
        self.in_swarm = true;
        for (addr, source) in std::mem::take(&mut self.initial_peers) {
            self.add_peers(now, &[addr], source);
        }
    }

    fn network_on(&self) -> bool {
        self.in_swarm && !self.paused && !matches!(self.phase, Phase::Failed(_))
    }

    /// Whether, and how much, this torrent looks for peers in the DHT: never while out of the
    /// swarm, and never once its metadata says private (BEP 27; a magnet counts as public
    /// until then).
    pub(super) fn dht_want(&self) -> Option<super::dht::Want> {
        use super::dht::Want;
        if !self.dht_allowed() {
            return None;
        }
        Some(if self.is_complete() {
            Want::Complete
        } else if self.engine.stats(self.seen).peers_connected < STARVED_BELOW {
            Want::Starved
        } else {
            Want::Enough
        })
    }

    pub(super) fn dht_allowed(&self) -> bool {
        self.dht_on && self.network_on() && !self.engine.info().is_some_and(|i| i.private)
    }

    pub(super) fn is_complete(&self) -> bool {
        self.phase == Phase::Ready && self.engine.is_complete()
    }

    fn is_self(&self, a: SocketAddr) -> bool {
        let Some(listen) = self.listen else {
            return false;
        };
        let ip = a.ip();
        a.port() == listen.port() && (ip.is_loopback() || ip.is_unspecified() || ip == listen.ip())
    }

    pub(super) fn add_peers(&mut self, now: u64, addrs: &[SocketAddr], source: PeerSource) {
        let list: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|&a| !self.is_self(a))
            .collect();
        if list.is_empty() {
            return;
        }
        if !self.in_swarm {
            self.initial_peers
                .extend(list.into_iter().map(|a| (a, source)));
            return;
        }
        // Kept while paused too: the engine dials them once resumed.
        if !matches!(self.phase, Phase::Failed(_)) {
            self.engine.add_peers(&list, source, now);
        }
    }

    pub(super) fn pause(&mut self, now: u64, _out: &mut Out) {
        if self.paused {
            return;
        }
        self.paused = true;
        self.engine.pause(now);
        self.last_progress = now;
    }

    pub(super) fn resume(&mut self, now: u64, _out: &mut Out) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.engine.resume(now);
        self.joined_at = now;
        self.last_progress = now;
        self.starved_rounds = 0;
        self.starved_at = 0;
    }

    /// Closes everything and says `stopped` to the tracker that last answered.
    pub(super) fn stop(&mut self, now: u64, out: &mut Out) {
        self.engine.pause(now);
        self.after_engine(now, out);
        if let Some(p) = self.announcer.stopped() {
            let request = self.request(now, Some(AnnounceEvent::Stopped), p.tracker_id);
            out.actions.push_back(Action::Announce {
                torrent: self.id,
                url: p.url,
                request,
            });
        }
    }

    pub(super) fn fail(&mut self, now: u64, error: String, out: &mut Out) {
        if matches!(self.phase, Phase::Failed(_)) {
            return;
        }
        out.events.push_back(Event::Failed {
            torrent: self.id,
            error: error.clone(),
        });
        self.phase = Phase::Failed(error);
        self.check = None;
        self.engine.pause(now);
    }

    pub(super) fn storage_opened(
        &mut self,
        now: u64,
        result: Result<(Box<dyn Storage>, Prefill), String>,
        out: &mut Out,
    ) {
        if self.phase != Phase::Opening {
            return;
        }
        let (storage, prefill) = match result {
            Ok(s) => s,
            Err(e) => return self.fail(now, e, out),
        };
        self.engine.attach_storage(storage, now);
        let pieces = self.engine.info().map_or(0, |i| i.num_pieces()) as usize;
        self.phase = Phase::Checking;
        match prefill {
            Prefill::Empty => {
                self.checked = self.engine.assume_checked(&vec![false; pieces], now);
            }
            Prefill::Complete => {
                self.checked = self.engine.assume_checked(&vec![true; pieces], now);
            }
            Prefill::Unknown if self.driver_hashes => {
                self.check = Some(DriverCheck {
                    next: 0,
                    in_flight: 0,
                    have: vec![false; pieces],
                });
                self.issue_check_jobs(out);
            }
            // Sliced in `timeout`, which `deadline` makes due at once.
            Prefill::Unknown => {}
        }
        self.after_check(now, out);
    }

    fn issue_check_jobs(&mut self, out: &mut Out) {
        let Some(check) = self.check.as_mut() else {
            return;
        };
        while check.in_flight < CHECK_JOBS && (check.next as usize) < check.have.len() {
            out.actions.push_back(Action::HashPiece {
                torrent: self.id,
                piece: check.next,
                job: CHECK_JOB,
            });
            check.next += 1;
            check.in_flight += 1;
        }
    }

    /// Moves on once the check is over: to the swarm.
    fn after_check(&mut self, now: u64, out: &mut Out) {
        if self.phase != Phase::Checking || !self.checked {
            return;
        }
        self.phase = Phase::Ready;
        let st = self.engine.stats(now);
        self.was_incomplete = st.pieces_have < st.pieces_total;
        out.events.push_back(Event::Checked {
            torrent: self.id,
            have: st.pieces_have,
            total: st.pieces_total,
        });
        self.join_swarm(now);
    }

    pub(super) fn piece_hashed(
        &mut self,
        now: u64,
        piece: u32,
        job: u64,
        digest: [u8; 20],
        out: &mut Out,
    ) {
        if job != CHECK_JOB {
            self.engine.handle_piece_hash(piece, job, digest, now);
            return;
        }
        let expected = self
            .engine
            .info()
            .and_then(|i| i.piece_hashes.get(piece as usize).copied());
        let Some(check) = self.check.as_mut() else {
            return;
        };
        let Some(slot) = check.have.get_mut(piece as usize) else {
            return;
        };
        *slot = expected == Some(digest);
        check.in_flight = check.in_flight.saturating_sub(1);
        if check.in_flight == 0 && check.next as usize >= check.have.len() {
            let have = std::mem::take(&mut check.have);
            self.check = None;
            if !self.engine.assume_checked(&have, now) {
                let error = "the check covered the wrong number of pieces".into();
                return self.fail(now, error, out);
            }
            self.checked = true;
            self.after_check(now, out);
        } else {
            self.issue_check_jobs(out);
        }
    }

    pub(super) fn connected(&mut self, now: u64, conn: ConnId, _out: &mut Out) {
        self.bridge_error = None;
        self.engine.handle_connected(conn, now);
    }

    pub(super) fn incoming(
        &mut self,
        now: u64,
        addr: SocketAddr,
        _out: &mut Out,
    ) -> Option<ConnId> {
        if !self.network_on() {
            return None;
        }
        let conn = self.engine.handle_incoming(addr, now)?;
        self.addrs.insert(conn, addr);
        Some(conn)
    }

    pub(super) fn data(&mut self, now: u64, conn: ConnId, data: &[u8], _out: &mut Out) {
        self.engine.handle_data(conn, data, now);
    }

    pub(super) fn sent(&mut self, now: u64, conn: ConnId, bytes: usize, _out: &mut Out) {
        self.engine.handle_sent(conn, bytes, now);
    }

    pub(super) fn closed(&mut self, now: u64, conn: ConnId, why: &str, _out: &mut Out) {
        if let Some(addr) = self.addrs.remove(&conn) {
            self.last_close = Some(format!("{addr}: {why}"));
        }
        self.engine.handle_closed(conn, now);
    }

    pub(super) fn announced(
        &mut self,
        now: u64,
        url: &str,
        result: Result<AnnounceResponse, AnnounceError>,
        out: &mut Out,
    ) {
        let result: Result<AnnounceResponse, TrackerError> = match result {
            Ok(resp) => {
                self.bridge_error = None;
                self.tracker_error = None;
                self.tracker_warning.clone_from(&resp.warning);
                out.events.push_back(Event::Announced {
                    torrent: self.id,
                    url: url.to_string(),
                    peers: resp.peers.len(),
                    warning: resp.warning.clone(),
                });
                if self.network_on() {
                    self.add_peers(now, &resp.peers, PeerSource::Tracker);
                }
                Ok(resp)
            }
            Err(e) => {
                if let AnnounceError::Bridge(why) = &e {
                    self.bridge_error = Some(format!("/announce failed ({why})"));
                }
                self.tracker_error = Some(format!("{url}: {e}"));
                out.events.push_back(Event::AnnounceFailed {
                    torrent: self.id,
                    url: url.to_string(),
                    error: e.to_string(),
                });
                Err(match e {
                    AnnounceError::Tracker(t) => t,
                    AnnounceError::Bridge(why) => TrackerError::Io(why),
                })
            }
        };
        self.announcer.handle_response(url, &result, now);
    }

    pub(super) fn timeout(&mut self, now: u64, out: &mut Out) {
        self.seen = self.seen.max(now);
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        if self.phase == Phase::Checking && self.check.is_none() && !self.driver_hashes {
            let piece_len = self
                .engine
                .info()
                .map_or(1, |i| u64::from(i.piece_length.max(1)));
            let batch = (CHECK_SLICE_BYTES / piece_len).max(1) as u32;
            match self.engine.check_existing(batch, now) {
                Ok(true) => {
                    self.checked = true;
                    self.after_check(now, out);
                }
                Ok(false) => {}
                Err(e) => self.fail(now, format!("cannot read the downloaded data: {e}"), out),
            }
        }
        if now >= self.next_tick && self.downloading() {
            self.next_tick = now + TICK_MS;
            self.tick(now);
        }
    }

    /// Once a second while downloading: stalls and starvation.
    fn tick(&mut self, now: u64) {
        let st = self.engine.stats(now);
        let mark = (st.downloaded, st.verified, self.engine.info().is_some());
        if mark != self.progress_mark {
            self.progress_mark = mark;
            self.last_progress = now;
        }
        if st.peers_connected >= STARVED_BELOW {
            self.starved_rounds = 0;
            self.starved_at = 0;
        } else if now >= self.starved_at {
            // The announcer still keeps to the tracker's `min interval`.
            self.announcer.request_peers(now);
            let wait = STARVED_BACKOFF_MS
                .checked_shl(self.starved_rounds)
                .unwrap_or(STARVED_BACKOFF_MAX_MS)
                .min(STARVED_BACKOFF_MAX_MS);
            self.starved_rounds = self.starved_rounds.saturating_add(1);
            self.starved_at = now + wait;
        }
    }

    /// When this torrent next wants `handle_timeout`.
    pub(super) fn deadline(&self) -> Option<u64> {
        let mut due: Option<u64> = None;
        let mut at = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
        // Only a download in the swarm has stalls and starvation to look at: a paused, failed
        // or seeding torrent sleeps until its engine or its trackers want it.
        if self.downloading() {
            at(self.next_tick);
        }
        if let Some(t) = self.engine.poll_timeout() {
            at(t);
        }
        if self.phase == Phase::Checking && self.check.is_none() && !self.driver_hashes {
            at(0);
        }
        if self.network_on() {
            if let Some(t) = self.announcer.poll_timeout() {
                at(t);
            }
        }
        due
    }

    fn downloading(&self) -> bool {
        self.network_on() && !self.is_complete()
    }

    /// Takes what the engine asked for and turns it into actions and events; then announces if
    /// one is due.
    pub(super) fn after_engine(&mut self, now: u64, out: &mut Out) {
        self.seen = self.seen.max(now);
        while let Some(ev) = self.engine.poll_event() {
            self.on_engine_event(now, ev, out);
        }
        if self.network_on() {
            if let Some(p) = self.announcer.poll_announce(now) {
                let request = self.request(now, p.event, p.tracker_id);
                out.actions.push_back(Action::Announce {
                    torrent: self.id,
                    url: p.url,
                    request,
                });
            }
        }
    }

    fn on_engine_event(&mut self, now: u64, ev: engine::Event, out: &mut Out) {
        let torrent = self.id;
        match ev {
            engine::Event::Connect { conn, addr } => {
                if self.is_self(addr) {
                    self.engine.handle_closed(conn, now);
                } else {
                    self.addrs.insert(conn, addr);
                    out.actions.push_back(Action::Connect {
                        torrent,
                        conn,
                        addr,
                    });
                }
            }
            engine::Event::Close { conn, reason } => {
                self.addrs.remove(&conn);
                out.actions.push_back(Action::Close {
                    torrent,
                    conn,
                    reason: reason.to_string(),
                })
            }
            engine::Event::MetadataReceived => {
                out.events.push_back(Event::MetadataReceived { torrent });
                if self.phase == Phase::Metadata {
                    self.phase = Phase::Opening;
                    out.actions.push_back(Action::OpenStorage { torrent });
                }
            }
            engine::Event::HashPiece { piece, job } => out.actions.push_back(Action::HashPiece {
                torrent,
                piece,
                job,
            }),
            engine::Event::PieceVerified(_) => {}
            engine::Event::PieceFailed(piece) => {
                out.events.push_back(Event::PieceFailed { torrent, piece })
            }
            engine::Event::PeerBanned(addr) => {
                out.events.push_back(Event::PeerBanned { torrent, addr })
            }
            engine::Event::Complete => {
                if !self.complete_seen {
                    self.complete_seen = true;
                    // A torrent found complete on disk downloaded nothing: trackers would
                    // count a completion that never happened.
                    if self.was_incomplete {
                        self.announcer.completed();
                    }
                    out.events.push_back(Event::Complete {
                        torrent,
                        downloaded: self.was_incomplete,
                    });
                }
            }
            engine::Event::StorageFailed(e) => self.fail(now, format!("storage failed: {e}"), out),
        }
    }

    fn request(
        &self,
        now: u64,
        event: Option<AnnounceEvent>,
        tracker_id: Option<String>,
    ) -> AnnounceRequest {
        let st = self.engine.stats(now);
        let left = match self.engine.info() {
            Some(info) => info.total_length.saturating_sub(st.verified),
            None => UNKNOWN_LEFT,
        };
        AnnounceRequest {
            info_hash: self.id,
            peer_id: self.peer_id,
            port: self.listen.map_or(0, |a| a.port()),
            uploaded: st.uploaded,
            downloaded: st.downloaded,
            left,
            event,
            numwant: Some(self.numwant),
            key: self.key,
            tracker_id,
        }
    }
}
