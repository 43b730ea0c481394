"""Leaving a room the SDK cannot get back into soon: the lesson is dispatched again instead.

When LiveKit restarts, every room and participant it held is gone. A session's room goes to
"reconnecting" and the Rust SDK tries to get back in on its own schedule: a resume, then full
reconnects, one attempt every 5 s (fixed in the SDK; nothing in Python can hurry it). So after
LiveKit came back the avatar returned whenever the next attempt happened to land, 0.6-6 s later.

:class:`RejoinWhenBack` watches a session's room while it reconnects. Once LiveKit answers its
HTTP endpoint for ``settle_s`` and the room is still reconnecting (an attempt that was already
on its way had that long to land), it ends the session with :data:`LIVEKIT_BACK`; the session
reports its lesson lost and the router dispatches it again at once, to this worker (which
registered again the moment LiveKit answered, ``agent/reregister.py``) with the same fence.
That is the path a session whose SDK gives up takes anyway, only without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
from livekit import rtc

from agent.reregister import livekit_answers
from config.logs import get_logger
from config.metrics import counter

log = get_logger(__name__)
REJOINS = counter("avatar_session_rejoins_total",
                  "Sessions ended so their lesson is dispatched again: LiveKit was back and "
                  "their room still reconnecting")

LIVEKIT_BACK = "livekit back, room not reconnected"


class RejoinWhenBack:
    """Calls ``leave(LIVEKIT_BACK)`` once, when ``room`` has been reconnecting while LiveKit
    answered at ``url`` for ``settle_s``."""

    def __init__(self, room: rtc.Room, url: str, leave: Callable[[str], None], *,
                 interval_s: float = 0.2, settle_s: float = 1.0, **log_ids) -> None:
        self.room, self.url, self.leave = room, url, leave
        self.interval_s, self.settle_s = interval_s, settle_s
        self.log = log.bind(**log_ids)
        self._task: asyncio.Task | None = None
        self._left = False
        room.on("reconnecting", self._start)
        room.on("reconnected", self._stop)
        room.on("disconnected", lambda *_: self._stop())

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(),
                                                                name="room-rejoin-watch")

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _reconnecting(self) -> bool:
        return self.room.connection_state == rtc.ConnectionState.CONN_RECONNECTING

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.interval_s * 4))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            back_since: float | None = None
            while self._reconnecting() and not self._left:
                if await livekit_answers(http, self.url):
                    now = loop.time()
                    back_since = now if back_since is None else back_since
                    if now - back_since >= self.settle_s and self._reconnecting():
                        self._left = True
                        REJOINS.inc()
                        self.log.warning("session.rejoin", why=LIVEKIT_BACK,
                                         reconnecting_s=round(now - t0, 2),
                                         livekit_back_s=round(now - back_since, 2))
                        self.leave(LIVEKIT_BACK)
                        return
                else:
                    back_since = None
                await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
