//! The serving side: answers to ping, find_node, get_peers and announce_peer (BEP 5).
//!
//! Every answer is one datagram of bounded size to the address the query came from, so a
//! spoofed query buys an attacker no more than it costs. A querier we do not know is pinged
//! (and so may enter the table) only when it would get a place there, and such pings use at most
//! half of our queries in flight, so a flood from made-up nodes cannot starve our lookups.

use super::id::NodeId;
use super::krpc::{code, Message, Query, Response, Want};
use super::routing::K;
use super::Dht;
use std::net::SocketAddr;

impl Dht {
    pub(super) fn serve(
        &mut self,
        now: u64,
        from: SocketAddr,
        transaction: Vec<u8>,
        query: Query,
        read_only: bool,
    ) {
        let id = query.id();
        if !read_only && id != self.id {
            self.note_querier(now, id, from);
        }
        let mut r = Response::new(self.id);
        match query {
            Query::Ping { .. } => {}
            Query::FindNode { target, want, .. } => {
                self.put_nodes(&mut r, &target, from, want, now)
            }
            Query::GetPeers {
                info_hash, want, ..
            } => {
                r.token = Some(self.tokens.issue(from.ip(), now).to_vec());
                r.values = self.store.peers(
                    &info_hash,
                    now,
                    self.config.max_values_reply,
                    from.is_ipv6(),
                );
                if r.values.is_empty() {
                    self.put_nodes(&mut r, &info_hash.into(), from, want, now);
                }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                ..
            } => {
                if !self.tokens.check(from.ip(), &token, now) {
                    self.send(
                        from,
                        Message::error(transaction, code::PROTOCOL, "bad token"),
                    );
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                self.store
                    .insert(info_hash, SocketAddr::new(from.ip(), port), now);
            }
        }
        let mut m = Message::response(transaction, r);
        m.ip = Some(from);
        self.send(from, m);
    }

    /// The K closest nodes we know to `target`, of the families the querier wants (by default
    /// the one it asked over).
    fn put_nodes(
        &self,
        r: &mut Response,
        target: &NodeId,
        from: SocketAddr,
        want: Option<Want>,
        now: u64,
    ) {
        let want = want.unwrap_or(Want {
            v4: from.is_ipv4(),
            v6: from.is_ipv6(),
        });
        let closest = self.table.closest(target, 2 * K, now, true);
        if want.v4 {
            r.nodes = closest
                .iter()
                .filter(|n| n.addr.is_ipv4())
                .take(K)
                .copied()
                .collect();
        }
        if want.v6 {
            r.nodes6 = closest
                .iter()
                .filter(|n| n.addr.is_ipv6())
                .take(K)
                .copied()
                .collect();
        }
    }

    fn note_querier(&mut self, now: u64, id: NodeId, from: SocketAddr) {
        if self.table.queried_by(&id, from, now) {
            return;
        }
        if self.rpc.pings() < self.config.max_pending / 2
            && !self.rpc.to(from)
            && self.table.would_take(&id, from, now)
        {
            self.ping(now, from);
        }
    }
}
