//! Extension messages: ut_metadata for magnets (both ways) and ut_pex.

use super::Torrent;
use crate::engine::bitfield::Bitfield;
use crate::engine::peer::{Peer, Stage};
use crate::engine::picker::Picker;
use crate::engine::{CloseReason, ConnId, Event, PeerSource};
use crate::extension::{
    ExtHandshake, MetadataAssembler, MetadataMsg, PexMsg, MAX_METADATA, METADATA_PIECE,
    UT_METADATA_ID, UT_PEX_ID,
};
use crate::metainfo::Info;
use crate::wire::Message;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

impl Torrent {
    pub(super) fn on_extended(
        &mut self,
        conn: ConnId,
        id: u8,
        payload: Bytes,
    ) -> Result<(), CloseReason> {
        match id {
            0 => {
                let hs = ExtHandshake::decode(&payload).map_err(CloseReason::protocol)?;
                let Some(peer) = self.peers.get_mut(&conn) else {
                    return Ok(());
                };
                peer.ext.update(&hs);
                if let Some(v) = &hs.v {
                    peer.client = Some(v.chars().take(64).collect());
                }
                if let Some(reqq) = hs.reqq {
                    peer.reqq = reqq.clamp(1, 2000);
                }
                // A later handshake without a size leaves the one reported before.
                if let Some(size) = hs.metadata_size.filter(|&s| peer.metadata_size != Some(s)) {
                    peer.metadata_size = Some(size);
                    peer.metadata_size_seq = self.metadata_seq;
                    peer.metadata_refused = false;
                    self.metadata_seq += 1;
                }
                if let (Some(port), false) = (hs.p, peer.outgoing) {
                    let listen = SocketAddr::new(peer.addr.ip(), port);
                    self.add_peers(&[listen], PeerSource::Incoming, self.now);
                }
                self.request_metadata();
            }
            UT_METADATA_ID => {
                let msg = MetadataMsg::decode(&payload).map_err(CloseReason::protocol)?;
                self.on_metadata_msg(conn, msg)?;
            }
            // Private torrents (BEP 27) take peers from their trackers only.
            UT_PEX_ID if !self.is_private() => {
                let pex = PexMsg::decode(&payload).map_err(CloseReason::protocol)?;
                self.add_peers(&pex.added, PeerSource::Pex, self.now);
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn on_metadata_msg(
        &mut self,
        conn: ConnId,
        msg: MetadataMsg,
    ) -> Result<(), CloseReason> {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        let reply_id = peer.ext.id("ut_metadata");
        match msg {
            MetadataMsg::Request { piece } => {
                let Some(id) = reply_id else { return Ok(()) };
                let reply = match &self.info {
                    Some(info) if (piece as usize) * METADATA_PIECE < info.raw.len() => {
                        let start = piece as usize * METADATA_PIECE;
                        let end = (start + METADATA_PIECE).min(info.raw.len());
                        MetadataMsg::Data {
                            piece,
                            total_size: info.raw.len() as u64,
                            data: Bytes::copy_from_slice(&info.raw[start..end]),
                        }
                    }
                    _ => MetadataMsg::Reject { piece },
                };
                Message::Extended {
                    id,
                    payload: Bytes::from(reply.encode()),
                }
                .encode(&mut peer.out);
            }
            MetadataMsg::Reject { piece } => {
                if peer.metadata_request.is_some_and(|(p, _)| p == piece) {
                    // Leave the stamp in place so this peer is not asked again until it expires.
                    peer.metadata_request = Some((u32::MAX, self.now));
                    peer.metadata_refused = true;
                    // The piece may be asked of another peer.
                    self.work_freed();
                }
            }
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => {
                // Only what we asked for counts, so every piece has a known supplier. Data for
                // another size than the one being assembled is ignored: the peer may be honest
                // and the size we follow the lie.
                let asked = peer.metadata_request.is_some_and(|(p, _)| p == piece);
                if asked {
                    peer.metadata_request = None;
                }
                let addr = peer.addr;
                let from_source = !self.metadata_single || self.metadata_source == Some(conn);
                // A piece of the wrong length for its index is ignored too.
                let stored = match self.metadata.as_mut() {
                    Some(a) if asked && from_source && a.size() == total_size => {
                        a.add(piece, &data).is_ok()
                    }
                    _ => false,
                };
                if stored {
                    peer.metadata_refused = false;
                    self.metadata_from[piece as usize] = Some(addr);
                    match self.metadata.as_mut().and_then(MetadataAssembler::finish) {
                        Some(Ok(raw)) => match Info::from_metadata(&raw, self.info_hash) {
                            Ok(info) => {
                                self.on_metadata(info);
                                return Ok(());
                            }
                            Err(e) => {
                                self.metadata = None;
                                return Err(CloseReason::protocol(format_args!(
                                    "metadata rejected: {e}"
                                )));
                            }
                        },
                        Some(Err(_)) => self.metadata_failed(),
                        None => {}
                    }
                }
                self.request_metadata();
            }
        }
        Ok(())
    }

    /// The metadata pieces did not hash to the info-hash. A single supplier lied and is banned;
    /// otherwise every piece is fetched again from one peer, so that the next failure names the
    /// culprit. The size is chosen again from the peers still connected.
    pub(super) fn metadata_failed(&mut self) {
        let mut suppliers: Vec<SocketAddr> = self.metadata_from.iter().flatten().copied().collect();
        suppliers.sort();
        suppliers.dedup();
        self.metadata = None;
        self.metadata_from = Vec::new();
        self.metadata_source = None;
        match suppliers[..] {
            [liar] => self.ban(liar),
            _ => {
                self.metadata_single = true;
                self.metadata_suspects = suppliers;
            }
        }
    }

    /// Whether `peer` may be asked for metadata of `size`.
    pub(super) fn metadata_eligible(peer: &Peer, size: u64, lenient: bool) -> bool {
        peer.stage == Stage::Active
            && peer.ext.id("ut_metadata").is_some()
            && peer.metadata_size == Some(size)
            && (lenient || !peer.metadata_refused)
    }

    /// The metadata size to assemble: the one most peers report, first come on ties. Peers that
    /// refused our requests count only if no other peer reports a size (then `true`).
    pub(super) fn metadata_vote(&self) -> Option<(u64, bool)> {
        for lenient in [false, true] {
            // size -> (peers, first report)
            let mut tally: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
            for peer in self.peers.values() {
                let Some(size) = peer.metadata_size.filter(|&s| s > 0 && s <= MAX_METADATA) else {
                    continue;
                };
                if !Self::metadata_eligible(peer, size, lenient) {
                    continue;
                }
                let entry = tally.entry(size).or_insert((0, u64::MAX));
                entry.0 += 1;
                entry.1 = entry.1.min(peer.metadata_size_seq);
            }
            let best = tally
                .into_iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)));
            if let Some((size, _)) = best {
                return Some((size, lenient));
            }
        }
        None
    }

    /// Sizes the assembler by what peers report and asks the peers that reported that size for
    /// the pieces nobody is fetching yet (all of them from one peer after a mixed failure).
    pub(super) fn request_metadata(&mut self) {
        if self.info.is_some() {
            return;
        }
        let Some((size, lenient)) = self.metadata_vote() else {
            return;
        };
        if self.metadata.as_ref().is_none_or(|a| a.size() != size) {
            self.metadata = MetadataAssembler::new(self.info_hash, size);
            let count = self.metadata.as_ref().map_or(0, |a| a.num_pieces());
            self.metadata_from = vec![None; count as usize];
        }
        let Some(assembler) = self.metadata.as_ref() else {
            return;
        };
        if self.metadata_single {
            let valid = self
                .metadata_source
                .and_then(|c| self.peers.get(&c))
                .is_some_and(|p| Self::metadata_eligible(p, size, lenient));
            if !valid {
                let eligible = || {
                    self.peers
                        .values()
                        .filter(|p| Self::metadata_eligible(p, size, lenient))
                };
                self.metadata_source = eligible()
                    .find(|p| self.metadata_suspects.contains(&p.addr))
                    .or_else(|| eligible().next())
                    .map(|p| p.conn);
            }
        }
        let now = self.now;
        let asked: HashSet<u32> = self
            .peers
            .values()
            .filter(|p| p.metadata_size == Some(size))
            .filter(|p| !self.metadata_single || self.metadata_source == Some(p.conn))
            .filter_map(|p| p.metadata_request.map(|(i, _)| i))
            .collect();
        let mut missing = assembler
            .missing()
            .into_iter()
            .filter(|i| !asked.contains(i));
        for peer in self.peers.values_mut() {
            if peer.metadata_request.is_some() || !Self::metadata_eligible(peer, size, lenient) {
                continue;
            }
            if self.metadata_single && self.metadata_source != Some(peer.conn) {
                continue;
            }
            let Some(id) = peer.ext.id("ut_metadata") else {
                continue;
            };
            let Some(piece) = missing.next() else { break };
            let msg = MetadataMsg::Request { piece };
            Message::Extended {
                id,
                payload: Bytes::from(msg.encode()),
            }
            .encode(&mut peer.out);
            peer.metadata_request = Some((piece, now));
        }
    }

    pub(super) fn on_metadata(&mut self, info: Info) {
        self.set_info(info);
        self.events.push_back(Event::MetadataReceived);
        let n = self.picker.as_ref().map_or(0, Picker::num_pieces);
        let conns: Vec<ConnId> = self.peers.keys().copied().collect();
        for conn in conns {
            let Some(peer) = self.peers.get_mut(&conn) else {
                continue;
            };
            peer.metadata_request = None;
            let mut bits = if peer.early_have_all {
                Bitfield::full(n)
            } else if let Some(raw) = peer.early_bitfield.take() {
                match Bitfield::from_wire(&raw, n) {
                    Some(b) => b,
                    None => {
                        self.close(conn, CloseReason::protocol("malformed bitfield"));
                        continue;
                    }
                }
            } else {
                Bitfield::new(n)
            };
            for i in std::mem::take(&mut peer.early_haves) {
                if i >= n {
                    self.close(
                        conn,
                        CloseReason::protocol(format_args!("have for piece {i} of {n}")),
                    );
                    break;
                }
                bits.set(i);
            }
            if self.peers.contains_key(&conn) {
                self.peers.get_mut(&conn).expect("peer").bits = Bitfield::new(n);
                self.set_peer_bits(conn, bits);
            }
        }
    }

    pub(super) fn send_pex(&mut self) {
        if self.is_private() {
            return;
        }
        let listed: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.stage == Stage::Active && p.outgoing)
            .map(|p| p.addr)
            .take(50)
            .collect();
        for peer in self.peers.values_mut() {
            let Some(id) = peer.ext.id("ut_pex") else {
                continue;
            };
            let added: Vec<SocketAddr> = listed
                .iter()
                .filter(|a| **a != peer.addr && !peer.pex_sent.contains(a))
                .copied()
                .collect();
            let dropped: Vec<SocketAddr> = peer
                .pex_sent
                .iter()
                .filter(|a| !listed.contains(a))
                .copied()
                .collect();
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            let msg = PexMsg { added, dropped };
            Message::Extended {
                id,
                payload: Bytes::from(msg.encode()),
            }
            .encode(&mut peer.out);
            peer.pex_sent = listed
                .iter()
                .filter(|a| **a != peer.addr)
                .copied()
                .collect();
        }
    }
}
