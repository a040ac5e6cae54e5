//! UDP tracker protocol (BEP 15) as a sans-IO state machine: connect, then announce, with
//! retransmissions after 15 * 2^n seconds and a connection id valid for one minute.
//!
//! `n` counts the requests sent without an answer. It restarts at 0 once, when the first connection
//! id arrives, so the announce gets its own `max_tries`; a reconnect forced by an expired
//! connection id keeps counting, so a tracker that answers connects but never announces still ends
//! in [`TrackerError::Timeout`].
//!
//! A driver that still holds a connection id from an earlier exchange with the same tracker starts
//! with [`UdpAnnounce::with_connection`] and saves a round trip. The tracker may have forgotten
//! that id (a restart, or a shorter lifetime than ours): an error answer, or silence until the
//! first retransmission, sends a fresh connect instead of failing.

use super::{
    AnnounceEvent, AnnounceRequest, AnnounceResponse, TrackerError, MAX_PEERS_PER_RESPONSE,
};

const PROTOCOL_ID: u64 = 0x41727101980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
/// BEP 15: a connection id may be used for one minute after it was received.
pub const CONNECTION_ID_LIFETIME_MS: u64 = 60_000;
const BASE_RETRANSMIT_MS: u64 = 15_000;
/// BEP 15 stops doubling at n = 8 (3840 s).
const MAX_BACKOFF_EXPONENT: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Announcing,
    Done,
}

/// One announce to one UDP tracker.
pub struct UdpAnnounce {
    req: AnnounceRequest,
    rng: fastrand::Rng,
    max_tries: u32,
    ipv6: bool,
    phase: Phase,
    /// The connection id announces go out with, and when it was received.
    connection: Option<(u64, u64)>,
    /// `connection` came from an earlier exchange and this tracker has not answered it yet.
    reused: bool,
    /// Transaction id of the request in flight; retransmissions reuse it so a late answer to an
    /// earlier copy still counts.
    txn: u32,
    /// Requests sent since the last reset without an answer.
    tries: u32,
    ever_connected: bool,
    deadline: u64,
    outgoing: Option<Vec<u8>>,
    result: Option<Result<AnnounceResponse, TrackerError>>,
}

impl UdpAnnounce {
    /// `txn_seed` seeds the transaction ids (the crate has no randomness of its own). `max_tries`
    /// bounds retransmissions (BEP 15 allows up to 8; drivers use fewer to fail faster).
    pub fn new(req: AnnounceRequest, txn_seed: u64, max_tries: u32, now_ms: u64) -> Self {
        let mut this = Self::idle(req, txn_seed, max_tries);
        this.start_connect(now_ms);
        this
    }

    /// Like [`UdpAnnounce::new`], but announces at once with `connection_id`, received from this
    /// tracker at `received_at_ms` (same clock as `now_ms`) by an earlier exchange; see
    /// [`UdpAnnounce::connection`]. An id past its minute is not used: that starts with a connect.
    pub fn with_connection(
        req: AnnounceRequest,
        txn_seed: u64,
        max_tries: u32,
        now_ms: u64,
        connection_id: u64,
        received_at_ms: u64,
    ) -> Self {
        let mut this = Self::idle(req, txn_seed, max_tries);
        if now_ms.saturating_sub(received_at_ms) < CONNECTION_ID_LIFETIME_MS {
            this.connection = Some((connection_id, received_at_ms));
            this.reused = true;
            this.ever_connected = true;
            this.phase = Phase::Announcing;
            this.txn = this.rng.u32(..);
            this.send_announce(now_ms);
        } else {
            this.start_connect(now_ms);
        }
        this
    }

    fn idle(req: AnnounceRequest, txn_seed: u64, max_tries: u32) -> Self {
        UdpAnnounce {
            req,
            rng: fastrand::Rng::with_seed(txn_seed),
            max_tries: max_tries.max(1),
            ipv6: false,
            phase: Phase::Connecting,
            connection: None,
            reused: false,
            txn: 0,
            tries: 0,
            ever_connected: false,
            deadline: 0,
            outgoing: None,
            result: None,
        }
    }

    /// The connection id held now and when it was received (on the `now_ms` clock), for a
    /// driver to reuse with [`UdpAnnounce::with_connection`] within its minute. `None` while
    /// connecting, or when the tracker refused a reused id.
    pub fn connection(&self) -> Option<(u64, u64)> {
        self.connection
    }

    /// The tracker's address is IPv6: its announce responses carry 18-byte peer entries.
    pub fn set_ipv6(&mut self, ipv6: bool) {
        self.ipv6 = ipv6;
    }

    /// A datagram to send now, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.take()
    }

    /// Feeds a datagram from the tracker; ones that don't match the transaction are ignored.
    pub fn handle_datagram(&mut self, data: &[u8], now_ms: u64) {
        if self.phase == Phase::Done {
            return;
        }
        let (Some(action), Some(txn)) = (be_u32(data, 0), be_u32(data, 4)) else {
            return;
        };
        if txn != self.txn {
            return;
        }
        match (action, self.phase) {
            // Most likely "bad connection id": the error says nothing more reliable. Only a
            // reused id gets this second chance, so a real refusal still ends the exchange.
            (ACTION_ERROR, Phase::Announcing) if self.reused => {
                self.ever_connected = false;
                self.tries = 0;
                self.start_connect(now_ms);
            }
            (ACTION_ERROR, _) => {
                let message = super::http::text(data.get(8..).unwrap_or_default());
                self.finish(Err(TrackerError::Failure(message)));
            }
            (ACTION_CONNECT, Phase::Connecting) => {
                let Some(connection_id) = be_u64(data, 8) else {
                    return;
                };
                if !self.ever_connected {
                    self.ever_connected = true;
                    self.tries = 0;
                }
                self.connection = Some((connection_id, now_ms));
                self.phase = Phase::Announcing;
                self.txn = self.rng.u32(..);
                self.send_announce(now_ms);
            }
            (ACTION_ANNOUNCE, Phase::Announcing) => {
                if let Some(response) = self.parse_announce(data) {
                    self.finish(Ok(response));
                }
            }
            _ => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Done => None,
            _ => Some(self.deadline),
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.phase == Phase::Done || now_ms < self.deadline {
            return;
        }
        if self.tries >= self.max_tries {
            self.finish(Err(TrackerError::Timeout));
            return;
        }
        let fresh = self.connection.is_some_and(|(_, received_at)| {
            now_ms.saturating_sub(received_at) < CONNECTION_ID_LIFETIME_MS
        });
        match self.phase {
            Phase::Announcing if fresh && !self.reused => self.send_announce(now_ms),
            Phase::Connecting => self.send_connect(now_ms),
            // An expired id, or a reused one met with silence (a tracker drops datagrams with
            // an id it does not know): connect afresh. The count goes on, so a silent tracker
            // still gives up after `max_tries`; the new id restarts it like a first connect.
            _ => {
                if self.reused {
                    self.ever_connected = false;
                }
                self.start_connect(now_ms)
            }
        }
    }

    /// The outcome, once there is one.
    pub fn poll_result(&mut self) -> Option<Result<AnnounceResponse, TrackerError>> {
        self.result.take()
    }

    fn start_connect(&mut self, now_ms: u64) {
        self.phase = Phase::Connecting;
        self.connection = None;
        self.reused = false;
        self.txn = self.rng.u32(..);
        self.send_connect(now_ms);
    }

    fn send_connect(&mut self, now_ms: u64) {
        let mut d = Vec::with_capacity(16);
        d.extend(PROTOCOL_ID.to_be_bytes());
        d.extend(ACTION_CONNECT.to_be_bytes());
        d.extend(self.txn.to_be_bytes());
        self.transmit(d, now_ms);
    }

    fn send_announce(&mut self, now_ms: u64) {
        let Some((connection_id, _)) = self.connection else {
            return;
        };
        let req = &self.req;
        let event: u32 = match req.event {
            None => 0,
            Some(AnnounceEvent::Completed) => 1,
            Some(AnnounceEvent::Started) => 2,
            Some(AnnounceEvent::Stopped) => 3,
        };
        let num_want: i32 = req
            .numwant
            .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
        let mut d = Vec::with_capacity(98);
        d.extend(connection_id.to_be_bytes());
        d.extend(ACTION_ANNOUNCE.to_be_bytes());
        d.extend(self.txn.to_be_bytes());
        d.extend(req.info_hash.0);
        d.extend(req.peer_id.0);
        d.extend(req.downloaded.to_be_bytes());
        d.extend(req.left.to_be_bytes());
        d.extend(req.uploaded.to_be_bytes());
        d.extend(event.to_be_bytes());
        d.extend(0u32.to_be_bytes()); // IP address: the one the datagram comes from
        d.extend(req.key.to_be_bytes());
        d.extend(num_want.to_be_bytes());
        d.extend(req.port.to_be_bytes());
        self.transmit(d, now_ms);
    }

    fn transmit(&mut self, datagram: Vec<u8>, now_ms: u64) {
        let wait = BASE_RETRANSMIT_MS << self.tries.min(MAX_BACKOFF_EXPONENT);
        self.tries = self.tries.saturating_add(1);
        self.deadline = now_ms.saturating_add(wait);
        self.outgoing = Some(datagram);
    }

    fn parse_announce(&self, data: &[u8]) -> Option<AnnounceResponse> {
        let interval = be_u32(data, 8)?;
        let leechers = be_u32(data, 12)?;
        let seeders = be_u32(data, 16)?;
        let mut peers = Vec::new();
        let entries = data.get(20..).unwrap_or_default();
        // A torn last entry is dropped rather than losing the whole answer.
        let entry = if self.ipv6 { 18 } else { 6 };
        let whole = entries.len() - entries.len() % entry;
        let entries = entries.get(..whole).unwrap_or_default();
        super::http::compact_peers(entries, self.ipv6, &mut peers).ok()?;
        debug_assert!(peers.len() <= MAX_PEERS_PER_RESPONSE);
        Some(AnnounceResponse {
            interval,
            min_interval: None,
            peers,
            warning: None,
            complete: Some(seeders),
            incomplete: Some(leechers),
            tracker_id: None,
        })
    }

    fn finish(&mut self, result: Result<AnnounceResponse, TrackerError>) {
        self.phase = Phase::Done;
        self.outgoing = None;
        self.result = Some(result);
    }
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InfoHash, PeerId};
    use std::net::SocketAddr;

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0xaa; 20]),
            peer_id: PeerId([0xbb; 20]),
            port: 6881,
            uploaded: 3,
            downloaded: 1,
            left: 2,
            event: Some(AnnounceEvent::Started),
            numwant: None,
            key: 0x1234_5678,
            tracker_id: None,
        }
    }

    fn txn_of(d: &[u8]) -> u32 {
        be_u32(d, 12).unwrap()
    }

    fn connect_response(txn: u32, conn: u64) -> Vec<u8> {
        let mut d = ACTION_CONNECT.to_be_bytes().to_vec();
        d.extend(txn.to_be_bytes());
        d.extend(conn.to_be_bytes());
        d
    }

    fn announce_response(txn: u32, peers: &[u8]) -> Vec<u8> {
        let mut d = ACTION_ANNOUNCE.to_be_bytes().to_vec();
        d.extend(txn.to_be_bytes());
        d.extend(1800u32.to_be_bytes());
        d.extend(4u32.to_be_bytes());
        d.extend(9u32.to_be_bytes());
        d.extend(peers);
        d
    }

    /// Drives the connect step and returns the announce datagram.
    fn connected(u: &mut UdpAnnounce, conn: u64, now: u64) -> Vec<u8> {
        let c = u.poll_transmit().expect("connect request");
        assert_eq!(c.len(), 16);
        assert_eq!(be_u64(&c, 0), Some(PROTOCOL_ID));
        assert_eq!(be_u32(&c, 8), Some(ACTION_CONNECT));
        u.handle_datagram(&connect_response(txn_of(&c), conn), now);
        u.poll_transmit().expect("announce request")
    }

    #[test]
    fn full_exchange() {
        let mut u = UdpAnnounce::new(request(), 1, 4, 1000);
        assert_eq!(u.poll_timeout(), Some(16_000));
        let a = connected(&mut u, 0x0102_0304_0506_0708, 2000);
        assert_eq!(a.len(), 98);
        assert_eq!(be_u64(&a, 0), Some(0x0102_0304_0506_0708));
        assert_eq!(be_u32(&a, 8), Some(ACTION_ANNOUNCE));
        let txn = be_u32(&a, 12).unwrap();
        assert_eq!(&a[16..36], &[0xaa; 20]);
        assert_eq!(&a[36..56], &[0xbb; 20]);
        assert_eq!(be_u64(&a, 56), Some(1));
        assert_eq!(be_u64(&a, 64), Some(2));
        assert_eq!(be_u64(&a, 72), Some(3));
        assert_eq!(be_u32(&a, 80), Some(2), "started");
        assert_eq!(be_u32(&a, 84), Some(0));
        assert_eq!(be_u32(&a, 88), Some(0x1234_5678));
        assert_eq!(be_u32(&a, 92), Some(u32::MAX), "num_want -1");
        assert_eq!(&a[96..98], &6881u16.to_be_bytes());
        assert_eq!(
            u.poll_timeout(),
            Some(17_000),
            "fresh tries after the first connect"
        );

        let peers = [127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 1, 0, 0, 9, 9];
        u.handle_datagram(&announce_response(txn, &peers), 3000);
        let r = u.poll_result().unwrap().unwrap();
        assert_eq!(r.interval, 1800);
        assert_eq!(r.incomplete, Some(4));
        assert_eq!(r.complete, Some(9));
        assert_eq!(
            r.peers,
            vec!["127.0.0.1:6881".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(u.poll_timeout(), None);
        assert_eq!(u.poll_transmit(), None);
        assert_eq!(u.poll_result(), None);
    }

    #[test]
    fn ipv6_entries() {
        let mut u = UdpAnnounce::new(request(), 2, 4, 0);
        u.set_ipv6(true);
        let a = connected(&mut u, 5, 0);
        let mut peers = vec![0u8; 15];
        peers.push(1);
        peers.extend(7000u16.to_be_bytes());
        u.handle_datagram(&announce_response(txn_of(&a), &peers), 0);
        let r = u.poll_result().unwrap().unwrap();
        assert_eq!(r.peers, vec!["[::1]:7000".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn event_codes_and_numwant() {
        for (event, code) in [
            (None, 0),
            (Some(AnnounceEvent::Completed), 1),
            (Some(AnnounceEvent::Started), 2),
            (Some(AnnounceEvent::Stopped), 3),
        ] {
            let mut req = request();
            req.event = event;
            req.numwant = Some(u32::MAX);
            let mut u = UdpAnnounce::new(req, 3, 4, 0);
            let a = connected(&mut u, 5, 0);
            assert_eq!(be_u32(&a, 80), Some(code));
            assert_eq!(be_u32(&a, 92), Some(i32::MAX as u32));
        }
    }

    #[test]
    fn wrong_txn_and_short_datagrams_are_ignored() {
        let mut u = UdpAnnounce::new(request(), 4, 4, 0);
        let c = u.poll_transmit().unwrap();
        let txn = txn_of(&c);
        u.handle_datagram(&connect_response(txn.wrapping_add(1), 9), 0);
        u.handle_datagram(&connect_response(txn, 9)[..15], 0);
        u.handle_datagram(&[], 0);
        u.handle_datagram(&[0, 0, 0], 0);
        // An announce answer while connecting is out of place.
        u.handle_datagram(&announce_response(txn, &[]), 0);
        assert_eq!(u.poll_transmit(), None);
        assert_eq!(u.poll_result(), None);
        u.handle_datagram(&connect_response(txn, 9), 0);
        let a = u.poll_transmit().unwrap();
        let txn = txn_of(&a);
        u.handle_datagram(&announce_response(txn ^ 1, &[]), 0);
        u.handle_datagram(&announce_response(txn, &[])[..19], 0);
        u.handle_datagram(&connect_response(txn, 10), 0);
        assert_eq!(u.poll_result(), None);
        assert_eq!(u.poll_transmit(), None);
        u.handle_datagram(&announce_response(txn, &[1, 2, 3]), 0);
        assert_eq!(u.poll_result().unwrap().unwrap().peers, vec![]);
    }

    #[test]
    fn error_response_is_a_failure() {
        let mut u = UdpAnnounce::new(request(), 5, 4, 0);
        let a = connected(&mut u, 5, 0);
        let mut e = ACTION_ERROR.to_be_bytes().to_vec();
        e.extend(txn_of(&a).to_be_bytes());
        e.extend(b"unregistered torrent");
        u.handle_datagram(&e, 0);
        assert_eq!(
            u.poll_result(),
            Some(Err(TrackerError::Failure("unregistered torrent".into())))
        );
        assert_eq!(u.poll_timeout(), None);
    }

    #[test]
    fn retransmits_with_backoff_then_times_out() {
        let mut u = UdpAnnounce::new(request(), 6, 3, 0);
        let first = u.poll_transmit().unwrap();
        assert_eq!(u.poll_timeout(), Some(15_000));
        u.handle_timeout(14_999);
        assert_eq!(u.poll_transmit(), None);
        u.handle_timeout(15_000);
        let second = u.poll_transmit().unwrap();
        assert_eq!(be_u32(&second, 8), Some(ACTION_CONNECT));
        assert_eq!(u.poll_timeout(), Some(45_000));
        u.handle_timeout(45_000);
        assert!(u.poll_transmit().is_some());
        assert_eq!(u.poll_timeout(), Some(105_000));
        u.handle_timeout(105_000);
        assert_eq!(u.poll_transmit(), None);
        assert_eq!(u.poll_result(), Some(Err(TrackerError::Timeout)));
        assert_eq!(u.poll_timeout(), None);
        // Transaction ids are fresh per request but reused by retransmissions.
        assert_eq!(txn_of(&first), txn_of(&second));
    }

    /// The tries the bridge uses: 15 s, then 30 s more, then done.
    #[test]
    fn two_tries_retransmit_at_15_s_then_give_up_30_s_later() {
        let mut u = UdpAnnounce::new(request(), 10, 2, 1_000);
        let c = u.poll_transmit().unwrap();
        assert_eq!(u.poll_timeout(), Some(16_000));
        u.handle_timeout(16_000);
        assert_eq!(u.poll_transmit(), Some(c), "the connect again, 15 s later");
        assert_eq!(u.poll_timeout(), Some(46_000), "then 30 s");
        u.handle_timeout(45_999);
        assert_eq!(u.poll_result(), None);
        u.handle_timeout(46_000);
        assert_eq!(u.poll_transmit(), None);
        assert_eq!(u.poll_result(), Some(Err(TrackerError::Timeout)));
        assert_eq!(u.poll_timeout(), None);

        // The announce after a connect gets the same schedule.
        let mut u = UdpAnnounce::new(request(), 11, 2, 0);
        let a = connected(&mut u, 77, 5_000);
        assert_eq!(u.poll_timeout(), Some(20_000));
        u.handle_timeout(20_000);
        assert_eq!(u.poll_transmit(), Some(a));
        assert_eq!(u.poll_timeout(), Some(50_000));
        u.handle_timeout(50_000);
        assert_eq!(u.poll_result(), Some(Err(TrackerError::Timeout)));
    }

    #[test]
    fn connection_is_the_id_and_when_it_came() {
        let mut u = UdpAnnounce::new(request(), 12, 2, 0);
        assert_eq!(u.connection(), None, "not connected yet");
        let a = connected(&mut u, 0xfeed, 700);
        assert_eq!(u.connection(), Some((0xfeed, 700)));
        u.handle_datagram(&announce_response(txn_of(&a), &[]), 900);
        assert!(matches!(u.poll_result(), Some(Ok(_))));
        assert_eq!(u.connection(), Some((0xfeed, 700)), "still there when done");
    }

    #[test]
    fn a_known_connection_skips_the_connect() {
        let mut u = UdpAnnounce::with_connection(request(), 13, 2, 59_000, 0xabc, 0);
        let a = u.poll_transmit().unwrap();
        assert_eq!(a.len(), 98, "an announce first");
        assert_eq!(be_u64(&a, 0), Some(0xabc));
        assert_eq!(be_u32(&a, 8), Some(ACTION_ANNOUNCE));
        assert_eq!(u.poll_timeout(), Some(74_000));
        assert_eq!(u.connection(), Some((0xabc, 0)));
        u.handle_datagram(&announce_response(txn_of(&a), &[1, 2, 3, 4, 0, 5]), 59_100);
        let r = u.poll_result().unwrap().unwrap();
        assert_eq!(r.peers, vec!["1.2.3.4:5".parse::<SocketAddr>().unwrap()]);
        assert_eq!(u.connection(), Some((0xabc, 0)));
    }

    #[test]
    fn a_connection_past_its_minute_is_not_used() {
        let mut u = UdpAnnounce::with_connection(request(), 14, 2, 60_000, 0xabc, 0);
        assert_eq!(u.connection(), None);
        let a = connected(&mut u, 0xdef, 60_500);
        assert_eq!(be_u64(&a, 0), Some(0xdef));
    }

    #[test]
    fn an_error_for_a_reused_id_connects_afresh() {
        let mut u = UdpAnnounce::with_connection(request(), 15, 2, 1_000, 0xabc, 0);
        let a = u.poll_transmit().unwrap();
        let mut e = ACTION_ERROR.to_be_bytes().to_vec();
        e.extend(txn_of(&a).to_be_bytes());
        e.extend(b"Connection ID missmatch.");
        u.handle_datagram(&e, 2_000);
        assert_eq!(u.poll_result(), None, "not a failure yet");
        assert_eq!(u.connection(), None, "the id is forgotten");
        assert_eq!(u.poll_timeout(), Some(17_000), "a first try again");
        let a2 = connected(&mut u, 0xdef, 2_500);
        assert_eq!(be_u64(&a2, 0), Some(0xdef));
        assert_eq!(u.poll_timeout(), Some(17_500));
        // The new id came from this tracker just now: an error for it is the answer.
        let mut e = ACTION_ERROR.to_be_bytes().to_vec();
        e.extend(txn_of(&a2).to_be_bytes());
        e.extend(b"unregistered torrent");
        u.handle_datagram(&e, 3_000);
        assert_eq!(
            u.poll_result(),
            Some(Err(TrackerError::Failure("unregistered torrent".into())))
        );
        assert_eq!(u.connection(), Some((0xdef, 2_500)));
    }

    #[test]
    fn silence_for_a_reused_id_connects_afresh_within_the_tries() {
        let mut u = UdpAnnounce::with_connection(request(), 16, 2, 0, 0xabc, 0);
        assert_eq!(u.poll_transmit().unwrap().len(), 98);
        u.handle_timeout(15_000);
        let c = u.poll_transmit().unwrap();
        assert_eq!(c.len(), 16, "the retransmission is a connect");
        assert_eq!(u.connection(), None);
        assert_eq!(u.poll_timeout(), Some(45_000), "still 15 s then 30 s");
        // Answered: the new id's announce gets the full tries, as after a first connect.
        u.handle_datagram(&connect_response(txn_of(&c), 0xdef), 20_000);
        let a = u.poll_transmit().unwrap();
        assert_eq!(be_u64(&a, 0), Some(0xdef));
        assert_eq!(u.poll_timeout(), Some(35_000));
        u.handle_timeout(35_000);
        assert_eq!(u.poll_transmit(), Some(a));
        u.handle_timeout(65_000);
        assert_eq!(u.poll_result(), Some(Err(TrackerError::Timeout)));

        // Never answered: done at 45 s like any silent tracker.
        let mut u = UdpAnnounce::with_connection(request(), 17, 2, 0, 0xabc, 0);
        u.handle_timeout(15_000);
        u.handle_timeout(45_000);
        assert_eq!(u.poll_result(), Some(Err(TrackerError::Timeout)));
    }

    #[test]
    fn expired_connection_id_reconnects() {
        let mut u = UdpAnnounce::new(request(), 7, 8, 0);
        let a = connected(&mut u, 42, 1_000);
        assert_eq!(u.poll_timeout(), Some(16_000));
        u.handle_timeout(16_000);
        let again = u.poll_transmit().unwrap();
        assert_eq!(again, a, "a retransmitted announce is the same datagram");
        assert_eq!(u.poll_timeout(), Some(46_000));
        u.handle_timeout(46_000);
        assert_eq!(
            u.poll_transmit().unwrap().len(),
            98,
            "id still valid at 45 s"
        );
        assert_eq!(u.poll_timeout(), Some(106_000));
        u.handle_timeout(106_000);
        let c = u.poll_transmit().unwrap();
        assert_eq!(c.len(), 16, "id expired: connect again");
        assert_eq!(
            u.poll_timeout(),
            Some(106_000 + 120_000),
            "the count goes on"
        );
        u.handle_datagram(&connect_response(txn_of(&c), 43), 107_000);
        let a2 = u.poll_transmit().unwrap();
        assert_eq!(be_u64(&a2, 0), Some(43));
        assert_eq!(u.poll_timeout(), Some(107_000 + 240_000));
        u.handle_datagram(&announce_response(txn_of(&a2), &[]), 108_000);
        assert!(matches!(u.poll_result(), Some(Ok(_))));
    }

    #[test]
    fn endless_connects_still_time_out() {
        let mut u = UdpAnnounce::new(request(), 8, 8, 0);
        let mut now = 0;
        let mut sent = 0;
        while u.poll_result().is_none() {
            assert!(sent < 100, "never gave up");
            if let Some(d) = u.poll_transmit() {
                sent += 1;
                if d.len() == 16 {
                    u.handle_datagram(&connect_response(txn_of(&d), 1), now);
                    continue;
                }
            }
            now = u.poll_timeout().unwrap();
            u.handle_timeout(now);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..2000 {
            let mut u = if rng.bool() {
                UdpAnnounce::new(request(), rng.u64(..), 2, 0)
            } else {
                UdpAnnounce::with_connection(request(), rng.u64(..), 2, 0, 1, 0)
            };
            let c = u.poll_transmit().unwrap();
            let mut d = connect_response(txn_of(&c), 1);
            d.truncate(rng.usize(..=d.len()));
            u.handle_datagram(&d, 0);
            let len = rng.usize(..64);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Some(a) = u.poll_transmit() {
                if junk.len() >= 8 {
                    junk[4..8].copy_from_slice(&txn_of(&a).to_be_bytes());
                }
            }
            u.handle_datagram(&junk, 0);
            u.handle_timeout(u64::MAX);
        }
    }
}
