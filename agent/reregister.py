"""Registering with LiveKit again the moment it is back.

livekit-agents reconnects a worker that lost LiveKit on its own backoff, ``min(2 n, 10)`` s
between attempts and not configurable, so after an outage the worker (and every lesson it
would take) came back up to 10 s after LiveKit did. :class:`Reregistration` watches LiveKit's
HTTP endpoint while the SDK is between attempts and, once LiveKit answers, starts the SDK's
connection task afresh: a new task's first attempt is immediate.

It uses three private members of ``livekit.agents.AgentServer`` 1.8.9 (pinned in
pyproject.toml): ``_connecting`` (true from a failed attempt until the next registration),
``_conn_task`` (the task :meth:`aclose` cancels) and ``_connection_task()``; and the same
done-callback the SDK puts on its own task (a terminal failure ends ``run()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlparse

import aiohttp

from config.logs import get_logger
from config.metrics import counter

log = get_logger(__name__)
NUDGES = counter("avatar_livekit_reconnect_nudges_total",
                 "Times the worker restarted its LiveKit registration early, LiveKit being back")


def health_url(ws_url: str) -> str:
    """LiveKit's HTTP root (it answers 200 ``OK``) for its ws(s):// or http(s):// URL."""
    u = urlparse(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(u.scheme, u.scheme)
    return f"{scheme}://{u.netloc}/"


async def livekit_answers(http: aiohttp.ClientSession, url: str) -> bool:
    """Does LiveKit answer at ``url`` (its :func:`health_url`)?"""
    try:
        async with http.get(url) as r:
            return r.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


class Reregistration:
    """Restarts ``server``'s LiveKit connection task when LiveKit answers at ``url`` while
    the worker has been unregistered for ``settle_s`` (a registration under way normally takes
    milliseconds); at most one restart per ``min_gap_s``."""

    def __init__(self, server, url: str, *, interval_s: float = 0.2, settle_s: float = 0.3,
                 min_gap_s: float = 2.0) -> None:
        self.server, self.url = server, url
        self.interval_s, self.settle_s, self.min_gap_s = interval_s, settle_s, min_gap_s
        self.nudges = 0
        self._last = -float("inf")

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.interval_s * 4))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            back_since: float | None = None
            while True:
                await asyncio.sleep(self.interval_s)
                if not self._waiting():
                    back_since = None
                    continue
                if not await livekit_answers(http, self.url):
                    back_since = None
                    continue
                now = time.monotonic()
                back_since = back_since if back_since is not None else now
                # the SDK may have registered during the probe: never cancel a live connection
                if (now - back_since >= self.settle_s and now - self._last >= self.min_gap_s
                        and self._waiting()):
                    await self.restart()
                    back_since = None

    def _waiting(self) -> bool:
        s = self.server
        task = getattr(s, "_conn_task", None)
        return (bool(getattr(s, "_connecting", False)) and not getattr(s, "_closed", True)
                and task is not None and not task.done())

    async def restart(self) -> None:
        """Cancel the SDK's connection task (asleep in its backoff, or in a failing attempt)
        and start a new one in its place."""
        s = self.server
        old: asyncio.Task = s._conn_task
        old.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await old
        if s._closed:  # closing meanwhile: aclose() cancels whatever _conn_task is
            return
        new = asyncio.create_task(s._connection_task(), name="worker_conn_task")
        new.add_done_callback(self._on_done)
        s._conn_task = new
        self._last = time.monotonic()
        self.nudges += 1
        NUDGES.inc()
        log.info("livekit.reconnect_now", url=self.url, why="LiveKit answers again")

    def _on_done(self, task: asyncio.Task) -> None:
        # as the SDK's own callback: a terminal connection failure ends run()
        fut = getattr(self.server, "_close_future", None)
        if task.cancelled() or fut is None or fut.done():
            return
        if (exc := task.exception()) is not None:
            fut.set_exception(exc)
