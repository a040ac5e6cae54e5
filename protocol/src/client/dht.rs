//! The session's DHT node (BEP 5) as a peer source: when each public torrent looks its peers up
//! and announces our port, and where the peers found go.
//!
//! The driver owns one UDP socket and moves datagrams through `Session::handle_datagram` and
//! `Session::poll_datagram`; the session's `poll_timeout` includes the node's.

use crate::dht::{self, Dht, NodeId};
use crate::InfoHash;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// A torrent with enough peers looks up again this often.
pub const LOOKUP_EVERY_MS: u64 = 5 * 60_000;
/// A torrent starved of peers looks up again this often (its lookups cost a few dozen
/// datagrams, so this is the bound).
pub const STARVED_LOOKUP_EVERY_MS: u64 = 60_000;
/// A complete torrent announces again this often: stored peers live about 30 minutes.
pub const SEED_ANNOUNCE_EVERY_MS: u64 = 10 * 60_000;
/// A lookup that has not ended this long after it began is taken as over.
const LOOKUP_GIVE_UP_MS: u64 = 2 * 60_000;
/// DHT events kept for `Session::poll_dht_event` at most; older ones are dropped.
const MAX_EVENTS: usize = 256;

/// The session's DHT: off unless `client::Config::dht` is set.
#[derive(Debug, Clone, Default)]
pub struct DhtConfig {
    /// Nodes to join the network through (well-known routers, or any node).
    pub bootstrap: Vec<SocketAddr>,
    /// The routing table saved by an earlier run (`Session::dht_nodes`).
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// The node's settings; keep the `id` of the run whose `nodes` these are.
    pub node: dht::Config,
}

/// What the DHT did, for logs; nothing needs doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// A bootstrap lookup is over with this many nodes in the routing table.
    Bootstrapped { nodes: usize },
    /// A lookup for `torrent` found these many peers (handed to its engine).
    Peers { torrent: InfoHash, peers: usize },
    /// A lookup for `torrent` is over; `announced` counts the nodes told our port.
    LookupDone { torrent: InfoHash, announced: usize },
}

/// How much a torrent wants peers, as its lookup interval goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Starved,
    Enough,
    Complete,
}

impl Want {
    fn every(self) -> u64 {
        match self {
            Want::Starved => STARVED_LOOKUP_EVERY_MS,
            Want::Enough => LOOKUP_EVERY_MS,
            Want::Complete => SEED_ANNOUNCE_EVERY_MS,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lookup {
    next_at: u64,
    /// When the running lookup began.
    running: Option<u64>,
    /// Peers found by every lookup so far.
    found: usize,
    /// An announce has been started (only once the metadata says the torrent is public).
    announced: bool,
}

pub(super) struct DhtState {
    pub(super) node: Dht,
    config: DhtConfig,
    started: bool,
    lookups: BTreeMap<InfoHash, Lookup>,
    pub(super) events: VecDeque<DhtEvent>,
}

impl DhtState {
    pub(super) fn new(config: DhtConfig, seed: u64) -> Self {
        DhtState {
            node: Dht::new(config.node.clone(), seed),
            config,
            started: false,
            lookups: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    fn push(&mut self, ev: DhtEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// Meets the network: the saved table, then the bootstrap nodes.
    pub(super) fn start(&mut self, now: u64) {
        if self.started {
            return;
        }
        self.started = true;
        let nodes = std::mem::take(&mut self.config.nodes);
        self.node.import_nodes(now, &nodes);
        let routers = std::mem::take(&mut self.config.bootstrap);
        if !routers.is_empty() {
            self.node.bootstrap(now, &routers);
        }
    }

    /// When `tick` has something to do, given which torrents want the DHT.
    pub(super) fn deadline(&self, wanted: impl Iterator<Item = InfoHash>) -> Option<u64> {
        if !self.started {
            return Some(0);
        }
        let mut due = self.node.poll_timeout();
        let mut at = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
        for id in wanted {
            match self.lookups.get(&id) {
                None => at(0),
                Some(l) => match l.running {
                    Some(began) => at(began + LOOKUP_GIVE_UP_MS),
                    None => at(l.next_at),
                },
            }
        }
        due
    }

    /// Starts the lookups that are due. `wanted` holds every torrent that may use the DHT now;
    /// the others are forgotten.
    /// A torrent is announced only once its metadata is known to be public (`.1` of
    /// `wanted`'s want): a magnet only looks up until then, as a lookup cannot be called back.
    pub(super) fn tick(&mut self, now: u64, wanted: &[(InfoHash, Want, bool)], port: Option<u16>) {
        self.start(now);
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        self.lookups
            .retain(|id, _| wanted.iter().any(|(w, ..)| w == id));
        for &(id, want, known) in wanted {
            let l = self.lookups.entry(id).or_insert(Lookup {
                next_at: now,
                running: None,
                found: 0,
                announced: false,
            });
            let announce = known && port.is_some();
            // The metadata just came: announce now rather than at the next lookup.
            if announce && !l.announced {
                l.next_at = l.next_at.min(now);
            }
            if l.running
                .is_some_and(|began| now >= began + LOOKUP_GIVE_UP_MS)
            {
                l.running = None;
                l.next_at = now.min(l.next_at);
            }
            if l.running.is_some() || now < l.next_at {
                continue;
            }
            l.running = Some(now);
            l.next_at = now + want.every();
            match port.filter(|_| announce) {
                Some(p) => {
                    l.announced = true;
                    self.node.announce(now, id, Some(p));
                }
                None => self.node.get_peers(now, id),
            }
        }
    }

    /// The node's next event, turned into what the session acts on: peers for a torrent.
    pub(super) fn next_event(
        &mut self,
        now: u64,
        want: impl Fn(InfoHash) -> Option<Want>,
    ) -> Option<Option<(InfoHash, Vec<SocketAddr>)>> {
        let ev = self.node.poll_event()?;
        Some(match ev {
            dht::Event::Peers { info_hash, peers } => {
                let Some(l) = self.lookups.get_mut(&info_hash) else {
                    return Some(None);
                };
                if want(info_hash).is_none() {
                    return Some(None);
                }
                l.found += peers.len();
                self.push(DhtEvent::Peers {
                    torrent: info_hash,
                    peers: peers.len(),
                });
                Some((info_hash, peers))
            }
            dht::Event::LookupDone {
                info_hash,
                announced,
            } => {
                if let Some(l) = self.lookups.get_mut(&info_hash) {
                    l.running = None;
                    if let Some(w) = want(info_hash) {
                        l.next_at = now + w.every();
                    }
                    self.push(DhtEvent::LookupDone {
                        torrent: info_hash,
                        announced,
                    });
                }
                None
            }
            dht::Event::Bootstrapped { nodes } => {
                self.push(DhtEvent::Bootstrapped { nodes });
                // Lookups that ran before we knew anyone found nobody: again, now.
                if nodes > 0 {
                    for l in self.lookups.values_mut() {
                        if l.found == 0 && l.running.is_none() {
                            l.next_at = now;
                        }
                    }
                }
                None
            }
        })
    }
}
