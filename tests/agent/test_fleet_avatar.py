"""``FleetAvatar`` in a voice agent, as a LiveKit developer adds it: a livekit-agents
``AgentSession`` speaking with our espeak-ng TTS (``EspeakTTS``) asks our real router for the
lesson's avatar and speaks through it; a learner in the room sees the mouth move and hears the
tutor. Barge-in (``session.interrupt()``, what the session does when the learner talks over the
tutor) stops the avatar's audio at the learner, the speech ends interrupted, and the next reply
plays. LiveKit, Redis, the worker and the router are real; no LLM or STT is needed for this."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import api, rtc
from livekit.agents import Agent, AgentSession, room_io

from config.fleet import avatar_identity, room_name
from fleet_avatar import EspeakTTS, FleetAvatar, FleetAvatarError, lesson_of_room
from scripts.failover import join
from scripts.room_probe import Learner, token
from scripts.servers import DEV_API_KEY, AvatarWorkerProcess, RouterProcess

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
LESSON = "plugin-1"
VOICE = "tutor-agent"


def _agent_token(lk, room: str) -> str:
    """What LiveKit gives a dispatched livekit-agents worker: an agent-kind participant."""
    return (api.AccessToken(lk.api_key, lk.api_secret).with_identity(VOICE).with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room, agent=True)).to_jwt())


def _loud(learner: Learner, t0: float, t1: float, level: float = 0.01) -> float:
    """Share of the learner's received audio frames in [t0, t1) above ``level``."""
    _, rms = learner.window(t0, t1)
    return float(np.mean(rms > level)) if len(rms) else 0.0


def _last_loud(learner: Learner, level: float = 0.01) -> float:
    t = [ts for ts, r in zip(learner.audio_t, learner.audio_rms, strict=True) if r > level]
    return t[-1] if t else 0.0


def test_lesson_of_room():
    assert lesson_of_room(room_name("abc-1")) == "abc-1"
    assert lesson_of_room("someone-elses-room") is None


async def test_a_voice_agent_adds_the_avatar_in_two_lines_and_barge_in_stops_it(
        livekit_server, redis_url):
    with AvatarWorkerProcess(livekit_server, redis_url, "w-plugin", capacity=2), \
            RouterProcess(livekit_server, redis_url) as router:
        learner = Learner()
        joined = await asyncio.to_thread(join, router, LESSON)  # the lesson backend's call
        await learner.join(livekit_server, LESSON, joined["token"])

        agent_room = rtc.Room()  # the voice agent, dispatched into the lesson by the backend
        await agent_room.connect(livekit_server.url, _agent_token(livekit_server, room_name(LESSON)))
        session = AgentSession(tts=EspeakTTS())
        try:
            # the two lines
            avatar = FleetAvatar(router_url=f"http://{router.address}", api_key=DEV_API_KEY)
            info = await avatar.start(session, room=agent_room)
            assert info.avatar_identity == avatar_identity(LESSON)
            assert info.worker_id == "w-plugin" and info.fence == joined["fence"]

            await session.start(Agent(instructions="You are a patient tutor."),
                                room=agent_room,
                                room_options=room_io.RoomOptions(audio_input=False))
            await learner.wait_tracks()

            # a reply plays through the avatar: the learner hears it and the mouth moves
            t0 = time.monotonic()
            await session.say("Hello Ada! Today we will read a short story together.")
            t1 = time.monotonic()
            # the attribute reaches the learner through LiveKit; the worker retries setting it
            # (5 s per try) if a request is lost, so this waits longer than one try
            def on_behalf() -> str | None:
                p = learner.room.remote_participants.get(avatar_identity(LESSON))
                return None if p is None else p.attributes.get("lk.publish_on_behalf")

            for _ in range(150):
                if on_behalf() == VOICE:
                    break
                await asyncio.sleep(0.1)
            assert on_behalf() == VOICE, "clients show the avatar as the voice agent's"
            assert t1 - t0 > 2.0, "say() returns when the avatar finished playing it"
            mouth, _ = learner.window(t0, t1)
            assert _loud(learner, t0, t1) > 0.4, "the tutor's voice reaches the learner"
            assert np.ptp(mouth) > 0.05, "the mouth moves while it speaks"

            # barge-in: the learner talks over the tutor, the session interrupts its speech
            handle = session.say("Once upon a time there was a small fox who lived at the edge "
                                 "of a very large forest, and every morning she walked to the "
                                 "river to watch the boats go by.")
            await asyncio.sleep(2.5)
            assert _loud(learner, time.monotonic() - 1.0, time.monotonic()) > 0.4
            t_cut = time.monotonic()
            await session.interrupt()
            await asyncio.wait_for(handle.wait_for_playout(), 5)
            assert handle.interrupted, "the speech ends interrupted"
            await asyncio.sleep(1.5)
            stopped_after = _last_loud(learner) - t_cut
            # 10-246 ms in six runs alone on the 2-core machine, 450 ms once while a fresh
            # clone's CI shared it; the README quotes them
            assert stopped_after < 0.6, f"the avatar went on for {stopped_after:.2f} s"
            assert _loud(learner, t_cut + 0.5, time.monotonic()) < 0.05

            # the next reply plays normally
            t2 = time.monotonic()
            await session.say("Good question. Let us look at that word again.")
            assert _loud(learner, t2, time.monotonic()) > 0.4
        finally:
            await session.aclose()
            await agent_room.disconnect()
            await learner.leave(livekit_server)
        print(f"barge-in: the learner's audio stopped {1000 * stopped_after:.0f} ms after "
              "interrupt()")


async def test_a_room_that_is_no_lesson_or_a_bad_key_is_a_clear_error(livekit_server,
                                                                      redis_url):
    with RouterProcess(livekit_server, redis_url) as router:
        room = rtc.Room()
        await room.connect(livekit_server.url, token(livekit_server, VOICE, "standup"))
        session = AgentSession(tts=EspeakTTS())
        try:
            with pytest.raises(FleetAvatarError, match="not a lesson room"):
                await FleetAvatar(router_url=f"http://{router.address}",
                                  api_key=DEV_API_KEY).start(session, room=room)
            with pytest.raises(FleetAvatarError, match="invalid_key"):
                await FleetAvatar(router_url=f"http://{router.address}", api_key="wrong",
                                  lesson_id="x1").start(session, room=room)
            # no worker at all: the 503s are retried until the deadline, then it says why
            with pytest.raises(FleetAvatarError, match="no_capacity"):
                await FleetAvatar(router_url=f"http://{router.address}", api_key=DEV_API_KEY,
                                  lesson_id="x2", avatar_timeout_s=3).start(session, room=room)
            assert session.output.audio is None, "nothing half-set after a failure"
        finally:
            await session.aclose()
            await room.disconnect()
    with pytest.raises(FleetAvatarError, match="router_url and api_key"):
        FleetAvatar(router_url="", api_key="")


def test_the_example_agent_registers_its_entrypoint():
    """examples/tutor_agent.py (the README's example) loads and names its agent."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "tutor_agent.py"
    spec = importlib.util.spec_from_file_location("tutor_agent", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.entrypoint.__name__ == "entrypoint"
    assert mod.server._agent_name == "tutor-voice"
