//! Many of our nodes together: bootstrapping, finding each other's announces, and living on
//! when nodes die.

use super::{addr_of, Net};
use crate::dht::routing::{FRESH_MS, K};
use crate::dht::{Config, Dht, Event};
use crate::InfoHash;
use std::net::SocketAddr;

fn hash(b: u8) -> InfoHash {
    let mut rng = fastrand::Rng::with_seed(u64::from(b));
    let mut h = [0u8; 20];
    rng.fill(&mut h);
    InfoHash(h)
}

#[test]
fn bootstrap_from_one_node_fills_every_table() {
    let mut net = Net::new(30, 1);
    net.bootstrap_all(60_000);
    let counts: Vec<usize> = net.nodes.iter().flatten().map(Dht::node_count).collect();
    // Each node should know a good part of a network this small (a far bucket holds K).
    assert!(
        counts.iter().all(|&c| c >= K),
        "every table holds at least K nodes: {counts:?}"
    );
    assert!(
        counts[0] >= 20,
        "the node everyone came through met them: {counts:?}"
    );
    // After the first refreshes, nodes that joined early know those that came later.
    net.run_for(FRESH_MS + 60_000);
    let later: Vec<usize> = net.nodes.iter().flatten().map(Dht::node_count).collect();
    let total: usize = later.iter().sum();
    assert!(total >= counts.iter().sum(), "{counts:?} then {later:?}");
}

#[test]
fn a_peer_announced_by_one_node_is_found_by_another() {
    let mut net = Net::new(30, 2);
    net.bootstrap_all(60_000);
    let (h, implied) = (hash(1), hash(2));
    let now = net.now;
    net.node(5).announce(now, h, Some(7_000));
    net.node(6).announce(now, implied, None);
    let limit = net.now + 30_000;
    let announced = net.run_until(limit, |net| {
        net.lookup_done(5, h).is_some() && net.lookup_done(6, implied).is_some()
    });
    assert!(announced);
    assert!(
        net.lookup_done(5, h).unwrap() >= K / 2,
        "announced to {:?} nodes",
        net.lookup_done(5, h)
    );
    // Let the announce_peer queries arrive.
    net.run_for(1_000);

    let now = net.now;
    net.node(20).get_peers(now, h);
    net.node(21).get_peers(now, implied);
    let limit = net.now + 30_000;
    assert!(net.run_until(limit, |net| {
        net.lookup_done(20, h).is_some() && net.lookup_done(21, implied).is_some()
    }));
    let want: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    assert_eq!(
        net.peers_found(20, h),
        vec![want],
        "each peer reported once"
    );
    assert_eq!(
        net.peers_found(21, implied),
        vec![addr_of(6)],
        "implied_port"
    );
    assert_eq!(
        net.lookup_done(20, h),
        Some(0),
        "get_peers announces nothing"
    );
    assert!(net.peers_found(20, hash(3)).is_empty());
}

#[test]
fn nodes_that_die_time_out_turn_bad_and_lookups_still_end() {
    let mut net = Net::new(30, 3);
    net.bootstrap_all(60_000);
    let h = hash(4);
    let now = net.now;
    net.node(1).announce(now, h, Some(9_000));
    let limit = net.now + 30_000;
    assert!(net.run_until(limit, |net| net.lookup_done(1, h).is_some()));
    net.run_for(1_000);

    let dead: Vec<usize> = (10..20).collect();
    for &i in &dead {
        net.kill(i);
    }
    let dead_addrs: Vec<SocketAddr> = dead.iter().map(|&i| addr_of(i)).collect();
    // A lookup meets dead nodes: it waits out their timeouts and ends anyway.
    let now = net.now;
    net.node(25).get_peers(now, h);
    let start = net.now;
    let limit = net.now + 60_000;
    assert!(net.run_until(limit, |net| net.lookup_done(25, h).is_some()));
    assert!(net.now - start < 30_000, "took {} ms", net.now - start);
    assert!(net
        .peers_found(25, h)
        .contains(&"127.0.0.1:9000".parse().unwrap()));

    // Two rounds of bucket refreshes query every node in every table at least twice.
    net.run_for(2 * FRESH_MS + 120_000);
    for (i, node) in net.nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        let kept: Vec<_> = node
            .export_nodes()
            .into_iter()
            .filter(|(_, a)| dead_addrs.contains(a))
            .collect();
        assert!(kept.is_empty(), "node {i} still holds dead nodes {kept:?}");
        assert!(node.node_count() >= K, "node {i}: {}", node.node_count());
        assert_eq!(node.rpc.len(), 0, "nothing left in flight once quiet");
    }
}

#[test]
fn a_saved_table_brings_a_restarted_node_back_without_bootstrap() {
    let mut net = Net::new(20, 4);
    net.bootstrap_all(60_000);
    let saved = net.node(7).export_nodes();
    let id = net.node(7).id();
    assert_eq!(saved.len(), net.node(7).node_count());
    // The same id, a fresh state: like a driver restarting with what it saved.
    let config = Config {
        id: Some(id),
        ..Config::default()
    };
    net.nodes[7] = Some(Dht::new(config, 99));
    assert_eq!(net.node(7).node_count(), 0);
    let now = net.now;
    net.node(7).import_nodes(now, &saved);
    assert_eq!(net.node(7).node_count(), saved.len());
    net.events[7].clear();
    let limit = net.now + 30_000;
    assert!(net.run_until(limit, |net| net.events[7]
        .iter()
        .any(|e| matches!(e, Event::Bootstrapped { .. }))));
    assert!(net.node(7).node_count() >= K);
    assert_eq!(net.node(7).id(), id);
}

#[test]
fn lookups_past_the_limit_end_at_once() {
    let config = Config {
        max_lookups: 2,
        ..Config::default()
    };
    let mut net = Net::with_config(10, 5, config);
    net.bootstrap_all(60_000);
    let now = net.now;
    for b in 0..4 {
        net.node(3).get_peers(now, hash(b));
    }
    // The same info-hash again joins the running lookup.
    net.node(3).get_peers(now, hash(0));
    net.run_until(net.now, |_| false);
    let done_at_once: Vec<_> = net.events[3]
        .iter()
        .filter(|e| matches!(e, Event::LookupDone { .. }))
        .cloned()
        .collect();
    assert_eq!(done_at_once.len(), 2, "{done_at_once:?}");
    let limit = net.now + 30_000;
    assert!(
        net.run_until(limit, |net| net.lookup_done(3, hash(0)).is_some()
            && net.lookup_done(3, hash(1)).is_some())
    );
    let lookups = net.events[3]
        .iter()
        .filter(|e| matches!(e, Event::LookupDone { .. }))
        .count();
    assert_eq!(lookups, 4, "one LookupDone per info-hash");
}

#[test]
fn an_idle_node_has_no_deadline_and_a_lonely_one_retries_its_bootstrap() {
    let mut d = Dht::new(Config::default(), 1);
    assert_eq!(d.poll_timeout(), None);
    assert_eq!(d.poll_transmit(), None);
    d.bootstrap(1_000, &[addr_of(0)]);
    let (to, _) = d
        .poll_transmit()
        .expect("a find_node to the bootstrap node");
    assert_eq!(to, addr_of(0));
    assert_eq!(d.poll_timeout(), Some(4_000), "the query's timeout");
    d.handle_timeout(4_000);
    assert_eq!(
        d.poll_event(),
        Some(Event::Bootstrapped { nodes: 0 }),
        "nobody answered"
    );
    assert_eq!(
        d.poll_timeout(),
        Some(61_000),
        "bootstrap again in a minute"
    );
    d.handle_timeout(61_000);
    assert!(d.poll_transmit().is_some());
}
