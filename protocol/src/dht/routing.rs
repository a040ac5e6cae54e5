//! The routing table of BEP 5: buckets of at most [`K`] nodes, each covering a range of the id
//! space. Bucket `i` holds the nodes whose ids share exactly `i` leading bits with ours, and the
//! last bucket holds all that share more; only that last one (the range holding our own id)
//! splits when full, so the table knows many nodes near us and a few far away, and never holds
//! more than 160 · K nodes (plus as many waiting replacements).
//!
//! A node enters only after it answered one of our queries (or when the driver imports a saved
//! table), so nobody gets in by spoofing a source address. Its state follows BEP 5: good while
//! it answered within fifteen minutes (or answered once and queried us within fifteen minutes),
//! bad after [`MAX_FAILS`] queries in a row went unanswered, questionable otherwise. A full
//! bucket keeps newcomers as replacements; a bad node gives its place to the newest one.

use super::compact::NodeInfo;
use super::id::{NodeId, ID_BITS};
use std::net::SocketAddr;

/// Nodes per bucket.
pub const K: usize = 8;
/// A node silent this long is questionable; a bucket unchanged this long is refreshed.
pub const FRESH_MS: u64 = 15 * 60_000;
/// Unanswered queries in a row that make a node bad.
pub const MAX_FAILS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Good,
    Questionable,
    Bad,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// When it last answered us; `None` for an imported node not heard from yet.
    pub last_response: Option<u64>,
    /// When it last queried us.
    pub last_query: Option<u64>,
    pub fails: u8,
    /// When we last pinged it to see whether it is still there.
    pinged: Option<u64>,
}

impl Entry {
    fn new(id: NodeId, addr: SocketAddr, responded: Option<u64>) -> Entry {
        Entry {
            id,
            addr,
            last_response: responded,
            last_query: None,
            fails: 0,
            pinged: None,
        }
    }

    pub fn is_bad(&self) -> bool {
        self.fails >= MAX_FAILS
    }

    pub fn status(&self, now: u64) -> NodeStatus {
        if self.is_bad() {
            NodeStatus::Bad
        } else if now < self.good_until() {
            NodeStatus::Good
        } else {
            NodeStatus::Questionable
        }
    }

    /// Good until fifteen minutes after it last answered, or last queried us once it has
    /// answered before; a node that never answered is never good.
    fn good_until(&self) -> u64 {
        match self.last_response {
            None => 0,
            Some(r) => r.max(self.last_query.unwrap_or(0)).saturating_add(FRESH_MS),
        }
    }

    /// When to ping it next: once it turns questionable, and again `retry_ms` after a ping that
    /// got no answer, until it answers or turns bad.
    fn next_ping(&self, retry_ms: u64) -> Option<u64> {
        if self.is_bad() {
            return None;
        }
        let at = self.good_until();
        Some(match self.pinged {
            Some(p) if p >= at => p.saturating_add(retry_ms),
            _ => at,
        })
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            addr: self.addr,
        }
    }
}

struct Bucket {
    nodes: Vec<Entry>,
    /// Nodes that answered while the bucket was full, oldest first.
    replacements: Vec<Entry>,
    last_changed: u64,
}

impl Bucket {
    fn new(last_changed: u64) -> Bucket {
        Bucket {
            nodes: Vec::with_capacity(K),
            replacements: Vec::new(),
            last_changed,
        }
    }
}

/// What became of a node that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// A new entry.
    Added,
    /// It was there already and is now fresh.
    Updated,
    /// Its bucket is full of nodes that are not bad, so it waits among the replacements. These
    /// questionable nodes of the bucket should be pinged: one that fails gives its place.
    Waiting(Vec<NodeInfo>),
    /// Our own id, or an id we know at another address that still answers there.
    Refused,
}

pub struct RoutingTable {
    own: NodeId,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    pub fn new(own: NodeId, now: u64) -> RoutingTable {
        RoutingTable {
            own,
            buckets: vec![Bucket::new(now)],
        }
    }

    /// `id` at `addr` answered one of our queries.
    pub fn heard_from(&mut self, id: NodeId, addr: SocketAddr, now: u64) -> Insert {
        if id == self.own {
            return Insert::Refused;
        }
        if let Some((b, i)) = self.find(|e| e.id == id) {
            let e = &self.buckets[b].nodes[i];
            if e.addr != addr {
                // The same id somewhere else: a node may move, but only once we lost it where
                // it was, or anyone could take over a known id.
                if e.status(now) != NodeStatus::Bad {
                    return Insert::Refused;
                }
                self.forget_addr_except(addr, id);
            }
            let Some((b, i)) = self.find(|e| e.id == id) else {
                return Insert::Refused;
            };
            let bucket = &mut self.buckets[b];
            let e = &mut bucket.nodes[i];
            e.addr = addr;
            e.last_response = Some(now);
            e.fails = 0;
            bucket.last_changed = now;
            return Insert::Updated;
        }
        // A known address answering with a new id is a restarted node: its old id is gone.
        self.forget_addr_except(addr, id);
        self.insert(Entry::new(id, addr, Some(now)), now, true)
    }

    /// A node from a saved table: it goes in where there is room, unverified, and replaces
    /// nobody.
    pub fn import(&mut self, id: NodeId, addr: SocketAddr, now: u64) -> bool {
        if id == self.own || self.find(|e| e.id == id || e.addr == addr).is_some() {
            return false;
        }
        self.insert(Entry::new(id, addr, None), now, false) == Insert::Added
    }

    fn insert(&mut self, entry: Entry, now: u64, may_wait: bool) -> Insert {
        loop {
            let b = self.bucket_of(&entry.id);
            let count = self.buckets.len();
            let bucket = &mut self.buckets[b];
            if bucket.nodes.len() < K {
                bucket.replacements.retain(|r| r.id != entry.id);
                bucket.nodes.push(entry);
                bucket.last_changed = now;
                return Insert::Added;
            }
            if b == count - 1 && count < ID_BITS {
                self.split();
                continue;
            }
            if let Some(i) = bucket
                .nodes
                .iter()
                .position(|e| e.status(now) == NodeStatus::Bad)
            {
                bucket.replacements.retain(|r| r.id != entry.id);
                bucket.nodes[i] = entry;
                bucket.last_changed = now;
                return Insert::Added;
            }
            if !may_wait {
                return Insert::Refused;
            }
            bucket.replacements.retain(|r| r.id != entry.id);
            if bucket.replacements.len() >= K {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(entry);
            let ping = bucket
                .nodes
                .iter()
                .filter(|e| e.status(now) == NodeStatus::Questionable)
                .map(Entry::info)
                .collect();
            return Insert::Waiting(ping);
        }
    }

    /// Whether a node we do not know yet would get a place now (so it is worth a ping).
    pub fn would_take(&self, id: &NodeId, addr: SocketAddr, now: u64) -> bool {
        if *id == self.own || self.find(|e| e.id == *id || e.addr == addr).is_some() {
            return false;
        }
        let b = self.bucket_of(id);
        let bucket = &self.buckets[b];
        bucket.nodes.len() < K
            || (b == self.buckets.len() - 1 && self.buckets.len() < ID_BITS)
            || bucket
                .nodes
                .iter()
                .any(|e| e.status(now) == NodeStatus::Bad)
    }

    /// A node we know queried us: that keeps it good. Returns whether we know it.
    pub fn queried_by(&mut self, id: &NodeId, addr: SocketAddr, now: u64) -> bool {
        match self.find(|e| e.id == *id && e.addr == addr) {
            Some((b, i)) => {
                self.buckets[b].nodes[i].last_query = Some(now);
                true
            }
            None => false,
        }
    }

    /// A query to `addr` went unanswered. A node that turns bad gives its place to the newest
    /// replacement, if its bucket has one.
    pub fn failed(&mut self, addr: SocketAddr, now: u64) {
        for bucket in &mut self.buckets {
            bucket.replacements.retain(|r| r.addr != addr);
        }
        let Some((b, i)) = self.find(|e| e.addr == addr) else {
            return;
        };
        let bucket = &mut self.buckets[b];
        let e = &mut bucket.nodes[i];
        e.fails = e.fails.saturating_add(1);
        if e.status(now) == NodeStatus::Bad {
            if let Some(r) = bucket.replacements.pop() {
                bucket.nodes[i] = r;
                bucket.last_changed = now;
            }
        }
    }

    /// Up to `n` nodes closest to `target`, bad ones left out. `verified` leaves out imported
    /// nodes that have not answered yet too: those are not handed to others.
    pub fn closest(&self, target: &NodeId, n: usize, now: u64, verified: bool) -> Vec<NodeInfo> {
        let mut all: Vec<([u8; 20], NodeInfo)> = self
            .entries()
            .filter(|e| e.status(now) != NodeStatus::Bad)
            .filter(|e| !verified || e.last_response.is_some())
            .map(|e| (target.distance(&e.id), e.info()))
            .collect();
        // Only the n closest need ordering: this runs for every find_node and get_peers.
        if n == 0 {
            return Vec::new();
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n - 1, |a| a.0);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, info)| info).collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    /// Nodes that are not bad.
    pub fn len(&self) -> usize {
        self.entries().filter(|e| !e.is_bad()).count()
    }

    #[cfg(test)]
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// When a node is next due for a ping (see [`RoutingTable::take_pings`]).
    pub fn next_ping(&self, retry_ms: u64) -> Option<u64> {
        self.entries().filter_map(|e| e.next_ping(retry_ms)).min()
    }

    /// The nodes due for a ping now, marked as pinged whether or not the caller finds room to
    /// send them all (one left out is tried again `retry_ms` later, so a busy node never spins
    /// on a deadline it cannot act on).
    pub fn take_pings(&mut self, now: u64, retry_ms: u64) -> Vec<NodeInfo> {
        let mut due = Vec::new();
        for bucket in &mut self.buckets {
            for e in &mut bucket.nodes {
                if e.next_ping(retry_ms).is_some_and(|t| t <= now) {
                    e.pinged = Some(now);
                    due.push(e.info());
                }
            }
        }
        due
    }

    /// When the next bucket is due for a refresh.
    pub fn next_refresh(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.last_changed.saturating_add(FRESH_MS))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Buckets due for a refresh now; each is marked refreshed, and a random id in its range is
    /// returned to look up.
    pub fn take_refreshes(&mut self, now: u64, rng: &mut fastrand::Rng) -> Vec<NodeId> {
        let last = self.buckets.len() - 1;
        let mut targets = Vec::new();
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            if bucket.last_changed.saturating_add(FRESH_MS) <= now {
                bucket.last_changed = now;
                targets.push(self.own.random_with_prefix(i, i != last, rng));
            }
        }
        targets
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        self.own.common_prefix_len(id).min(self.buckets.len() - 1)
    }

    fn find(&self, mut f: impl FnMut(&Entry) -> bool) -> Option<(usize, usize)> {
        self.buckets
            .iter()
            .enumerate()
            .find_map(|(b, bucket)| bucket.nodes.iter().position(&mut f).map(|i| (b, i)))
    }

    fn forget_addr_except(&mut self, addr: SocketAddr, keep: NodeId) {
        for bucket in &mut self.buckets {
            bucket.nodes.retain(|e| e.addr != addr || e.id == keep);
            bucket
                .replacements
                .retain(|e| e.addr != addr || e.id == keep);
        }
    }

    /// Splits the last bucket: the nodes sharing more bits with us move to a new last bucket.
    fn split(&mut self) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let deeper = |e: &Entry| own.common_prefix_len(&e.id) > depth;
        let old = &mut self.buckets[depth];
        let mut new = Bucket::new(old.last_changed);
        let (go, stay): (Vec<Entry>, Vec<Entry>) = old.nodes.drain(..).partition(deeper);
        old.nodes = stay;
        new.nodes = go;
        let (go, stay): (Vec<Entry>, Vec<Entry>) = old.replacements.drain(..).partition(deeper);
        old.replacements = stay;
        new.replacements = go;
        self.buckets.push(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((i.to_be_bytes(), 6881))
    }

    /// An id sharing exactly `prefix` bits with the all-zero id, the rest from `n`.
    fn id_at(prefix: usize, n: u32) -> NodeId {
        let mut rng = fastrand::Rng::with_seed(u64::from(n) << 8 | prefix as u64);
        NodeId([0; 20]).random_with_prefix(prefix, true, &mut rng)
    }

    #[test]
    fn nodes_go_in_once_and_never_our_own_id() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        assert_eq!(t.heard_from(own, addr(1), 0), Insert::Refused);
        assert_eq!(t.heard_from(id_at(0, 1), addr(1), 0), Insert::Added);
        assert_eq!(t.heard_from(id_at(0, 1), addr(1), 5), Insert::Updated);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn only_the_bucket_holding_our_id_splits() {
        let mut rng = fastrand::Rng::with_seed(7);
        let own = NodeId::random(&mut rng);
        let mut t = RoutingTable::new(own, 0);
        for i in 0..20_000 {
            t.heard_from(NodeId::random(&mut rng), addr(i), 0);
        }
        let last = t.bucket_count() - 1;
        assert!(last >= 8, "{last} splits for 20000 nodes");
        for (b, bucket) in t.buckets.iter().enumerate() {
            assert!(bucket.nodes.len() <= K && bucket.replacements.len() <= K);
            for e in &bucket.nodes {
                let cpl = own.common_prefix_len(&e.id);
                assert!(if b == last { cpl >= b } else { cpl == b });
            }
        }
        assert_eq!(t.buckets[0].nodes.len(), K, "the far half is full");
        assert!(t.len() <= t.bucket_count() * K);
    }

    #[test]
    fn a_full_far_bucket_keeps_newcomers_waiting_until_a_node_fails() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        // Fill our own bucket's other half first so that bucket 0 is a far bucket.
        t.heard_from(id_at(3, 99), addr(99), 0);
        for i in 0..K as u32 {
            assert_eq!(t.heard_from(id_at(0, i), addr(i), 0), Insert::Added);
        }
        assert!(t.bucket_count() > 1);
        let newcomer = id_at(0, 100);
        assert_eq!(
            t.heard_from(newcomer, addr(100), 1_000),
            Insert::Waiting(vec![]),
            "all good: nobody to ping"
        );
        assert!(!t.would_take(&id_at(0, 101), addr(101), 1_000));
        let later = FRESH_MS + 1_000;
        let Insert::Waiting(ping) = t.heard_from(newcomer, addr(100), later) else {
            panic!()
        };
        assert_eq!(ping.len(), K, "silent for 15 min: questionable");
        t.failed(addr(0), later);
        assert!(
            t.entries().any(|e| e.addr == addr(0)),
            "one failure is not enough"
        );
        t.failed(addr(0), later);
        assert!(!t.entries().any(|e| e.addr == addr(0)), "bad and replaced");
        assert!(t.entries().any(|e| e.id == newcomer));
    }

    #[test]
    fn a_bad_node_without_replacement_stays_but_is_not_handed_out() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        t.heard_from(id_at(0, 1), addr(1), 0);
        t.heard_from(id_at(0, 2), addr(2), 0);
        t.failed(addr(1), 10);
        t.failed(addr(1), 20);
        assert_eq!(t.len(), 1);
        let closest = t.closest(&own, K, 20, true);
        assert_eq!(closest.len(), 1);
        assert_eq!(closest[0].addr, addr(2));
        // It answers again: good again.
        assert_eq!(t.heard_from(id_at(0, 1), addr(1), 30), Insert::Updated);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ids_and_addresses_stay_unique() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        let a = id_at(1, 1);
        t.heard_from(a, addr(1), 0);
        assert_eq!(
            t.heard_from(a, addr(2), 0),
            Insert::Refused,
            "id taken elsewhere"
        );
        // The address answers under a new id: the node restarted.
        let b = id_at(2, 2);
        assert_eq!(t.heard_from(b, addr(1), 0), Insert::Added);
        assert_eq!(t.entries().count(), 1);
        assert_eq!(t.entries().next().unwrap().id, b);
        // A known id moves only once it is bad where it was.
        t.failed(addr(1), 0);
        t.failed(addr(1), 0);
        assert_eq!(t.heard_from(b, addr(3), 0), Insert::Updated);
        assert_eq!(t.entries().next().unwrap().addr, addr(3));
    }

    #[test]
    fn closest_orders_by_distance() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        let mut rng = fastrand::Rng::with_seed(1);
        for i in 0..200 {
            t.heard_from(NodeId::random(&mut rng), addr(i), 0);
        }
        let target = NodeId::random(&mut rng);
        let got = t.closest(&target, K, 0, true);
        assert_eq!(got.len(), K);
        let mut all: Vec<NodeId> = t.entries().map(|e| e.id).collect();
        all.sort_by_key(|id| target.distance(id));
        let want: Vec<NodeId> = all.into_iter().take(K).collect();
        assert_eq!(got.iter().map(|n| n.id).collect::<Vec<_>>(), want);
    }

    #[test]
    fn imported_nodes_fill_room_only_and_are_not_handed_out() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        t.heard_from(id_at(4, 50), addr(50), 0);
        for i in 0..K as u32 {
            t.heard_from(id_at(0, i), addr(i), 0);
        }
        assert!(!t.import(id_at(0, 77), addr(77), 0), "bucket 0 is full");
        assert!(t.import(id_at(1, 78), addr(78), 0));
        assert!(!t.import(id_at(1, 78), addr(78), 0), "once");
        assert!(!t.import(own, addr(79), 0));
        assert!(!t
            .closest(&own, 100, 0, true)
            .iter()
            .any(|n| n.addr == addr(78)));
        assert!(t
            .closest(&own, 100, 0, false)
            .iter()
            .any(|n| n.addr == addr(78)));
    }

    #[test]
    fn questionable_nodes_are_pinged_until_they_answer_or_turn_bad() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        t.heard_from(id_at(0, 1), addr(1), 1_000);
        t.heard_from(id_at(1, 2), addr(2), 2_000);
        assert!(t.import(id_at(2, 3), addr(3), 0));
        assert_eq!(
            t.next_ping(500),
            Some(0),
            "an imported node is checked at once"
        );
        assert_eq!(t.take_pings(0, 500).len(), 1);
        t.heard_from(id_at(2, 3), addr(3), 100);
        assert_eq!(t.next_ping(500), Some(100 + FRESH_MS));
        // A node that queries us stays good longer.
        t.queried_by(&id_at(0, 1), addr(1), 5_000);
        let now = 2_000 + FRESH_MS;
        let due: Vec<_> = t.take_pings(now, 500).iter().map(|n| n.addr).collect();
        assert_eq!(due, vec![addr(2), addr(3)]);
        assert_eq!(t.next_ping(500), Some(now + 500), "again if no answer");
        t.failed(addr(2), now + 400);
        t.heard_from(id_at(2, 3), addr(3), now + 400);
        assert_eq!(t.take_pings(now + 500, 500).len(), 1);
        t.failed(addr(2), now + 900);
        assert_eq!(
            t.next_ping(500),
            Some(5_000 + FRESH_MS),
            "bad: no more pings"
        );
    }

    #[test]
    fn buckets_are_refreshed_after_fifteen_quiet_minutes() {
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 0);
        let mut rng = fastrand::Rng::with_seed(2);
        for i in 0..40 {
            t.heard_from(NodeId::random(&mut rng), addr(i), 0);
        }
        assert_eq!(t.next_refresh(), FRESH_MS);
        assert!(t.take_refreshes(FRESH_MS - 1, &mut rng).is_empty());
        let targets = t.take_refreshes(FRESH_MS, &mut rng);
        assert_eq!(targets.len(), t.bucket_count());
        let last = t.bucket_count() - 1;
        for (i, target) in targets.iter().enumerate() {
            assert_eq!(t.bucket_of(target), i.min(last));
        }
        assert_eq!(t.next_refresh(), 2 * FRESH_MS);
    }
}
