//! Peers announced to us with announce_peer, per info-hash, for about thirty minutes (BEP 5
//! leaves the time to us; a peer re-announces well within it).
//!
//! Anyone can announce anything, so the store is bounded twice: peers per info-hash (a full list
//! has a random entry replaced, so a flood cannot pin it to the flooder's addresses) and
//! info-hashes (a full store first sweeps what expired, then drops the info-hash with the fewest
//! peers, which costs honest swarms least).

use crate::InfoHash;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A full store sweeps expired peers at most this often, so a flood of new info-hashes does not
/// walk every stored peer each time.
const SWEEP_MS: u64 = 60_000;

pub struct PeerStore {
    torrents: BTreeMap<InfoHash, Vec<Stored>>,
    max_torrents: usize,
    max_peers: usize,
    ttl_ms: u64,
    next_sweep: u64,
    rng: fastrand::Rng,
}

struct Stored {
    addr: SocketAddr,
    expires: u64,
}

impl PeerStore {
    pub fn new(max_torrents: usize, max_peers: usize, ttl_ms: u64, seed: u64) -> PeerStore {
        PeerStore {
            torrents: BTreeMap::new(),
            max_torrents,
            max_peers,
            ttl_ms,
            next_sweep: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn insert(&mut self, info_hash: InfoHash, addr: SocketAddr, now: u64) {
        if self.max_torrents == 0 || self.max_peers == 0 {
            return;
        }
        let fresh = Stored {
            addr,
            expires: now.saturating_add(self.ttl_ms),
        };
        if let Some(list) = self.torrents.get_mut(&info_hash) {
            list.retain(|s| s.expires > now);
            if let Some(s) = list.iter_mut().find(|s| s.addr == addr) {
                s.expires = fresh.expires;
            } else if list.len() >= self.max_peers {
                let i = self.rng.usize(..list.len());
                list[i] = fresh;
            } else {
                list.push(fresh);
            }
            return;
        }
        if self.torrents.len() >= self.max_torrents && now >= self.next_sweep {
            self.expire(now);
            self.next_sweep = now.saturating_add(SWEEP_MS);
        }
        if self.torrents.len() >= self.max_torrents {
            let smallest = self
                .torrents
                .iter()
                .min_by_key(|(_, list)| list.len())
                .map(|(h, _)| *h);
            if let Some(h) = smallest {
                self.torrents.remove(&h);
            }
        }
        self.torrents.insert(info_hash, vec![fresh]);
    }

    /// Up to `max` live peers of the family asked for (a random choice when there are more).
    pub fn peers(
        &mut self,
        info_hash: &InfoHash,
        now: u64,
        max: usize,
        v6: bool,
    ) -> Vec<SocketAddr> {
        let Some(list) = self.torrents.get_mut(info_hash) else {
            return Vec::new();
        };
        list.retain(|s| s.expires > now);
        if list.is_empty() {
            self.torrents.remove(info_hash);
            return Vec::new();
        }
        let mut out: Vec<SocketAddr> = list
            .iter()
            .map(|s| s.addr)
            .filter(|a| a.is_ipv6() == v6)
            .collect();
        if out.len() > max {
            self.rng.shuffle(&mut out);
            out.truncate(max);
        }
        out
    }

    pub fn expire(&mut self, now: u64) {
        self.torrents.retain(|_, list| {
            list.retain(|s| s.expires > now);
            !list.is_empty()
        });
    }

    #[cfg(test)]
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }

    #[cfg(test)]
    pub fn peer_count(&self) -> usize {
        self.torrents.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((i.to_be_bytes(), 6881))
    }

    #[test]
    fn peers_expire_and_refresh() {
        let mut s = PeerStore::new(10, 10, 1_000, 1);
        let h = InfoHash([1; 20]);
        s.insert(h, addr(1), 0);
        s.insert(h, addr(2), 500);
        s.insert(h, addr(1), 900);
        let mut got = s.peers(&h, 1_200, 10, false);
        got.sort();
        assert_eq!(got, vec![addr(1), addr(2)]);
        assert_eq!(s.peers(&h, 1_600, 10, false), vec![addr(1)]);
        assert!(s.peers(&h, 1_900, 10, false).is_empty());
        assert_eq!(s.torrent_count(), 0, "an empty list goes");
    }

    #[test]
    fn families_are_kept_apart() {
        let mut s = PeerStore::new(10, 10, 1_000, 1);
        let h = InfoHash([1; 20]);
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        s.insert(h, addr(1), 0);
        s.insert(h, v6, 0);
        assert_eq!(s.peers(&h, 0, 10, false), vec![addr(1)]);
        assert_eq!(s.peers(&h, 0, 10, true), vec![v6]);
    }

    #[test]
    fn bounds_hold_under_a_flood() {
        let mut s = PeerStore::new(50, 20, 1_000_000, 2);
        let honest = InfoHash([0xee; 20]);
        for i in 0..30 {
            s.insert(honest, addr(i), 0);
        }
        for i in 0..100_000u32 {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            s.insert(InfoHash(h), addr(i), 1);
            s.insert(honest, addr(1_000_000 + i), 1);
        }
        assert!(s.torrent_count() <= 50);
        assert!(s.peer_count() <= 50 * 20);
        assert_eq!(
            s.peers(&honest, 2, 100, false).len(),
            20,
            "the big swarm stays"
        );
        assert_eq!(s.peers(&honest, 2, 5, false).len(), 5, "replies are cut");
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut s = PeerStore::new(0, 10, 1_000, 1);
        s.insert(InfoHash([1; 20]), addr(1), 0);
        assert_eq!(s.torrent_count(), 0);
    }
}
