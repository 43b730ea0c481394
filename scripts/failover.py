"""Worker faults, end to end: a lesson is served by one of two real workers; that worker is
killed (SIGKILL) or frozen (SIGSTOP past its heartbeat ttl); the router's reconciler moves the
lesson and the other worker's avatar joins the room. Used by tests/integration/test_failover.py,
tests/chaos and benchmarks/failover.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request

from livekit import rtc

from scripts.servers import DEV_API_KEY, AvatarWorkerProcess, RouterProcess

TTL_ENV = {"AVATAR_WORKER__HEARTBEAT_TTL_S": "3"}


def join(router: RouterProcess, lesson: str, **extra) -> dict:
    """The backend's join (``extra``: more of the body, e.g. ``avatar_id``)."""
    req = urllib.request.Request(
        f"http://{router.address}/v1/lessons/{lesson}/join", method="POST",
        data=json.dumps({"user_id": f"u-{lesson}", "display_name": "Ada", **extra}).encode(),
        headers={"X-API-Key": DEV_API_KEY, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def join_status(router: RouterProcess, lesson: str) -> tuple[int, dict]:
    """The backend's join as (HTTP status, body), refusals included: what a refused join
    says (``error``) matters as much as that it was refused."""
    try:
        return 200, join(router, lesson)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def join_when_ready(router: RouterProcess, lesson: str, limit_s: float = 5.0,
                          live: bool = False) -> dict:
    """Join, retrying the 503s (Retry-After) a router answers while Redis loads or no heartbeat
    has landed yet; with ``live``, until the answer says the avatar is live."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            got = await asyncio.to_thread(join, router, lesson)
            if not live or got.get("avatar_state") == "live":
                return got
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {'live ' if live else ''}join of {lesson} in {limit_s} s")
        await asyncio.sleep(0.1)


def say(router: RouterProcess, lesson: str, text: str, limit_s: float = 10.0) -> int:
    """The backend makes the tutor speak; returns the HTTP status (202: accepted). A 409
    (the avatar is not in its room yet) is retried every 0.25 s for up to ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while True:
        req = urllib.request.Request(
            f"http://{router.address}/v1/lessons/{lesson}/say", method="POST",
            data=json.dumps({"text": text, "language": "en"}).encode(),
            headers={"X-API-Key": DEV_API_KEY, "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            if exc.code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def end(router: RouterProcess, lesson: str) -> None:
    """The backend ends the lesson (releases its seat on the worker)."""
    req = urllib.request.Request(f"http://{router.address}/v1/lessons/{lesson}", method="DELETE",
                                 headers={"X-API-Key": DEV_API_KEY})
    with urllib.request.urlopen(req, timeout=10):
        pass


def _avatar_worker(room: rtc.Room, identity: str) -> str | None:
    for p in room.remote_participants.values():
        if p.identity == identity:
            return p.attributes.get("worker_id")
    return None


async def kill_and_time_recovery(router: RouterProcess,
                                 workers: dict[str, AvatarWorkerProcess], lesson: str,
                                 limit_s: float = 30.0, end_lesson: bool = True,
                                 fault: str = "kill", frozen_s: float = 12.0) -> dict:
    """Join ``lesson``, wait for its avatar, then fault its worker; seconds until the avatar
    is back in the room, served by another worker. ``fault``: ``kill`` (SIGKILL) or ``freeze``
    (SIGSTOP for ``frozen_s``, then SIGCONT; ``displaced`` says whether the resumed worker's
    stale session took the room back within 5 s). ``end_lesson``: DELETE it afterwards (frees
    the seat for the next round)."""
    joined = join(router, lesson)
    room = rtc.Room()
    await room.connect(joined["livekit_url"], joined["token"])
    try:
        ident, first = joined["avatar_identity"], joined["worker_id"]
        deadline = time.monotonic() + limit_s
        while _avatar_worker(room, ident) != first:
            if time.monotonic() > deadline:
                raise TimeoutError(f"avatar never joined from {first}")
            await asyncio.sleep(0.05)
        proc = workers[first].proc
        if fault == "kill":
            workers[first].kill()
        else:
            os.killpg(proc.pid, signal.SIGSTOP)
        t_fault = time.monotonic()
        try:
            while (w := _avatar_worker(room, ident)) in (None, first):
                if time.monotonic() - t_fault > limit_s:
                    raise TimeoutError("the avatar did not come back")
                await asyncio.sleep(0.05)
            seconds = time.monotonic() - t_fault
            out = {"lesson": lesson, "fault": fault, "faulted": first, "now_on": w,
                   "fence_before": joined["fence"], "seconds": round(seconds, 2)}
            if fault == "freeze":
                await asyncio.sleep(max(0.0, frozen_s - (time.monotonic() - t_fault)))
        finally:
            if fault == "freeze":
                os.killpg(proc.pid, signal.SIGCONT)
        if fault == "freeze":
            seen = []
            t_end = time.monotonic() + 5.0
            while time.monotonic() < t_end:
                seen.append(_avatar_worker(room, ident))
                await asyncio.sleep(0.05)
            out["displaced"] = first in seen or seen[-1] != w
            out["missing_after_resume_s"] = round(sum(x is None for x in seen) * 0.05, 2)
        return out
    finally:
        await room.disconnect()
        if end_lesson:
            await asyncio.to_thread(end, router, lesson)


async def _wait_avatar(room: rtc.Room, ident: str, limit_s: float) -> str:
    deadline = time.monotonic() + limit_s
    while (w := _avatar_worker(room, ident)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no avatar")
        await asyncio.sleep(0.05)
    return w


async def server_fault_recovery(router: RouterProcess, livekit, redis, lesson: str, fault: str,
                                down_s: float = 5.0, limit_s: float = 40.0) -> dict:
    """A lesson with its avatar, then ``livekit_restart`` (LiveKit SIGKILLed, back after
    ``down_s`` on the same ports; the learner re-joins) or ``redis_restart`` (Redis SIGKILLed,
    back from its append-only file after ``down_s``). ``seconds``: from the server being back
    to the lesson having its avatar again (LiveKit), or to a join answering 200 with the avatar
    live and the same worker and fence (Redis)."""
    joined = join(router, lesson)
    room = rtc.Room()
    await room.connect(joined["livekit_url"], joined["token"])
    ident = joined["avatar_identity"]
    try:
        await _wait_avatar(room, ident, limit_s)
        on_livekit = fault.startswith("livekit_restart")
        server = livekit if on_livekit else redis
        server.kill()
        await asyncio.sleep(down_s)
        server.start()
        t_back = time.monotonic()
        out = {"lesson": lesson, "fault": fault, "down_s": down_s}
        if on_livekit:
            await room.disconnect()
            again = await asyncio.to_thread(join, router, lesson)
            room = rtc.Room()
            await room.connect(again["livekit_url"], again["token"])
            out["worker"] = await _wait_avatar(room, ident, limit_s)
        else:
            again = await join_when_ready(router, lesson, limit_s, live=True)
            out["same_worker_and_fence"] = (again["worker_id"], again["fence"]) == (
                joined["worker_id"], joined["fence"])
            out["avatar_stayed"] = _avatar_worker(room, ident) == joined["worker_id"]
        out["seconds"] = round(time.monotonic() - t_back, 2)
        return out
    finally:
        await room.disconnect()
        await asyncio.to_thread(end, router, lesson)
