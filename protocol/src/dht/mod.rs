//! The mainline DHT (BEP 5) as a sans-IO state machine: one node that answers other nodes'
//! queries and looks up peers for us.
//!
//! Like the rest of the crate it has no socket and no clock. The driver owns one UDP socket and
//! feeds [`Dht::handle_datagram`] with what arrives and the time, sends what
//! [`Dht::poll_transmit`] gives, calls [`Dht::handle_timeout`] at [`Dht::poll_timeout`], and
//! reads [`Event`]s. Our side: [`Dht::bootstrap`] and [`Dht::add_node`] to meet the network,
//! [`Dht::get_peers`] and [`Dht::announce`] for torrents. The other side (answering ping,
//! find_node, get_peers and announce_peer, and keeping announced peers) needs nothing from the
//! driver.
//!
//! Every datagram comes from a stranger: decoding is bounded ([`krpc`]), the routing table only
//! takes nodes that answered us, our queries in flight, lookups, stored peers, and queued
//! datagrams and events all have fixed bounds, and nothing a datagram says makes us send more
//! than a few datagrams back.

mod client;
mod compact;
mod id;
pub mod krpc;
mod lookup;
mod routing;
mod rpc;
mod server;
mod store;
#[cfg(test)]
mod tests;
mod tokens;

pub use compact::NodeInfo;
pub use id::NodeId;
pub use routing::K;

use crate::InfoHash;
use krpc::{Body, Message};
use lookup::Lookup;
use routing::RoutingTable;
use rpc::Transactions;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use store::PeerStore;
use tokens::Tokens;

/// Our client in the `v` key of every message: "BW" and version 0.1.
const VERSION: &[u8; 4] = b"BW\x00\x01";

#[derive(Debug, Clone)]
pub struct Config {
    /// Our node id; `None` draws one from the seed. A driver that saves its routing table
    /// should save the id with it (see [`Dht::id`]).
    pub id: Option<NodeId>,
    /// Queries in flight per lookup.
    pub alpha: usize,
    /// A query unanswered this long has failed.
    pub query_timeout_ms: u64,
    /// Our queries in flight at most, all lookups and pings together (announces may go a
    /// little past it: they are a few per finished lookup).
    pub max_pending: usize,
    /// Lookups running at once at most; a get_peers past it ends at once.
    pub max_lookups: usize,
    /// Info-hashes we keep announced peers for, and peers per info-hash.
    pub max_torrents: usize,
    pub max_peers_per_torrent: usize,
    /// How long an announced peer is kept.
    pub peer_ttl_ms: u64,
    /// Peers in one get_peers answer at most.
    pub max_values_reply: usize,
    /// Datagrams waiting for `poll_transmit` at most; answers past it are dropped.
    pub max_queued: usize,
    /// Events waiting for `poll_event` at most; peers past it are dropped (never LookupDone).
    pub max_events: usize,
    /// With an empty table, bootstrap again this often.
    pub bootstrap_retry_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: None,
            alpha: 3,
            query_timeout_ms: 3_000,
            max_pending: 128,
            max_lookups: 32,
            max_torrents: 1_000,
            max_peers_per_torrent: 100,
            peer_ttl_ms: 30 * 60_000,
            max_values_reply: 50,
            max_queued: 256,
            max_events: 1_024,
            bootstrap_retry_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Peers for `info_hash` found by a lookup, as they arrive; each once per lookup.
    Peers {
        info_hash: InfoHash,
        peers: Vec<SocketAddr>,
    },
    /// A get_peers lookup (and, for an announce, its announce_peer queries) is over.
    /// `announced` counts the nodes the announce went to.
    LookupDone {
        info_hash: InfoHash,
        announced: usize,
    },
    /// A bootstrap lookup is over, with this many nodes in the table.
    Bootstrapped { nodes: usize },
}

pub struct Dht {
    config: Config,
    id: NodeId,
    rng: fastrand::Rng,
    table: RoutingTable,
    tokens: Tokens,
    store: PeerStore,
    rpc: Transactions,
    lookups: BTreeMap<u64, Lookup>,
    next_lookup: u64,
    /// Addresses given to bootstrap from; used while the table has fewer than K nodes.
    routers: Vec<SocketAddr>,
    last_bootstrap: u64,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
}

/// Bootstrap addresses kept at most.
const MAX_ROUTERS: usize = 32;

impl Dht {
    /// A node with no contacts yet. `seed` feeds every random choice (the id when the config
    /// has none, transaction ids, token secrets, bucket refresh targets).
    pub fn new(config: Config, seed: u64) -> Dht {
        let mut rng = fastrand::Rng::with_seed(seed);
        let id = config.id.unwrap_or_else(|| NodeId::random(&mut rng));
        let tokens = Tokens::new(rng.u64(..));
        let store = PeerStore::new(
            config.max_torrents,
            config.max_peers_per_torrent,
            config.peer_ttl_ms,
            rng.u64(..),
        );
        Dht {
            id,
            table: RoutingTable::new(id, 0),
            tokens,
            store,
            rng,
            rpc: Transactions::default(),
            lookups: BTreeMap::new(),
            next_lookup: 0,
            routers: Vec::new(),
            last_bootstrap: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            config,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Nodes in the routing table that are not bad.
    pub fn node_count(&self) -> usize {
        self.table.len()
    }

    /// The routing table's nodes that are not bad, for the driver to save.
    pub fn export_nodes(&self) -> Vec<(NodeId, SocketAddr)> {
        self.table
            .entries()
            .filter(|e| !e.is_bad())
            .map(|e| (e.id, e.addr))
            .collect()
    }

    /// Nodes saved by an earlier run. They take free places in the table unverified, and a
    /// lookup of our own id checks them and finds their neighbours.
    pub fn import_nodes(&mut self, now: u64, nodes: &[(NodeId, SocketAddr)]) {
        let mut any = false;
        for (id, addr) in nodes {
            any |= self.table.import(*id, *addr, now);
        }
        if any {
            self.start_bootstrap(now);
        }
    }

    /// Pings `addr`: if it answers, it goes in the routing table.
    pub fn add_node(&mut self, now: u64, addr: SocketAddr) {
        if !self.rpc.to(addr) && self.rpc.len() < self.config.max_pending {
            self.ping(now, addr);
        }
    }

    /// Joins the network through `addrs` (well-known routers, or any nodes): they are kept for
    /// as long as the table is short of nodes, and a lookup of our own id starts now.
    pub fn bootstrap(&mut self, now: u64, addrs: &[SocketAddr]) {
        for a in addrs {
            if !self.routers.contains(a) && self.routers.len() < MAX_ROUTERS {
                self.routers.push(*a);
            }
        }
        self.start_bootstrap(now);
    }

    /// Looks up peers for `info_hash`: [`Event::Peers`] as they come, then
    /// [`Event::LookupDone`]. A lookup already running for it goes on instead.
    pub fn get_peers(&mut self, now: u64, info_hash: InfoHash) {
        self.start_get_peers(now, info_hash, None);
    }

    /// Like [`Dht::get_peers`], and at the end announces to the closest nodes that we take
    /// peers at `port` (`None`: at the port our DHT datagrams come from, BEP 5 `implied_port`).
    pub fn announce(&mut self, now: u64, info_hash: InfoHash, port: Option<u16>) {
        self.start_get_peers(now, info_hash, Some(lookup::Announce { port }));
    }

    /// A datagram that arrived from `from`.
    pub fn handle_datagram(&mut self, now: u64, from: SocketAddr, data: &[u8]) {
        if from.port() == 0 {
            return;
        }
        match krpc::decode(data) {
            Err(e) => {
                if let Some(reply) = e.reply() {
                    self.send(from, reply);
                }
            }
            Ok(msg) => match msg.body {
                Body::Query(q) => self.serve(now, from, msg.transaction, q, msg.read_only),
                Body::Response(r) => {
                    self.on_response(now, from, &msg.transaction, r, msg.read_only)
                }
                Body::Error(_) => self.on_error(from, &msg.transaction),
            },
        }
        self.drive(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Dht::handle_timeout`] has something to do: a query's deadline, a node to check,
    /// a bucket's refresh, or another bootstrap when the table is empty.
    pub fn poll_timeout(&self) -> Option<u64> {
        let refresh = (self.table.len() > 0).then(|| self.table.next_refresh());
        [
            self.rpc.next_deadline(),
            self.table.next_ping(self.ping_retry_ms()),
            refresh,
            self.bootstrap_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: u64) {
        for p in self.rpc.expired(now) {
            self.on_timeout(now, p);
        }
        self.ping_questionable(now);
        if self.table.len() > 0 && self.table.next_refresh() <= now {
            for target in self.table.take_refreshes(now, &mut self.rng) {
                self.start_lookup(now, target, lookup::Kind::FindNode { bootstrap: false });
            }
        }
        if self.bootstrap_due().is_some_and(|t| t <= now) {
            self.start_bootstrap(now);
        }
        self.drive(now);
    }

    fn send(&mut self, to: SocketAddr, mut msg: Message) {
        if self.transmits.len() >= self.config.max_queued {
            return;
        }
        msg.version = Some(VERSION.to_vec());
        self.transmits.push_back((to, msg.encode()));
    }

    fn emit(&mut self, event: Event) {
        let droppable = matches!(event, Event::Peers { .. });
        if droppable && self.events.len() >= self.config.max_events {
            return;
        }
        self.events.push_back(event);
    }
}
