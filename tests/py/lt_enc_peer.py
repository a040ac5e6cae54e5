#!/usr/bin/python3
"""lt_peer.py with libtorrent's protocol encryption (MSE/PE) settings chosen on the command line.

Run with Debian's /usr/bin/python3, like lt_peer.py:

  lt_enc_peer.py run [--enc-policy forced|enabled|disabled] [--enc-level rc4|plaintext|both]
                     ...every option of `lt_peer.py run`...

--enc-policy sets both in_enc_policy and out_enc_policy (default forced: a peer that does not
speak MSE is refused), --enc-level sets allowed_enc_level (default rc4). prefer_rc4 is on. The
JSON lines on stdout are lt_peer.py's.
"""

import argparse
import os
import sys

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lt_peer  # noqa: E402  (found through the path set just above)

POLICIES = {
    "forced": lt.enc_policy.pe_forced,
    "enabled": lt.enc_policy.pe_enabled,
    "disabled": lt.enc_policy.pe_disabled,
}
LEVELS = {
    "rc4": lt.enc_level.pe_rc4,
    "plaintext": lt.enc_level.pe_plaintext,
    "both": lt.enc_level.pe_both,
}


def main():
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--enc-policy", choices=POLICIES, default="forced")
    parser.add_argument("--enc-level", choices=LEVELS, default="rc4")
    enc, rest = parser.parse_known_args(sys.argv[1:])
    sys.argv = [sys.argv[0]] + rest

    plain_session = lt_peer.session

    def session(args):
        # Applied before run() polls its first alert, so before any peer can connect.
        ses = plain_session(args)
        ses.apply_settings(
            {
                "in_enc_policy": int(POLICIES[enc.enc_policy]),
                "out_enc_policy": int(POLICIES[enc.enc_policy]),
                "allowed_enc_level": int(LEVELS[enc.enc_level]),
                "prefer_rc4": True,
            }
        )
        return ses

    lt_peer.session = session
    lt_peer.main()


if __name__ == "__main__":
    main()
