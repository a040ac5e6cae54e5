//! Announce scheduling over tiers of trackers (BEP 12): trackers in a tier are shuffled, tried in
//! order, and one that answers moves to the front of its tier; tiers are tried in order. Each
//! driver performs the announces this hands out and reports back.

use super::{AnnounceEvent, AnnounceResponse, TrackerError};

/// One announce the driver should perform now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAnnounce {
    pub url: String,
    pub event: Option<AnnounceEvent>,
}

pub struct Announcer {
    _private: (),
}

impl Announcer {
    pub fn new(tiers: Vec<Vec<String>>, shuffle_seed: u64) -> Self {
        let _ = (tiers, shuffle_seed);
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        todo!()
    }

    /// The next announce due at `now_ms` (at most one in flight at a time). The first one carries
    /// `started`; after [`Announcer::completed`] the next carries `completed`.
    pub fn poll_announce(&mut self, now_ms: u64) -> Option<PendingAnnounce> {
        let _ = now_ms;
        todo!()
    }

    pub fn handle_response(&mut self, url: &str, result: &Result<AnnounceResponse, TrackerError>, now_ms: u64) {
        let _ = (url, result, now_ms);
        todo!()
    }

    /// The download finished: announce `completed` soon.
    pub fn completed(&mut self) {
        todo!()
    }

    /// The URL to send `stopped` to when shutting down, if any tracker ever answered.
    pub fn stopped(&mut self) -> Option<PendingAnnounce> {
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        todo!()
    }
}
