//! Our side of the DHT: meeting nodes, lookups, announces, and what their answers and silences
//! do to the routing table.

use super::krpc::{Message, Query, Response};
use super::lookup::{self, Kind, Lookup};
use super::routing::{Insert, K};
use super::rpc::{Pending, Purpose};
use super::{Dht, Event, NodeId};
use crate::InfoHash;
use std::net::SocketAddr;

impl Dht {
    pub(super) fn ping(&mut self, now: u64, addr: SocketAddr) {
        self.query(now, addr, Query::Ping { id: self.id }, Purpose::Ping);
    }

    /// Sends a query and remembers it; false when the send queue is full.
    fn query(&mut self, now: u64, addr: SocketAddr, query: Query, purpose: Purpose) -> bool {
        if self.transmits.len() >= self.config.max_queued {
            return false;
        }
        let pending = Pending {
            addr,
            deadline: now.saturating_add(self.config.query_timeout_ms),
            purpose,
        };
        let transaction = self.rpc.insert(pending, &mut self.rng);
        self.send(addr, Message::query(transaction, query));
        true
    }

    pub(super) fn on_response(
        &mut self,
        now: u64,
        from: SocketAddr,
        transaction: &[u8],
        r: Response,
        read_only: bool,
    ) {
        let Some(p) = self.rpc.take(transaction, from) else {
            return;
        };
        let lookup = match p.purpose {
            Purpose::Lookup(n) => Some(n),
            _ => None,
        };
        if r.id == self.id {
            // Our own id: our query came back to us, or someone lies.
            self.table.failed(from, now);
            if let Some(l) = lookup.and_then(|n| self.lookups.get_mut(&n)) {
                l.failed(from);
            }
            return;
        }
        if !read_only {
            if let Insert::Waiting(questionable) = self.table.heard_from(r.id, from, now) {
                for n in questionable {
                    if !self.rpc.to(n.addr) && self.rpc.len() < self.config.max_pending {
                        self.ping(now, n.addr);
                    }
                }
            }
        }
        let Some(l) = lookup.and_then(|n| self.lookups.get_mut(&n)) else {
            return;
        };
        l.responded(from, r.id, r.token);
        // Nodes of the family we reached this one over: those we can reach too.
        let nodes = if from.is_ipv4() { &r.nodes } else { &r.nodes6 };
        for node in nodes.iter().filter(|n| reachable(n.addr)) {
            l.add(Some(node.id), node.addr, &self.id);
        }
        if let Some(info_hash) = l.info_hash() {
            let peers = l.new_peers(&r.values);
            if !peers.is_empty() {
                self.emit(Event::Peers { info_hash, peers });
            }
        }
    }

    /// An error answer: the node is there, but had nothing for us.
    pub(super) fn on_error(&mut self, from: SocketAddr, transaction: &[u8]) {
        let Some(p) = self.rpc.take(transaction, from) else {
            return;
        };
        if let Purpose::Lookup(n) = p.purpose {
            if let Some(l) = self.lookups.get_mut(&n) {
                l.failed(from);
            }
        }
    }

    /// A query to `addr` went unanswered.
    pub(super) fn on_timeout(&mut self, now: u64, p: Pending) {
        self.table.failed(p.addr, now);
        if let Purpose::Lookup(n) = p.purpose {
            if let Some(l) = self.lookups.get_mut(&n) {
                l.failed(p.addr);
            }
        }
    }

    /// Pings the nodes that turned questionable, so that the dead ones turn bad and make room.
    pub(super) fn ping_questionable(&mut self, now: u64) {
        for n in self.table.take_pings(now, self.ping_retry_ms()) {
            if self.rpc.len() >= self.config.max_pending {
                break;
            }
            if !self.rpc.to(n.addr) {
                self.ping(now, n.addr);
            }
        }
    }

    /// A node that did not answer a ping is pinged again this much later: after the ping's own
    /// timeout, so that two are never in flight.
    pub(super) fn ping_retry_ms(&self) -> u64 {
        self.config.query_timeout_ms.saturating_mul(2).max(1)
    }

    pub(super) fn start_get_peers(
        &mut self,
        now: u64,
        info_hash: InfoHash,
        announce: Option<lookup::Announce>,
    ) {
        let running = self
            .lookups
            .values_mut()
            .find(|l| l.info_hash() == Some(info_hash));
        if let Some(l) = running {
            if let (Some(a), Kind::GetPeers { announce: slot, .. }) = (announce, &mut l.kind) {
                *slot = Some(a);
            }
            return;
        }
        let kind = Kind::GetPeers {
            info_hash,
            announce,
        };
        let Some(n) = self.start_lookup(now, info_hash.into(), kind) else {
            self.emit(Event::LookupDone {
                info_hash,
                announced: 0,
            });
            return;
        };
        // Peers announced to us count too: in a small network we may be one of the closest.
        let max = self.config.max_values_reply;
        let mut local = self.store.peers(&info_hash, now, max, false);
        local.extend(self.store.peers(&info_hash, now, max, true));
        if let Some(l) = self.lookups.get_mut(&n) {
            let peers = l.new_peers(&local);
            if !peers.is_empty() {
                self.emit(Event::Peers { info_hash, peers });
            }
        }
        self.drive(now);
    }

    pub(super) fn start_bootstrap(&mut self, now: u64) {
        self.last_bootstrap = now;
        let running = self
            .lookups
            .values()
            .any(|l| l.kind == Kind::FindNode { bootstrap: true });
        if !running {
            self.start_lookup(now, self.id, Kind::FindNode { bootstrap: true });
            self.drive(now);
        }
    }

    /// When to bootstrap again: only with an empty table, something to bootstrap from, and no
    /// bootstrap running.
    pub(super) fn bootstrap_due(&self) -> Option<u64> {
        let running = self
            .lookups
            .values()
            .any(|l| l.kind == Kind::FindNode { bootstrap: true });
        if self.routers.is_empty() || self.table.len() > 0 || running {
            return None;
        }
        Some(
            self.last_bootstrap
                .saturating_add(self.config.bootstrap_retry_ms),
        )
    }

    /// Starts a lookup from the closest nodes we know (and the bootstrap addresses while the
    /// table is short). `None` when too many run already.
    pub(super) fn start_lookup(&mut self, now: u64, target: NodeId, kind: Kind) -> Option<u64> {
        if self.lookups.len() >= self.config.max_lookups {
            return None;
        }
        let mut l = Lookup::new(target, kind);
        for n in self
            .table
            .closest(&target, lookup::MAX_CANDIDATES / 2, now, false)
        {
            l.add(Some(n.id), n.addr, &self.id);
        }
        if self.table.len() < K {
            for r in &self.routers {
                l.add(None, *r, &self.id);
            }
        }
        let n = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(n, l);
        Some(n)
    }

    /// Sends what the lookups may send now, and ends those that are done.
    pub(super) fn drive(&mut self, now: u64) {
        let numbers: Vec<u64> = self.lookups.keys().copied().collect();
        for n in numbers {
            while self.rpc.len() < self.config.max_pending {
                let Some(l) = self.lookups.get_mut(&n) else {
                    break;
                };
                let Some((_, addr)) = l.next_query(self.config.alpha) else {
                    break;
                };
                let query = l.query(self.id);
                if !self.query(now, addr, query, Purpose::Lookup(n)) {
                    if let Some(l) = self.lookups.get_mut(&n) {
                        l.failed(addr);
                    }
                    break;
                }
            }
            if self.lookups.get(&n).is_some_and(Lookup::is_done) {
                self.finish(now, n);
            }
        }
    }

    fn finish(&mut self, now: u64, n: u64) {
        let Some(l) = self.lookups.remove(&n) else {
            return;
        };
        match l.kind {
            Kind::FindNode { bootstrap: true } => self.emit(Event::Bootstrapped {
                nodes: self.table.len(),
            }),
            Kind::FindNode { bootstrap: false } => {}
            Kind::GetPeers {
                info_hash,
                announce,
            } => {
                let mut announced = 0;
                if let Some(a) = announce {
                    for (_, addr, token) in l.announce_targets() {
                        let query = Query::AnnouncePeer {
                            id: self.id,
                            info_hash,
                            port: a.port.unwrap_or(0),
                            implied_port: a.port.is_none(),
                            token,
                        };
                        if self.query(now, addr, query, Purpose::Announce(info_hash)) {
                            announced += 1;
                        }
                    }
                }
                self.emit(Event::LookupDone {
                    info_hash,
                    announced,
                });
            }
        }
    }
}

/// Whether an address from a `nodes` list is worth a query: loopback and private addresses are
/// (whole DHTs run on them in tests and LANs), unspecified, multicast and broadcast ones not.
fn reachable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}
