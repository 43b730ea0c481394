"""Worker killed -> avatar back in the room: repeated SIGKILLs of the serving worker, with the
real livekit-server, Redis, two avatar workers and a router (heartbeat TTL 3 s, reconcile every
second). After each kill the dead worker is restarted under the same id (a new epoch).

    .venv/bin/python -m benchmarks.failover [--kills 6]

Writes benchmarks/results/failover.json and .png, naming the machine.
"""

from __future__ import annotations

import argparse
import asyncio

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402
from config.logs import setup_logging  # noqa: E402
from scripts.failover import TTL_ENV, kill_and_time_recovery  # noqa: E402
from scripts.servers import (  # noqa: E402
    AvatarWorkerProcess,
    LiveKitServer,
    RedisServer,
    RouterProcess,
)


async def run(kills: int) -> dict:
    rows = []
    with RedisServer() as redis, LiveKitServer() as lk:
        def worker(wid: str) -> AvatarWorkerProcess:
            return AvatarWorkerProcess(lk, redis.url, wid, capacity=2, extra_env=TTL_ENV).start()

        workers = {w: worker(w) for w in ("fo-a", "fo-b")}
        with RouterProcess(lk, redis.url, extra_env=TTL_ENV) as router:
            for i in tqdm(range(kills), desc="kills"):
                r = await kill_and_time_recovery(router, workers, f"fo-{i}")
                rows.append(r)
                workers[r["killed"]].stop()
                workers[r["killed"]] = worker(r["killed"])  # back, under a new epoch
        for w in workers.values():
            w.stop()
    secs = np.array([r["seconds"] for r in rows])
    return {"benchmark": "failover", "machine": machine(), "heartbeat_ttl_s": 3,
            "reconcile_interval_s": 1, "kills": rows,
            "seconds_p50": round(float(np.percentile(secs, 50)), 2),
            "seconds_p99": round(float(np.percentile(secs, 99)), 2),
            "goal": {"seconds_p99": 10}}


def plot(p: dict) -> None:
    secs = [r["seconds"] for r in p["kills"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(secs)), secs, color="#1f77b4")
    ax.axhline(10, ls="--", c="gray", lw=1, label="goal p99 10 s")
    ax.axhline(p["seconds_p50"], c="k", lw=1, label=f"p50 {p['seconds_p50']} s")
    ax.set(title="worker killed -> avatar back in the room", xlabel="kill", ylabel="s")
    ax.legend()
    fig.suptitle(machine_label(p["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "failover.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=6)
    args = ap.parse_args()
    setup_logging("warning", "console")
    payload = asyncio.run(run(args.kills))
    write_json("failover", payload)
    plot(payload)
    for r in payload["kills"]:
        print(r)
    print("p50", payload["seconds_p50"], "s  p99", payload["seconds_p99"], "s")


if __name__ == "__main__":
    main()
