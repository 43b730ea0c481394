"""A whole voice agent drives the avatar in a real room: a livekit-agents ``AgentSession`` with
our local STT (faster-whisper tiny.en, ``WhisperSTT``), Silero VAD (its weights inside
livekit-plugins-silero), a scripted stand-in for the LLM (``ScriptedLLM``, a fake: no LLM runs
here) and our espeak-ng TTS, speaking through ``FleetAvatar``. A learner whose microphone plays
speech talks to it; when the learner talks over a long reply, the session's own barge-in clears
the avatar: the learner stops hearing it, the avatar reports the speech interrupted at the
position reached, and the reply to what the learner said plays normally. LiveKit, Redis, the
worker and the router are real."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, room_io
from livekit.plugins import silero

from config.fleet import room_name
from fleet_avatar import EspeakTTS, FleetAvatar, ScriptedLLM, WhisperSTT
from scripts.failover import join
from scripts.room_probe import Learner, LearnerMic
from scripts.servers import DEV_API_KEY, AvatarWorkerProcess, RouterProcess
from tests.agent.test_fleet_avatar import _agent_token, _loud

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
LESSON = "loop-1"
STORY = ("Once upon a time there was a small fox who lived at the edge of a very large forest. "
         "Every morning she walked down to the river to watch the boats go by, and every "
         "evening she told the owls what she had seen.")
RULES = (
    (("homework",), "Well done for finishing your homework!"),
    (("story", "tell"), STORY),  # tiny.en on espeak's voice may mishear one of them
)
FALLBACK = "Of course. What is your question?"


def _transcript(router: RouterProcess, fmt: str):
    req = urllib.request.Request(
        f"http://{router.address}/v1/lessons/{LESSON}/transcript?format={fmt}",
        headers={"X-API-Key": DEV_API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if fmt == "json" else body


async def _heard(learner: Learner, t0: float, seconds: float, share: float = 0.3) -> bool:
    """Whether the learner hears the tutor for a good part of a second within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        if now - t0 > 1.0 and _loud(learner, now - 1.0, now) > share:
            return True
    return False


async def test_a_voice_agent_hears_the_learner_and_barge_in_clears_the_avatar(
        livekit_server, redis_url):
    lk = livekit_server
    with AvatarWorkerProcess(lk, redis_url, "w-loop", capacity=2), \
            RouterProcess(lk, redis_url) as router:
        learner = Learner()
        joined = await asyncio.to_thread(join, router, LESSON)
        await learner.join(lk, LESSON, joined["token"])
        mic = await LearnerMic(learner.room).start()

        agent_room = rtc.Room()
        await agent_room.connect(lk.url, _agent_token(lk, room_name(LESSON)))
        brain = ScriptedLLM(rules=RULES, fallback=FALLBACK)
        session = AgentSession(stt=WhisperSTT(), llm=brain, tts=EspeakTTS(),
                               vad=silero.VAD.load())
        created, finished = [], []
        session.on("speech_created", lambda ev: created.append(ev.speech_handle))
        try:
            await FleetAvatar(router_url=f"http://{router.address}",
                              api_key=DEV_API_KEY).start(session, room=agent_room)
            await session.start(
                Agent(instructions="You are a patient tutor."), room=agent_room,
                room_options=room_io.RoomOptions(
                    participant_identity=learner.room.local_participant.identity))
            session.output.audio.on("playback_finished", finished.append)
            await learner.wait_tracks()
            await session.say("Hello! How are you today?")

            # the learner speaks; the agent hears it and answers through the avatar
            t0 = time.monotonic()
            await mic.say("Good morning teacher, I finished my homework.")
            assert await _heard(learner, t0, 20), "the tutor answers the learner"
            assert any("homework" in h.lower() for h in brain.heard), brain.heard
            await asyncio.wait_for(created[-1].wait_for_playout(), 20)
            assert not created[-1].interrupted

            # a long reply, and the learner talks over it
            await mic.say("Tell me a story, please.")
            assert await _heard(learner, time.monotonic(), 20), "the story starts"
            story = created[-1]
            assert brain.reply_to(brain.heard[-1]) == STORY, brain.heard
            await asyncio.sleep(1.5)
            cut: list[float] = []

            async def _watch() -> None:
                while not story.interrupted:
                    await asyncio.sleep(0.005)
                cut.append(time.monotonic())

            watch = asyncio.create_task(_watch())
            n_finished = len(finished)
            t_talk = time.monotonic()
            await mic.say("Wait, I have a question.")
            await asyncio.wait_for(watch, 10)
            await asyncio.wait_for(story.wait_for_playout(), 10)
            t_cut = cut[0]
            ev = finished[n_finished]
            assert ev.interrupted, "the avatar reports the story interrupted"
            assert 1.0 < ev.playback_position < 12.0, ev.playback_position
            # the learner stopped hearing the story soon after the session cut it: its last
            # audible frame is the one before the first pause (the reply comes later)
            audio_t, rms = np.array(learner.audio_t), np.array(learner.audio_rms)
            loud = audio_t[(audio_t > t_cut) & (rms > 0.01)]
            ends = [t for t, nxt in zip(loud, loud[1:], strict=False) if nxt - t > 0.3]
            stop_at = ends[0] if ends else (loud[-1] if len(loud) else t_cut)
            stopped_after = stop_at - t_cut
            print(f"barge-in: the session cut the story {t_cut - t_talk:.2f} s after the "
                  f"learner began talking; the learner's audio stopped "
                  f"{1000 * stopped_after:.0f} ms after the cut, at "
                  f"{ev.playback_position:.2f} s into the story")
            assert stopped_after < 0.4, f"the story went on {stopped_after:.2f} s after the cut"

            # the reply to what the learner said plays normally (judged once the session made
            # it: a loaded test process may take in the story's last frames late)
            deadline = time.monotonic() + 20
            while created[-1] is story:
                assert time.monotonic() < deadline, "the session answers the question"
                await asyncio.sleep(0.05)
            reply = created[-1]
            assert await _heard(learner, time.monotonic(), 20), "the tutor answers the question"
            await asyncio.wait_for(reply.wait_for_playout(), 20)
            # With a slow STT (Whisper on a busy 2-core box) the transcript can come after the
            # session committed the turn: livekit-agents then drops the reply it began and makes
            # another. The answer the session settles on must play whole; a reply cut while it
            # was still the session's last is the avatar's fault.
            replaced = 0
            while reply.interrupted and created[-1] is not reply:
                replaced += 1
                reply = created[-1]
                await asyncio.wait_for(reply.wait_for_playout(), 20)
            print(f"the answer played after {replaced} replaced replies")
            assert not reply.interrupted
            assert not finished[-1].interrupted

            # the lesson's transcript, from the router: the agent's replies as the tutor's
            # lines, its speech-to-text of the learner as the learner's, in the order said
            lines = (await asyncio.to_thread(_transcript, router, "json"))["lines"]
            said = [(x["speaker"], x["text"]) for x in lines]
            tutor = [t for who, t in said if who == "tutor"]
            assert any("finishing your homework" in t for t in tutor), said
            # the story as far as it played: the learner cut it (its first sentence or more)
            assert any(t.startswith("Once upon a time") and len(t) < len(STORY)
                       for t in tutor), said
            assert any(who == "learner" and "homework" in t.lower() for who, t in said), said
            assert all(x["source"] == "voice_agent" for x in lines), lines
            first_reply = next(i for i, t in enumerate(said) if "finishing your" in t[1])
            assert any(w == "learner" for w, _ in said[:first_reply]), "asked before answered"
            vtt = await asyncio.to_thread(_transcript, router, "vtt")
            assert vtt.startswith("WEBVTT") and "<v Learner>" in vtt and "<v Tutor>" in vtt
        finally:
            await mic.aclose()
            await session.aclose()
            await agent_room.disconnect()
            await learner.leave(lk)
