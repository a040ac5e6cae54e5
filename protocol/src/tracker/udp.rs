//! UDP tracker protocol (BEP 15) as a sans-IO state machine: connect, then announce, with
//! retransmissions after 15 * 2^n seconds and a connection id valid for one minute.

use super::{AnnounceRequest, AnnounceResponse, TrackerError};

/// One announce to one UDP tracker.
pub struct UdpAnnounce {
    _private: (),
}

impl UdpAnnounce {
    /// `txn_seed` seeds the transaction ids (the crate has no randomness of its own). `max_tries`
    /// bounds retransmissions (BEP 15 allows up to 8; drivers use fewer to fail faster).
    pub fn new(req: AnnounceRequest, txn_seed: u64, max_tries: u32, now_ms: u64) -> Self {
        let _ = (req, txn_seed, max_tries, now_ms);
        todo!()
    }

    /// A datagram to send now, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        todo!()
    }

    /// Feeds a datagram from the tracker; ones that don't match the transaction are ignored.
    pub fn handle_datagram(&mut self, data: &[u8], now_ms: u64) {
        let _ = (data, now_ms);
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        todo!()
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        let _ = now_ms;
        todo!()
    }

    /// The outcome, once there is one.
    pub fn poll_result(&mut self) -> Option<Result<AnnounceResponse, TrackerError>> {
        todo!()
    }
}
