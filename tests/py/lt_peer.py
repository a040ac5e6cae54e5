#!/usr/bin/python3
"""A python3-libtorrent peer for the end-to-end tests, driven from the command line.

Run with Debian's /usr/bin/python3: that is the interpreter the python3-libtorrent package serves.

  lt_peer.py create --path P --out FILE [--piece-length N] [--tracker URL ...]
      Builds a v1-only .torrent of a file or folder (libtorrent's own create_torrent, so the format
      comes from a real program) and prints one JSON line: info_hash, name, total_size, num_pieces,
      piece_length, magnet.

  lt_peer.py info --torrent FILE
      Prints the same JSON line for an existing .torrent file.

  lt_peer.py run (--torrent FILE | --magnet URI) --save DIR [--port N] [--upload-limit B/s]
                 [--download-limit B/s] [--peer IP:PORT ...] [--exit-when-finished] [--seed-mode]
                 [--bind IP] [--block IP ...]
      Seeds or leeches on 127.0.0.1 (or --bind IP, e.g. another loopback address: Linux routes all
      of 127/8 to lo) until killed (or until finished with --exit-when-finished). --block keeps
      every connection to or from that address out (libtorrent's ip_filter), even to peers it
      learns through PEX.
      Prints JSON lines on stdout: {"event":"listening","port":N} once, {"event":"status",...} every
      200 ms, {"event":"finished"} when every piece is verified and written to disk,
      {"event":"error",...} on errors, and with --block {"event":"blocked","peer":"IP:PORT"} for
      each connection it refused.

Everything a test waits on is a line on stdout, flushed at once.
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


def create(args):
    fs = lt.file_storage()
    path = os.path.abspath(args.path)
    lt.add_files(fs, path)
    if fs.num_files() == 0:
        sys.exit("error: nothing to put in a torrent at " + path)
    # v1_only: libtorrent 2.0 makes hybrid v1+v2 torrents (with pad files) by default.
    ct = lt.create_torrent(fs, args.piece_length, flags=lt.create_torrent.v1_only)
    for tier, url in enumerate(args.tracker):
        ct.add_tracker(url, tier)
    ct.set_creator("lt_peer.py")
    lt.set_piece_hashes(ct, os.path.dirname(path))
    data = lt.bencode(ct.generate())
    with open(args.out, "wb") as f:
        f.write(data)
    describe(lt.torrent_info(data))


def info(args):
    describe(lt.torrent_info(args.torrent))


def describe(ti):
    emit(
        event="created",
        info_hash=str(ti.info_hashes().v1),
        name=ti.name(),
        total_size=ti.total_size(),
        num_pieces=ti.num_pieces(),
        piece_length=ti.piece_length(),
        magnet=lt.make_magnet_uri(ti),
    )


def session(args):
    settings = {
        "listen_interfaces": "%s:%d" % (args.bind, args.port),
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # libtorrent tries uTP first; the bridge speaks TCP only.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Every peer in a test is 127.0.0.1.
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.storage
        | lt.alert_category.tracker
        | lt.alert_category.peer,
        "user_agent": "lt_peer.py/libtorrent " + lt.__version__,
    }
    if args.block:
        # Each refused connection becomes a peer_blocked_alert: {"event":"blocked",...}.
        settings["alert_mask"] |= lt.alert_category.ip_block
    ses = lt.session(settings)
    if args.block:
        f = lt.ip_filter()
        for ip in args.block:
            f.add_rule(ip, ip, 1)  # 1: blocked
        ses.set_ip_filter(f)
    return ses


def add_torrent(ses, args):
    if args.torrent:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(args.torrent)
    else:
        params = lt.parse_magnet_uri(args.magnet)
    params.save_path = os.path.abspath(args.save)
    flags = params.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    if args.seed_mode:
        flags |= lt.torrent_flags.seed_mode
    params.flags = flags
    handle = ses.add_torrent(params)
    # A per-torrent limit applies to loopback peers too; the session-wide limits skip the local
    # peer class, and every peer in a test is local.
    if args.upload_limit:
        handle.set_upload_limit(args.upload_limit)
    if args.download_limit:
        handle.set_download_limit(args.download_limit)
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        handle.connect_peer((host.strip("[]"), int(port)))
    return handle


def run(args):
    ses = session(args)
    handle = None
    listening = False
    # libtorrent reports a torrent finished once every piece is verified, which can be before its
    # disk threads have written the last blocks: a test that compares the files then would read
    # holes. "finished" is emitted only after flush_cache(), a fence behind every pending write.
    finished = False
    flushed = False
    next_status = 0.0
    while True:
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert) and not listening:
                if a.socket_type == lt.socket_type_t.tcp:
                    listening = True
                    emit(event="listening", port=a.port)
                    handle = add_torrent(ses, args)
            elif isinstance(a, lt.listen_failed_alert):
                emit(event="error", what="listen", message=a.message())
                sys.exit(1)
            elif isinstance(a, lt.torrent_finished_alert) and not finished:
                finished = True
                handle.flush_cache()
            elif isinstance(a, lt.cache_flushed_alert) and finished and not flushed:
                flushed = True
                emit(event="finished")
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                emit(event="error", what=type(a).__name__, message=a.message())
            elif isinstance(a, (lt.tracker_error_alert, lt.tracker_reply_alert)):
                emit(event="tracker", message=a.message())
            elif isinstance(a, lt.metadata_received_alert):
                emit(event="metadata")
            elif isinstance(a, lt.peer_blocked_alert):
                emit(event="blocked", peer="%s:%d" % tuple(a.ip))
        now = time.monotonic()
        if handle is not None and now >= next_status:
            next_status = now + 0.2
            s = handle.status()
            emit(
                event="status",
                state=str(s.state),
                progress=s.progress,
                total_done=s.total_done,
                total_wanted=s.total_wanted,
                num_peers=s.num_peers,
                download_rate=s.download_rate,
                upload_rate=s.upload_rate,
                total_upload=s.total_upload,
                is_seeding=s.is_seeding,
            )
            if (s.is_seeding or s.is_finished) and s.has_metadata and not finished:
                # A seeder that checked complete files gets no torrent_finished_alert.
                finished = True
                handle.flush_cache()
        if flushed and args.exit_when_finished:
            return
        ses.wait_for_alert(100)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("create")
    c.add_argument("--path", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--piece-length", type=int, default=0)
    c.add_argument("--tracker", action="append", default=[])

    i = sub.add_parser("info")
    i.add_argument("--torrent", required=True)

    r = sub.add_parser("run")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--torrent")
    src.add_argument("--magnet")
    r.add_argument("--save", required=True)
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--upload-limit", type=int, default=0)
    r.add_argument("--download-limit", type=int, default=0)
    r.add_argument("--peer", action="append", default=[])
    r.add_argument("--exit-when-finished", action="store_true")
    r.add_argument("--seed-mode", action="store_true")
    r.add_argument("--bind", default="127.0.0.1")
    r.add_argument("--block", action="append", default=[])

    args = parser.parse_args()
    if args.command == "create":
        create(args)
    elif args.command == "info":
        info(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
