"""Our own programs as real processes: the avatar worker and the router."""

from __future__ import annotations

import contextlib
import sys
import urllib.request
from pathlib import Path

import structlog

from scripts.gotools import REPO
from scripts.servers._base import (
    ServerError,
    _Process,
    _wait,
    free_port,
)
from scripts.servers.livekit_server import LiveKitServer

log = structlog.get_logger("scripts.servers")


class AvatarWorkerProcess(_Process):
    """``python -m agent start`` (the avatar worker) pointed at a LiveKit server and Redis;
    ready once it is registered with LiveKit and serving in its Redis pool."""

    name = "worker"

    def __init__(self, livekit: LiveKitServer, redis_url: str, worker_id: str,
                 region: str = "local", capacity: int = 4, extra_env: dict | None = None,
                 router_url: str | None = None) -> None:
        """``router_url``: where lesson avatars come from (with the dev worker key)."""
        super().__init__()
        self.worker_id, self.region, self.redis_url = worker_id, region, redis_url
        self.env = {
            "AVATAR_LIVEKIT__URL": livekit.url, "AVATAR_LIVEKIT__API_KEY": livekit.api_key,
            "AVATAR_LIVEKIT__API_SECRET": livekit.api_secret, "AVATAR_REDIS_URL": redis_url,
            "AVATAR_REGION": region, "AVATAR_WORKER__ID": worker_id,
            "AVATAR_WORKER__CAPACITY": str(capacity), "AVATAR_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
            **({"AVATAR_WORKER__ROUTER_URL": router_url,
                "AVATAR_WORKER__ROUTER_KEY": DEV_WORKER_KEY} if router_url else {}),
            **(extra_env or {}),
        }

    def command(self) -> list[str]:
        """What runs the worker (scripts/images.py runs its container image instead)."""
        return [sys.executable, "-m", "agent", "start"]

    def start(self) -> AvatarWorkerProcess:
        import redis as redis_sync

        from config.fleet import PoolKeys

        self._spawn(self.command(), env=self.env)
        cluster = self.env.get("AVATAR_REDIS_CLUSTER", "").lower() == "true"
        client = (redis_sync.RedisCluster if cluster else redis_sync.Redis).from_url(
            self.redis_url)
        key = PoolKeys(self.region).worker(self.worker_id)

        def ready() -> bool:
            return (client.hget(key, "state") == b"serving"
                    and b"registered worker" in self.logfile.read_bytes())

        _wait(ready, self.proc, f"worker {self.worker_id}", 60, self.logfile)
        return self

    def log_lines(self) -> list[dict]:
        """The worker's structlog JSON lines so far."""
        import json

        out = []
        for line in self.logfile.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


DEV_API_KEY, DEV_OPS_KEY, DEV_WORKER_KEY = "dev-backend-key", "dev-ops-key", "dev-worker-key"
"""The router's development keys (never for production): the stack and tests use them."""


def write_regions_file(path: Path, livekit: LiveKitServer, region: str = "local") -> Path:
    """A regions YAML with one region served by ``livekit``."""
    path.write_text(
        f"default: {region}\nregions:\n  - name: {region}\n    livekit_url: {livekit.url}\n"
        f"    api_key: {livekit.api_key}\n    api_secret: {livekit.api_secret}\n"
        "    lat: 52.52\n    lon: 13.40\n    priority: 0\n")
    return path


class RouterProcess(_Process):
    """``python -m router`` (one replica) on a free port, with the dev keys; ready on /readyz."""

    name = "router"

    def __init__(self, livekit: LiveKitServer, redis_url: str, port: int | None = None,
                 extra_env: dict | None = None) -> None:
        import hashlib

        super().__init__()
        self._own_port = port is None
        self.port = port or free_port()
        regions = write_regions_file(self.workdir / "regions.yaml", livekit)
        sha = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
        self.env = {
            "AVATAR_REDIS_URL": redis_url, "AVATAR_REGIONS_FILE": str(regions),
            "AVATAR_LIVEKIT__URL": livekit.url, "AVATAR_LIVEKIT__API_KEY": livekit.api_key,
            "AVATAR_LIVEKIT__API_SECRET": livekit.api_secret, "AVATAR_LOG_FORMAT": "json",
            "AVATAR_ROUTER__API_KEY_SHA256": f'["{sha(DEV_API_KEY)}"]',
            "AVATAR_ROUTER__OPS_KEY_SHA256": f'["{sha(DEV_OPS_KEY)}"]',
            "AVATAR_ROUTER__WORKER_KEY_SHA256": f'["{sha(DEV_WORKER_KEY)}"]',
            "AVATAR_ROUTER__AVATAR_DIR": str(self.workdir / "avatars"),
            "PYTHONPATH": str(REPO), **(extra_env or {}),
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """What runs the router (scripts/images.py runs its container image instead)."""
        return [sys.executable, "-m", "router", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> RouterProcess:
        def ready() -> bool:
            with urllib.request.urlopen(f"http://{self.address}/readyz", timeout=1) as r:
                return r.status == 200

        # A port picked free in __init__ may be taken before the router binds it (another
        # server, or an outgoing connection's ephemeral port): then pick another, twice at most.
        retries = 2
        while True:
            self._spawn(self.command(), env=self.env)
            try:
                _wait(ready, self.proc, "router", 60, self.logfile)
                return self
            except ServerError as e:
                taken = f"('127.0.0.1', {self.port}): address already in use" in str(e)
                if not (taken and self._own_port and retries):
                    raise
                retries -= 1
                log.warning("server.port_taken", server=self.name, port=self.port)
                self.port = free_port()




class VoiceAgentProcess(_Process):
    """``examples/tutor_agent.py start``: the demo voice agent (agent name ``tutor-voice``),
    which adds our avatar with FleetAvatar through ``router_url``; ready once registered with
    LiveKit. Dispatch it into a lesson's room to start a conversation."""

    name = "voice-agent"
    agent_name = "tutor-voice"

    def __init__(self, livekit: LiveKitServer, router_url: str, api_key: str) -> None:
        super().__init__()
        self.port = free_port()
        self.env = {
            "LIVEKIT_URL": livekit.url, "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret, "FLEET_AVATAR_ROUTER_URL": router_url,
            "FLEET_AVATAR_API_KEY": api_key, "TUTOR_AGENT_PORT": str(self.port),
            "PYTHONPATH": str(REPO),
        }

    def start(self) -> VoiceAgentProcess:
        self._spawn([sys.executable, str(REPO / "examples" / "tutor_agent.py"), "start"],
                    env=self.env)

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                return r.status == 200 and b"registered worker" in self.logfile.read_bytes()

        _wait(ready, self.proc, "voice agent", 90, self.logfile)
        return self
