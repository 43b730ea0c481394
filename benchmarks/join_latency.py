"""Join latency through NGINX to two router processes (real Redis, real LiveKit, loopback).

An open-loop generator sends ``POST /v1/lessons/<id>/join`` at a fixed rate (the send times are
fixed in advance; latency counts from the scheduled send, so a late generator or a slow server
shows up as latency, not as fewer requests). Lessons get ``--joins-per-lesson`` joins each
(default 10, like the race: the first assigns and dispatches to LiveKit, the rest are affinity),
spread over the run. First 500 req/s for ``--duration`` s, then steps up until the target
(p99 <= 15 ms, 0 errors, >= 98 % of the rate achieved) fails.

    .venv/bin/python benchmarks/join_latency.py            # writes benchmarks/results/join_latency.{json,png}

The load generator runs in this process and shares the machine's cores with NGINX, both
routers, Redis and LiveKit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np
import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine as shared_machine  # noqa: E402
from config.fleet import FleetMember  # noqa: E402
from nginx import render_config  # noqa: E402
from router.auth import DEV_API_KEY, dev_env  # noqa: E402
from scripts.servers import LiveKitServer, NginxServer, RedisServer, free_port, write_regions_file  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET_P99_MS = 15.0


def machine() -> dict:
    """The shared machine description, with the load at the start (the box may be shared)."""
    return {**shared_machine(), "loadavg_at_start": os.getloadavg(),
            "note": "load generator, NGINX (1 worker), 2 routers, Redis and LiveKit share these "
                    "cores; loopback only"}


def start_router(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    out = open(log, "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "router", "--port", str(port)], cwd=REPO,
                         env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    return p, port


async def wait_ready(url: str, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client (asyncio streams): the generator shares the cores
    with what it measures, and this costs a fraction of aiohttp's CPU per request."""

    def __init__(self, host: str, port: int, headers: dict[str, str], limit: int = 512):
        self.host, self.port, self.limit = host, port, limit
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else None
        if conn is None:
            conn = await asyncio.open_connection(self.host, self.port)
            self.open += 1
        reader, writer = conn
        try:
            writer.write((f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                          "\r\n\r\n").encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            payload = await reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            self.open -= 1
            raise
        if close:
            writer.close()
            self.open -= 1
        else:
            self.idle.append(conn)
        return status, payload

    def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


def heartbeat_thread(redis_url: str, worker_ids: list[str], stop: threading.Event) -> None:
    """The simulated workers' heartbeats, in their own thread and event loop: a generator loop
    busy with thousands of requests must not make them late (they would look dead)."""

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        members = [FleetMember(client, w, "local", 100_000) for w in worker_ids]
        for m in members:
            await m.register()
        ready.set()
        while not stop.is_set():
            for m in members:
                with contextlib.suppress(Exception):
                    await m.heartbeat(0)
            await asyncio.sleep(0.5)
        await client.aclose()

    asyncio.run(run())


ready = threading.Event()


async def run_rate(client: RawHttp, rate: float, duration: float,
                   warmup: float, joins_per_lesson: int, tag: str, seed: int) -> dict:
    n = int(rate * duration)
    rng = random.Random(seed)
    # lesson k gets joins k*J .. k*J+J-1, shuffled locally (each lesson's joins spread over
    # ~2 s at 500/s): about 1/J of the joins are first joins all along the run
    order = sorted(range(n), key=lambda i: i + rng.uniform(0, 1000))
    lessons = [f"{tag}-{order[i] // joins_per_lesson}" for i in range(n)]
    body = json.dumps({"user_id": "bench-user", "display_name": "Bench"}).encode()
    lat = np.full(n, np.nan)
    service = np.full(n, np.nan)
    status = np.zeros(n, dtype=int)
    reasons: dict[str, int] = {}
    t0 = time.perf_counter() + 0.2

    async def one(i: int, sched: float) -> None:
        sent = time.perf_counter()
        try:
            status[i], payload = await client.post(f"/v1/lessons/{lessons[i]}/join", body)
            if status[i] != 200:
                try:
                    why = json.loads(payload).get("error", "?")
                except ValueError:
                    why = payload[:60].decode(errors="replace")
                reasons[why] = reasons.get(why, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            status[i] = 0
            reasons[type(exc).__name__] = reasons.get(type(exc).__name__, 0) + 1
        done = time.perf_counter()
        # from the scheduled time when sent late (open loop: lateness counts); from the send
        # when the event loop's timer woke up to 1 ms early
        lat[i] = done - min(sched, sent)
        service[i] = done - sent

    tasks = []
    for i in range(n):
        sched = t0 + i / rate
        delay = sched - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, sched)))
    await asyncio.gather(*tasks)
    end = time.perf_counter()
    keep = np.arange(n) >= int(rate * warmup)
    ok = keep & (status == 200)
    errs = keep & (status != 200)
    ms = lat[keep] * 1000
    first = np.zeros(n, dtype=bool)
    seen: set[str] = set()
    for i, name in enumerate(lessons):
        if name not in seen:
            seen.add(name)
            first[i] = True
    new_ms = lat[keep & first] * 1000
    again_ms = lat[keep & ~first] * 1000
    codes: dict[str, int] = {}
    for c in status[keep]:
        codes[str(int(c))] = codes.get(str(int(c)), 0) + 1
    return {
        "rate": rate, "duration_s": duration, "warmup_s": warmup, "requests": int(keep.sum()),
        "achieved_rate": round(n / (end - t0), 1), "errors": int(errs.sum()), "status": codes,
        "error_reasons": reasons,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "p999_ms": round(float(np.percentile(ms, 99.9)), 3),
        "max_ms": round(float(ms.max()), 3),
        "service_p99_ms": round(float(np.percentile(service[keep] * 1000, 99)), 3),
        "ok": int(ok.sum()),
        "first_join_share": round(float(first[keep].mean()), 3),
        "first_join_p50_ms": round(float(np.percentile(new_ms, 50)), 3) if len(new_ms) else None,
        "first_join_p99_ms": round(float(np.percentile(new_ms, 99)), 3) if len(new_ms) else None,
        "repeat_join_p50_ms": round(float(np.percentile(again_ms, 50)), 3),
        "repeat_join_p99_ms": round(float(np.percentile(again_ms, 99)), 3),
        "latencies_ms": np.round(ms, 3).tolist(),
    }


def holds(r: dict) -> bool:
    """The target: p99 <= 15 ms, no errors, the offered rate achieved."""
    return r["errors"] == 0 and r["p99_ms"] <= TARGET_P99_MS and \
        r["achieved_rate"] >= 0.98 * r["rate"]


def sustains(r: dict) -> bool:
    """Weaker: no errors, the rate achieved, p99 under 250 ms (not melting down)."""
    return r["errors"] == 0 and r["p99_ms"] <= 250 and r["achieved_rate"] >= 0.98 * r["rate"]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    base = result["baseline"]
    ms = np.sort(np.array(base["latencies_ms"]))
    a.plot(ms, np.arange(1, len(ms) + 1) / len(ms))
    a.axvline(TARGET_P99_MS, color="r", ls="--", label="target p99 15 ms")
    a.axhline(0.99, color="gray", ls=":")
    a.set_xscale("log")
    a.set_xlabel("join latency through NGINX (ms, log)")
    a.set_ylabel("fraction of requests")
    a.set_title(f"{base['rate']:.0f} req/s: p50 {base['p50_ms']:.1f} ms, "
                f"p99 {base['p99_ms']:.1f} ms, errors {base['errors']}")
    a.legend()
    steps = result["steps"]
    rates = [s["rate"] for s in steps]
    a_ = [s["achieved_rate"] for s in steps]
    b.plot(rates, [s["p50_ms"] for s in steps], "o-", label="p50")
    b.plot(rates, [s["p99_ms"] for s in steps], "o-", label="p99")
    b.axhline(TARGET_P99_MS, color="r", ls="--", label="target p99")
    for s, ach in zip(steps, a_, strict=True):
        if s["errors"]:
            b.annotate(f"{s['errors']} err", (s["rate"], s["p99_ms"]))
        b.annotate(f"{ach:.0f}/s", (s["rate"], s["p50_ms"]), fontsize=7)
    b.set_yscale("log")
    b.set_xlabel("offered rate (req/s)")
    b.set_ylabel("latency (ms, log)")
    b.set_title(f"step-up: target held up to {result['max_rate_holding']:.0f} req/s, "
                f"no errors up to {result['max_rate_sustained']:.0f} req/s", fontsize=9)
    b.legend()
    m = result["machine"]
    load = m.get("loadavg_at_start", [0])[0]
    fig.suptitle(f"join latency, 2 routers behind NGINX - {m['cpu']}, {m['cores']} cores "
                 f"(shared: load average {load:.1f} at start)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--steps", type=str, default="750,1000,1250,1500,2000")
    ap.add_argument("--step-duration", type=float, default=10)
    ap.add_argument("--joins-per-lesson", type=int, default=10)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "join_latency.json")
    args = ap.parse_args()

    mach = machine()  # load average now: the machine may be shared
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"join-bench-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    with RedisServer() as redis_srv, LiveKitServer() as lk:
        regions = write_regions_file(logs / "regions.yaml", lk)
        env = {**dev_env(), "AVATAR_REDIS_URL": redis_srv.url,
               "AVATAR_REGIONS_FILE": str(regions), "AVATAR_LOG_LEVEL": "info"}
        stop = threading.Event()
        hb = threading.Thread(target=heartbeat_thread, daemon=True, args=(
            redis_srv.url, [f"bench-w{i:02d}" for i in range(args.workers)], stop))
        hb.start()
        ready.wait(30)
        routers = [start_router(env, logs / f"router{i}.log") for i in range(2)]
        try:
            for _, port in routers:
                await wait_ready(f"http://127.0.0.1:{port}")
            port = free_port()
            conf = render_config([f"127.0.0.1:{p}" for _, p in routers], port=port,
                                 rate_per_s=100_000, burst=100_000, worker_processes=1)
            with NginxServer(conf, port=port) as ngx:
                s = RawHttp("127.0.0.1", ngx.port, {"X-API-Key": DEV_API_KEY})
                try:
                    await run_rate(s, 100, 2, 0, 10, "warm", 0)  # warm connections
                    print(f"baseline {args.rate:.0f} req/s for {args.duration:.0f} s ...",
                          flush=True)
                    base = await run_rate(s, args.rate, args.duration, args.warmup,
                                          args.joins_per_lesson, "base", 1)
                    print({k: v for k, v in base.items() if k != "latencies_ms"}, flush=True)
                    steps = [{k: v for k, v in base.items() if k != "latencies_ms"}]
                    best = args.rate if holds(base) else 0.0
                    sustained = args.rate if sustains(base) else 0.0
                    for i, rate in enumerate(float(x) for x in args.steps.split(",") if x):
                        await asyncio.sleep(2)
                        r = await run_rate(s, rate, args.step_duration, args.warmup,
                                           args.joins_per_lesson, f"step{i}", 10 + i)
                        r.pop("latencies_ms")
                        steps.append(r)
                        print(r, flush=True)
                        if holds(r):
                            best = max(best, rate)
                        if sustains(r):
                            sustained = max(sustained, rate)
                        else:
                            break
                finally:
                    s.close()
        finally:
            stop.set()
            hb.join(5)
            for p, _ in routers:
                p.terminate()
            for p, _ in routers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)
    mach["loadavg_at_end"] = os.getloadavg()
    result = {
        "benchmark": "join_latency", "machine": mach,
        "setup": {"routers": 2, "nginx_worker_processes": 1, "workers_simulated": args.workers,
                  "joins_per_lesson": args.joins_per_lesson,
                  "router_log_level": "info (JSON lines to a file)",
                  "latency": "from the scheduled send time to the full response (open loop)",
                  "target": {"p99_ms": TARGET_P99_MS, "errors": 0}},
        "baseline": base, "steps": steps, "max_rate_holding": best,
        "max_rate_sustained": sustained,
        "baseline_holds": holds(base),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    summary = {k: v for k, v in base.items() if k != "latencies_ms"}
    print(json.dumps({"baseline": summary, "max_rate_holding": best,
                      "max_rate_sustained": sustained}, indent=1))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
