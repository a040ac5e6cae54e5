//! Our queries in flight: each has a transaction id, the address it went to and a deadline. An
//! answer counts only from the address the query went to and in its transaction, so a stranger
//! has to guess 32 bits and the address to slip an answer in.

use crate::InfoHash;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Why a query was sent: what its answer or its timeout feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A ping: to meet a node, or to see whether a questionable one is still there.
    Ping,
    /// A query of the lookup with this number.
    Lookup(u64),
    Announce(InfoHash),
}

#[derive(Debug, Clone)]
pub struct Pending {
    pub addr: SocketAddr,
    pub deadline: u64,
    pub purpose: Purpose,
}

#[derive(Default)]
pub struct Transactions {
    pending: BTreeMap<u32, Pending>,
}

impl Transactions {
    /// Registers a query and returns its transaction id.
    pub fn insert(&mut self, pending: Pending, rng: &mut fastrand::Rng) -> Vec<u8> {
        // There are far fewer queries in flight than ids: this ends at once.
        let mut t = rng.u32(..);
        while self.pending.contains_key(&t) {
            t = rng.u32(..);
        }
        self.pending.insert(t, pending);
        t.to_be_bytes().to_vec()
    }

    /// The query `transaction` answers, if it went to `from`; it is no longer pending.
    pub fn take(&mut self, transaction: &[u8], from: SocketAddr) -> Option<Pending> {
        let t = u32::from_be_bytes(transaction.try_into().ok()?);
        if self.pending.get(&t)?.addr != from {
            return None;
        }
        self.pending.remove(&t)
    }

    /// Queries past their deadline, removed.
    pub fn expired(&mut self, now: u64) -> Vec<Pending> {
        if self.next_deadline().is_none_or(|d| d > now) {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.pending.retain(|_, p| {
            if p.deadline <= now {
                out.push(p.clone());
                false
            } else {
                true
            }
        });
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline).min()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a query to `addr` is in flight.
    pub fn to(&self, addr: SocketAddr) -> bool {
        self.pending.values().any(|p| p.addr == addr)
    }

    /// Pings in flight.
    pub fn pings(&self) -> usize {
        self.pending
            .values()
            .filter(|p| p.purpose == Purpose::Ping)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(port: u16, deadline: u64) -> Pending {
        Pending {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            deadline,
            purpose: Purpose::Ping,
        }
    }

    #[test]
    fn answers_count_only_from_the_address_asked() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut t = Transactions::default();
        let txn = t.insert(pending(1, 100), &mut rng);
        assert_eq!(txn.len(), 4);
        let other = SocketAddr::from(([127, 0, 0, 1], 2));
        assert!(t.take(&txn, other).is_none());
        assert!(t.take(&txn[..2], pending(1, 0).addr).is_none());
        assert!(t.take(&txn, pending(1, 0).addr).is_some());
        assert!(t.take(&txn, pending(1, 0).addr).is_none(), "once");
    }

    #[test]
    fn deadlines_expire_in_order() {
        let mut rng = fastrand::Rng::with_seed(2);
        let mut t = Transactions::default();
        t.insert(pending(1, 100), &mut rng);
        t.insert(pending(2, 50), &mut rng);
        assert_eq!(t.next_deadline(), Some(50));
        assert!(t.expired(49).is_empty());
        assert_eq!(t.expired(50).len(), 1);
        assert_eq!(t.next_deadline(), Some(100));
        assert!(t.to(pending(1, 0).addr));
        assert_eq!(t.expired(1_000).len(), 1);
        assert_eq!(t.len(), 0);
    }
}
