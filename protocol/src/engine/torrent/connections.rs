//! Connections: dialling candidates, dropping peers, timers, strikes and bans.

use super::Torrent;
use crate::engine::peer::{Peer, Stage};
use crate::engine::{CloseReason, ConnId, Event};
use crate::storage::StorageError;
use crate::wire::Message;
use std::net::SocketAddr;

const HANDSHAKE_TIMEOUT_MS: u64 = 20_000;
const CONNECT_TIMEOUT_MS: u64 = 30_000;
const METADATA_TIMEOUT_MS: u64 = 20_000;
/// Bad pieces a peer may send alone before it is banned.
const STRIKES_TO_BAN: u32 = 2;

impl Torrent {
    pub(super) fn alloc_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        conn
    }

    /// Dials candidates while slots are free. A complete torrent dials too (a leecher may not
    /// be reachable for incoming connections), but not the seeds it has met.
    pub(super) fn maybe_connect(&mut self) {
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

    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.remove_peer(conn).is_some() {
            self.events.push_back(Event::Close { conn, reason });
        }
    }

    pub(super) fn expire_peers(&mut self) {
        let now = self.now;
        let mut to_close = Vec::new();
        let mut dropped = Vec::new();
        for peer in self.peers.values_mut() {
            let idle = now.saturating_sub(peer.last_recv);
            match peer.stage {
                Stage::Connecting if now.saturating_sub(peer.connected_at) > CONNECT_TIMEOUT_MS => {
                    to_close.push((peer.conn, CloseReason::ConnectTimedOut));
                    continue;
                }
                Stage::Handshake if idle > HANDSHAKE_TIMEOUT_MS => {
                    to_close.push((peer.conn, CloseReason::HandshakeTimedOut));
                    continue;
                }
                Stage::Active if idle > self.config.peer_timeout_ms => {
                    to_close.push((peer.conn, CloseReason::TimedOut));
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
