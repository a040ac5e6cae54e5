//! Sessions wired to each other and to a fake tracker in memory, on a virtual clock.

use super::*;
use crate::storage::MemoryStorage;
use crate::testing::{make_torrent, SharedStorage as Shared};
use crate::tracker::AnnounceEvent;
use sha1::{Digest, Sha1};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const TRACKER: &str = "http://tracker.test/announce";

struct Node {
    addr: SocketAddr,
    session: Session,
    /// What `OpenStorage` hands over: the bytes already there and what the driver knows of them.
    prefill: (Vec<u8>, Prefill),
    store: Option<Shared>,
    events: Vec<Event>,
    /// Whether this node takes incoming connections.
    accepts: bool,
}

/// The fake tracker: every announce is logged; peers that announce a port are handed out.
#[derive(Default)]
struct Tracker {
    log: Vec<(u64, usize, AnnounceRequest)>,
    swarm: Vec<(usize, SocketAddr)>,
    interval: u32,
    min_interval: Option<u32>,
    /// Hands out no peers at all.
    empty: bool,
}

struct World {
    nodes: Vec<Node>,
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    tracker: Tracker,
    hash_jobs: Vec<(usize, InfoHash, u32, u64)>,
    /// Every DHT datagram sent: from which node, to where, the bytes.
    datagrams: Vec<(usize, SocketAddr, Vec<u8>)>,
    now: u64,
}

impl World {
    fn new() -> Self {
        World {
            nodes: Vec::new(),
            links: HashMap::new(),
            tracker: Tracker {
                interval: 1800,
                ..Default::default()
            },
            hash_jobs: Vec::new(),
            datagrams: Vec::new(),
            now: 0,
        }
    }

    fn addr_of(i: usize) -> SocketAddr {
        format!("10.0.0.{}:6881", i + 1).parse().unwrap()
    }

    fn node(&mut self, listen: bool, driver_hashes: bool, prefill: (Vec<u8>, Prefill)) -> usize {
        self.node_with(listen, driver_hashes, prefill, None)
    }

    /// A listening node with a DHT that bootstraps from `bootstrap` (other nodes).
    fn dht_node(&mut self, prefill: (Vec<u8>, Prefill), bootstrap: &[usize]) -> usize {
        let dht = DhtConfig {
            bootstrap: bootstrap.iter().map(|&j| World::addr_of(j)).collect(),
            ..DhtConfig::default()
        };
        self.node_with(true, false, prefill, Some(dht))
    }

    fn node_with(
        &mut self,
        listen: bool,
        driver_hashes: bool,
        prefill: (Vec<u8>, Prefill),
        dht: Option<DhtConfig>,
    ) -> usize {
        let i = self.nodes.len();
        let addr = World::addr_of(i);
        let mut config = Config {
            listen: listen.then_some(addr),
            dht,
            ..Config::default()
        };
        config.engine.driver_hashes = driver_hashes;
        self.nodes.push(Node {
            addr,
            session: Session::new(config, PeerId::generate(i as u64), 100 + i as u64),
            prefill,
            store: None,
            events: Vec::new(),
            accepts: listen,
        });
        i
    }

    fn add(&mut self, n: usize, info: Option<&Info>, trackers: &[&str]) -> InfoHash {
        let now = self.now;
        let id = match info {
            Some(i) => i.info_hash,
            None => self.nodes[0].session.info(self.any_id()).unwrap().info_hash,
        };
        let add = AddTorrent {
            info_hash: id,
            info: info.cloned(),
            trackers: trackers.iter().map(|t| vec![t.to_string()]).collect(),
            peers: Vec::new(),
            name: None,
            paused: false,
        };
        self.nodes[n].session.add(now, add).unwrap();
        id
    }

    fn any_id(&self) -> InfoHash {
        self.nodes[0].session.torrents().next().unwrap()
    }

    fn announce(&mut self, n: usize, url: &str, req: AnnounceRequest) -> AnnounceResponse {
        let t = &mut self.tracker;
        t.log.push((self.now, n, req.clone()));
        assert_eq!(url, TRACKER);
        let me = SocketAddr::new(self.nodes[n].addr.ip(), req.port);
        t.swarm.retain(|(m, _)| *m != n);
        let peers = if t.empty {
            Vec::new()
        } else {
            t.swarm.iter().map(|(_, a)| *a).collect()
        };
        if req.port != 0 && req.event != Some(AnnounceEvent::Stopped) {
            t.swarm.push((n, me));
        }
        AnnounceResponse {
            interval: t.interval,
            min_interval: t.min_interval,
            peers,
            ..Default::default()
        }
    }

    /// Delivers everything until no session has anything more to say.
    fn settle(&mut self) {
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(ev) = self.nodes[i].session.poll_event() {
                    self.nodes[i].events.push(ev);
                }
                while let Some(action) = self.nodes[i].session.poll_action() {
                    busy = true;
                    self.act(i, action);
                }
                while let Some((id, conn)) =
                    self.nodes[i].session.poll_transmit(self.now, &mut bytes)
                {
                    busy = true;
                    let now = self.now;
                    if let Some(&(j, c)) = self.links.get(&(i, conn)) {
                        self.nodes[j].session.handle_data(now, id, c, &bytes);
                    }
                    self.nodes[i]
                        .session
                        .handle_sent(now, id, conn, bytes.len());
                }
            }
            for i in 0..self.nodes.len() {
                while let Some((to, bytes)) = self.nodes[i].session.poll_datagram() {
                    busy = true;
                    let (now, from) = (self.now, self.nodes[i].addr);
                    if let Some(j) = self.nodes.iter().position(|n| n.addr == to) {
                        self.nodes[j].session.handle_datagram(now, from, &bytes);
                    }
                    self.datagrams.push((i, to, bytes));
                }
            }
            for (i, id, piece, job) in std::mem::take(&mut self.hash_jobs) {
                busy = true;
                let mut buf = Vec::new();
                let s = &mut self.nodes[i].session;
                s.read_piece(id, piece, &mut buf).unwrap();
                let digest: [u8; 20] = Sha1::digest(&buf).into();
                s.handle_piece_hash(self.now, id, piece, job, digest);
            }
            if !busy {
                return;
            }
        }
        panic!("the sessions never settle");
    }

    fn act(&mut self, i: usize, action: Action) {
        let now = self.now;
        match action {
            Action::Connect {
                torrent,
                conn,
                addr,
            } => {
                let from = SocketAddr::new(self.nodes[i].addr.ip(), 40_000 + conn.0 as u16);
                let target = self.nodes.iter().position(|n| n.addr == addr && n.accepts);
                let accepted = target.and_then(|j| {
                    let c = self.nodes[j].session.handle_incoming(now, torrent, from)?;
                    Some((j, c))
                });
                match accepted {
                    Some((j, c)) => {
                        self.links.insert((i, conn), (j, c));
                        self.links.insert((j, c), (i, conn));
                        self.nodes[i].session.handle_connected(now, torrent, conn);
                    }
                    None => self.nodes[i]
                        .session
                        .handle_closed(now, torrent, conn, "refused"),
                }
            }
            Action::Close { torrent, conn, .. } => {
                if let Some((j, c)) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(j, c));
                    self.nodes[j]
                        .session
                        .handle_closed(now, torrent, c, "peer closed");
                }
            }
            Action::OpenStorage { torrent } => {
                let total = self.nodes[i].session.info(torrent).unwrap().total_length;
                let (mut data, prefill) = self.nodes[i].prefill.clone();
                data.resize(total as usize, 0);
                let store = Shared(Rc::new(RefCell::new(MemoryStorage { data })));
                self.nodes[i].store = Some(store.clone());
                self.nodes[i]
                    .session
                    .handle_storage(now, torrent, Ok((Box::new(store), prefill)));
            }
            Action::Announce {
                torrent,
                url,
                request,
            } => {
                let resp = self.announce(i, &url, request);
                if self.nodes[i].session.contains(torrent) {
                    self.nodes[i]
                        .session
                        .handle_announce(now, torrent, &url, Ok(resp));
                }
            }
            Action::HashPiece {
                torrent,
                piece,
                job,
            } => self.hash_jobs.push((i, torrent, piece, job)),
        }
    }

    /// Runs the clock until `done` or `deadline_ms`; true if `done`.
    fn run_until(&mut self, deadline_ms: u64, done: impl Fn(&World) -> bool) -> bool {
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.session.poll_timeout())
                .min()
                .unwrap_or(u64::MAX)
                .max(self.now);
            if next > deadline_ms {
                self.now = deadline_ms;
                return false;
            }
            self.now = next;
            for n in &mut self.nodes {
                if n.session.poll_timeout().is_some_and(|t| t <= next) {
                    n.session.handle_timeout(next);
                }
            }
        }
    }

    fn data(&self, n: usize) -> Vec<u8> {
        self.nodes[n]
            .store
            .as_ref()
            .unwrap()
            .0
            .borrow()
            .data
            .clone()
    }

    fn announces(&self, n: usize) -> Vec<(u64, AnnounceRequest)> {
        let log = self.tracker.log.iter().filter(|(_, m, _)| *m == n);
        log.map(|(t, _, r)| (*t, r.clone())).collect()
    }
}

fn seeder_and_leecher(driver_hashes: bool) -> (World, Vec<u8>, Info) {
    let (data, info) = make_torrent(300_000, 16384, 1);
    let mut w = World::new();
    let s = w.node(true, false, (data.clone(), Prefill::Complete));
    let l = w.node(true, driver_hashes, (Vec::new(), Prefill::Empty));
    w.add(s, Some(&info), &[TRACKER]);
    w.settle();
    w.add(l, Some(&info), &[TRACKER]);
    (w, data, info)
}

#[test]
fn a_leecher_finds_a_seeder_through_the_tracker_and_tells_it_when_complete() {
    for driver_hashes in [false, true] {
        let (mut w, data, info) = seeder_and_leecher(driver_hashes);
        let id = info.info_hash;
        assert!(w.run_until(60_000, |w| w.nodes[1].session.is_complete(id)));
        w.settle();
        assert_eq!(w.data(1), data);
        let ev = &w.nodes[1].events;
        assert!(ev.contains(&Event::Checked {
            torrent: id,
            have: 0,
            total: info.num_pieces()
        }));
        assert!(ev.contains(&Event::Complete {
            torrent: id,
            downloaded: true
        }));
        let seeder_ev = &w.nodes[0].events;
        assert!(seeder_ev.contains(&Event::Complete {
            torrent: id,
            downloaded: false
        }));

        // Started first, completed once done, with the listening port and what is left.
        let leecher = w.announces(1);
        let events: Vec<_> = leecher.iter().map(|(_, r)| r.event).collect();
        assert_eq!(
            events,
            [Some(AnnounceEvent::Started), Some(AnnounceEvent::Completed)]
        );
        let (_, first) = &leecher[0];
        assert_eq!(
            (first.port, first.left, first.numwant),
            (6881, 300_000, Some(120))
        );
        assert_eq!(leecher[1].1.left, 0);
        // A seed that never downloaded anything never says `completed`.
        let seeder = w.announces(0);
        assert!(seeder
            .iter()
            .all(|(_, r)| r.event != Some(AnnounceEvent::Completed)));

        // Removing says `stopped` to the tracker and closes the connection.
        let now = w.now;
        assert!(w.nodes[1].session.remove(now, id));
        w.settle();
        let last = w.announces(1).pop().unwrap().1;
        assert_eq!(last.event, Some(AnnounceEvent::Stopped));
        assert!(w.links.is_empty(), "connections left open: {:?}", w.links);
        let st = w.nodes[0].session.status(w.now, id).unwrap();
        assert_eq!((st.state, st.peers_connected), (State::Seeding, 0));
    }
}

#[test]
fn a_magnet_gets_its_metadata_opens_its_storage_and_completes() {
    let (data, info) = make_torrent(200_000, 16384, 2);
    let mut w = World::new();
    let s = w.node(true, false, (data.clone(), Prefill::Complete));
    let l = w.node(false, false, (Vec::new(), Prefill::Empty));
    w.add(s, Some(&info), &[TRACKER]);
    w.settle();
    w.add(l, None, &[TRACKER]);
    let id = info.info_hash;
    let st = w.nodes[l].session.status(0, id).unwrap();
    assert_eq!(
        (st.state, st.name.as_str()),
        (State::Metadata, id.to_hex().as_str())
    );
    assert!(w.run_until(60_000, |w| w.nodes[1].session.is_complete(id)));
    assert_eq!(w.data(l), data);
    assert!(w.nodes[l]
        .events
        .contains(&Event::MetadataReceived { torrent: id }));
    // Unknown size: a non-zero `left`; nothing listens: port 0, so nobody is sent here.
    let first = &w.announces(l)[0].1;
    assert_eq!((first.left, first.port), (UNKNOWN_LEFT_FOR_TESTS, 0));
    assert!(w.tracker.swarm.iter().all(|(n, _)| *n != l));
    let st = w.nodes[l].session.status(w.now, id).unwrap();
    assert_eq!(
        (st.state, st.name.as_str(), st.progress),
        (State::Seeding, "swarm", 1.0)
    );
    assert_eq!(st.files.len(), 2);
    assert!(st.files.iter().all(|f| f.done == f.size));
}

const UNKNOWN_LEFT_FOR_TESTS: u64 = 16384;

#[test]
fn resume_keeps_verified_pieces_and_fetches_only_the_rest() {
    for driver_hashes in [false, true] {
        let (data, info) = make_torrent(400_000, 16384, 3);
        let mut w = World::new();
        let s = w.node(true, false, (data.clone(), Prefill::Complete));
        // The first half is there; one of its pieces is damaged.
        let mut half = data[..200_000].to_vec();
        half[20_000] ^= 1;
        let l = w.node(true, driver_hashes, (half, Prefill::Unknown));
        w.add(s, Some(&info), &[TRACKER]);
        w.settle();
        let id = w.add(l, Some(&info), &[TRACKER]);
        assert!(w.run_until(60_000, |w| w.nodes[1].session.is_complete(id)));
        assert_eq!(w.data(l), data);
        // 200,000 bytes hold 12 whole pieces of 16 KiB; piece 1 is damaged.
        let checked = w.nodes[l].events.iter().find_map(|e| match e {
            Event::Checked { have, .. } => Some(*have),
            _ => None,
        });
        assert_eq!(checked, Some(11), "driver_hashes {driver_hashes}");
        let got = w.nodes[l].session.stats(id).unwrap().downloaded;
        assert_eq!(got, 400_000 - 11 * 16384, "driver_hashes {driver_hashes}");
    }
}

#[test]
fn a_starved_leecher_reannounces_early_within_min_interval_and_backs_off() {
    let (_, info) = make_torrent(100_000, 16384, 4);
    let mut w = World::new();
    w.tracker.empty = true;
    w.tracker.min_interval = Some(60);
    let l = w.node(true, false, (Vec::new(), Prefill::Empty));
    let id = w.add(l, Some(&info), &[TRACKER]);
    w.run_until(3_600_000, |_| false);
    let times: Vec<u64> = w.announces(l).iter().map(|(t, _)| *t).collect();
    let gaps: Vec<u64> = times.windows(2).map(|p| p[1] - p[0]).collect();
    // Much sooner than the 1800 s interval at first, never sooner than `min interval`, and
    // less and less often.
    assert!(gaps[0] <= 61_000, "{gaps:?}");
    assert!(gaps.iter().all(|g| *g >= 60_000), "{gaps:?}");
    assert!(gaps.windows(2).all(|p| p[1] >= p[0]), "{gaps:?}");
    assert!(
        times.len() <= 12,
        "{} announces in an hour: {gaps:?}",
        times.len()
    );
    let st = w.nodes[l].session.status(w.now, id).unwrap();
    assert_eq!(
        st.warning.as_deref(),
        Some("No peers: the trackers returned none")
    );
    assert!(st.stalled_ms >= 3_500_000, "{}", st.stalled_ms);
}

#[test]
fn a_seed_dials_the_leechers_it_learns_of() {
    let (data, info) = make_torrent(200_000, 16384, 5);
    let mut w = World::new();
    // The leecher announces first and hears of nobody; it takes incoming connections only.
    let l = w.node(true, false, (Vec::new(), Prefill::Empty));
    let s = w.node(false, false, (data.clone(), Prefill::Complete));
    let id = w.add(l, Some(&info), &[TRACKER]);
    w.settle();
    w.add(s, Some(&info), &[TRACKER]);
    assert!(w.run_until(20_000, |w| w.nodes[0].session.is_complete(id)));
    assert_eq!(w.data(l), data);
}

#[test]
fn pause_closes_connections_and_stops_announcing_until_resume() {
    let (mut w, _, info) = seeder_and_leecher(false);
    let id = info.info_hash;
    // Connected, and not a byte received yet.
    w.nodes[1].session.handle_timeout(0);
    while let Some(a) = w.nodes[1].session.poll_action() {
        w.act(1, a);
    }
    assert!(!w.links.is_empty());
    w.nodes[1].session.pause(0, id);
    w.settle();
    assert!(w.links.is_empty());
    let before = w.announces(1).len();
    w.run_until(4 * 3_600_000, |_| false);
    assert_eq!(w.announces(1).len(), before, "announced while paused");
    let st = w.nodes[1].session.status(w.now, id).unwrap();
    assert_eq!(
        (st.state, st.warning.as_deref(), st.stalled_ms),
        (State::Paused, None, 0)
    );
    let now = w.now;
    w.nodes[1].session.resume(now, id);
    assert!(w.run_until(now + 60_000, |w| w.nodes[1].session.is_complete(id)));
}

#[test]
fn storage_that_cannot_open_fails_the_torrent_with_the_reason() {
    let (_, info) = make_torrent(100_000, 16384, 6);
    let mut s = Session::new(Config::default(), PeerId([1; 20]), 1);
    let add = AddTorrent {
        info_hash: info.info_hash,
        info: Some(info.clone()),
        trackers: vec![vec![TRACKER.into()]],
        peers: Vec::new(),
        name: None,
        paused: false,
    };
    let id = s.add(0, add.clone()).unwrap();
    assert_eq!(s.add(0, add), Err(AddError::Duplicate));
    assert!(matches!(s.poll_action(), Some(Action::OpenStorage { torrent }) if torrent == id));
    s.handle_storage(0, id, Err("disk full".into()));
    assert_eq!(
        s.poll_event(),
        Some(Event::Failed {
            torrent: id,
            error: "disk full".into()
        })
    );
    let st = s.status(0, id).unwrap();
    assert_eq!(
        (st.state, st.error.as_deref()),
        (State::Failed, Some("disk full"))
    );
    s.handle_timeout(100_000);
    assert!(
        s.poll_action().is_none(),
        "a failed torrent announces nothing"
    );
}

#[test]
fn a_lone_seed_sleeps_until_its_next_announce() {
    let (data, info) = make_torrent(100_000, 16384, 7);
    let mut w = World::new();
    let s = w.node(true, false, (data, Prefill::Complete));
    w.add(s, Some(&info), &[TRACKER]);
    w.settle();
    assert_eq!(w.announces(s).len(), 1);
    assert_eq!(w.nodes[s].session.poll_timeout(), Some(1_800_000));
    let mut w = World::new();
    let s = w.node(true, false, (Vec::new(), Prefill::Complete));
    let (_, info) = make_torrent(100_000, 16384, 8);
    w.add(s, Some(&info), &[]);
    w.settle();
    assert_eq!(
        w.nodes[s].session.poll_timeout(),
        None,
        "nothing to wait for"
    );
}

/// Whether `bytes` (a KRPC datagram) names `id`, as get_peers and announce_peer do.
fn names(bytes: &[u8], id: InfoHash) -> bool {
    bytes.windows(20).any(|w| w == id.0)
}

#[test]
fn a_magnet_with_no_tracker_finds_its_seeder_through_the_dht_and_completes() {
    let (data, info) = make_torrent(300_000, 16384, 7);
    let id = info.info_hash;
    let mut w = World::new();
    // A session that only serves the DHT, a seeder and the magnet's session join through it.
    let relay = w.dht_node((Vec::new(), Prefill::Empty), &[]);
    let s = w.dht_node((data.clone(), Prefill::Complete), &[relay]);
    w.add(s, Some(&info), &[]);
    assert!(w.run_until(10_000, |w| w.nodes[s].session.dht_node_count() > Some(0)));
    let l = w.dht_node((Vec::new(), Prefill::Empty), &[relay]);
    let add = AddTorrent {
        info_hash: id,
        info: None,
        trackers: Vec::new(),
        peers: Vec::new(),
        name: None,
        paused: false,
    };
    let now = w.now;
    w.nodes[l].session.add(now, add).unwrap();
    let start = w.now;
    // The seeder announced its port once it met the relay; the magnet's lookup finds it.
    assert!(w.run_until(start + 120_000, |w| w.nodes[l].session.is_complete(id)));
    assert!(
        w.now - start < STARVED_LOOKUP_EVERY_MS,
        "took {} ms",
        w.now - start
    );
    w.settle();
    assert_eq!(w.data(l), data);
    assert!(w.tracker.log.is_empty());
    let mut found = Vec::new();
    while let Some(ev) = w.nodes[l].session.poll_dht_event() {
        found.push(ev);
    }
    assert!(
        found.contains(&DhtEvent::Peers {
            torrent: id,
            peers: 1
        }),
        "{found:?}"
    );
    assert!(w.nodes[l].session.dht_node_count() >= Some(2));
    let (_, table) = w.nodes[l].session.dht_nodes().unwrap();
    assert!(table.iter().any(|(_, a)| *a == World::addr_of(s)));

    // Looked up again later, bounded: a few lookups in half an hour, not a flood.
    let sent_before = w.datagrams.iter().filter(|(n, ..)| *n == l).count();
    let until = w.now + 30 * 60_000;
    w.run_until(until, |_| false);
    let sent = w.datagrams.iter().filter(|(n, ..)| *n == l).count() - sent_before;
    assert!(sent > 0 && sent < 400, "{sent} datagrams in 30 min");
}

#[test]
fn a_private_torrent_never_queries_the_dht() {
    let (data, mut info) = make_torrent(100_000, 16384, 8);
    info.private = true;
    let id = info.info_hash;
    let mut w = World::new();
    let relay = w.dht_node((Vec::new(), Prefill::Empty), &[]);
    let s = w.dht_node((data, Prefill::Complete), &[relay]);
    let l = w.dht_node((Vec::new(), Prefill::Empty), &[relay]);
    w.add(s, Some(&info), &[]);
    w.add(l, Some(&info), &[]);
    w.run_until(60 * 60_000, |_| false);
    assert!(w.nodes[l].session.dht_node_count() > Some(0));
    assert!(!w.datagrams.is_empty());
    assert!(
        !w.datagrams.iter().any(|(_, _, b)| names(b, id)),
        "a datagram named the private torrent"
    );
    assert!(!w.nodes[l].session.is_complete(id));
}

#[test]
fn a_magnet_whose_metadata_says_private_stops_using_the_dht_and_never_announces() {
    let mut b =
        crate::metainfo::InfoBuilder::new("private", vec![(Vec::new(), 100_000)], 16384, true);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    b.update(&data);
    let info = b.finish();
    assert!(info.private);
    let id = info.info_hash;
    let mut w = World::new();
    let relay = w.dht_node((Vec::new(), Prefill::Empty), &[]);
    let s = w.dht_node((data.clone(), Prefill::Complete), &[relay]);
    w.add(s, Some(&info), &[]);
    assert!(w.run_until(10_000, |w| w.nodes[s].session.dht_node_count() > Some(0)));
    let l = w.dht_node((Vec::new(), Prefill::Empty), &[relay]);
    // Privacy is unknown until the metadata: the magnet may look up, but never announce.
    let add = AddTorrent {
        info_hash: id,
        info: None,
        trackers: Vec::new(),
        peers: vec![(World::addr_of(s), PeerSource::Magnet)],
        name: None,
        paused: false,
    };
    let now = w.now;
    w.nodes[l].session.add(now, add).unwrap();
    assert!(w.run_until(w.now + 60_000, |w| w.nodes[l].session.is_complete(id)));
    assert_eq!(w.data(l), data);
    let done = w.datagrams.len();
    let until = w.now + 60 * 60_000;
    w.run_until(until, |_| false);
    assert!(w.datagrams.len() > done, "the DHT went quiet");
    let announce = |b: &[u8]| names(b, id) && b.windows(13).any(|x| x == b"announce_peer");
    assert!(!w.datagrams.iter().any(|(_, _, b)| announce(b)));
    assert!(!w.datagrams[done..].iter().any(|(_, _, b)| names(b, id)));
    assert!(!w.datagrams.iter().any(|(n, _, b)| *n == s && names(b, id)));
}
