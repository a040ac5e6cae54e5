//! Our DHT node (protocol's sans-IO `Dht`) over a real UDP socket, against three
//! python3-libtorrent DHT nodes on 127.0.0.1: it bootstraps from one of them, finds the seeder
//! through get_peers, and announces a port that libtorrent's own dht_get_peers then finds.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use protocol::dht::{Config, Dht, Event};
use tests::data::temp_dir;
use tests::lt_dht::LtDht;
use tests::net::free_port;
use tests::InfoHash;

/// Our node and its socket, on a clock that starts with it.
struct Node {
    dht: Dht,
    socket: UdpSocket,
    start: Instant,
    events: Vec<Event>,
}

impl Node {
    fn new(seed: u64) -> Node {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        Node {
            dht: Dht::new(Config::default(), seed),
            socket,
            start: Instant::now(),
            events: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// One turn of the loop: send what is due, wait for a datagram until the next deadline (at
    /// most `max_wait`), feed it and the time in, and collect the events.
    fn turn(&mut self, max_wait: Duration) {
        while let Some((to, bytes)) = self.dht.poll_transmit() {
            // A refused send (ICMP from a closed port) is the DHT's loss to notice.
            let _ = self.socket.send_to(&bytes, to);
        }
        let now = self.now();
        let wait = self
            .dht
            .poll_timeout()
            .map_or(max_wait, |t| Duration::from_millis(t.saturating_sub(now)))
            .clamp(Duration::from_millis(1), max_wait);
        self.socket
            .set_read_timeout(Some(wait))
            .expect("set a read timeout");
        let mut buf = [0u8; 65_536];
        match self.socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let now = self.now();
                self.dht.handle_datagram(now, from, &buf[..n]);
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ),
                "recv_from: {e}"
            ),
        }
        let now = self.now();
        if self.dht.poll_timeout().is_some_and(|t| t <= now) {
            self.dht.handle_timeout(now);
        }
        while let Some(e) = self.dht.poll_event() {
            self.events.push(e);
        }
    }

    /// Runs the loop until `f` gives a value; panics with `what` after `timeout`.
    fn run_until<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&mut Node) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; events: {:?}",
                self.events
            );
            self.turn(Duration::from_millis(50));
        }
    }

    fn peers_found(&self, info_hash: InfoHash) -> Vec<SocketAddr> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Peers {
                    info_hash: h,
                    peers,
                } if *h == info_hash => Some(peers.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn lookups_done(&self, info_hash: InfoHash) -> Vec<usize> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::LookupDone {
                    info_hash: h,
                    announced,
                } if *h == info_hash => Some(*announced),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn our_dht_node_finds_a_libtorrent_seeder_and_libtorrent_finds_our_announce() {
    let dir = temp_dir("dht");
    let mut rng = fastrand::Rng::with_seed(0xd47);
    let mut ours = [0u8; 20];
    rng.fill(&mut ours);
    let ours = InfoHash(ours);
    let lt = LtDht::start(dir.path(), ours);
    let seeder = lt.addr(0);

    // Bootstrap from a node that is not the seeder: the rest must come from its answers.
    let mut node = Node::new(rng.u64(..));
    let now = node.now();
    node.dht.bootstrap(now, &[lt.addr(1)]);
    let nodes = node.run_until(Duration::from_secs(20), "the bootstrap", |n| {
        n.events.iter().find_map(|e| match e {
            Event::Bootstrapped { nodes } => Some(*nodes),
            _ => None,
        })
    });
    assert!(nodes >= 1, "bootstrapped with {nodes} nodes");
    node.run_until(Duration::from_secs(20), "all three libtorrent nodes", |n| {
        (n.dht.node_count() >= 3).then_some(())
    });

    // get_peers finds the seeder's listen address. Lookups are retried until then, in case
    // the first ran before every node had taken the seeder's announce.
    let now = node.now();
    node.dht.get_peers(now, lt.info_hash);
    node.run_until(
        Duration::from_secs(30),
        "the seeder through get_peers",
        |n| {
            if n.peers_found(lt.info_hash).contains(&seeder) {
                return Some(());
            }
            if !n.lookups_done(lt.info_hash).is_empty() {
                n.events.retain(|e| !matches!(e, Event::LookupDone { .. }));
                let now = n.now();
                n.dht.get_peers(now, lt.info_hash);
            }
            None
        },
    );

    // Libtorrent takes our node into its routing tables: it answered their queries.
    node.run_until(
        Duration::from_secs(30),
        "libtorrent to list our node",
        |_| (lt.max_table() >= 3).then_some(()),
    );

    // We announce a port for another info-hash; libtorrent's nodes take it (they checked the
    // tokens they gave us) and node 1's own dht_get_peers finds it.
    let port = free_port();
    let announced = SocketAddr::from(([127, 0, 0, 1], port));
    let now = node.now();
    node.dht.announce(now, ours, Some(port));
    let sent = node.run_until(Duration::from_secs(30), "our announce", |n| {
        n.lookups_done(ours).first().copied()
    });
    assert!(sent >= 2, "announce_peer went to {sent} nodes");
    node.run_until(
        Duration::from_secs(30),
        "libtorrent to take our announce",
        |_| lt.took_announce(ours, announced).then_some(()),
    );
    node.run_until(
        Duration::from_secs(30),
        "libtorrent's dht_get_peers to find our port",
        |_| lt.found(announced).then_some(()),
    );
}
