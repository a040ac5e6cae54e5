//! Handshakes and the peer wire messages: what a peer has and whether we want it.

use super::Torrent;
use crate::engine::bitfield::Bitfield;
use crate::engine::peer::Stage;
use crate::engine::picker::Picker;
use crate::engine::{CloseReason, ConnId};
use crate::extension::{ExtHandshake, UT_METADATA_ID, UT_PEX_ID};
use crate::wire::{BlockRequest, Handshake, Message};
use bytes::Bytes;

/// `have` messages kept for a peer before the piece count is known.
const MAX_EARLY_HAVES: usize = 100_000;

impl Torrent {
    pub(super) fn on_handshake(&mut self, conn: ConnId, hs: Handshake) -> Result<(), CloseReason> {
        if hs.info_hash != self.info_hash {
            return Err(CloseReason::OtherTorrent);
        }
        if hs.peer_id == self.peer_id {
            let addr = self.peers.get(&conn).map(|p| p.addr);
            if let Some(addr) = addr {
                self.self_addrs.insert(addr);
                self.candidates.remove(&addr);
            }
            return Err(CloseReason::Ourselves);
        }
        if self.banned_ids.contains(&hs.peer_id.0) {
            return Err(CloseReason::BannedPeerId);
        }
        if self
            .peers
            .values()
            .any(|p| p.conn != conn && p.peer_id == Some(hs.peer_id))
        {
            return Err(CloseReason::AlreadyConnected);
        }
        let our_handshake = Handshake::new(self.info_hash, self.peer_id).encode();
        let ext = hs.supports_extensions().then(|| self.ext_handshake(conn));
        let opening = self.opening_bitfield(hs.supports_fast());
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        if !peer.outgoing {
            peer.out.extend_from_slice(&our_handshake);
        }
        peer.peer_id = Some(hs.peer_id);
        peer.fast = hs.supports_fast();
        peer.extended = hs.supports_extensions();
        peer.stage = Stage::Active;
        if let Some(picker) = &self.picker {
            peer.bits = Bitfield::new(picker.num_pieces());
        }
        // BEP 3 wants the bitfield first; the extension handshake follows at once.
        if let Some(msg) = opening {
            msg.encode(&mut peer.out);
        }
        if let Some(ext) = ext {
            Message::Extended {
                id: 0,
                payload: Bytes::from(ext),
            }
            .encode(&mut peer.out);
        }
        Ok(())
    }

    pub(super) fn opening_bitfield(&self, fast: bool) -> Option<Message> {
        let Some(picker) = self.picker.as_ref().filter(|_| self.checked) else {
            return fast.then_some(Message::HaveNone);
        };
        let n = picker.num_pieces();
        match picker.have_count() {
            0 if fast => Some(Message::HaveNone),
            0 => None,
            c if c == n && fast => Some(Message::HaveAll),
            _ => {
                let mut bits = Bitfield::new(n);
                for (i, &h) in picker.have().iter().enumerate() {
                    if h {
                        bits.set(i as u32);
                    }
                }
                Some(Message::Bitfield(Bytes::copy_from_slice(bits.as_bytes())))
            }
        }
    }

    pub(super) fn ext_handshake(&self, conn: ConnId) -> Vec<u8> {
        let mut hs = ExtHandshake::default();
        hs.m.insert("ut_metadata".into(), UT_METADATA_ID);
        if !self.is_private() {
            hs.m.insert("ut_pex".into(), UT_PEX_ID);
        }
        hs.v = Some(self.config.client_name.clone());
        hs.reqq = Some(self.config.max_incoming_requests);
        hs.p = self.config.listen_port;
        hs.metadata_size = self.info.as_ref().map(|i| i.raw.len() as u64);
        if let Some(peer) = self.peers.get(&conn) {
            hs.yourip = Some(match peer.addr.ip() {
                std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
                std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
            });
        }
        hs.encode()
    }

    pub(super) fn is_private(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.private)
    }

    pub(super) fn on_message(&mut self, conn: ConnId, msg: Message) -> Result<(), CloseReason> {
        let n = self.picker.as_ref().map(Picker::num_pieces);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        match msg {
            Message::KeepAlive
            | Message::Port(_)
            | Message::SuggestPiece(_)
            | Message::AllowedFast(_) => {}
            Message::Choke => {
                peer.peer_choking = true;
                // Without the fast extension a choke silently cancels our requests; with it the
                // peer rejects each one explicitly.
                if !peer.fast {
                    let dropped: Vec<BlockRequest> =
                        peer.requests.drain(..).map(|(r, _)| r).collect();
                    if let Some(picker) = self.picker.as_mut() {
                        for r in dropped {
                            picker.request_dropped(r);
                        }
                    }
                    self.work_freed();
                }
            }
            Message::Unchoke => peer.peer_choking = false,
            Message::Interested => {
                peer.peer_interested = true;
                self.quick_unchoke(conn);
            }
            Message::NotInterested => peer.peer_interested = false,
            Message::Have(i) => match n {
                Some(n) if i >= n => {
                    return Err(CloseReason::protocol(format_args!(
                        "have for piece {i} of {n}"
                    )))
                }
                Some(_) => {
                    if peer.bits.set(i) {
                        let picker = self.picker.as_mut().expect("piece count known");
                        picker.peer_has(i);
                        if !picker.has(i) {
                            peer.useful += 1;
                        }
                        self.update_interest(conn);
                        self.close_if_both_seeds(conn);
                    }
                }
                None => {
                    if peer.early_haves.len() >= MAX_EARLY_HAVES {
                        return Err(CloseReason::protocol("too many have messages"));
                    }
                    peer.early_haves.push(i);
                }
            },
            Message::Bitfield(bits) => match n {
                Some(n) => {
                    let bits = Bitfield::from_wire(&bits, n)
                        .ok_or_else(|| CloseReason::protocol("malformed bitfield"))?;
                    self.set_peer_bits(conn, bits);
                }
                None => peer.early_bitfield = Some(bits),
            },
            Message::HaveAll => match n {
                Some(n) => self.set_peer_bits(conn, Bitfield::full(n)),
                None => peer.early_have_all = true,
            },
            Message::HaveNone => {}
            Message::Request(req) => self.on_request(conn, req)?,
            Message::Piece { index, begin, data } => self.on_block(conn, index, begin, data)?,
            Message::Cancel(req) => {
                if let Some(pos) = peer.incoming.iter().position(|r| *r == req) {
                    peer.incoming.remove(pos);
                }
            }
            Message::RejectRequest(req) => {
                if peer.take_request(req.index, req.begin, req.length) {
                    if let Some(picker) = self.picker.as_mut() {
                        picker.request_dropped(req);
                    }
                    self.work_freed();
                }
            }
            Message::Extended { id, payload } => self.on_extended(conn, id, payload)?,
        }
        Ok(())
    }

    pub(super) fn set_peer_bits(&mut self, conn: ConnId, bits: Bitfield) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let Some(picker) = self.picker.as_mut() else {
            return;
        };
        picker.peer_gone(&peer.bits);
        picker.peer_has_all(&bits);
        peer.bits = bits;
        self.recount_useful(conn);
        self.update_interest(conn);
        self.close_if_both_seeds(conn);
    }

    pub(super) fn recount_useful(&mut self, conn: ConnId) {
        let (Some(peer), Some(picker)) = (self.peers.get_mut(&conn), self.picker.as_ref()) else {
            return;
        };
        peer.useful = peer.bits.iter_set().filter(|&i| !picker.has(i)).count() as u32;
    }

    pub(super) fn update_interest(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.stage != Stage::Active {
            return;
        }
        let want = peer.useful > 0 && !self.paused;
        if want != peer.am_interested {
            peer.am_interested = want;
            let msg = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            msg.encode(&mut peer.out);
        }
    }
}
