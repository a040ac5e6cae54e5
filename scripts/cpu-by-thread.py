#!/usr/bin/env python3
"""Where the CPU goes during bench_tab: samples every thread's CPU time from /proc every 0.25 s
until interrupted (SIGINT or SIGTERM), then writes to OUT, for each Web Worker thread that was busy
for at least 3 s, the CPU seconds of every group of threads over that Worker's busy span.

    python3 scripts/cpu-by-thread.py /tmp/cpu.txt & sampler=$!
    cargo run --release -p tests --bin bench_tab -- --runs 1
    kill $sampler; wait $sampler; cat /tmp/cpu.txt

Workers are shown by thread id with user (u) and system (s) time apart; a tab run shows two, the
engine's Worker and the sockets' Worker, with the same span. `idle` is idle time summed over all
cores. Linux only; it reads nothing but /proc.
"""

import collections
import os
import signal
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
PERIOD = 0.25


def group(cmd, comm):
    """A name for the thread `comm` of the process whose command line is `cmd`."""
    if "lt_peer" in cmd:
        return "seeder"
    if "bridge" in cmd and " serve" in cmd:
        return "bridge"
    if "bridge" in cmd and " download" in cmd:
        return "bridge download"
    if "chromedriver" in cmd:
        return "chromedriver"
    if "bench_tab" in cmd:
        return "bench_tab"
    if "chrom" in cmd:
        kind = next((a[7:] for a in cmd.split() if a.startswith("--type=")), "browser")
        if kind == "renderer":
            return "worker" if comm.startswith("DedicatedWorker") else "renderer " + comm
        if kind == "utility":
            return "network service" if "network" in cmd.lower() else "utility"
        return kind
    return "other"


def snapshot(cmds):
    """{(group, tid): (user s, system s)} of every thread, and the idle seconds of all cores."""
    cpu = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if pid not in cmds:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmds[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            key = (group(cmds[pid], comm), tid)
            cpu[key] = (int(fields[11]) / HZ, int(fields[12]) / HZ)
    with open("/proc/stat") as f:
        total = f.readline().split()[1:]
    return cpu, (int(total[3]) + int(total[4])) / HZ


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    cmds, samples = {}, []
    while not stop:
        samples.append((time.time(), *snapshot(cmds)))
        time.sleep(PERIOD)

    # Each Worker's busy span: the first to the last sample in which it used CPU.
    spans = collections.OrderedDict()
    for k in range(1, len(samples)):
        before, after = samples[k - 1][1], samples[k][1]
        for (name, tid), (u, s) in after.items():
            old = before.get((name, tid), (0.0, 0.0))
            if name == "worker" and u + s - sum(old) > 0.02:
                spans.setdefault(tid, [k, k])[1] = k
    with open(sys.argv[1], "w") as out:
        for tid, (k0, k1) in spans.items():
            if (k1 - k0 + 1) * PERIOD < 3:
                continue
            (t0, a, idle0), (t1, b, idle1) = samples[k0 - 1], samples[k1]
            used = collections.Counter()
            for (name, t), (u, s) in b.items():
                ou, os_ = a.get((name, t), (0.0, 0.0))
                if name == "worker":
                    used[f"worker {t} u"] += u - ou
                    used[f"worker {t} s"] += s - os_
                else:
                    used[name] += u + s - ou - os_
            used["idle"] = idle1 - idle0
            shown = sorted(((v, n) for n, v in used.items() if v >= 0.05), reverse=True)
            out.write(f"worker {tid} busy for {t1 - t0:.1f} s: ")
            out.write(", ".join(f"{n} {v:.2f}" for v, n in shown) + "\n")


if __name__ == "__main__":
    main()
