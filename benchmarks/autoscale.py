"""Autoscaling a GPU worker pool through a day of lessons, as Kubernetes would do it.

A day of lesson demand (two daily peaks, most lessons starting together on the hour, one
unplanned spike) is replayed through the chart's autoscaler: KEDA's Prometheus trigger on the
pool's sessions (``AverageValue``: desired = ceil(sessions / (capacity x target))), evaluated by
the HPA exactly as the controller does (10 % tolerance, scale-up/down stabilisation windows,
rate-limit policies with ``selectPolicy: Max``, min/max replicas), the optional top-of-hour cron
floor, metrics that lag (Prometheus scrape + KEDA poll), GPU nodes that take minutes to arrive,
and a worker's start-to-ready time and time-to-avatar measured here on the real stack. A
scale-down removes the pods with the fewest sessions (``pod-deletion-cost``); they drain (their
lessons finish) before their node is released.

Joins go to the least-loaded ready worker with a free seat; with none, the join is refused
(503, Retry-After 2 s) and the backend retries for up to 60 s, after which the lesson is lost.
Reported per configuration: joins refused, lessons lost, time to avatar p50/p95, GPU-hours
against a static pool sized for the peak. Writes benchmarks/results/autoscale.json and .png.

    python -m benchmarks.autoscale              # measures start-to-ready here (real servers)
    python -m benchmarks.autoscale --no-measure # reuses the last measured times
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import RESULTS, machine, machine_label, write_json  # noqa: E402

DAY_S = 24 * 3600
STEP_S = 5
HPA_SYNC_S = 15


# --- demand -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Demand:
    """Lessons started per hour of the (UTC) day; 70 % of a daytime hour's lessons are booked
    for the top of the hour (they start within its first two minutes), the rest walk in."""

    per_hour: tuple[int, ...] = (10, 6, 4, 4, 6, 15, 40, 90, 180, 300, 340, 280, 160, 150,
                                 170, 200, 260, 380, 460, 480, 400, 220, 90, 30)
    booked_share: float = 0.7
    minutes: tuple[int, ...] = (30, 45, 45, 60)  # lesson lengths, drawn uniformly
    spike_at_s: int = 14 * 3600 + 20 * 60  # an unplanned spike: a school joins at once
    spike_lessons: int = 180
    spike_window_s: int = 180
    seed: int = 7

    def lessons(self) -> list[tuple[float, float]]:
        """(start, duration) of every lesson, sorted by start."""
        rng = random.Random(self.seed)
        out = []
        for hour, n in enumerate(self.per_hour):
            for _ in range(n):
                booked = 7 <= hour <= 21 and rng.random() < self.booked_share
                start = hour * 3600 + (rng.uniform(0, 120) if booked else rng.uniform(0, 3600))
                out.append((start, 60 * rng.choice(self.minutes)))
        for _ in range(self.spike_lessons):
            out.append((self.spike_at_s + rng.uniform(0, self.spike_window_s),
                        60 * rng.choice(self.minutes)))
        return sorted(out)


def peak_concurrency(lessons: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in lessons] + [(s + d, -1) for s, d in lessons])
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


# --- the autoscaler, as the HPA controller computes it ------------------------------------------
@dataclass(frozen=True)
class Policy:
    name: str
    target_utilisation: float = 0.7
    min_replicas: int = 1
    max_replicas: int = 80
    up_window_s: int = 0
    up_percent: int = 100
    up_pods: int = 4
    up_period_s: int = 15
    down_window_s: int = 300
    down_percent: int | None = 100  # Kubernetes' default scale-down policy
    down_pods: int | None = None
    down_period_s: int = 15
    # KEDA cron floors: (start, end, replicas), seconds of the day (the chart's `schedule`)
    schedule: tuple[tuple[int, int, int], ...] = ()
    static: int | None = None  # a fixed pool of this many workers (no autoscaler)


@dataclass
class Cluster:
    """What the simulation measures about the platform (named in the JSON)."""

    capacity: int = 16  # lessons per GPU worker
    node_provision_s: float = 240.0  # a GPU node from request to Ready (cloud, typical)
    image_pull_s: float = 60.0  # the worker image on a fresh node (assumed, not measured)
    worker_start_s: float = 10.0  # process start to serving (measured here)
    avatar_s: float = 1.0  # join to avatar in the room on a ready worker (measured here)
    node_idle_s: float = 600.0  # the cluster autoscaler removes a node idle this long
    metric_lag_s: float = 30.0  # Prometheus scrape (15 s) + KEDA poll (15 s)
    retry_s: float = 2.0  # backend retry after a 503
    give_up_s: float = 60.0  # backend stops retrying: the lesson is lost


@dataclass
class Pod:
    created: float
    ready_at: float
    ends: list[float] = field(default_factory=list)  # end times of its lessons
    draining: bool = False


@dataclass
class Node:
    ready_at: float
    pod: Pod | None = None
    idle_since: float | None = None
    pulled: bool = False


class HPA:
    """``replica_calculator`` + ``normalizeDesiredReplicasWithBehaviors`` for one external
    AverageValue metric, in seconds of simulated time."""

    TOLERANCE = 0.1

    def __init__(self, p: Policy, capacity: int) -> None:
        self.p = p
        self.target = capacity * p.target_utilisation
        self.recs: list[tuple[float, int]] = []
        self.events: list[tuple[float, int]] = []  # (time, replicas added (+) / removed (-))

    def desired(self, t: float, current: int, usage: float, floor: int) -> int:
        p = self.p
        if current == 0:
            rec = 1 if usage > 0 else 0
        else:
            ratio = usage / (self.target * current)
            rec = current if abs(ratio - 1) <= self.TOLERANCE else math.ceil(usage / self.target)
        rec = max(rec, floor)
        rec = max(p.min_replicas, min(p.max_replicas, rec))
        self.recs.append((t, rec))
        self.recs = [(ts, r) for ts, r in self.recs if ts > t - max(p.up_window_s,
                                                                      p.down_window_s, 1)]
        up_rec = min(r for ts, r in self.recs if ts > t - p.up_window_s or ts == t)
        down_rec = max(r for ts, r in self.recs if ts > t - p.down_window_s or ts == t)
        desired = current
        if current < up_rec:
            desired = up_rec
        elif current > down_rec:
            desired = down_rec
        if desired > current:
            added = sum(d for ts, d in self.events if d > 0 and ts > t - p.up_period_s)
            start = current - added
            limit = max(math.ceil(start * (1 + p.up_percent / 100)), start + p.up_pods)
            desired = min(desired, max(limit, current))
        elif desired < current:
            removed = -sum(d for ts, d in self.events if d < 0 and ts > t - p.down_period_s)
            start = current + removed
            limits = []
            if p.down_percent is not None:
                limits.append(math.floor(start * (1 - p.down_percent / 100)))
            if p.down_pods is not None:
                limits.append(start - p.down_pods)
            desired = max(desired, min(min(limits), current))
        desired = max(p.min_replicas, min(p.max_replicas, desired))
        if desired != current:
            self.events.append((t, desired - current))
            self.events = [(ts, d) for ts, d in self.events
                           if ts > t - max(p.up_period_s, p.down_period_s)]
        return desired


def simulate(policy: Policy, cluster: Cluster, lessons: list[tuple[float, float]]) -> dict:
    """Replay the day; returns the outcome and a time series for the plot."""
    hpa = HPA(policy, cluster.capacity)
    nodes: list[Node] = []
    pods: list[Pod] = []
    replicas = policy.static if policy.static is not None else policy.min_replicas

    def add_pod(t: float) -> None:
        node = next((n for n in nodes if n.pod is None and n.ready_at <= t), None)
        if node is None:
            node = Node(ready_at=t + cluster.node_provision_s)
            nodes.append(node)
        pod = Pod(created=t, ready_at=max(t, node.ready_at) + (
            0 if node.pulled else cluster.image_pull_s) + cluster.worker_start_s)
        node.pod, node.idle_since, node.pulled = pod, None, True
        pods.append(pod)

    for _ in range(replicas):  # the day starts with its pool warm
        add_pod(-3600)
    pending: list[tuple[float, float, float]] = []  # (first try, duration, next try)
    i = 0
    waits: list[float] = []
    refused_first = lost = 0
    node_seconds = 0.0
    history: list[tuple[float, float]] = []  # (t, sessions) for the lagged metric
    series = {"t_h": [], "sessions": [], "ready": [], "replicas": [], "nodes": []}
    t = 0.0
    while t < DAY_S:
        for pod in pods:  # lessons that ended
            pod.ends = [e for e in pod.ends if e > t]
        for pod in [p for p in pods if p.draining and not p.ends]:  # drained: pod goes
            pods.remove(pod)
            node = next(n for n in nodes if n.pod is pod)
            node.pod, node.idle_since = None, t
        for node in [n for n in nodes if n.pod is None and n.idle_since is not None
                     and t - n.idle_since >= cluster.node_idle_s]:
            nodes.remove(node)
        while i < len(lessons) and lessons[i][0] < t + STEP_S:
            pending.append((lessons[i][0], lessons[i][1], lessons[i][0]))
            i += 1
        still = []
        for first, dur, next_try in pending:
            if next_try >= t + STEP_S:
                still.append((first, dur, next_try))
                continue
            seats = [p for p in pods if not p.draining and p.ready_at <= next_try
                     and len(p.ends) < cluster.capacity]
            if seats:
                pod = min(seats, key=lambda p: len(p.ends))
                pod.ends.append(next_try + dur)
                waits.append(next_try - first + cluster.avatar_s)
            else:
                if next_try == first:
                    refused_first += 1
                if next_try + cluster.retry_s - first > cluster.give_up_s:
                    lost += 1
                else:
                    still.append((first, dur, next_try + cluster.retry_s))
        pending = still
        sessions = sum(len(p.ends) for p in pods)
        history.append((t, sessions))
        if policy.static is None and int(t) % HPA_SYNC_S == 0:
            k = bisect.bisect_right([h[0] for h in history[-64:]], t - cluster.metric_lag_s)
            lagged = history[-64:][max(k - 1, 0)][1]
            live = [p for p in pods if not p.draining]
            floor = max((r for a, b, r in policy.schedule if a <= t % DAY_S < b), default=0)
            want = hpa.desired(t, len(live), lagged, floor)
            for _ in range(want - len(live)):
                add_pod(t)
            if want < len(live):  # lowest deletion cost (fewest sessions) first
                for pod in sorted(live, key=lambda p: len(p.ends))[:len(live) - want]:
                    pod.draining = True
        node_seconds += len(nodes) * STEP_S
        if int(t) % 60 == 0:
            series["t_h"].append(round(t / 3600, 4))
            series["sessions"].append(sessions)
            series["ready"].append(sum(1 for p in pods if p.ready_at <= t and not p.draining))
            series["replicas"].append(sum(1 for p in pods if not p.draining))
            series["nodes"].append(len(nodes))
        t += STEP_S
    waits.sort()
    q = statistics.quantiles(waits, n=100) if len(waits) > 1 else [0] * 99
    return {
        "policy": asdict(policy),
        "lessons": len(lessons),
        "joins_refused_first_try": refused_first,
        "joins_refused_share": round(refused_first / len(lessons), 4),
        "lessons_lost": lost,
        "time_to_avatar_p50_s": round(q[49], 2),
        "time_to_avatar_p95_s": round(q[94], 2),
        "time_to_avatar_p99_s": round(q[98], 2),
        "gpu_hours": round(node_seconds / 3600, 1),
        "peak_replicas": max(series["replicas"]),
        "series": series,
    }


# --- what is measured here ------------------------------------------------------------------
async def measure(runs: int = 3) -> dict:
    """A worker's start-to-serving time and a join's time to avatar, on the real stack."""
    from livekit import rtc

    from scripts.failover import join
    from scripts.servers import AvatarWorkerProcess, LiveKitServer, RedisServer, RouterProcess

    starts, avatars = [], []
    with RedisServer() as redis, LiveKitServer() as lk, RouterProcess(lk, redis.url) as router:
        for n in range(runs):
            t0 = time.monotonic()
            with AvatarWorkerProcess(lk, redis.url, f"w-scale-{n}", capacity=4):
                starts.append(time.monotonic() - t0)
                print(f"worker {n}: serving after {starts[-1]:.1f} s", flush=True)
                room = rtc.Room()
                t1 = time.monotonic()
                j = join(router, f"scale-{n}")
                await room.connect(j["livekit_url"], j["token"])
                while j["avatar_identity"] not in {
                        p.identity for p in room.remote_participants.values()}:
                    await asyncio.sleep(0.02)
                avatars.append(time.monotonic() - t1)
                print(f"lesson {n}: avatar in the room after {avatars[-1]:.2f} s", flush=True)
                await room.disconnect()
    return {"worker_start_s": starts, "avatar_s": avatars,
            "worker_start_median_s": round(statistics.median(starts), 2),
            "avatar_median_s": round(statistics.median(avatars), 2)}


def hourly_schedule(lessons: list[tuple[float, float]], capacity: int, lead_s: int = 600,
                    hold_s: int = 900, headroom: float = 0.9) -> tuple[tuple[int, int, int], ...]:
    """Cron floors for the top of each hour from a previous day's demand: from ``lead_s`` before
    the hour (a GPU node and the worker are ready by then) to ``hold_s`` after it, enough
    workers for the most lessons that ran in that window, at ``headroom`` utilisation."""
    out = []
    for hour in range(24):
        a, b = hour * 3600, hour * 3600 + hold_s
        running = [sum(1 for s, d in lessons if s <= t < s + d) for t in range(a, b, 60)]
        need = math.ceil(max(running) / (capacity * headroom))
        if need > 1:
            out.append((max(0, a - lead_s), b, need))
    return tuple(out)


def policies(peak_workers: int, schedule: tuple[tuple[int, int, int], ...]) -> list[Policy]:
    chart = dict(target_utilisation=0.7, down_window_s=600, down_percent=None, down_pods=1,
                 down_period_s=120, max_replicas=80, min_replicas=2)
    every_hour = tuple((max(0, h * 3600 - 300), h * 3600 + 600, 6) for h in range(24))
    return [
        Policy("static, sized for the peak", static=peak_workers),
        Policy("HPA defaults, target 70 %", target_utilisation=0.7),
        Policy("chart behaviour, target 70 %", **chart),
        Policy("chart behaviour, target 85 %", **{**chart, "target_utilisation": 0.85}),
        Policy("chart behaviour, target 50 %", **{**chart, "target_utilisation": 0.5}),
        Policy("chart behaviour, target 70 %, floor 6 at every hour",
               **chart, schedule=every_hour),
        Policy(CHOSEN, **chart, schedule=schedule),
    ]


def plot(results: list[dict], cluster: Cluster, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = next(r for r in results if r["policy"]["name"] == CHOSEN)
    static = results[0]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [2.2, 1]})
    s = chosen["series"]
    ax.plot(s["t_h"], s["sessions"], color="black", lw=1, label="lessons running")
    ax.plot(s["t_h"], [r * cluster.capacity for r in s["ready"]], color="tab:green", lw=1.2,
            label=f"ready seats ({CHOSEN})")
    ax.plot(s["t_h"], [r * cluster.capacity for r in s["nodes"]], color="tab:orange", lw=0.8,
            ls="--", label="GPU nodes x capacity (billed)")
    ax.axhline(static["policy"]["static"] * cluster.capacity, color="tab:red", lw=0.8, ls=":",
               label="static pool sized for the peak")
    ax.set_xlabel("hour of the day (UTC)")
    ax.set_ylabel("lessons")
    ax.set_xlim(0, 24)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("A day of lessons through the chart's autoscaler")
    names = [r["policy"]["name"] for r in results]
    y = range(len(results))
    bx.barh(y, [r["gpu_hours"] for r in results], color=[
        "tab:green" if n == CHOSEN else "tab:gray" for n in names])
    for k, r in enumerate(results):
        bx.text(r["gpu_hours"] + 5, k, f"{r['gpu_hours']:.0f} h · refused "
                f"{100 * r['joins_refused_share']:.1f} % · lost {r['lessons_lost']} · "
                f"p95 {r['time_to_avatar_p95_s']:.1f} s", va="center", fontsize=7)
    bx.set_yticks(list(y), [n.replace(", ", "\n", 1) for n in names], fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("GPU-hours per day")
    bx.set_xlim(0, max(r["gpu_hours"] for r in results) * 1.9)
    fig.suptitle(f"benchmarks/autoscale.py — start-to-ready and time to avatar measured on {label}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


CHOSEN = "chart behaviour, target 70 %, hourly floors from yesterday"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-measure", action="store_true",
                    help="reuse the times measured by the last run (benchmarks/results)")
    args = ap.parse_args(argv)
    previous = RESULTS / "autoscale.json"
    if args.no_measure and previous.exists():
        measured = json.loads(previous.read_text())["measured"]
    else:
        measured = asyncio.run(measure())
    cluster = Cluster(worker_start_s=measured["worker_start_median_s"],
                      avatar_s=measured["avatar_median_s"])
    lessons = Demand().lessons()
    peak = peak_concurrency(lessons)
    peak_workers = math.ceil(peak / cluster.capacity)
    # the floors come from another day (same profile, other draws, no spike): never from the
    # day they are evaluated on
    yesterday = Demand(seed=Demand().seed + 1, spike_lessons=0).lessons()
    schedule = hourly_schedule(yesterday, cluster.capacity)
    results = []
    for policy in policies(peak_workers, schedule):
        t0 = time.monotonic()
        r = simulate(policy, cluster, lessons)
        results.append(r)
        print(f"{policy.name:58s} refused {100 * r['joins_refused_share']:5.2f} %  lost "
              f"{r['lessons_lost']:3d}  avatar p50 {r['time_to_avatar_p50_s']:5.2f} s p95 "
              f"{r['time_to_avatar_p95_s']:5.2f} s  GPU-h {r['gpu_hours']:6.1f}  "
              f"({time.monotonic() - t0:.1f} s)", flush=True)
    static_h = results[0]["gpu_hours"]
    for r in results:
        r["gpu_hours_vs_static"] = round(r["gpu_hours"] / static_h, 3)
    m = machine()
    payload = {
        "benchmark": "autoscale",
        "machine": m,
        "measured": measured,
        "cluster": asdict(cluster),
        "demand": {**asdict(Demand()), "lessons": len(lessons), "peak_concurrent": peak,
                   "static_pool_workers": peak_workers},
        "chosen": CHOSEN,
        "schedule_from_yesterday": [
            {"start": f"{a // 60 % 60} {a // 3600} * * *", "end": f"{b // 60 % 60} {b // 3600} * * *",
             "replicas": r} for a, b, r in schedule],
        "results": [{k: v for k, v in r.items() if k != "series"} for r in results],
        "series_chosen": next(r for r in results if r["policy"]["name"] == CHOSEN)["series"],
    }
    path = write_json("autoscale", payload)
    plot(results, cluster, RESULTS / "autoscale.png", machine_label(m))
    print(f"wrote {path} and {RESULTS / 'autoscale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
