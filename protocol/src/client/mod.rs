//! The client session: every torrent's lifecycle above its engine, the same for the command line
//! and the browser tab.
//!
//! A [`Session`] holds torrents by info-hash. For each it decides what the engine alone does not:
//! when the data is opened and checked (resume), when to go to the swarm, when and what to
//! announce to which tracker (BEP 12 tiers, intervals, `event`s, `left`, `numwant`, the port that
//! really listens, an early re-announce with backoff when starved of peers), which addresses are
//! our own, pause, resume and removal, completion and seeding, stalls, and the [`Status`] a
//! person sees. Like quinn's `Endpoint`, it takes input through `handle_*(now, ...)` and gives
//! output through [`Session::poll_action`], [`Session::poll_event`],
//! [`Session::poll_transmit`] and [`Session::poll_timeout`]; the driver only moves bytes,
//! time and storage in and out.

pub mod contract;
mod dht;
mod status;
#[cfg(test)]
mod tests;
mod torrent;

pub use dht::{
    DhtConfig, DhtEvent, LOOKUP_EVERY_MS, SEED_ANNOUNCE_EVERY_MS, STARVED_LOOKUP_EVERY_MS,
};
pub use status::{eta_secs, piece_map, FileStatus, State, Status, MAX_CELLS, NO_PEERS_AFTER_MS};

use crate::engine::{self, ConnId, PeerSource};
use crate::metainfo::Info;
use crate::storage::{Storage, StorageError};
use crate::tracker::{AnnounceRequest, AnnounceResponse};
use crate::{InfoHash, PeerId};
use contract::AnnounceError;
use dht::DhtState;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use torrent::Entry;

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The engine's settings for every torrent (its `listen_port` is set from `listen`).
    pub engine: engine::Config,
    /// Where we accept peers, if anywhere. Its port is announced; without it we announce port 0,
    /// so that nobody is sent to a port where nothing listens.
    pub listen: Option<SocketAddr>,
    /// The DHT as a peer source for public torrents, on the driver's UDP socket (see
    /// `Session::handle_datagram`); `None` keeps it off.
    pub dht: Option<DhtConfig>,
}

/// What the driver knows of a store it just opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefill {
    /// Created just now: it holds nothing, so nothing is hashed.
    Empty,
    /// The data the torrent was just built from: every piece is there.
    Complete,
    /// Left by an earlier run, or the user's: every piece is hashed before use.
    Unknown,
}

/// A torrent to add.
#[derive(Debug, Clone)]
pub struct AddTorrent {
    pub info_hash: InfoHash,
    /// `None` for a magnet: the metadata then comes from peers (BEP 9).
    pub info: Option<Info>,
    /// Tiers of tracker URLs (BEP 12).
    pub trackers: Vec<Vec<String>>,
    /// Addresses that came with the torrent (a magnet's `x.pe`) or from the user.
    pub peers: Vec<(SocketAddr, PeerSource)>,
    /// A display name until the metadata tells (a magnet's `dn`).
    pub name: Option<String>,
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    #[error("it is already in the list")]
    Duplicate,
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Action {
    /// Open a connection; answer with `handle_connected` or `handle_closed`.
    Connect {
        torrent: InfoHash,
        conn: ConnId,
        addr: SocketAddr,
    },
    /// Close a connection; the session has already forgotten it.
    Close {
        torrent: InfoHash,
        conn: ConnId,
        reason: String,
    },
    /// Open (or create) the torrent's data as laid out by `Session::info`; answer with
    /// `handle_storage`.
    OpenStorage { torrent: InfoHash },
    /// Announce to the tracker at `url`; answer with `handle_announce`. One is in flight per
    /// torrent at a time. A `stopped` announce of a removed torrent needs no answer.
    Announce {
        torrent: InfoHash,
        url: String,
        request: AnnounceRequest,
    },
    /// With `engine::Config::driver_hashes`: read the piece with `read_piece`, hash it, and
    /// answer with `handle_piece_hash`.
    HashPiece {
        torrent: InfoHash,
        piece: u32,
        job: u64,
    },
}

/// Something that happened, for logs and the interface; nothing needs doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A magnet's metadata arrived and matched its info-hash: `Session::info` has it (worth
    /// keeping, so a restart need not fetch it again).
    MetadataReceived {
        torrent: InfoHash,
    },
    /// The data was opened and checked: `have` of `total` pieces were already there.
    Checked {
        torrent: InfoHash,
        have: u32,
        total: u32,
    },
    /// Every piece is verified. `downloaded` is false when they all were there from the start.
    Complete {
        torrent: InfoHash,
        downloaded: bool,
    },
    Announced {
        torrent: InfoHash,
        url: String,
        peers: usize,
        warning: Option<String>,
    },
    AnnounceFailed {
        torrent: InfoHash,
        url: String,
        error: String,
    },
    PieceFailed {
        torrent: InfoHash,
        piece: u32,
    },
    PeerBanned {
        torrent: InfoHash,
        addr: SocketAddr,
    },
    /// The torrent stopped on an error (`Status::error` says the same).
    Failed {
        torrent: InfoHash,
        error: String,
    },
}

/// Queues shared by every torrent of a session.
#[derive(Default)]
pub(crate) struct Out {
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

pub struct Session {
    config: Config,
    peer_id: PeerId,
    rng: fastrand::Rng,
    /// Sent to trackers so they recognise us across address changes.
    key: u32,
    torrents: BTreeMap<InfoHash, Entry>,
    out: Out,
    /// Where the next `poll_transmit` starts, so torrents take turns.
    transmit_cursor: Option<InfoHash>,
    dht: Option<DhtState>,
}

impl Session {
    /// `seed` feeds every random choice (engines, tracker shuffles, the tracker key): the crate
    /// has no randomness of its own.
    pub fn new(config: Config, peer_id: PeerId, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dht = config.dht.clone().map(|c| DhtState::new(c, rng.u64(..)));
        Session {
            key: rng.u32(..),
            dht,
            config,
            peer_id,
            rng,
            torrents: BTreeMap::new(),
            out: Out::default(),
            transmit_cursor: None,
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn add(&mut self, now: u64, add: AddTorrent) -> Result<InfoHash, AddError> {
        let id = add.info_hash;
        if self.torrents.contains_key(&id) {
            return Err(AddError::Duplicate);
        }
        let seed = self.rng.u64(..);
        let entry = Entry::new(add, &self.config, self.peer_id, self.key, seed);
        self.torrents.insert(id, entry);
        self.with(now, id, |t, out| t.start(now, out));
        Ok(id)
    }

    /// Forgets a torrent: its connections close and its trackers hear `stopped`.
    pub fn remove(&mut self, now: u64, id: InfoHash) -> bool {
        let Some(mut t) = self.torrents.remove(&id) else {
            return false;
        };
        t.stop(now, &mut self.out);
        true
    }

    /// Removes every torrent (the driver is shutting down); then perform the `stopped`
    /// announces among the actions.
    pub fn shutdown(&mut self, now: u64) {
        let ids: Vec<InfoHash> = self.torrents.keys().copied().collect();
        for id in ids {
            self.remove(now, id);
        }
    }

    pub fn pause(&mut self, now: u64, id: InfoHash) {
        self.with(now, id, |t, out| t.pause(now, out));
    }

    pub fn resume(&mut self, now: u64, id: InfoHash) {
        self.with(now, id, |t, out| t.resume(now, out));
    }

    /// More peer addresses for a torrent (from the user, or a source the driver has).
    pub fn add_peers(&mut self, now: u64, id: InfoHash, addrs: &[SocketAddr], source: PeerSource) {
        self.with(now, id, |t, _| t.add_peers(now, addrs, source));
    }

    /// The answer to `Action::OpenStorage`.
    pub fn handle_storage(
        &mut self,
        now: u64,
        id: InfoHash,
        result: Result<(Box<dyn Storage>, Prefill), String>,
    ) {
        self.with(now, id, |t, out| t.storage_opened(now, result, out));
    }

    pub fn handle_connected(&mut self, now: u64, id: InfoHash, conn: ConnId) {
        self.with(now, id, |t, out| t.connected(now, conn, out));
    }

    /// A peer connected to us for torrent `id`; `None` refuses it (the driver closes it).
    pub fn handle_incoming(&mut self, now: u64, id: InfoHash, addr: SocketAddr) -> Option<ConnId> {
        let mut conn = None;
        self.with(now, id, |t, out| conn = t.incoming(now, addr, out));
        conn
    }

    pub fn handle_data(&mut self, now: u64, id: InfoHash, conn: ConnId, data: &[u8]) {
        self.with(now, id, |t, out| t.data(now, conn, data, out));
    }

    /// Bytes from `poll_transmit` that have left through the socket.
    pub fn handle_sent(&mut self, now: u64, id: InfoHash, conn: ConnId, bytes: usize) {
        self.with(now, id, |t, out| t.sent(now, conn, bytes, out));
    }

    /// A connection failed or the other side closed it; `why` is shown as the last attempt's
    /// fate when no peer is reachable.
    pub fn handle_closed(&mut self, now: u64, id: InfoHash, conn: ConnId, why: &str) {
        self.with(now, id, |t, out| t.closed(now, conn, why, out));
    }

    /// The driver itself cannot reach what it relays through (the tab's bridge), in words;
    /// cleared by the next tunnel that opens or announce that answers.
    pub fn handle_bridge_error(&mut self, now: u64, id: InfoHash, what: String) {
        self.with(now, id, |t, _| t.bridge_error = Some(what));
    }

    /// The driver met an error it cannot get past for this torrent (its store failed, hashing
    /// is impossible): the torrent stops, with these words.
    pub fn handle_failure(&mut self, now: u64, id: InfoHash, error: String) {
        self.with(now, id, |t, out| t.fail(now, error, out));
    }

    /// The answer to `Action::Announce`.
    pub fn handle_announce(
        &mut self,
        now: u64,
        id: InfoHash,
        url: &str,
        result: Result<AnnounceResponse, AnnounceError>,
    ) {
        self.with(now, id, |t, out| t.announced(now, url, result, out));
    }

    /// The SHA-1 of a piece asked for with `Action::HashPiece`.
    pub fn handle_piece_hash(
        &mut self,
        now: u64,
        id: InfoHash,
        piece: u32,
        job: u64,
        digest: [u8; 20],
    ) {
        self.with(now, id, |t, out| {
            t.piece_hashed(now, piece, job, digest, out)
        });
    }

    /// Reads a piece into `buf` (resized to the piece) for `Action::HashPiece`.
    pub fn read_piece(
        &mut self,
        id: InfoHash,
        piece: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        match self.torrents.get_mut(&id) {
            Some(t) => t.engine.read_piece(piece, buf),
            None => Err(StorageError("no such torrent".into())),
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        for t in self.torrents.values_mut() {
            t.timeout(now, &mut self.out);
            t.after_engine(now, &mut self.out);
        }
        if let Some(d) = self.dht.as_mut() {
            let wanted: Vec<_> = self
                .torrents
                .iter()
                .filter_map(|(id, t)| Some((*id, t.dht_want()?, t.engine.info().is_some())))
                .collect();
            d.tick(now, &wanted, self.config.listen.map(|a| a.port()));
            self.dht_events(now);
        }
    }

    /// When the session next wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<u64> {
        let torrents = self.torrents.values().filter_map(Entry::deadline).min();
        let dht = self.dht.as_ref().and_then(|d| {
            d.deadline(
                self.torrents
                    .iter()
                    .filter(|(_, t)| t.dht_allowed())
                    .map(|(id, _)| *id),
            )
        });
        [torrents, dht].into_iter().flatten().min()
    }

    /// A datagram for the DHT node, from `from` (ignored with the DHT off).
    pub fn handle_datagram(&mut self, now: u64, from: SocketAddr, data: &[u8]) {
        if let Some(d) = self.dht.as_mut() {
            d.start(now);
            d.node.handle_datagram(now, from, data);
            self.dht_events(now);
        }
    }

    /// The next datagram the DHT node sends, and where to.
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.dht.as_mut()?.node.poll_transmit()
    }

    /// What the DHT did, for logs; kept bounded when nobody asks.
    pub fn poll_dht_event(&mut self) -> Option<DhtEvent> {
        self.dht.as_mut()?.events.pop_front()
    }

    /// Nodes in the DHT routing table; `None` with the DHT off.
    pub fn dht_node_count(&self) -> Option<usize> {
        Some(self.dht.as_ref()?.node.node_count())
    }

    /// The DHT node's id and routing table, to save and give back as `DhtConfig` next time.
    pub fn dht_nodes(&self) -> Option<(crate::dht::NodeId, Vec<(crate::dht::NodeId, SocketAddr)>)> {
        let d = self.dht.as_ref()?;
        Some((d.node.id(), d.node.export_nodes()))
    }

    /// Hands the DHT's peers to their torrents.
    fn dht_events(&mut self, now: u64) {
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        let torrents = &self.torrents;
        let mut found = Vec::new();
        while let Some(ev) = d.next_event(now, |id| torrents.get(&id)?.dht_want()) {
            found.extend(ev);
        }
        for (id, peers) in found {
            self.add_peers(now, id, &peers, PeerSource::Dht);
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// Bytes to send on a connection, swapped into `buf` (see `engine::Torrent::poll_transmit`):
    /// hand the same buffers back and sending allocates nothing. Torrents take turns, as
    /// connections do within one.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut Vec<u8>) -> Option<(InfoHash, ConnId)> {
        let start = self.transmit_cursor.unwrap_or(InfoHash([0; 20]));
        let out = &mut self.out;
        let mut take = |id: &InfoHash, t: &mut Entry| {
            let found = t.engine.poll_transmit(now, buf).map(|conn| (*id, conn));
            // Producing uploads reads storage, which can fail: its events are due either way.
            t.after_engine(now, out);
            found
        };
        let found = match self
            .torrents
            .range_mut(start..)
            .find_map(|(id, t)| take(id, t))
        {
            Some(f) => Some(f),
            None => self
                .torrents
                .range_mut(..start)
                .find_map(|(id, t)| take(id, t)),
        };
        if let Some((id, _)) = &found {
            self.transmit_cursor = Some(*id);
        }
        found
    }

    pub fn torrents(&self) -> impl Iterator<Item = InfoHash> + '_ {
        self.torrents.keys().copied()
    }

    pub fn contains(&self, id: InfoHash) -> bool {
        self.torrents.contains_key(&id)
    }

    /// The torrent's metadata, once known.
    pub fn info(&self, id: InfoHash) -> Option<&Info> {
        self.torrents.get(&id)?.engine.info()
    }

    pub fn is_complete(&self, id: InfoHash) -> bool {
        self.torrents.get(&id).is_some_and(Entry::is_complete)
    }

    pub fn status(&self, now: u64, id: InfoHash) -> Option<Status> {
        Some(self.torrents.get(&id)?.status(now))
    }

    /// What was tried to find and reach peers, in words (for a driver that gives up).
    pub fn tried(&self, now: u64, id: InfoHash) -> Option<String> {
        Some(self.torrents.get(&id)?.tried(now))
    }

    /// The engine's counters, cheaper than a whole `status`.
    pub fn stats(&self, id: InfoHash) -> Option<engine::Stats> {
        Some(self.torrents.get(&id)?.stats())
    }

    fn with(&mut self, now: u64, id: InfoHash, f: impl FnOnce(&mut Entry, &mut Out)) {
        if let Some(t) = self.torrents.get_mut(&id) {
            f(t, &mut self.out);
            t.after_engine(now, &mut self.out);
        }
    }
}
