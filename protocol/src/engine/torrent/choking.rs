//! The choker: which interested peers we upload to.

use super::Torrent;
use crate::engine::choker;
use crate::engine::peer::Stage;
use crate::engine::ConnId;
use crate::wire::{BlockRequest, Message};

impl Torrent {
    pub(super) fn unchoked_count(&self) -> usize {
        self.peers.values().filter(|p| !p.am_choking).count()
    }

    /// A newly interested peer gets a free slot at once instead of waiting for the next round.
    pub(super) fn quick_unchoke(&mut self, conn: ConnId) {
        if self.unchoked_count() < self.config.unchoke_slots + 1 {
            self.set_choke(conn, false);
        }
    }

    pub(super) fn run_choker(&mut self, rotate_optimistic: bool) {
        let now = self.now;
        let seeding = self.is_complete();
        let candidates: Vec<choker::Candidate> = self
            .peers
            .values()
            .filter(|p| p.stage == Stage::Active && p.peer_interested)
            .map(|p| choker::Candidate {
                conn: p.conn,
                rate: if seeding {
                    p.up.rate(now)
                } else {
                    p.down.rate(now)
                },
            })
            .collect();
        if rotate_optimistic
            || self
                .optimistic
                .is_none_or(|c| !candidates.iter().any(|x| x.conn == c))
        {
            self.optimistic = None;
        }
        let decision = choker::choose(
            candidates,
            self.config.unchoke_slots,
            self.optimistic,
            &mut self.rng,
        );
        self.optimistic = decision.optimistic;
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            let unchoke = decision.unchoked.contains(&conn);
            self.set_choke(conn, !unchoke);
        }
    }

    pub(super) fn set_choke(&mut self, conn: ConnId, choke: bool) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.am_choking == choke || peer.stage != Stage::Active {
            return;
        }
        peer.am_choking = choke;
        if choke {
            Message::Choke.encode(&mut peer.out);
            // With the fast extension every dropped request is rejected explicitly.
            let queued: Vec<BlockRequest> = peer.incoming.drain(..).collect();
            if peer.fast {
                for req in queued {
                    Message::RejectRequest(req).encode(&mut peer.out);
                }
            }
        } else {
            Message::Unchoke.encode(&mut peer.out);
        }
    }
}
