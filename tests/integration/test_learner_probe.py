"""The test learner (``scripts.room_probe.Learner``) on a real livekit-server: when the room
lets it go it records why, and ``rejoin`` puts it back in the room on a new connection, as the
learner page does (the chaos tests rely on both)."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit import api, rtc

from config.fleet import room_name
from scripts.room_probe import Learner

pytestmark = pytest.mark.livekit


async def _until(cond, timeout: float, what: str) -> None:  # noqa: ASYNC109
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, what
        await asyncio.sleep(0.05)


async def test_a_learner_the_room_lets_go_says_why_and_joins_again(livekit_server):
    lk, lesson = livekit_server, "probe-rejoin"
    learner = Learner()
    await learner.join(lk, lesson)
    try:
        connected = rtc.ConnectionState.CONN_CONNECTED
        await _until(lambda: learner.room.connection_state == connected, 10, "joined")
        async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
            await lkapi.room.remove_participant(api.RoomParticipantIdentity(
                room=room_name(lesson), identity="learner"))
            await _until(lambda: learner.room.connection_state
                         == rtc.ConnectionState.CONN_DISCONNECTED, 10, "let go")
            assert learner.disconnects == ["PARTICIPANT_REMOVED"]
            await learner.rejoin(lk, lesson)
            await _until(lambda: learner.room.connection_state == connected, 10, "back")
            people = await lkapi.room.list_participants(api.ListParticipantsRequest(
                room=room_name(lesson)))
            assert [p.identity for p in people.participants] == ["learner"]
    finally:
        await learner.leave()
