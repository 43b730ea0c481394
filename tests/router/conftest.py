"""Router fixtures on top of tests/conftest.py's real servers: settings pointing at them,
simulated workers that heartbeat with the real FleetMember, the app in-process (ASGI) and real
``python -m router`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from config.fleet import FleetMember
from config.settings import RouterSettings, Settings, WorkerSettings
from router.app import create_app
from router.auth import DEV_API_KEY, DEV_OPS_KEY, dev_env, hash_key
from scripts.servers import free_port

REPO = Path(__file__).resolve().parents[2]
API = {"X-API-Key": DEV_API_KEY}
OPS = {"Authorization": f"Bearer {DEV_OPS_KEY}"}
TTL_S = 2.0  # short heartbeat ttl so death tests are quick (the minimum settings allow)


def write_regions(path: Path, livekit, names=("local",), default="local") -> Path:
    lines = [f"default: {default}", "regions:"]
    coords = {"local": (52.52, 13.40), "east": (35.68, 139.69), "west": (37.77, -122.42)}
    for prio, name in enumerate(names):
        lat, lon = coords.get(name, (0.0, 0.0))
        lines += [f"  - name: {name}", f"    livekit_url: {livekit.url}",
                  f"    api_key: {livekit.api_key}", f"    api_secret: {livekit.api_secret}",
                  f"    lat: {lat}", f"    lon: {lon}", f"    priority: {prio}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def regions_file(tmp_path, livekit_server) -> Path:
    return write_regions(tmp_path / "regions.yaml", livekit_server)


def make_settings(redis_url: str, regions_file: Path, **router) -> Settings:
    rs = {"api_key_sha256": [hash_key(DEV_API_KEY)], "ops_key_sha256": [hash_key(DEV_OPS_KEY)],
          "reconcile_interval_s": 0.3, "dispatch_lease_s": 2.0, "canary_cache_s": 0.0,
          # simulated workers share one unnamed Redis client: they never show a connection of
          # their own, so only the heartbeat ttl tells their death (see test_reconciler)
          "disconnect_grace_s": 0.0, **router}
    rs.setdefault("avatar_dir", Path(tempfile.mkdtemp(prefix="router-avatars-")))
    ttl = rs.pop("heartbeat_ttl_s", TTL_S)
    return Settings(redis_url=redis_url, regions_file=regions_file,
                    router=RouterSettings(**rs), worker=WorkerSettings(heartbeat_ttl_s=ttl))


class SimWorker:
    """A worker's Redis side only (FleetMember from config), heartbeating in the background."""

    def __init__(self, redis, worker_id: str, region: str = "local", capacity: int = 4) -> None:
        self.member = FleetMember(redis, worker_id, region, capacity)
        self.task: asyncio.Task | None = None
        self.jobs_task: asyncio.Task | None = None
        self.active = 0
        self._dead = False
        self.starts_jobs = True  # False: dispatches reach nobody (LiveKit took them, no job ran)

    @property
    def id(self) -> str:
        return self.member.worker_id

    async def start(self) -> SimWorker:
        await self.member.register()
        self.task = asyncio.create_task(self._beat())
        self.jobs_task = asyncio.create_task(self._jobs())
        return self

    async def _beat(self) -> None:
        while not self._dead:
            await asyncio.sleep(0.25)
            with contextlib.suppress(Exception):
                await self.member.heartbeat(self.active)

    async def _jobs(self) -> None:
        """What a real worker does once a dispatched avatar is in its room: every lesson
        assigned here whose dispatch LiveKit took (``done``) is reported live. Apart from the
        heartbeat, so a busy Redis never makes the worker look dead."""
        k = self.member.keys
        r = self.member.redis
        while not self._dead:
            await asyncio.sleep(0.25)
            if not self.starts_jobs:
                continue
            with contextlib.suppress(Exception):
                lessons = [m.decode() for m in await r.smembers(k.worker_lessons(self.id))]
                async with r.pipeline(transaction=False) as p:
                    for lesson in lessons:
                        p.hmget(k.lesson(lesson), "fence", "dispatch_fence", "dispatch_state")
                    rows = await p.execute()
                for lesson, (fence, dfence, state) in zip(lessons, rows, strict=True):
                    if fence is not None and fence == dfence and state == b"done":
                        await self.member.report_session(lesson, int(fence), "live")

    async def die(self) -> None:
        """Stop heartbeating, as a crashed worker would. (A flag as well as the cancel: a
        cancel that lands inside a redis-py command can be swallowed, and the loop then ran
        on and hung the fixture's teardown.)"""
        self._dead = True
        if self.jobs_task:
            self.jobs_task.cancel()
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.task, 5)
            self.task = None


@pytest.fixture
async def workers(redis_url):
    """Factory: ``await workers("w1", capacity=4, region="local")`` -> a heartbeating SimWorker."""
    client = aioredis.Redis.from_url(redis_url)
    made: list[SimWorker] = []

    async def make(worker_id: str, capacity: int = 4, region: str = "local") -> SimWorker:
        w = await SimWorker(client, worker_id, region, capacity).start()
        made.append(w)
        return w

    yield make
    for w in made:
        await w.die()
    await client.aclose()


@contextlib.asynccontextmanager
async def running_app(settings: Settings, reconciler: bool = True):
    app = create_app(settings, reconciler=reconciler)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            client.app = app
            yield client


@pytest.fixture
async def client(redis_url, regions_file):
    """The app in-process (lifespan run, reconciler on) with the dev keys."""
    async with running_app(make_settings(redis_url, regions_file)) as c:
        yield c


class RouterProcess:
    """A real ``python -m router`` (uvicorn) on a free port."""

    def __init__(self, env: dict[str, str], port: int | None = None, log_dir: Path | None = None):
        self.port = port or free_port()
        self.env = env
        self.log = (log_dir or Path("/tmp")) / f"router-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 30) -> RouterProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "--port", str(self.port)], cwd=REPO,
            env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"router not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def router_env(redis_url: str, regions_file: Path, **extra: str) -> dict[str, str]:
    return {**dev_env(), "AVATAR_REDIS_URL": redis_url, "AVATAR_REGIONS_FILE": str(regions_file),
            "AVATAR_WORKER__HEARTBEAT_TTL_S": str(TTL_S), "AVATAR_LOG_LEVEL": "warning",
            "AVATAR_ROUTER__RECONCILE_INTERVAL_S": "0.5",
            "AVATAR_ROUTER__AVATAR_DIR": tempfile.mkdtemp(prefix="router-avatars-"), **extra}


@pytest.fixture
def router_procs(tmp_path):
    """Factory: ``router_procs(env, n)`` -> n started RouterProcess; all stopped afterwards."""
    started: list[RouterProcess] = []

    def start(env: dict[str, str], n: int = 1) -> list[RouterProcess]:
        procs = [RouterProcess(env, log_dir=tmp_path) for _ in range(n)]
        for p in procs:
            p.proc = None
        # start them in parallel: each takes a couple of seconds to import
        for p in procs:
            started.append(p)
            out = open(p.log, "ab")  # noqa: SIM115
            p.proc = subprocess.Popen(
                [sys.executable, "-m", "router", "--port", str(p.port)], cwd=REPO,
                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 60
        for p in procs:
            while True:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"router exited: {p.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(p.url + "/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"router not ready: {p.log.read_text()[-3000:]}")
                time.sleep(0.1)
        return procs

    yield start
    for p in started:
        p.stop()


BODY_TEMPLATE = {"user_id": "learner-1", "display_name": "Ada"}


async def fire(requests: list[tuple[str, str, dict]], concurrency: int = 64,
               headers: dict | None = None) -> list[tuple[int, dict | str]]:
    """Send ``(method, url, json)`` requests with at most ``concurrency`` in flight (aiohttp);
    returns ``(status, body)`` per request in order; status 0 = a transport error."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    out: list = [None] * len(requests)
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, headers=headers or API,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def one(i: int, method: str, url: str, body: dict | None) -> None:
            async with sem:
                try:
                    async with s.request(method, url, json=body) as r:
                        text = await r.text()
                        try:
                            out[i] = (r.status, __import__("json").loads(text))
                        except ValueError:
                            out[i] = (r.status, text)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    out[i] = (0, repr(exc))

        await asyncio.gather(*(one(i, *req) for i, req in enumerate(requests)))
    return out
