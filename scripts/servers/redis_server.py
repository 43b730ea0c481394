"""Debian's redis-server on loopback: one server (append-only file on) or a Redis Cluster."""

from __future__ import annotations

import socket
import subprocess

import structlog

from scripts.servers._base import (
    ServerError,
    _Process,
    _wait,
    find_program,
    free_port,
    port_is_free,
)

log = structlog.get_logger("scripts.servers")


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


