//! Whole DHTs in memory: many nodes on one virtual clock, datagrams carried with a random
//! delay, faster than real time and the same on every run.

mod hostile;
mod server;
mod swarm;

use super::{Config, Dht, Event};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

const BASE_PORT: u16 = 20_000;

pub(super) fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], BASE_PORT + i as u16))
}

fn index_of(addr: SocketAddr) -> Option<usize> {
    if addr.ip() != std::net::Ipv4Addr::LOCALHOST {
        return None;
    }
    addr.port().checked_sub(BASE_PORT).map(usize::from)
}

/// A datagram on the wire: when it arrives, in what order it was sent, where it goes.
type Flight = Reverse<(u64, u64, SocketAddr, SocketAddr, Vec<u8>)>;

pub(super) struct Net {
    pub now: u64,
    /// `None`: a node that was stopped; what is sent to it is lost.
    pub nodes: Vec<Option<Dht>>,
    /// What each node reported, in order.
    pub events: Vec<Vec<Event>>,
    wire: BinaryHeap<Flight>,
    seq: u64,
    rng: fastrand::Rng,
    pub delivered: u64,
}

impl Net {
    pub fn new(n: usize, seed: u64) -> Net {
        Net::with_config(n, seed, Config::default())
    }

    pub fn with_config(n: usize, seed: u64, config: Config) -> Net {
        let mut net = Net {
            now: 0,
            nodes: Vec::new(),
            events: Vec::new(),
            wire: BinaryHeap::new(),
            seq: 0,
            rng: fastrand::Rng::with_seed(seed),
            delivered: 0,
        };
        for _ in 0..n {
            let seed = net.rng.u64(..);
            net.nodes.push(Some(Dht::new(config.clone(), seed)));
            net.events.push(Vec::new());
        }
        net
    }

    pub fn node(&mut self, i: usize) -> &mut Dht {
        self.nodes[i].as_mut().expect("a running node")
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    /// Every node but the first bootstraps from the first, one every 50 ms, and the network
    /// runs until they all reported `Bootstrapped` (or `limit_ms` passes).
    pub fn bootstrap_all(&mut self, limit_ms: u64) {
        for i in 1..self.nodes.len() {
            let now = self.now;
            self.node(i).bootstrap(now, &[addr_of(0)]);
            let until = self.now + 50;
            self.run_until(until, |_| false);
        }
        let limit = self.now + limit_ms;
        let done = self.run_until(limit, |net| {
            (1..net.nodes.len()).all(|i| {
                net.events[i]
                    .iter()
                    .any(|e| matches!(e, Event::Bootstrapped { .. }))
            })
        });
        assert!(done, "every node bootstrapped within {limit_ms} ms");
    }

    /// Moves datagrams and events out of every node.
    fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            while let Some((to, bytes)) = node.poll_transmit() {
                let at = self.now + self.rng.u64(5..40);
                self.seq += 1;
                self.wire
                    .push(Reverse((at, self.seq, addr_of(i), to, bytes)));
            }
            while let Some(e) = node.poll_event() {
                self.events[i].push(e);
            }
        }
    }

    fn next_time(&self) -> Option<u64> {
        let wire = self.wire.peek().map(|Reverse(f)| f.0);
        let timers = self
            .nodes
            .iter()
            .flatten()
            .filter_map(Dht::poll_timeout)
            .min();
        [wire, timers].into_iter().flatten().min()
    }

    /// Runs until `done` holds (true) or the clock would pass `limit` (false).
    pub fn run_until(&mut self, limit: u64, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        loop {
            self.flush();
            if done(self) {
                return true;
            }
            let Some(next) = self.next_time().filter(|&t| t <= limit) else {
                self.now = self.now.max(limit);
                return false;
            };
            // A timer in the past (set before the clock moved) fires now.
            self.now = self.now.max(next);
            let now = self.now;
            while self.wire.peek().is_some_and(|Reverse(f)| f.0 <= now) {
                let Some(Reverse((_, _, from, to, bytes))) = self.wire.pop() else {
                    break;
                };
                if let Some(node) = index_of(to).and_then(|i| self.nodes.get_mut(i)?.as_mut()) {
                    self.delivered += 1;
                    node.handle_datagram(now, from, &bytes);
                }
            }
            for node in self.nodes.iter_mut().flatten() {
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let limit = self.now + ms;
        self.run_until(limit, |_| false);
    }

    /// The peers node `i` was told about for `info_hash`, in order.
    pub fn peers_found(&self, i: usize, info_hash: crate::InfoHash) -> Vec<SocketAddr> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                Event::Peers {
                    info_hash: h,
                    peers,
                } if *h == info_hash => Some(peers.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Whether node `i` finished a lookup of `info_hash`, and how many nodes it announced to.
    pub fn lookup_done(&self, i: usize, info_hash: crate::InfoHash) -> Option<usize> {
        self.events[i].iter().rev().find_map(|e| match e {
            Event::LookupDone {
                info_hash: h,
                announced,
            } if *h == info_hash => Some(*announced),
            _ => None,
        })
    }
}
