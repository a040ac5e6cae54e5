//! Announce scheduling over tiers of trackers (BEP 12): trackers in a tier are shuffled, tried in
//! order, and one that answers moves to the front of its tier; tiers are tried in order. Each
//! driver performs the announces this hands out and reports back.
//!
//! The tracker's `interval` (and `min interval`, whichever is longer) sets the next regular
//! announce, but never sooner than [`MIN_REANNOUNCE_SECS`] (a tracker saying `interval 0` must not
//! make us hammer it) nor later than [`MAX_REANNOUNCE_SECS`] (a hostile one must not silence us).
//! When every tracker failed, the next round waits [`RETRY_BASE_SECS`], doubling up to
//! [`RETRY_MAX_SECS`].

use super::{AnnounceEvent, AnnounceResponse, TrackerError};
use std::collections::HashMap;

pub const MIN_REANNOUNCE_SECS: u64 = 30;
pub const MAX_REANNOUNCE_SECS: u64 = 2 * 60 * 60;
pub const RETRY_BASE_SECS: u64 = 15;
pub const RETRY_MAX_SECS: u64 = 30 * 60;
/// A longer `tracker id` is not echoed: it would only bloat every later announce URL.
pub const MAX_TRACKER_ID_LEN: usize = 256;

/// One announce the driver should perform now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAnnounce {
    pub url: String,
    pub event: Option<AnnounceEvent>,
    /// What this tracker last sent as `tracker id`, to send back as `trackerid`.
    pub tracker_id: Option<String>,
}

/// The announce handed out and not yet answered.
struct InFlight {
    tier: usize,
    index: usize,
    url: String,
    event: Option<AnnounceEvent>,
}

pub struct Announcer {
    tiers: Vec<Vec<String>>,
    /// The tracker the next announce goes to.
    tier: usize,
    index: usize,
    in_flight: Option<InFlight>,
    next_at: u64,
    started_sent: bool,
    completed_pending: bool,
    stopped: bool,
    /// Rounds in a row in which every tracker failed.
    failed_rounds: u32,
    last_working: Option<String>,
    /// When the last announce succeeded and the shortest wait the tracker allows after it.
    last_success: Option<(u64, u64)>,
    /// Per tracker URL, its latest `tracker id`. Bounded: only URLs from `tiers` get in.
    tracker_ids: HashMap<String, String>,
}

impl Announcer {
    pub fn new(tiers: Vec<Vec<String>>, shuffle_seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(shuffle_seed);
        let mut seen = std::collections::HashSet::new();
        let tiers = tiers
            .into_iter()
            .filter_map(|tier| {
                let mut tier: Vec<String> = tier
                    .into_iter()
                    .map(|url| url.trim().to_string())
                    .filter(|url| supported(url) && seen.insert(url.clone()))
                    .collect();
                rng.shuffle(&mut tier);
                (!tier.is_empty()).then_some(tier)
            })
            .collect();
        Announcer {
            tiers,
            tier: 0,
            index: 0,
            in_flight: None,
            next_at: 0,
            started_sent: false,
            completed_pending: false,
            stopped: false,
            failed_rounds: 0,
            last_working: None,
            last_success: None,
            tracker_ids: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The trackers in the order they will be tried (for display and tests).
    pub fn tiers(&self) -> &[Vec<String>] {
        &self.tiers
    }

    /// The next announce due at `now_ms` (at most one in flight at a time). The first one carries
    /// `started`; after [`Announcer::completed`] the next carries `completed`.
    pub fn poll_announce(&mut self, now_ms: u64) -> Option<PendingAnnounce> {
        if self.stopped || self.in_flight.is_some() || now_ms < self.next_at {
            return None;
        }
        let url = self.tiers.get(self.tier)?.get(self.index)?.clone();
        let event = if !self.started_sent {
            Some(AnnounceEvent::Started)
        } else if self.completed_pending {
            Some(AnnounceEvent::Completed)
        } else {
            None
        };
        self.in_flight = Some(InFlight {
            tier: self.tier,
            index: self.index,
            url: url.clone(),
            event,
        });
        Some(PendingAnnounce {
            tracker_id: self.tracker_ids.get(&url).cloned(),
            url,
            event,
        })
    }

    pub fn handle_response(
        &mut self,
        url: &str,
        result: &Result<AnnounceResponse, TrackerError>,
        now_ms: u64,
    ) {
        // An answer for something not in flight (stale, or a stray) changes nothing.
        if self.in_flight.as_ref().is_none_or(|f| f.url != url) {
            return;
        }
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(response) => {
                if let Some(tier) = self.tiers.get_mut(flight.tier) {
                    if flight.index < tier.len() {
                        let tracker = tier.remove(flight.index);
                        tier.insert(0, tracker);
                    }
                }
                match flight.event {
                    Some(AnnounceEvent::Started) => self.started_sent = true,
                    Some(AnnounceEvent::Completed) => self.completed_pending = false,
                    _ => {}
                }
                self.tier = 0;
                self.index = 0;
                self.failed_rounds = 0;
                // BEP 3: an answer without `tracker id` keeps the one sent before. An id we
                // could not hold byte for byte (lossy UTF-8) would be echoed wrong: leave it.
                if let Some(id) = response.tracker_id.as_ref().filter(|id| {
                    !id.is_empty() && id.len() <= MAX_TRACKER_ID_LEN && !id.contains('\u{FFFD}')
                }) {
                    self.tracker_ids.insert(flight.url.clone(), id.clone());
                }
                self.last_working = Some(flight.url);
                let min_gap = u64::from(response.min_interval.unwrap_or(0))
                    .clamp(MIN_REANNOUNCE_SECS, MAX_REANNOUNCE_SECS);
                let wait = u64::from(response.interval).clamp(min_gap, MAX_REANNOUNCE_SECS);
                self.last_success = Some((now_ms, min_gap * 1000));
                // `completed` was asked for while another announce was out: send it now.
                self.next_at = if self.completed_pending && self.started_sent {
                    now_ms
                } else {
                    now_ms.saturating_add(wait * 1000)
                };
            }
            Err(_) => {
                self.index = flight.index + 1;
                self.tier = flight.tier;
                if self.index >= self.tiers.get(self.tier).map_or(0, Vec::len) {
                    self.index = 0;
                    self.tier += 1;
                }
                if self.tier >= self.tiers.len() {
                    self.tier = 0;
                    self.failed_rounds = self.failed_rounds.saturating_add(1);
                    let backoff = RETRY_BASE_SECS
                        .checked_shl(self.failed_rounds - 1)
                        .unwrap_or(RETRY_MAX_SECS)
                        .min(RETRY_MAX_SECS);
                    self.next_at = now_ms.saturating_add(backoff * 1000);
                } else {
                    self.next_at = now_ms;
                }
            }
        }
    }

    /// The download finished: announce `completed` soon.
    pub fn completed(&mut self) {
        if self.completed_pending {
            return;
        }
        self.completed_pending = true;
        // Only cut a regular wait short; a failure backoff still applies, and before `started`
        // got through, that announce comes first anyway.
        if self.started_sent && self.failed_rounds == 0 && self.in_flight.is_none() {
            self.next_at = 0;
        }
    }

    /// More peers are wanted now (few connected): move the next regular announce as early as the
    /// tracker's `min interval` (at least [`MIN_REANNOUNCE_SECS`]) allows.
    pub fn request_peers(&mut self, now_ms: u64) {
        if self.failed_rounds > 0 {
            return;
        }
        if let Some((at, min_gap_ms)) = self.last_success {
            let earliest = at.saturating_add(min_gap_ms).max(now_ms);
            self.next_at = self.next_at.min(earliest);
        }
    }

    /// The URL to send `stopped` to when shutting down, if any tracker ever answered.
    pub fn stopped(&mut self) -> Option<PendingAnnounce> {
        self.stopped = true;
        self.in_flight = None;
        let url = self.last_working.clone()?;
        Some(PendingAnnounce {
            tracker_id: self.tracker_ids.get(&url).cloned(),
            url,
            event: Some(AnnounceEvent::Stopped),
        })
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        if self.stopped || self.in_flight.is_some() || self.tiers.is_empty() {
            return None;
        }
        Some(self.next_at)
    }
}

/// Only the schemes the drivers can announce to.
fn supported(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    !rest.is_empty()
        && ["http", "https", "udp"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(interval: u32) -> Result<AnnounceResponse, TrackerError> {
        Ok(AnnounceResponse {
            interval,
            ..Default::default()
        })
    }

    fn err() -> Result<AnnounceResponse, TrackerError> {
        Err(TrackerError::Timeout)
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn skips_unsupported_and_empty() {
        let a = Announcer::new(
            vec![urls(&["wss://x/", "dht://y", "", "nonsense"]), vec![]],
            1,
        );
        assert!(a.is_empty());
        assert_eq!(a.poll_timeout(), None);
        let mut a = Announcer::new(
            vec![urls(&["wss://x/"]), urls(&["UDP://t:1", "https://t/a"])],
            1,
        );
        assert!(!a.is_empty());
        assert_eq!(a.tiers().len(), 1);
        assert_eq!(a.tiers()[0].len(), 2);
        assert!(a.poll_announce(0).is_some());
    }

    #[test]
    fn shuffle_is_seeded() {
        let tier = urls(&[
            "http://a/",
            "http://b/",
            "http://c/",
            "http://d/",
            "http://e/",
        ]);
        let a = Announcer::new(vec![tier.clone()], 11);
        let b = Announcer::new(vec![tier.clone()], 11);
        assert_eq!(a.tiers(), b.tiers());
        let mut sorted = a.tiers()[0].clone();
        sorted.sort();
        assert_eq!(sorted, tier);
        let differs = (0..20).any(|s| Announcer::new(vec![tier.clone()], s).tiers()[0] != tier);
        assert!(differs, "shuffle never changed the order");
    }

    #[test]
    fn tier_order_failover_and_promotion() {
        let mut a = Announcer::new(
            vec![urls(&["http://a1/", "http://a2/"]), urls(&["udp://b1:1"])],
            3,
        );
        let tier0 = a.tiers()[0].clone();
        let p = a.poll_announce(0).unwrap();
        assert_eq!(p.url, tier0[0]);
        assert_eq!(p.event, Some(AnnounceEvent::Started));
        assert_eq!(a.poll_announce(0), None, "one in flight");
        assert_eq!(a.poll_timeout(), None);
        a.handle_response(&p.url, &err(), 10);
        let p = a.poll_announce(10).unwrap();
        assert_eq!(p.url, tier0[1]);
        assert_eq!(p.event, Some(AnnounceEvent::Started));
        a.handle_response(&p.url, &err(), 20);
        let p = a.poll_announce(20).unwrap();
        assert_eq!(p.url, "udp://b1:1");
        a.handle_response(&p.url, &err(), 30);
        // Round failed: back off 15 s, then start over at the first tier.
        assert_eq!(a.poll_timeout(), Some(15_030));
        assert_eq!(a.poll_announce(15_029), None);
        let p = a.poll_announce(15_030).unwrap();
        assert_eq!(p.url, tier0[0]);
        a.handle_response(&p.url, &err(), 15_030);
        let p = a.poll_announce(15_030).unwrap();
        assert_eq!(p.url, tier0[1]);
        a.handle_response(&p.url, &ok(1800), 16_000);
        assert_eq!(
            a.tiers()[0],
            vec![tier0[1].clone(), tier0[0].clone()],
            "promoted"
        );
        assert_eq!(a.poll_timeout(), Some(16_000 + 1_800_000));
        let p = a.poll_announce(16_000 + 1_800_000).unwrap();
        assert_eq!(p.url, tier0[1]);
        assert_eq!(p.event, None);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut a = Announcer::new(vec![urls(&["http://a/"])], 0);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let p = a.poll_announce(now).unwrap();
            a.handle_response(&p.url, &err(), now);
            let next = a.poll_timeout().unwrap();
            waits.push((next - now) / 1000);
            now = next;
        }
        assert_eq!(waits, [15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
        let p = a.poll_announce(now).unwrap();
        a.handle_response(&p.url, &ok(100), now);
        assert_eq!(a.poll_timeout(), Some(now + 100_000));
    }

    #[test]
    fn interval_bounds() {
        let mut a = Announcer::new(vec![urls(&["http://a/"])], 0);
        let p = a.poll_announce(0).unwrap();
        a.handle_response(&p.url, &ok(0), 0);
        assert_eq!(a.poll_timeout(), Some(MIN_REANNOUNCE_SECS * 1000));
        let p = a.poll_announce(u64::MAX / 2).unwrap();
        let r = Ok(AnnounceResponse {
            interval: 100,
            min_interval: Some(300),
            ..Default::default()
        });
        a.handle_response(&p.url, &r, 0);
        assert_eq!(a.poll_timeout(), Some(300_000));
        let p = a.poll_announce(300_000).unwrap();
        a.handle_response(&p.url, &ok(u32::MAX), 0);
        assert_eq!(a.poll_timeout(), Some(MAX_REANNOUNCE_SECS * 1000));
        // An early announce still honours min interval.
        a.request_peers(1000);
        assert_eq!(a.poll_timeout(), Some(MIN_REANNOUNCE_SECS * 1000));
        a.request_peers(50_000);
        assert_eq!(a.poll_timeout(), Some(MIN_REANNOUNCE_SECS * 1000));
    }

    #[test]
    fn events_started_completed_stopped() {
        let mut a = Announcer::new(vec![urls(&["http://a/", "http://b/"])], 5);
        assert_eq!(a.stopped(), None, "nobody answered yet");
        let mut a = Announcer::new(vec![urls(&["http://a/", "http://b/"])], 5);
        let order = a.tiers()[0].clone();
        let p = a.poll_announce(0).unwrap();
        assert_eq!(p.event, Some(AnnounceEvent::Started));
        a.handle_response(&p.url, &err(), 0);
        let p = a.poll_announce(0).unwrap();
        assert_eq!(
            p.event,
            Some(AnnounceEvent::Started),
            "started until one tracker took it"
        );
        a.handle_response(&p.url, &ok(1800), 0);
        // Download finishes: completed goes out at once, to the tracker that works.
        a.completed();
        assert_eq!(a.poll_timeout(), Some(0));
        let p = a.poll_announce(5).unwrap();
        assert_eq!(
            p,
            PendingAnnounce {
                url: order[1].clone(),
                event: Some(AnnounceEvent::Completed),
                tracker_id: None,
            }
        );
        a.handle_response(&p.url, &ok(1800), 10);
        let p = a.poll_announce(10 + 1_800_000).unwrap();
        assert_eq!(p.event, None);
        a.handle_response(&p.url, &ok(1800), 10 + 1_800_000);
        let s = a.stopped().unwrap();
        assert_eq!(
            s,
            PendingAnnounce {
                url: order[1].clone(),
                event: Some(AnnounceEvent::Stopped),
                tracker_id: None,
            }
        );
        assert_eq!(a.poll_announce(u64::MAX), None);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn completed_during_flight_follows_started() {
        let mut a = Announcer::new(vec![urls(&["http://a/"])], 5);
        let p = a.poll_announce(0).unwrap();
        a.completed();
        a.handle_response(&p.url, &ok(1800), 100);
        assert_eq!(a.poll_timeout(), Some(100));
        assert_eq!(
            a.poll_announce(100).unwrap().event,
            Some(AnnounceEvent::Completed)
        );
    }

    #[test]
    fn stale_answers_are_ignored() {
        let mut a = Announcer::new(vec![urls(&["http://a/", "http://b/"])], 5);
        a.handle_response("http://a/", &ok(10), 0);
        let p = a.poll_announce(0).unwrap();
        a.handle_response("http://elsewhere/", &ok(10), 0);
        assert_eq!(a.poll_announce(0), None, "still in flight");
        a.handle_response(&p.url, &ok(60), 0);
        assert_eq!(a.poll_timeout(), Some(60_000));
    }

    fn with_id(id: Option<&str>) -> Result<AnnounceResponse, TrackerError> {
        Ok(AnnounceResponse {
            interval: 60,
            tracker_id: id.map(str::to_string),
            ..Default::default()
        })
    }

    #[test]
    fn echoes_each_trackers_id() {
        let mut a = Announcer::new(vec![urls(&["http://a/", "http://b/"])], 5);
        let order = a.tiers()[0].clone();
        let p = a.poll_announce(0).unwrap();
        assert_eq!(p.tracker_id, None);
        a.handle_response(&p.url, &with_id(Some("first")), 0);
        let p = a.poll_announce(60_000).unwrap();
        assert_eq!(p.url, order[0]);
        assert_eq!(p.tracker_id.as_deref(), Some("first"));
        // An answer without an id keeps the old one.
        a.handle_response(&p.url, &with_id(None), 60_000);
        let p = a.poll_announce(120_000).unwrap();
        assert_eq!(p.tracker_id.as_deref(), Some("first"));
        a.handle_response(&p.url, &with_id(Some("second")), 120_000);
        let p = a.poll_announce(180_000).unwrap();
        assert_eq!(p.tracker_id.as_deref(), Some("second"));
        // The other tracker never sent one: it gets none, not the first tracker's.
        a.handle_response(&p.url, &err(), 180_000);
        let p = a.poll_announce(180_000).unwrap();
        assert_eq!(p.url, order[1]);
        assert_eq!(p.tracker_id, None);
        a.handle_response(&p.url, &with_id(Some("other")), 180_000);
        assert_eq!(a.stopped().unwrap().tracker_id.as_deref(), Some("other"));
    }

    #[test]
    fn oversized_or_mangled_tracker_ids_are_not_echoed() {
        for bad in [
            "x".repeat(MAX_TRACKER_ID_LEN + 1),
            String::new(),
            "ab\u{FFFD}".to_string(),
        ] {
            let mut a = Announcer::new(vec![urls(&["http://a/"])], 5);
            let p = a.poll_announce(0).unwrap();
            a.handle_response(&p.url, &with_id(Some("good")), 0);
            let p = a.poll_announce(60_000).unwrap();
            a.handle_response(&p.url, &with_id(Some(&bad)), 60_000);
            let p = a.poll_announce(120_000).unwrap();
            assert_eq!(p.tracker_id.as_deref(), Some("good"), "{bad:?}");
        }
        let mut a = Announcer::new(vec![urls(&["http://a/"])], 5);
        let p = a.poll_announce(0).unwrap();
        let longest = "y".repeat(MAX_TRACKER_ID_LEN);
        a.handle_response(&p.url, &with_id(Some(&longest)), 0);
        assert_eq!(a.poll_announce(60_000).unwrap().tracker_id, Some(longest));
    }
}
