"""Delay and jitter where the kernel has no ``tc netem``: the UDP packets an iptables rule in a
network namespace sends to NFQUEUE are held here and let through after a drawn delay, in the
order they came (a later packet never overtakes an earlier one, so jitter bunches packets up as
on a real congested link, and nothing is reordered). Run inside the namespace whose packets it
delays (an NFQUEUE belongs to its namespace); :meth:`scripts.netns.Namespaces.delay` starts it.

    ip netns exec NS python -m scripts.netns_delay QUEUE DELAY_MS JITTER_MS [SEED]

Each packet waits ``DELAY_MS`` plus a half-normal draw of scale ``JITTER_MS`` (so the delay
varies between DELAY_MS and about DELAY_MS + 2.5 x JITTER_MS). On SIGTERM every held packet is
let through, and one JSON line with what was done goes to stdout.
"""

from __future__ import annotations

import collections
import json
import select
import signal
import sys
import time

import numpy as np
from netfilterqueue import COPY_META, NetfilterQueue


def main(queue: int, delay_ms: float, jitter_ms: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    held: collections.deque = collections.deque()  # (release time, packet), release times rising
    waits: list[float] = []
    last = 0.0
    stop = False

    def on_packet(pkt) -> None:
        nonlocal last
        now = time.monotonic()
        due = max(now + (delay_ms + abs(rng.normal(0.0, jitter_ms))) / 1000, last)
        last = due
        held.append((due, pkt))
        waits.append(due - now)

    def on_term(*_a) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    nfq = NetfilterQueue()
    nfq.bind(queue, on_packet, max_len=10000, mode=COPY_META)
    fd = nfq.get_fd()
    print(json.dumps({"ready": queue}), flush=True)
    try:
        while not stop:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.2
            try:
                readable, _, _ = select.select([fd], [], [], timeout)
            except InterruptedError:
                continue
            if readable:
                nfq.run(block=False)
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
    finally:
        while held:
            held.popleft()[1].accept()
        nfq.unbind()
    w = np.array(waits) * 1000 if waits else np.zeros(1)
    return {"queue": queue, "packets": len(waits), "delay_ms": delay_ms, "jitter_ms": jitter_ms,
            "wait_ms_p50": round(float(np.percentile(w, 50)), 1),
            "wait_ms_p99": round(float(np.percentile(w, 99)), 1)}


if __name__ == "__main__":
    args = sys.argv[1:]
    out = main(int(args[0]), float(args[1]), float(args[2]), int(args[3]) if len(args) > 3 else 0)
    print(json.dumps(out), flush=True)
