//! Connections: dialling candidates, dropping peers, strikes and bans.

use super::{Candidate, Torrent};
use crate::engine::peer::{Peer, Stage};
use crate::engine::{CloseReason, ConnId, Encryption, Event};
use crate::storage::StorageError;
use std::net::SocketAddr;

/// Bad pieces a peer may send alone before it is banned.
const STRIKES_TO_BAN: u32 = 2;

impl Candidate {
    /// Whether it may be dialled once its `next_try` comes. A complete torrent dials too (a
    /// leecher may not be reachable for incoming connections), but not the seeds it has met.
    fn dialable(&self, complete: bool) -> bool {
        let seed_to_a_seed = complete && self.seed;
        !self.in_use && !seed_to_a_seed
    }
}

impl Torrent {
    pub(super) fn alloc_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        conn
    }

    /// Room for one more outgoing attempt: peers and attempts in flight under their limits.
    fn dial_slot_free(&self) -> bool {
        let connecting = self
            .peers
            .values()
            .filter(|p| p.stage == Stage::Connecting)
            .count();
        !self.paused
            && self.peers.len() < self.config.max_peers
            && connecting < self.config.max_connecting
    }

    /// When `maybe_connect` next has someone to dial: never while no slot is free, as a slot
    /// freed later calls for a catch-up of its own.
    pub(super) fn next_dial(&self) -> Option<u64> {
        if !self.dial_slot_free() {
            return None;
        }
        let complete = self.is_complete();
        self.candidates
            .values()
            .filter(|c| c.dialable(complete))
            .map(|c| c.next_try)
            .min()
    }

    /// Dials candidates while slots are free.
    pub(super) fn maybe_connect(&mut self) {
        let complete = self.is_complete();
        while self.dial_slot_free() {
            let now = self.now;
            let Some((&addr, cand)) = self
                .candidates
                .iter_mut()
                .filter(|(_, c)| c.dialable(complete) && c.next_try <= now)
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
        }
    }

    /// Drops a peer: its requests go back to the picker and its address may be retried.
    pub(super) fn remove_peer(&mut self, conn: ConnId) -> Option<Peer> {
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
            let encryption = self.config.encryption;
            if let Some(c) = self.candidates.get_mut(&peer.addr) {
                c.in_use = false;
                if peer.crypto.initiating() && encryption == Encryption::Prefer && !c.plain {
                    // It may not speak MSE (many hang up on it): try it plain at once.
                    c.plain = true;
                    c.next_try = now;
                } else if peer.stage == Stage::Active {
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
        self.work_freed();
        Some(peer)
    }

    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.remove_peer(conn).is_some() {
            self.events.push_back(Event::Close { conn, reason });
        }
    }

    /// Seeds have nothing to gain from other seeds: while we are complete, a peer that has
    /// every piece is closed and its address is not dialled again.
    pub(super) fn close_if_both_seeds(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        if !peer.is_seed() || !self.is_complete() {
            return;
        }
        if let Some(c) = self.candidates.get_mut(&peer.addr) {
            c.seed = true;
        }
        self.close(conn, CloseReason::BothSeeds);
    }

    pub(super) fn strike(&mut self, addr: SocketAddr) {
        let strikes = self.strikes.entry(addr).or_insert(0);
        *strikes += 1;
        if *strikes < STRIKES_TO_BAN {
            return;
        }
        self.ban(addr);
    }

    /// Bans `addr` for sending bad data: its connections close and it is never dialled again.
    pub(super) fn ban(&mut self, addr: SocketAddr) {
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
            self.close(conn, CloseReason::Banned);
        }
    }

    pub(super) fn storage_failed(&mut self, e: StorageError) {
        self.events.push_back(Event::StorageFailed(e.0));
        self.pause(self.now);
    }
}
