//! Deadlines: what the engine waits for, when each falls due, and what `handle_timeout` does
//! then. `poll_timeout` is the earliest of them, so that a driver sleeps until something is due
//! instead of waking on a fixed tick.

use super::Torrent;
use crate::engine::peer::{Peer, Stage};
use crate::engine::{CloseReason, Config};
use crate::wire::Message;

const HANDSHAKE_TIMEOUT_MS: u64 = 20_000;
const CONNECT_TIMEOUT_MS: u64 = 30_000;
const METADATA_TIMEOUT_MS: u64 = 20_000;
const CHOKE_INTERVAL_MS: u64 = 10_000;
const OPTIMISTIC_INTERVAL_MS: u64 = 30_000;
const PEX_INTERVAL_MS: u64 = 60_000;

/// The torrent-wide rounds, each the time it is next due. They only matter to connected peers,
/// so they wake the engine only while it has some.
pub(super) struct Rounds {
    choke: u64,
    /// The optimistic slot rotates at the first choke round from this time on, so it needs no
    /// wake-up of its own.
    optimistic: u64,
    pex: u64,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds {
            choke: CHOKE_INTERVAL_MS,
            optimistic: OPTIMISTIC_INTERVAL_MS,
            pex: PEX_INTERVAL_MS,
        }
    }
}

/// A peer's deadlines, each the first time at which it is due. `expire_peers` acts on exactly
/// these, so that `poll_timeout` can never name a time at which nothing happens.
struct PeerDeadlines {
    /// Dropped for silence: the connect, handshake or idle timeout of its stage.
    silence: u64,
    keepalive: Option<u64>,
    /// Its oldest request still unanswered: the peer is snubbed.
    request: Option<u64>,
    metadata: Option<u64>,
}

/// The timeouts are exceeded only once more than `limit` has passed.
fn past(since: u64, limit: u64) -> u64 {
    since.saturating_add(limit).saturating_add(1)
}

impl PeerDeadlines {
    fn of(peer: &Peer, config: &Config) -> Self {
        let active = peer.stage == Stage::Active;
        PeerDeadlines {
            silence: match peer.stage {
                Stage::Connecting => past(peer.connected_at, CONNECT_TIMEOUT_MS),
                Stage::Handshake => past(peer.last_recv, HANDSHAKE_TIMEOUT_MS),
                Stage::Active => past(peer.last_recv, config.peer_timeout_ms),
            },
            // Bytes waiting to go out will do instead; their send restarts the wait.
            keepalive: (active && peer.out.is_empty())
                .then(|| peer.last_send.saturating_add(config.keepalive_ms)),
            request: (peer.requests.front())
                .filter(|_| active)
                .map(|&(_, sent)| past(sent, config.request_timeout_ms)),
            metadata: (peer.metadata_request)
                .filter(|_| active)
                .map(|(_, sent)| past(sent, METADATA_TIMEOUT_MS)),
        }
    }

    fn earliest(&self) -> u64 {
        [self.keepalive, self.request, self.metadata]
            .into_iter()
            .flatten()
            .fold(self.silence, u64::min)
    }
}

impl Torrent {
    pub(super) fn next_deadline(&self) -> Option<u64> {
        // A catch-up with nobody to hand anything to would be a wake-up for nothing.
        let takers = !self.peers.is_empty() || !self.candidates.is_empty();
        let mut due = (self.catch_up_due && takers && !self.paused).then_some(self.now);
        let mut earliest = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
        let mut connected = false;
        for peer in self.peers.values() {
            connected |= peer.stage == Stage::Active;
            earliest(PeerDeadlines::of(peer, &self.config).earliest());
        }
        if connected {
            earliest(self.rounds.choke.min(self.rounds.pex));
        }
        if let Some(t) = self.next_dial() {
            earliest(t);
        }
        due
    }

    pub(super) fn run_timers(&mut self) {
        let now = self.now;
        self.expire_peers();
        if now >= self.rounds.choke {
            self.rounds.choke = now + CHOKE_INTERVAL_MS;
            let rotate = now >= self.rounds.optimistic;
            if rotate {
                self.rounds.optimistic = now + OPTIMISTIC_INTERVAL_MS;
            }
            self.run_choker(rotate);
        }
        if now >= self.rounds.pex {
            self.rounds.pex = now + PEX_INTERVAL_MS;
            self.send_pex();
        }
        self.catch_up();
    }

    /// Something others may take was freed (a connection slot, blocks, metadata pieces): the
    /// next `handle_timeout` is due at once to hand it out, rather than at the next round.
    pub(super) fn work_freed(&mut self) {
        self.catch_up_due = true;
    }

    /// Hands out whatever is free: slots to candidates, metadata pieces, blocks.
    pub(super) fn catch_up(&mut self) {
        self.maybe_connect();
        self.request_metadata();
        self.refill_all();
        self.catch_up_due = false;
    }

    fn expire_peers(&mut self) {
        let now = self.now;
        let mut to_close = Vec::new();
        let mut dropped = Vec::new();
        for peer in self.peers.values_mut() {
            let due = PeerDeadlines::of(peer, &self.config);
            if now >= due.silence {
                let reason = match peer.stage {
                    Stage::Connecting => CloseReason::ConnectTimedOut,
                    Stage::Handshake => CloseReason::HandshakeTimedOut,
                    Stage::Active => CloseReason::TimedOut,
                };
                to_close.push((peer.conn, reason));
                continue;
            }
            if due.keepalive.is_some_and(|t| now >= t) {
                Message::KeepAlive.encode(&mut peer.out);
                peer.last_send = now;
            }
            // A peer that sits on our requests is snubbed: its requests go to others.
            if due.request.is_some_and(|t| now >= t) {
                peer.snubbed = true;
                dropped.extend(peer.requests.drain(..).map(|(r, _)| r));
            }
            if due.metadata.is_some_and(|t| now >= t) {
                // A request left unanswered (a reject is marked when it arrives).
                if peer
                    .metadata_request
                    .take()
                    .is_some_and(|(p, _)| p != u32::MAX)
                {
                    peer.metadata_refused = true;
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
}
