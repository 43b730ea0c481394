"""livekit-server v1.13.5, built with ``go install`` into ``.cache/bin``, on loopback only."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import structlog

from scripts.gotools import CACHE, BuildError, go_install
from scripts.servers._base import (
    ServerError,
    _Process,
    _wait,
    free_port,
    free_tcp_udp_port,
)

log = structlog.get_logger("scripts.servers")


LIVEKIT_VERSION = "1.13.5"
LIVEKIT_MODULE = f"github.com/livekit/livekit-server/cmd/server@v{LIVEKIT_VERSION}"
DEV_KEY, DEV_SECRET = "devkey", "secret"


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
                 webhook_urls: list[str] | None = None, empty_timeout_s: int = 30) -> None:
        super().__init__()
        self.empty_timeout_s = empty_timeout_s  # an empty room closes after this
        self.port = port or free_port()
        self.rtc_udp_port = rtc_udp_port or free_tcp_udp_port()
        self.webhook_urls = list(webhook_urls or [])  # signed with this server's API key
        self.redis_address = redis_address
        self.region = region
        self.api_key, self.api_secret = DEV_KEY, DEV_SECRET

    host = "127.0.0.1"  # where clients reach it
    addresses = ["127.0.0.1"]  # what it binds (signal and media)
    interfaces = ["lo"]
    argv_prefix: list[str] = []  # e.g. ["ip", "netns", "exec", ns]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config_yaml(self) -> str:
        loopback = self.addresses == ["127.0.0.1"]
        lines = [
            f"port: {self.port}",
            f"bind_addresses: {self.addresses!r}",
            "rtc:",
            # Media on loopback only: LiveKit's ICE/TCP listener always binds every address
            # (net.ListenTCP with no IP), so it is off (0); the UDP mux binds one socket per
            # local address that passes the interface and IP filters, loopback included only
            # with enable_loopback_candidate.
            "  tcp_port: 0",
            f"  udp_port: {self.rtc_udp_port}",
            "  use_external_ip: false",
            f"  node_ip: {self.host}",
            f"  enable_loopback_candidate: {'true' if loopback else 'false'}",
            "  interfaces:",
            f"    includes: {self.interfaces!r}",
            "  ips:",
            f"    includes: {[a + '/32' for a in self.addresses]!r}",
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
            f"  empty_timeout: {self.empty_timeout_s}",
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
        self._spawn([*self.argv_prefix, str(livekit_binary()), "--config", str(cfg)])
        _wait(self._ready, self.proc, "livekit-server", 60, self.logfile)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(self.http_url + "/", timeout=1) as r:
            return r.status == 200




class NamespacedLiveKitServer(LiveKitServer):
    """livekit-server inside a network namespace a test made (:class:`scripts.netns.Namespaces`),
    bound to that namespace's veth addresses only: reached from the root namespace at
    ``host``, from the learner's namespace at ``learner_url``."""

    def __init__(self, ns, **kw) -> None:
        super().__init__(**kw)
        self.ns = ns
        self.host = ns.core_ip
        self.addresses = [ns.core_ip, ns.core_learner_ip]
        self.interfaces = ns.core_interfaces
        self.argv_prefix = ns.exec_argv(ns.core)

    @property
    def learner_url(self) -> str:
        return f"ws://{self.ns.core_learner_ip}:{self.port}"
