"""Real servers on loopback for tests, benchmarks and the local stack.

Each server is a context manager that starts the real program on free loopback ports, waits
until it answers, and stops it (SIGTERM, then SIGKILL). Nothing here is a mock:

* :class:`LiveKitServer`  - livekit-server v1.13.5 built with ``go install`` into ``.cache/bin``
  (dev keys ``devkey``/``secret``); pass ``redis_url`` for the multi-node variant.
* :class:`RedisServer`    - Debian ``redis-server``, append-only file on (a restart keeps it).
* :class:`NginxServer`    - Debian ``nginx`` with a generated config, ``nginx -t`` first.
* :class:`AvatarWorkerProcess` - our worker, ``python -m agent start``, ready when serving.
* :class:`RouterProcess`  - our router, ``python -m router``, ready on ``/readyz``.

Missing programs are installed by ``scripts/setup.sh``; the LiveKit build also runs here on
first use (it is cached, so later runs only check the binary's version).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import structlog

from scripts.gotools import CACHE, REPO, BuildError, go_install

log = structlog.get_logger("scripts.servers")

LIVEKIT_VERSION = "1.13.5"
LIVEKIT_MODULE = f"github.com/livekit/livekit-server/cmd/server@v{LIVEKIT_VERSION}"
DEV_KEY, DEV_SECRET = "devkey", "secret"


class ServerError(RuntimeError):
    """A server could not be found, built, started or did not become ready."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on 127.0.0.1 right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1 for both TCP and UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_tcp_udp_port() -> int:
    """A port number free for both TCP and UDP (LiveKit's RTC ports)."""
    for _ in range(50):
        p = free_port(socket.SOCK_DGRAM)
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", p))
            return p
    raise ServerError("no port free for both TCP and UDP")


def _wait(check: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float,
          logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with {proc.returncode}:\n{_tail(logfile)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise ServerError(f"{what} not ready after {timeout:.0f}s:\n{_tail(logfile)}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class _Process:
    """A child process in its own session, logging to a file, stopped on exit."""

    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"avatar-{self.name}-"))
        self.logfile = self.workdir / f"{self.name}.log"

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        log.info("server.start", server=self.name, argv=argv[:3], log=str(self.logfile))
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, env={**os.environ, **(env or {})}, start_new_session=True,
            )

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        # A second SIGTERM makes livekit-server skip its graceful drain; others exit on the first.
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.info("server.stop", server=self.name, rc=p.returncode)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if not os.environ.get("AVATAR_KEEP_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------

def find_program(name: str, *extra_dirs: str) -> str:
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).exists()), None)
    if not path:
        raise ServerError(f"{name} not found: run scripts/setup.sh (it apt-get installs it)")
    return path


class RedisServer(_Process):
    name = "redis"

    def __init__(self, port: int | None = None, persist: bool = True,
                 extra_args: list[str] | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.persist = persist
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        argv = [find_program("redis-server", "/usr/sbin", "/usr/bin"), "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.workdir), "--daemonize", "no",
                "--protected-mode", "yes", "--loglevel", "warning"]
        # The fleet's state is durable: an append-only file, fsynced every second (a restart
        # loses at most the last second), no RDB snapshots. start() again after stop() or
        # kill() reloads it; persist=False is a Redis that restarts empty.
        argv += ["--save", "", "--appendonly", "yes" if self.persist else "no",
                 "--appendfsync", "everysec", *self.extra_args]
        self._spawn(argv)
        _wait(self._ping, self.proc, "redis-server", 20, self.logfile)
        return self

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")


class RedisClusterServer:
    """A Redis Cluster of Debian's redis-server on loopback: ``masters`` primaries with one
    replica each (append-only files, node timeout ``node_timeout_ms``), created with
    ``redis-cli --cluster create``. ``nodes[i]`` are :class:`RedisServer` processes (kill one
    to fail it over); :attr:`url` is any primary's."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 2000) -> None:
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisClusterServer:
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms),
                 "--cluster-announce-ip", "127.0.0.1"]
        try:
            for _ in range(self.masters * 2):
                # the cluster bus listens on port + 10000
                port = next(p for p in (free_port() for _ in range(100))
                            if p < 55000 and port_is_free(p + 10000))
                self.nodes.append(RedisServer(port=port, extra_args=extra).start())
            cli = find_program("redis-cli", "/usr/bin")
            r = subprocess.run([cli, "--cluster", "create", *(n.address for n in self.nodes),
                                "--cluster-replicas", "1", "--cluster-yes"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise ServerError(f"redis-cli --cluster create failed:\n{r.stdout}{r.stderr}")
            _wait(self._ok, self.nodes[0].proc, "redis cluster", 30, self.nodes[0].logfile)
        except BaseException:
            self.stop()
            raise
        return self

    def _ok(self) -> bool:
        import redis as redis_sync

        for n in self.nodes:
            if n.running:
                info = redis_sync.Redis(port=n.port).cluster("info")
                if info.get("cluster_state") != "ok":
                    return False
        return True

    def node_for_key(self, key: str) -> RedisServer:
        """The primary that owns ``key``'s slot now (from ``CLUSTER NODES`` of a live node)."""
        import redis as redis_sync

        live = next(n for n in self.nodes if n.running)
        c = redis_sync.Redis(port=live.port, decode_responses=True)
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        text = c.execute_command("CLUSTER", "NODES")
        text = text if isinstance(text, str) else "\n".join(
            f"{k} {v}" for k, v in text.items())  # some clients parse it
        for line in str(text).splitlines():
            parts = line.split()
            if len(parts) < 9 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            for rng in parts[8:]:
                lo, _, hi = rng.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return next(x for x in self.nodes if x.port == port)
        raise ServerError(f"no live primary owns slot {slot}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        for n in self.nodes:
            n.__exit__(None, None, None)


# --- LiveKit ----------------------------------------------------------------------------------

def livekit_binary(build: bool = True) -> Path:
    """Path to livekit-server v1.13.5: ``$AVATAR_LIVEKIT_BIN``, else ``.cache/bin``, built there
    with ``go install`` when missing (locked, so parallel callers build once)."""
    env_bin = os.environ.get("AVATAR_LIVEKIT_BIN")
    if env_bin:
        return Path(env_bin)
    target = CACHE / "bin" / "livekit-server"
    current = lambda b: _livekit_version(b) == LIVEKIT_VERSION  # noqa: E731
    if target.exists() and current(target):
        return target
    if not build:
        raise ServerError(f"{target} missing: run scripts/setup.sh")
    try:
        return go_install(LIVEKIT_MODULE, "server", "livekit-server", current)
    except BuildError as exc:
        raise ServerError(str(exc)) from None


def _livekit_version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().rsplit(" ", 1)[-1] or None


class LiveKitServer(_Process):
    """livekit-server in dev mode on loopback: signal (HTTP/WS), RTC over TCP and one UDP port.

    With ``redis_url`` it runs as a node of a multi-node deployment (rooms and agent dispatch
    are routed through Redis), and several may share one Redis.
    """

    name = "livekit"

    def __init__(self, redis_address: str | None = None, region: str | None = None,
                 port: int | None = None, rtc_udp_port: int | None = None,
                 webhook_urls: list[str] | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.rtc_udp_port = rtc_udp_port or free_tcp_udp_port()
        self.webhook_urls = list(webhook_urls or [])  # signed with this server's API key
        self.redis_address = redis_address
        self.region = region
        self.api_key, self.api_secret = DEV_KEY, DEV_SECRET

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_yaml(self) -> str:
        lines = [
            f"port: {self.port}",
            "bind_addresses: ['127.0.0.1']",
            "rtc:",
            # Media on loopback only: LiveKit's ICE/TCP listener always binds every address
            # (net.ListenTCP with no IP), so it is off (0); the UDP mux binds one socket per
            # local address that passes the interface and IP filters, loopback included only
            # with enable_loopback_candidate.
            "  tcp_port: 0",
            f"  udp_port: {self.rtc_udp_port}",
            "  use_external_ip: false",
            "  node_ip: 127.0.0.1",
            "  enable_loopback_candidate: true",
            "  interfaces:",
            "    includes: [lo]",
            "  ips:",
            "    includes: [127.0.0.1/32]",
            # a keyframe request from a new subscriber waited out LiveKit's default 0.5-1 s
            # throttle in 2 lessons of 7 (+0.6 s to the first frame); an avatar track has one
            # or two subscribers, so keyframe requests are rare anyway
            "  pli_throttle:",
            "    low_quality: 100ms",
            "    mid_quality: 100ms",
            "    high_quality: 100ms",
            "keys:",
            f"  {self.api_key}: {self.api_secret}",
            "logging:",
            "  level: info",
            "  json: true",
            "room:",
            "  sync_streams: true",
            "  empty_timeout: 30",
            "  departure_timeout: 5",
            "prometheus:",
            "  port: 0",
        ]
        if self.webhook_urls:
            lines += ["webhook:", f"  api_key: {self.api_key}", "  urls:",
                      *[f"    - {u}" for u in self.webhook_urls]]
        if self.redis_address:
            lines += ["redis:", f"  address: {self.redis_address}"]
        if self.region:
            lines += [f"region: {self.region}"]
        return "\n".join(lines) + "\n"

    def start(self) -> LiveKitServer:
        cfg = self.workdir / "livekit.yaml"
        cfg.write_text(self.config_yaml())
        self._spawn([str(livekit_binary()), "--config", str(cfg)])
        _wait(self._ready, self.proc, "livekit-server", 60, self.logfile)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(self.http_url + "/", timeout=1) as r:
            return r.status == 200


# --- NGINX ------------------------------------------------------------------------------------

class NginxServer(_Process):
    """nginx run in the foreground with a generated config (the caller renders it; ``port`` is
    reserved for the caller to put in its ``listen``). ``nginx -t`` runs before every start."""

    name = "nginx"

    def __init__(self, config_text: str, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.config_text = config_text
        (self.workdir / "logs").mkdir()
        self.conf = self.workdir / "nginx.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def test_config(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the generated config; raises ServerError with nginx's words."""
        self.conf.write_text(self.config_text)
        r = subprocess.run([find_program("nginx", "/usr/sbin"), "-t", "-p", str(self.workdir),
                            "-c", str(self.conf)], capture_output=True, text=True)
        if r.returncode != 0:
            raise ServerError(f"nginx -t failed:\n{r.stderr}")
        return r

    def start(self) -> NginxServer:
        self.test_config()
        self._spawn([find_program("nginx", "/usr/sbin"), "-p", str(self.workdir), "-c",
                     str(self.conf), "-g", "daemon off;"])
        _wait(self._ready, self.proc, "nginx", 20, self.logfile)
        return self

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def reload(self, config_text: str) -> None:
        self.config_text = config_text
        self.test_config()
        os.kill(self.proc.pid, signal.SIGHUP)


# --- our own programs -------------------------------------------------------------------------

class AvatarWorkerProcess(_Process):
    """``python -m agent start`` (the avatar worker) pointed at a LiveKit server and Redis;
    ready once it is registered with LiveKit and serving in its Redis pool."""

    name = "worker"

    def __init__(self, livekit: LiveKitServer, redis_url: str, worker_id: str,
                 region: str = "local", capacity: int = 4, extra_env: dict | None = None) -> None:
        super().__init__()
        self.worker_id, self.region, self.redis_url = worker_id, region, redis_url
        self.env = {
            "AVATAR_LIVEKIT__URL": livekit.url, "AVATAR_LIVEKIT__API_KEY": livekit.api_key,
            "AVATAR_LIVEKIT__API_SECRET": livekit.api_secret, "AVATAR_REDIS_URL": redis_url,
            "AVATAR_REGION": region, "AVATAR_WORKER__ID": worker_id,
            "AVATAR_WORKER__CAPACITY": str(capacity), "AVATAR_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO), **(extra_env or {}),
        }

    def start(self) -> AvatarWorkerProcess:
        import sys

        import redis as redis_sync

        from config.fleet import PoolKeys

        self._spawn([sys.executable, "-m", "agent", "start"], env=self.env)
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


DEV_API_KEY, DEV_OPS_KEY = "dev-backend-key", "dev-ops-key"
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
        self.port = port or free_port()
        regions = write_regions_file(self.workdir / "regions.yaml", livekit)
        sha = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
        self.env = {
            "AVATAR_REDIS_URL": redis_url, "AVATAR_REGIONS_FILE": str(regions),
            "AVATAR_LIVEKIT__URL": livekit.url, "AVATAR_LIVEKIT__API_KEY": livekit.api_key,
            "AVATAR_LIVEKIT__API_SECRET": livekit.api_secret, "AVATAR_LOG_FORMAT": "json",
            "AVATAR_ROUTER__API_KEY_SHA256": f'["{sha(DEV_API_KEY)}"]',
            "AVATAR_ROUTER__OPS_KEY_SHA256": f'["{sha(DEV_OPS_KEY)}"]',
            "PYTHONPATH": str(REPO), **(extra_env or {}),
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RouterProcess:
        import sys

        self._spawn([sys.executable, "-m", "router", "--host", "127.0.0.1", "--port",
                     str(self.port)], env=self.env)

        def ready() -> bool:
            with urllib.request.urlopen(f"http://{self.address}/readyz", timeout=1) as r:
                return r.status == 200

        _wait(ready, self.proc, "router", 60, self.logfile)
        return self


# --- the learner page ---------------------------------------------------------------------------
WEB = REPO / "web"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_web(port: int = 0) -> http.server.ThreadingHTTPServer:
    """``web/`` (the learner page and its client) over HTTP on loopback, on a thread; stop it
    with ``.shutdown()``."""
    handler = functools.partial(_QuietHandler, directory=str(WEB))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    return server
