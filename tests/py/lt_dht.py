#!/usr/bin/python3
"""Three python3-libtorrent DHT nodes on 127.0.0.1, one of them seeding, for the DHT interop test.

Run with Debian's /usr/bin/python3: that is the interpreter the python3-libtorrent package serves.

  lt_dht.py --dir DIR --watch HEX [--nodes N]

Each node listens on 127.0.0.1 with a port the kernel picks (its DHT uses the same UDP port).
The nodes know each other through add_dht_node (not dht_bootstrap_nodes: libtorrent never puts a
"router" in its routing table). Node 0 seeds a fresh v1-only torrent of a random file in DIR.
No tracker, LSD, UPnP or uTP. Prints JSON lines on stdout, flushed at once:

  {"event":"ready","ports":[...],"info_hash":HEX}
      once the routing tables are full and another node has taken node 0's announce;
  {"event":"nodes","counts":[...]}
      each node's routing table size, whenever one changes;
  {"event":"announce","node":I,"info_hash":HEX,"peer":"IP:PORT"}
      for every announce_peer node I accepted (libtorrent checked its token);
  {"event":"peers","info_hash":HEX,"peers":["IP:PORT",...]}
      for each reply to the dht_get_peers that node 1 sends for --watch, every second after ready.

Runs until killed.
"""

import argparse
import json
import os
import sys
import time

import libtorrent as lt


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def settings():
    return {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        # Every node is 127.0.0.1: without this a routing table holds one node per IP.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_block_ratelimit": 10000,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.dht
        | lt.alert_category.dht_operation
        | lt.alert_category.status
        | lt.alert_category.error
        | lt.alert_category.stats,
    }


def make_torrent(folder):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "f.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
    fs = lt.file_storage()
    lt.add_files(fs, path)
    # libtorrent 2.0 makes hybrid v1+v2 torrents by default, announced under two hashes.
    ct = lt.create_torrent(fs, 0, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, folder)
    return lt.torrent_info(ct.generate())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--watch", required=True)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()

    sessions = [lt.session(settings()) for _ in range(args.nodes)]
    deadline = time.monotonic() + 30
    while any(s.listen_port() == 0 for s in sessions):
        if time.monotonic() > deadline:
            sys.exit("error: a session did not listen")
        time.sleep(0.05)
    ports = [s.listen_port() for s in sessions]
    for s in sessions:
        for p in ports:
            if p != s.listen_port():
                s.add_dht_node(("127.0.0.1", p))

    seed = os.path.join(args.dir, "seed")
    ti = make_torrent(seed)
    info_hash = str(ti.info_hashes().v1)
    handle = sessions[0].add_torrent({"ti": ti, "save_path": seed})
    watch = lt.sha1_hash(bytes.fromhex(args.watch))

    counts = [0] * len(sessions)
    shown = None
    ready = False
    next_tick = 0.0
    next_announce = 0.0
    while True:
        for i, s in enumerate(sessions):
            for a in s.pop_alerts():
                if isinstance(a, lt.dht_stats_alert):
                    counts[i] = sum(b["num_nodes"] for b in a.routing_table)
                elif isinstance(a, lt.dht_announce_alert):
                    ih = str(a.info_hash)
                    emit(event="announce", node=i, info_hash=ih, peer="%s:%d" % (a.ip, a.port))
                    if ih == info_hash and i != 0 and a.port == ports[0] and not ready:
                        ready = True
                        emit(event="ready", ports=ports, info_hash=info_hash)
                elif isinstance(a, lt.dht_get_peers_reply_alert):
                    if a.info_hash == watch:
                        peers = ["%s:%d" % tuple(p) for p in a.peers()]
                        emit(event="peers", info_hash=args.watch, peers=peers)
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + 0.5
            for s in sessions:
                s.post_dht_stats()
            if counts != shown:
                shown = list(counts)
                emit(event="nodes", counts=shown)
            if ready:
                sessions[1].dht_get_peers(watch)
        # The seeder announces by itself at start, maybe before its table is full; once it is,
        # ask again until another node has taken the announce.
        full = all(c >= len(sessions) - 1 for c in counts)
        if not ready and full and handle.status().is_seeding and now >= next_announce:
            next_announce = now + 2
            handle.force_dht_announce()
        sessions[0].wait_for_alert(50)


if __name__ == "__main__":
    main()
