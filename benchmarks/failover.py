"""Worker faults -> avatar back in the room: repeated SIGKILLs and freezes (SIGSTOP past the
heartbeat ttl, then SIGCONT) of the serving worker, and restarts of LiveKit and of Redis (from
its append-only file), each down 5 s, with the real livekit-server, Redis, two avatar workers
and a router (heartbeat ttl 3 s, reconcile every second, disconnect grace 1.2 s); LiveKit
also down 30 s (``livekit_restart_long``). After each
kill the dead worker is restarted under the same id (a new epoch); a frozen worker is resumed
and must not take the room back.

    .venv/bin/python -m benchmarks.failover [--rounds 6]

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
from scripts.failover import (  # noqa: E402
    TTL_ENV,
    kill_and_time_recovery,
    server_fault_recovery,
)
from scripts.servers import (  # noqa: E402
    AvatarWorkerProcess,
    LiveKitServer,
    RedisServer,
    RouterProcess,
)

WORKER_FAULTS = ("kill", "freeze")
SERVER_FAULTS = ("livekit_restart", "livekit_restart_long", "redis_restart")
DOWN_S = {"livekit_restart": 5.0, "livekit_restart_long": 30.0, "redis_restart": 5.0}
FAULTS = WORKER_FAULTS + SERVER_FAULTS
GOAL_P99_S = 2.0  # issue 11: worker death -> avatar back, p99


def _stats(secs: list[float]) -> dict:
    a = np.array(secs)
    return {"n": len(secs), "seconds_p50": round(float(np.percentile(a, 50)), 2),
            "seconds_p99": round(float(np.percentile(a, 99)), 2),
            "seconds_max": round(float(a.max()), 2)}


async def _registered(workers: dict[str, AvatarWorkerProcess], limit_s: float) -> None:
    """Until every worker is registered with LiveKit again (after a LiveKit restart they
    reconnect on livekit-agents' backoff) and has heartbeaten."""
    await asyncio.sleep(2.0)
    deadline = asyncio.get_running_loop().time() + limit_s
    while asyncio.get_running_loop().time() < deadline:
        lines = {w: [x.get("event") for x in p.log_lines()] for w, p in workers.items()}
        if all(ev and max((i for i, e in enumerate(ev) if e == "registered worker"), default=-1)
               > max((i for i, e in enumerate(ev) if "failed to connect" in str(e)),
                     default=-1) for ev in lines.values()):
            return
        await asyncio.sleep(0.5)


async def run(rounds: int, faults: tuple[str, ...] = FAULTS) -> dict:
    rows = []
    with RedisServer() as redis, LiveKitServer() as lk:
        def worker(wid: str) -> AvatarWorkerProcess:
            return AvatarWorkerProcess(lk, redis.url, wid, capacity=2, extra_env=TTL_ENV).start()

        workers = {w: worker(w) for w in ("fo-a", "fo-b")}
        with RouterProcess(lk, redis.url, extra_env=TTL_ENV) as router:
            for i in tqdm(range(rounds * len(faults)), desc="faults"):
                fault = faults[i % len(faults)]
                if fault in WORKER_FAULTS:
                    r = await kill_and_time_recovery(router, workers, f"fo-{i}", fault=fault)
                else:
                    r = await server_fault_recovery(router, lk, redis, f"fo-{i}", fault,
                                                    down_s=DOWN_S[fault])
                rows.append(r)
                if fault == "kill":
                    workers[r["faulted"]] = worker(r["faulted"])  # back, under a new epoch
                else:  # the resumed worker heartbeats again; workers re-register with LiveKit
                    await _registered(workers, 30.0)
        for w in workers.values():
            w.stop()
    by_fault = {f: _stats([r["seconds"] for r in rows if r["fault"] == f]) for f in faults}
    if "freeze" in by_fault:
        by_fault["freeze"]["displaced"] = sum(bool(r.get("displaced")) for r in rows)
    if "redis_restart" in by_fault:
        redis_rows = [r for r in rows if r["fault"] == "redis_restart"]
        by_fault["redis_restart"]["same_worker_and_fence"] = sum(
            bool(r.get("same_worker_and_fence")) for r in redis_rows)
        by_fault["redis_restart"]["avatar_stayed"] = sum(bool(r.get("avatar_stayed"))
                                                         for r in redis_rows)
    return {"benchmark": "failover", "machine": machine(), "heartbeat_ttl_s": 3,
            "reconcile_interval_s": 1, "disconnect_grace_s": 1.2, "server_down_s": DOWN_S,
            "measures": {
                "kill": "SIGKILL of the serving worker -> its avatar back from the other worker",
                "freeze": "SIGSTOP of the serving worker -> avatar back from the other worker",
                "livekit_restart": "LiveKit back (after 5 s down) -> the re-joined learner "
                                   "has the avatar",
                "livekit_restart_long": "the same after 30 s down (livekit-agents' own "
                                        "reconnect backoff is 10 s by then)",
                "redis_restart": "Redis back from its AOF (after 5 s down) -> a join answers "
                                 "200 with the avatar live"},
            "rounds": rows, "by_fault": by_fault,
            "goal": {"kill_seconds_p99": GOAL_P99_S, "server_fault_seconds": 5.0}}


def plot(p: dict) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    faults = list(p["by_fault"])
    for j, f in enumerate(faults):
        secs = [r["seconds"] for r in p["rounds"] if r["fault"] == f]
        ax.scatter(np.full(len(secs), j) + np.linspace(-0.15, 0.15, len(secs)), secs, s=25,
                   label=f"{f}: p50 {p['by_fault'][f]['seconds_p50']} s, "
                         f"p99 {p['by_fault'][f]['seconds_p99']} s")
    ax.axhline(GOAL_P99_S, ls="--", c="gray", lw=1, label=f"goal (kill) p99 {GOAL_P99_S} s")
    ax.set(title="fault -> lesson has its avatar again (see 'measures' in the JSON)",
           xticks=range(len(faults)), xticklabels=faults, ylabel="s", ylim=(0, None))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(machine_label(p["machine"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "failover.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each fault")
    ap.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS),
                    help="a subset, to look at one fault (results not written then)")
    args = ap.parse_args()
    setup_logging("warning", "console")
    payload = asyncio.run(run(args.rounds, tuple(args.faults)))
    if tuple(args.faults) == FAULTS:
        write_json("failover", payload)
        plot(payload)
    for r in payload["rounds"]:
        print(r)
    for f, st in payload["by_fault"].items():
        print(f, st)


if __name__ == "__main__":
    main()
