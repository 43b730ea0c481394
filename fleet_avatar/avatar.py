"""``FleetAvatar``: the AvatarSession of livekit-agents' avatar plugins, for our fleet."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import aiohttp
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

from config.fleet import LESSON_ROOM_PREFIX
from config.logs import get_logger

log = get_logger("fleet_avatar")
ENV_URL, ENV_KEY = "FLEET_AVATAR_ROUTER_URL", "FLEET_AVATAR_API_KEY"


class FleetAvatarError(RuntimeError):
    """The router refused (the message carries its reason), or no avatar came in time."""


def lesson_of_room(room: str) -> str | None:
    """The lesson id of a room our router named (``lesson-<id>``), else None."""
    return room[len(LESSON_ROOM_PREFIX):] if room.startswith(LESSON_ROOM_PREFIX) else None


@dataclass(frozen=True)
class AvatarInfo:
    lesson_id: str
    avatar_identity: str
    worker_id: str
    region: str
    fence: int


class FleetAvatar:
    """``router_url`` / ``api_key``: our router and a backend key (default
    ``FLEET_AVATAR_ROUTER_URL`` / ``FLEET_AVATAR_API_KEY``: the ``AVATAR_`` prefix belongs to the
    fleet's own settings); ``lesson_id``: default from the room's
    name; ``avatar_timeout_s``: how long :meth:`start` waits for the avatar (503s from a full
    fleet are retried within it, as their Retry-After says)."""

    def __init__(self, *, router_url: str | None = None, api_key: str | None = None,
                 lesson_id: str | None = None, region: str | None = None,
                 avatar_timeout_s: float = 20.0) -> None:
        self.router_url = (router_url or os.environ.get(ENV_URL, "")).rstrip("/")
        self.api_key = api_key or os.environ.get(ENV_KEY, "")
        if not self.router_url or not self.api_key:
            raise FleetAvatarError(f"router_url and api_key are needed (arguments, or {ENV_URL} "
                                   f"and {ENV_KEY})")
        self.lesson_id = lesson_id
        self.region = region
        self.avatar_timeout_s = avatar_timeout_s
        self.info: AvatarInfo | None = None

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> AvatarInfo:
        """Bring the lesson's avatar into ``room`` and send the session's speech to it. Call it
        before ``agent_session.start(...)`` (the session then keeps this audio output)."""
        lesson = self.lesson_id or lesson_of_room(room.name)
        if not lesson:
            raise FleetAvatarError(f"room {room.name!r} is not a lesson room "
                                   f"({LESSON_ROOM_PREFIX}<id>): pass lesson_id")
        me = room.local_participant.identity
        deadline = time.monotonic() + self.avatar_timeout_s
        joined = await self._join(lesson, me, deadline)
        identity = joined["avatar_identity"]
        self.info = AvatarInfo(lesson, identity, joined["worker_id"], joined["region"],
                               int(joined["fence"]))
        log.info("fleet_avatar.assigned", lesson_id=lesson, avatar_identity=identity,
                 worker_id=self.info.worker_id, fence=self.info.fence,
                 avatar_state=joined["avatar_state"])
        await self._wait_for(room, identity, deadline)
        # the avatar publishes audio and video on our behalf; the session's speech goes to it
        agent_session.output.audio = DataStreamAudioOutput(
            room, destination_identity=identity, wait_remote_track=rtc.TrackKind.KIND_VIDEO)
        log.info("fleet_avatar.started", lesson_id=lesson, avatar_identity=identity)
        return self.info

    async def _join(self, lesson: str, me: str, deadline: float) -> dict:
        """The router's join for this lesson, as its voice agent (idempotent per lesson)."""
        body = {"user_id": me, "display_name": "voice agent", "voice_agent_identity": me}
        if self.region:
            body["region"] = self.region
        url = f"{self.router_url}/v1/lessons/{lesson}/join"
        headers = {"X-API-Key": self.api_key}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while True:
                try:
                    async with http.post(url, json=body, headers=headers) as r:
                        got = await r.json(content_type=None)
                        if r.status == 200:
                            return got
                        retry = float(r.headers.get("Retry-After", "0") or 0)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    got, retry = {"error": "router_unreachable", "detail": repr(exc)}, 1.0
                if not retry or time.monotonic() + retry > deadline:
                    raise FleetAvatarError(f"the router refused the avatar for lesson {lesson}: "
                                           f"{got.get('error')} {got.get('detail') or ''}")
                log.warning("fleet_avatar.retrying", lesson_id=lesson, reason=got.get("error"),
                            retry_after_s=retry)
                await asyncio.sleep(retry)

    async def _wait_for(self, room: rtc.Room, identity: str, deadline: float) -> None:
        arrived = asyncio.Event()

        def on_joined(p: rtc.RemoteParticipant) -> None:
            if p.identity == identity:
                arrived.set()

        room.on("participant_connected", on_joined)
        try:
            if identity not in {p.identity for p in room.remote_participants.values()}:
                await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise FleetAvatarError(f"the avatar {identity} did not join {room.name} within "
                                   f"{self.avatar_timeout_s:g} s") from None
        finally:
            room.off("participant_connected", on_joined)
