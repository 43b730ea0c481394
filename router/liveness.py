"""Which workers just lost their Redis connection: death without waiting out the heartbeat TTL.

Worker processes name their Redis connections (:func:`config.fleet.worker_client_name`). A
killed process's sockets close with it, so its name leaves ``CLIENT LIST`` at once, while its
heartbeat is only seen to stop after the TTL. :class:`ConnectionWatch` polls ``CLIENT LIST``
(every 0.25 s) and remembers the workers it saw connected that are gone now; the reconciler's
sweep treats such a worker as dead once it has also been silent for the grace
(``router.disconnect_grace_s``), and the watch wakes the reconciler so that it looks at once.

Only a disappearance this router *saw*, on one Redis server process (``run_id``), counts: after
a Redis restart every connection is gone at once and nobody is declared dead until the TTL says
so; a worker whose connection comes back is forgotten. Where ``CLIENT LIST`` is not allowed (an ACL) the watch
turns itself off with one warning, and the TTL alone decides, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from config.fleet import parse_worker_client_name
from config.logs import get_logger

log = get_logger("router.liveness")


class ConnectionWatch:
    def __init__(self, redis: Redis | RedisCluster, period_s: float = 0.25) -> None:
        self.redis = redis
        self.period_s = period_s
        self.enabled = True
        self.wake = asyncio.Event()  # set when a worker's connection disappears
        self._prev: set[tuple[str, str]] | None = None
        self._run_id: str | None = None  # the Redis server process the last look was at
        # monotonic time Redis was last seen away or restarted (None: never, since we started)
        self.changed_at: float | None = None
        self._gone: dict[tuple[str, str], float] = {}  # -> monotonic time it was seen gone

    async def connected(self) -> set[tuple[str, str]] | None:
        """``(pool, worker)`` of every named worker connection now; None if Redis won't say,
        or is not the server process it was at the last look (it restarted: every connection
        went at once, and the workers have not reconnected yet)."""
        try:
            run_id, clients = await self._look()
        except Exception as exc:
            if "NOPERM" in str(exc) or "unknown command" in str(exc).lower():
                log.warning("liveness.client_list_refused", error=repr(exc))
                self.enabled = False
            else:
                self.changed_at = time.monotonic()
            return None
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        if restarted:
            log.info("liveness.redis_restarted")
            self.changed_at = time.monotonic()
            return None
        return {pw for c in clients if (pw := parse_worker_client_name(c.get("name", "")))}

    async def _look(self) -> tuple[str, list[dict]]:
        """(server identity, connections): of the one server, or of every primary of a
        cluster (a worker talks to each; a failover changes the identity)."""
        if not isinstance(self.redis, RedisCluster):
            run_id = (await self.redis.info("server")).get("run_id")
            return run_id, await self.redis.client_list(_type="normal")
        ids, clients = [], []
        for node in self.redis.get_primaries():
            ids.append((await self.redis.info("server", target_nodes=node)).get("run_id"))
            clients += await self.redis.client_list(_type="normal", target_nodes=node)
        return ",".join(sorted(map(str, ids))), clients

    async def observe(self) -> None:
        now = await self.connected()
        if now is None:  # Redis away: what we saw before says nothing about after
            self._prev = None
            return
        if self._prev is not None:
            new = self._prev - now
            if new:
                log.info("liveness.connection_gone", workers=sorted(w for _, w in new))
                t = time.monotonic()
                self._gone.update(dict.fromkeys(new, t))
                self.wake.set()
        for key in now & self._gone.keys():  # back (a reconnect): alive as far as this goes
            del self._gone[key]
        self._prev = now

    def gone(self, pool: str) -> set[str]:
        """Workers of ``pool`` whose connection this router saw disappear (and not return)."""
        return {w for p, w in self._gone if p == pool}

    def forget(self, pool: str, workers: set[str], older_than_s: float | None = None) -> None:
        """The reconciler has dealt with ``workers`` (declared them dead); with
        ``older_than_s``, also every worker gone longer than that (the TTL has the say)."""
        for w in workers:
            self._gone.pop((pool, w), None)
        if older_than_s is not None:
            cutoff = time.monotonic() - older_than_s
            for key in [k for k, t in self._gone.items() if k[0] == pool and t < cutoff]:
                del self._gone[key]

    @property
    def pending(self) -> bool:
        return bool(self._gone)

    async def run(self, stop: asyncio.Event) -> None:
        while self.enabled and not stop.is_set():
            with contextlib.suppress(Exception):
                await self.observe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period_s)
