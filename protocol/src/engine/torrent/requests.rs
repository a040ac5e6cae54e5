//! Requests both ways: our block requests and what arrives for them, piece verification and completion, and serving the peers' requests.

use super::Torrent;
use crate::engine::peer::{Peer, Stage};
use crate::engine::picker::{BlockOutcome, Picker, PieceOutcome};
use crate::engine::rate::RateMeter;
use crate::engine::{CloseReason, ConnId, Event};
use crate::storage::{Storage, StorageError};
use crate::wire::{BlockRequest, Message};
use bytes::Bytes;

/// Upload data is produced while fewer than this many bytes wait in a peer's socket.
const UPLOAD_WINDOW: usize = 1 << 20;
/// Requests longer than this are refused (clients send 16 KiB; some up to 128 KiB).
const MAX_REQUEST_LEN: u32 = 128 * 1024;
/// The largest send buffer a peer keeps for its next messages: send buffers pass from the driver
/// to any peer, and one grown by an upload would otherwise end up held by every peer in turn.
const KEPT_CAPACITY: usize = 64 * 1024;

impl Torrent {
    pub(super) fn on_request(
        &mut self,
        conn: ConnId,
        req: BlockRequest,
    ) -> Result<(), CloseReason> {
        let max_queue = self.config.max_incoming_requests as usize;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        let Some(picker) = self.picker.as_ref() else {
            return Err(CloseReason::protocol("request before we have metadata"));
        };
        if req.index >= picker.num_pieces()
            || req.length == 0
            || req.length > MAX_REQUEST_LEN
            || req.begin as u64 + req.length as u64 > picker.piece_size(req.index) as u64
        {
            return Err(CloseReason::protocol(format_args!(
                "invalid request {req:?}"
            )));
        }
        let servable = picker.has(req.index) && !peer.am_choking && peer.incoming.len() < max_queue;
        if servable && self.storage.is_some() {
            peer.incoming.push_back(req);
        } else if peer.fast {
            Message::RejectRequest(req).encode(&mut peer.out);
        }
        Ok(())
    }

    pub(super) fn on_block(
        &mut self,
        conn: ConnId,
        index: u32,
        begin: u32,
        data: Bytes,
    ) -> Result<(), CloseReason> {
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        // Data we did not ask for (or cancelled in endgame) is dropped, not stored.
        if !peer.take_request(index, begin, data.len() as u32) {
            return Ok(());
        }
        peer.down.add(data.len() as u64, now);
        peer.snubbed = false;
        self.down.add(data.len() as u64, now);
        let addr = peer.addr;
        let (Some(picker), Some(storage)) = (self.picker.as_mut(), self.storage.as_mut()) else {
            return Ok(());
        };
        let outcome = match picker.block_received(index, begin, &data, addr, storage.as_mut()) {
            Ok(o) => o,
            Err(e) => {
                self.storage_failed(e);
                return Ok(());
            }
        };
        let BlockOutcome::Stored { duplicates, piece } = outcome else {
            return Ok(());
        };
        if duplicates {
            let req = BlockRequest {
                index,
                begin,
                length: data.len() as u32,
            };
            for other in self.peers.values_mut() {
                if other.conn != conn && other.take_request(index, begin, req.length) {
                    Message::Cancel(req).encode(&mut other.out);
                }
            }
        }
        if let Some(outcome) = piece {
            self.on_piece_outcome(index, outcome);
        }
        Ok(())
    }

    pub(super) fn on_piece_outcome(&mut self, index: u32, outcome: PieceOutcome) {
        match outcome {
            PieceOutcome::Verified => self.on_piece_verified(index),
            PieceOutcome::Failed { contributors } => {
                self.events.push_back(Event::PieceFailed(index));
                // Its blocks are to be had again, by any peer.
                self.work_freed();
                // Only a piece with one source proves who sent bad data.
                if let [culprit] = contributors[..] {
                    self.strike(culprit);
                }
            }
            PieceOutcome::NeedsHash { job } => self
                .events
                .push_back(Event::HashPiece { piece: index, job }),
        }
    }

    pub(super) fn on_piece_verified(&mut self, index: u32) {
        self.events.push_back(Event::PieceVerified(index));
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            let Some(peer) = self.peers.get_mut(&conn) else {
                continue;
            };
            if peer.stage != Stage::Active {
                continue;
            }
            // A seed wants nothing from us: a `have` to it would be one more send per piece.
            if !peer.is_seed() {
                Message::Have(index).encode(&mut peer.out);
            }
            if peer.bits.get(index) {
                peer.useful = peer.useful.saturating_sub(1);
                self.update_interest(conn);
            }
        }
        self.maybe_complete();
    }

    pub(super) fn maybe_complete(&mut self) {
        if self.complete_reported || !self.is_complete() {
            return;
        }
        self.complete_reported = true;
        if let Some(storage) = self.storage.as_mut() {
            if let Err(e) = storage.flush() {
                return self.storage_failed(e);
            }
        }
        self.events.push_back(Event::Complete);
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.close_if_both_seeds(conn);
        }
    }

    pub(super) fn refill_all(&mut self) {
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            self.fill_requests(conn);
        }
    }

    pub(super) fn fill_requests(&mut self, conn: ConnId) {
        if self.paused || self.storage.is_none() || !self.checked {
            return;
        }
        let now = self.now;
        let cap = self.config.max_requests_per_peer;
        let (Some(peer), Some(picker)) = (self.peers.get_mut(&conn), self.picker.as_mut()) else {
            return;
        };
        if peer.stage != Stage::Active || peer.peer_choking || !peer.am_interested {
            return;
        }
        let target = peer.queue_target(now, cap);
        if peer.requests.len() >= target {
            return;
        }
        // Top up in batches of an eighth of the queue (at least 4): one request at a time would
        // make a pick and a send per block; at speed every send costs the driver (a browser
        // WebSocket send is ~100 us) while the queue still holds seconds of data.
        let batch = (target / 8).max(4);
        if peer.requests.len() > target / 2 && peer.requests.len() + batch > target {
            return;
        }
        self.scratch.clear();
        let requests = &peer.requests;
        let mine = |r: &BlockRequest| requests.iter().any(|(x, _)| x == r);
        picker.pick(
            conn,
            &peer.bits,
            target - peer.requests.len(),
            &mine,
            &mut self.scratch,
        );
        for &req in &self.scratch {
            peer.requests.push_back((req, now));
            Message::Request(req).encode(&mut peer.out);
        }
    }
}

/// The first connection in `peers` with bytes to send, after topping up its uploads. Its bytes
/// are swapped into `buf`, whose old contents are dropped and whose allocation the peer keeps
/// for its next messages.
pub(super) fn take_output<'a>(
    peers: impl Iterator<Item = (&'a ConnId, &'a mut Peer)>,
    picker: Option<&Picker>,
    storage: &mut Option<Box<dyn Storage>>,
    up: &mut RateMeter,
    now: u64,
    buf: &mut Vec<u8>,
) -> Result<Option<ConnId>, StorageError> {
    for (&conn, peer) in peers {
        if peer.stage == Stage::Connecting {
            continue;
        }
        if let (Some(picker), Some(storage)) = (picker, storage.as_mut()) {
            fill_uploads(peer, picker, storage.as_mut(), up, now)?;
        }
        if !peer.out.is_empty() {
            peer.unsent += peer.out.len();
            peer.last_send = now;
            buf.clear();
            if buf.capacity() > KEPT_CAPACITY {
                *buf = Vec::new();
            }
            std::mem::swap(buf, &mut peer.out);
            crate::engine::crypto::send(&mut peer.crypto, buf, peer.raw_out);
            peer.raw_out = 0;
            return Ok(Some(conn));
        }
    }
    Ok(None)
}

/// Serves queued requests while the socket keeps up.
fn fill_uploads(
    peer: &mut Peer,
    picker: &Picker,
    storage: &mut dyn Storage,
    up: &mut RateMeter,
    now: u64,
) -> Result<(), StorageError> {
    while peer.unsent + peer.out.len() < UPLOAD_WINDOW {
        let Some(req) = peer.incoming.pop_front() else {
            break;
        };
        // Header of a `piece` message, then the block read straight into the send buffer.
        let len = req.length as usize;
        peer.out.reserve(13 + len);
        peer.out.extend_from_slice(&(9 + req.length).to_be_bytes());
        peer.out.push(7);
        peer.out.extend_from_slice(&req.index.to_be_bytes());
        peer.out.extend_from_slice(&req.begin.to_be_bytes());
        let start = peer.out.len();
        peer.out.resize(start + len, 0);
        storage.read(
            picker.piece_offset(req.index) + req.begin as u64,
            &mut peer.out[start..],
        )?;
        peer.up.add(len as u64, now);
        up.add(len as u64, now);
    }
    Ok(())
}
