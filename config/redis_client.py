"""One way to open the fleet's Redis: a single server or a Redis Cluster.

Every key a Lua script touches shares its pool's hash tag (``{pool:<region>}``, see
``config/fleet.py``), so each script runs on the one node that owns that slot, and the rest
(``lesson-home:<id>``, ``router:canary``) are single-key commands: the same code runs on both.
``redis_cluster: true`` (``AVATAR_REDIS_CLUSTER``) opens a cluster client from any node's URL.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

# Redis could not answer: the server is away, or a cluster slot has no primary for a moment
# (RedisClusterException is not a RedisError)
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)


def connect(url: str, cluster: bool = False, *, timeout_s: float | None = None,
            **kwargs: Any) -> Redis | RedisCluster:
    """A ``redis.asyncio`` client for ``url``; with ``cluster``, a ``RedisCluster`` that finds
    the other nodes from this one. Options a cluster client does not take are dropped.

    ``timeout_s`` bounds every command: connecting and each reply wait at most that long, and
    a command is tried once more on a fresh connection, so no call blocks longer than about
    twice it. Without it redis-py 8 waits 5 s for each reply (a cluster client also retries
    with backoff): a Redis that stops answering, or a network that silently drops its packets,
    would hold the caller longer than a worker's heartbeat ttl instead of failing it."""
    if timeout_s is not None:
        kwargs.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                      retry=Retry(NoBackoff(), 1))
    if not cluster:
        return Redis.from_url(url, **kwargs)
    kwargs.pop("max_connections", None)  # per node in a cluster client, default is fine
    return RedisCluster.from_url(url, **kwargs)
