#!/usr/bin/python3
"""python3-libtorrent DHT nodes on 127.0.0.1, the last of which downloads a magnet found through
the DHT alone, for the test of `bridge seed` on the DHT.

Run with Debian's /usr/bin/python3: that is the interpreter the python3-libtorrent package serves.

  lt_dht_leech.py --dir DIR [--nodes N]

The nodes know each other through add_dht_node (settings as lt_dht.py). No tracker, LSD, UPnP or
uTP. Once their routing tables are full the script prints the ready line, then waits for a file
DIR/want holding an info-hash in hex; the last node then adds `magnet:?xt=urn:btih:HEX` (no
tracker, no peer) saving into DIR/dl. JSON lines on stdout:

  {"event":"ready","ports":[...]}
  {"event":"announce","node":I,"info_hash":HEX,"peer":"IP:PORT"}   every announce_peer taken
  {"event":"peer","addr":"IP:PORT","dht":BOOL}                     each peer the downloader meets
  {"event":"complete","info_hash":HEX}                             the download is complete

Runs until killed.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lt_dht import emit, settings  # noqa: E402

import libtorrent as lt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
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

    want = os.path.join(args.dir, "want")
    counts = [0] * len(sessions)
    ready = False
    handle = None
    seen = set()
    done = False
    next_tick = 0.0
    while True:
        for i, s in enumerate(sessions):
            for a in s.pop_alerts():
                if isinstance(a, lt.dht_stats_alert):
                    counts[i] = sum(b["num_nodes"] for b in a.routing_table)
                elif isinstance(a, lt.dht_announce_alert):
                    emit(event="announce", node=i, info_hash=str(a.info_hash),
                         peer="%s:%d" % (a.ip, a.port))
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + 0.25
            for s in sessions:
                s.post_dht_stats()
            if not ready and all(c >= len(sessions) - 1 for c in counts):
                ready = True
                emit(event="ready", ports=ports)
            if ready and handle is None and os.path.exists(want):
                with open(want) as f:
                    ih = f.read().strip()
                if len(ih) == 40:
                    atp = lt.parse_magnet_uri("magnet:?xt=urn:btih:" + ih)
                    atp.save_path = os.path.join(args.dir, "dl")
                    handle = sessions[-1].add_torrent(atp)
            if handle is not None:
                for p in handle.get_peer_info():
                    addr = "%s:%d" % tuple(p.ip)
                    if addr not in seen:
                        seen.add(addr)
                        emit(event="peer", addr=addr, dht=bool(p.source & lt.peer_info.dht))
                if not done and handle.status().is_seeding:
                    done = True
                    emit(event="complete", info_hash=str(handle.info_hash()))
        sessions[-1].wait_for_alert(50)


if __name__ == "__main__":
    main()
