//! One iterative lookup (BEP 5, after Kademlia): ask the closest nodes we know about the target,
//! learn closer ones from their answers, and stop once the [`K`] closest nodes still alive have
//! all answered. At most `alpha` queries of a lookup are in flight at once.
//!
//! A lookup holds candidates sorted by distance to the target. Everything in it is bounded: the
//! candidates (the farthest one goes when a closer one arrives), the queries it may send in all
//! (so a liar handing out ever closer made-up ids cannot keep it going), and the peers it
//! remembers having reported.

use super::id::NodeId;
use super::krpc::Query;
use super::routing::K;
use crate::InfoHash;
use std::collections::BTreeSet;
use std::net::SocketAddr;

pub const MAX_CANDIDATES: usize = 8 * K;
/// Queries one lookup sends at most.
pub const MAX_QUERIES: usize = 64;
/// Peers one lookup remembers having reported; past that, more are not reported.
const MAX_PEERS_SEEN: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// find_node; `bootstrap` when looking for our own id to fill the table.
    FindNode { bootstrap: bool },
    /// get_peers; with `announce`, announce_peer to the closest nodes at the end.
    GetPeers {
        info_hash: InfoHash,
        announce: Option<Announce>,
    },
}

/// The port an announce gives: `None` asks the nodes to take the port our datagrams come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    Querying,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    /// `None` for a bootstrap address whose id we learn from its answer.
    id: Option<NodeId>,
    addr: SocketAddr,
    state: State,
    token: Option<Vec<u8>>,
}

pub struct Lookup {
    pub target: NodeId,
    pub kind: Kind,
    candidates: Vec<Candidate>,
    /// Addresses already asked, so that one dropped and offered again is not asked twice.
    asked: BTreeSet<SocketAddr>,
    peers_seen: BTreeSet<SocketAddr>,
}

impl Lookup {
    pub fn new(target: NodeId, kind: Kind) -> Lookup {
        Lookup {
            target,
            kind,
            candidates: Vec::new(),
            asked: BTreeSet::new(),
            peers_seen: BTreeSet::new(),
        }
    }

    pub fn info_hash(&self) -> Option<InfoHash> {
        match self.kind {
            Kind::GetPeers { info_hash, .. } => Some(info_hash),
            Kind::FindNode { .. } => None,
        }
    }

    /// Sort key: the distance, with unknown ids (bootstrap addresses) behind every known one.
    fn key(&self, id: &Option<NodeId>) -> [u8; 20] {
        id.map_or([0xff; 20], |id| self.target.distance(&id))
    }

    /// Offers a node to ask. Our own id, addresses already asked or listed, and ids already
    /// listed are left out.
    pub fn add(&mut self, id: Option<NodeId>, addr: SocketAddr, own: &NodeId) {
        if id.as_ref() == Some(own)
            || self.asked.contains(&addr)
            || self
                .candidates
                .iter()
                .any(|c| c.addr == addr || (id.is_some() && c.id == id))
        {
            return;
        }
        self.insert(Candidate {
            id,
            addr,
            state: State::Fresh,
            token: None,
        });
    }

    fn insert(&mut self, c: Candidate) {
        let key = self.key(&c.id);
        let pos = self.candidates.partition_point(|o| self.key(&o.id) <= key);
        if pos >= MAX_CANDIDATES {
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            // A query still in flight to the dropped node just goes unheard by this lookup.
            self.candidates.pop();
        }
        self.candidates.insert(pos, c);
    }

    pub fn in_flight(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Querying)
            .count()
    }

    /// The next node to ask, if the lookup may send a query now: the closest not yet asked
    /// among the K closest that have not failed.
    pub fn next_query(&mut self, alpha: usize) -> Option<(Option<NodeId>, SocketAddr)> {
        if self.asked.len() >= MAX_QUERIES || self.in_flight() >= alpha {
            return None;
        }
        let c = self
            .candidates
            .iter_mut()
            .filter(|c| c.state != State::Failed)
            .take(K)
            .find(|c| c.state == State::Fresh)?;
        c.state = State::Querying;
        self.asked.insert(c.addr);
        Some((c.id, c.addr))
    }

    /// The query this lookup sends.
    pub fn query(&self, own: NodeId) -> Query {
        match self.kind {
            Kind::FindNode { .. } => Query::FindNode {
                id: own,
                target: self.target,
                want: None,
            },
            Kind::GetPeers { info_hash, .. } => Query::GetPeers {
                id: own,
                info_hash,
                want: None,
            },
        }
    }

    /// `addr` answered as `id`, with a token for get_peers.
    pub fn responded(&mut self, addr: SocketAddr, id: NodeId, token: Option<Vec<u8>>) {
        let Some(i) = self.candidates.iter().position(|c| c.addr == addr) else {
            return;
        };
        let mut c = self.candidates.remove(i);
        c.state = State::Responded;
        c.token = token;
        // A bootstrap address learns its place; a node that changed its id takes its new one.
        c.id = Some(id);
        if self
            .candidates
            .iter()
            .any(|o| o.id == Some(id) && o.addr != addr)
        {
            // Another address claims the same id: keep the first, this one is not used.
            c.state = State::Failed;
        }
        self.insert(c);
    }

    /// `addr` did not answer (or answered with an error).
    pub fn failed(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            c.state = State::Failed;
        }
    }

    /// Whether the lookup is over: the K closest live nodes all answered, or nothing is left to
    /// ask and nothing is in flight.
    pub fn is_done(&self) -> bool {
        if self.asked.len() >= MAX_QUERIES {
            return self.in_flight() == 0;
        }
        !self
            .candidates
            .iter()
            .filter(|c| c.state != State::Failed)
            .take(K)
            .any(|c| matches!(c.state, State::Fresh | State::Querying))
    }

    /// The peers of `values` not reported before by this lookup.
    pub fn new_peers(&mut self, values: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for v in values {
            if self.peers_seen.len() >= MAX_PEERS_SEEN {
                break;
            }
            if self.peers_seen.insert(*v) {
                out.push(*v);
            }
        }
        out
    }

    /// The K closest nodes that answered with a token: where announce_peer goes.
    pub fn announce_targets(&self) -> Vec<(NodeId, SocketAddr, Vec<u8>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| Some((c.id?, c.addr, c.token.clone()?)))
            .take(K)
            .collect()
    }

    /// The nodes that answered, closest first.
    #[cfg(test)]
    pub fn responded_nodes(&self) -> Vec<NodeId> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| c.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((i.to_be_bytes(), 6881))
    }

    fn id(b: u8) -> NodeId {
        let mut id = [0u8; 20];
        id[0] = b;
        NodeId(id)
    }

    const OWN: NodeId = NodeId([0xff; 20]);

    fn find_node() -> Lookup {
        Lookup::new(NodeId([0; 20]), Kind::FindNode { bootstrap: false })
    }

    #[test]
    fn asks_the_closest_first_alpha_at_a_time() {
        let mut l = find_node();
        for b in [9u8, 3, 7, 1, 5] {
            l.add(Some(id(b)), addr(u32::from(b)), &OWN);
        }
        let asked: Vec<_> = (0..5).filter_map(|_| l.next_query(3)).collect();
        assert_eq!(
            asked,
            vec![
                (Some(id(1)), addr(1)),
                (Some(id(3)), addr(3)),
                (Some(id(5)), addr(5))
            ]
        );
        assert_eq!(l.in_flight(), 3);
        l.responded(addr(1), id(1), None);
        assert_eq!(l.next_query(3), Some((Some(id(7)), addr(7))));
        assert!(!l.is_done());
    }

    #[test]
    fn converges_when_the_k_closest_answered() {
        let mut l = find_node();
        for b in 1..=20u8 {
            l.add(Some(id(b)), addr(u32::from(b)), &OWN);
        }
        while let Some((_, a)) = l.next_query(3) {
            let b = a
                .ip()
                .to_string()
                .rsplit('.')
                .next()
                .unwrap()
                .parse::<u8>()
                .unwrap();
            if b == 2 {
                l.failed(a);
            } else {
                l.responded(a, id(b), None);
            }
        }
        assert!(l.is_done());
        let mut want: Vec<NodeId> = (1..=9u8).filter(|&b| b != 2).map(id).collect();
        want.truncate(K);
        assert_eq!(
            l.responded_nodes(),
            want,
            "the 8 closest live ones, no more"
        );
    }

    #[test]
    fn closer_nodes_from_answers_are_asked_next() {
        let mut l = find_node();
        l.add(Some(id(50)), addr(50), &OWN);
        let (_, a) = l.next_query(3).unwrap();
        l.responded(a, id(50), None);
        assert!(l.is_done());
        l.add(Some(id(10)), addr(10), &OWN);
        l.add(Some(id(10)), addr(11), &OWN);
        l.add(Some(id(12)), addr(50), &OWN);
        l.add(Some(OWN), addr(99), &OWN);
        assert!(!l.is_done());
        assert_eq!(l.next_query(3), Some((Some(id(10)), addr(10))));
        assert_eq!(
            l.next_query(3),
            None,
            "duplicates and ourselves were left out"
        );
    }

    #[test]
    fn bootstrap_addresses_learn_their_id() {
        let mut l = Lookup::new(id(0), Kind::FindNode { bootstrap: true });
        l.add(None, addr(1), &OWN);
        assert_eq!(l.next_query(3), Some((None, addr(1))));
        l.responded(addr(1), id(4), None);
        assert_eq!(l.responded_nodes(), vec![id(4)]);
        assert!(l.is_done());
    }

    #[test]
    fn candidates_and_queries_are_bounded() {
        let mut l = find_node();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut sent = 0;
        // A liar answering every query with more and more made-up nodes.
        for round in 0..1_000u32 {
            for j in 0..8 {
                l.add(Some(NodeId::random(&mut rng)), addr(round * 8 + j), &OWN);
            }
            assert!(l.candidates.len() <= MAX_CANDIDATES);
            while let Some((_, a)) = l.next_query(3) {
                sent += 1;
                l.responded(a, NodeId::random(&mut rng), None);
            }
        }
        assert_eq!(sent, MAX_QUERIES);
        assert!(l.is_done());
    }

    #[test]
    fn announces_go_to_the_closest_with_tokens() {
        let mut l = Lookup::new(
            id(0),
            Kind::GetPeers {
                info_hash: InfoHash([0; 20]),
                announce: Some(Announce { port: Some(1) }),
            },
        );
        for b in 1..=12u8 {
            l.add(Some(id(b)), addr(u32::from(b)), &OWN);
        }
        while let Some((Some(i), a)) = l.next_query(3) {
            let token = (i != id(1)).then(|| vec![i.0[0]]);
            l.responded(a, i, token);
        }
        let targets = l.announce_targets();
        assert_eq!(targets.len(), K - 1, "the closest gave no token");
        assert_eq!(targets[0], (id(2), addr(2), vec![2]));
        assert_eq!(l.new_peers(&[addr(7), addr(8)]), vec![addr(7), addr(8)]);
        assert_eq!(l.new_peers(&[addr(8), addr(9)]), vec![addr(9)]);
    }
}
