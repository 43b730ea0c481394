"""The avatar in a real room, as a learner and a voice agent see it.

A real livekit-server, Redis and our worker process (`python -m agent start`). The voice agent
is a participant using livekit-agents' own ``DataStreamAudioOutput`` (the stock avatar
protocol); the learner is a plain subscriber that records what arrives.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import numpy as np
import pytest
import redis as redis_sync
from livekit import api, rtc

from benchmarks.wer import tokens
from config.fleet import (
    RPC_SAY,
    SAY_TOPIC,
    SayRequest,
    TranscriptEntry,
    avatar_identity,
    room_name,
    transcript_key,
)
from scripts.room_probe import Learner, dispatch, reference_lag_ms, speak, voice_agent
from scripts.servers import AvatarWorkerProcess, free_port

pytestmark = [pytest.mark.livekit, pytest.mark.redis]
WORKER = "w-av"
SENTENCE = "Hello! Today we will practise the names of the colours: red, orange, purple and blue."


@pytest.fixture(scope="module")
def stack(livekit_server, redis_server):
    port = free_port()
    with AvatarWorkerProcess(livekit_server, redis_server.url, WORKER, capacity=4,
                             extra_env={"AVATAR_METRICS_PORT": str(port),
                                        "AVATAR_WORKER__CAPTIONS": "true",
                                        "AVATAR_WORKER__CAPTIONS_LANGUAGES":
                                            '["en", "es", "zh", "fa"]'}) as w:
        yield livekit_server, redis_server, w, port


async def backend_say(lk, lesson: str, req: SayRequest) -> None:
    """Exactly what the router's /say does: a reliable data packet to the avatar, sent with
    LiveKit's server API (no participant sends it)."""
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
        await lkapi.room.send_data(api.SendDataRequest(
            room=room_name(lesson), data=req.model_dump_json().encode(),
            kind=api.DataPacket.Kind.RELIABLE, destination_identities=[avatar_identity(lesson)],
            topic=SAY_TOPIC))


async def transcript(redis_url: str, lesson: str, n: int, timeout: float = 10
                     ) -> list[TranscriptEntry]:  # noqa: ASYNC109
    """The lesson's transcript lines in Redis, once there are ``n``."""
    r = redis_sync.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while len(rows := r.xrange(transcript_key(lesson))) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return [TranscriptEntry.model_validate_json(f[b"e"]) for _id, f in rows]


async def test_voice_agent_drives_lip_sync_and_av_stay_in_sync(stack):
    lk, redis, _w, _port = stack
    lesson = "av-sync"
    learner = Learner()
    await learner.join(lk, lesson)
    vroom, out, started, finished = await voice_agent(lk, lesson)
    try:
        await dispatch(lk, redis.url, WORKER, lesson)
        await learner.wait_tracks()
        await asyncio.sleep(3.0)  # idle: the avatar breathes and blinks, mouth at rest
        t_speak = time.monotonic()
        duration = await speak(out, SENTENCE)
        deadline = time.monotonic() + duration + 10
        while not finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        t_done = time.monotonic()
        await asyncio.sleep(1.5)
        t_end = time.monotonic()

        assert started and finished, "playback_started and playback_finished reach the agent"
        assert finished[0].interrupted is False
        assert abs(finished[0].playback_position - duration) < 0.25

        # full size from the first frame: WebRTC must not scale the face down while it ramps up
        assert learner.sizes == {(512, 512)}, learner.sizes
        idle_mouth, idle_audio = learner.window(t_speak - 1.2, t_speak)
        speech_mouth, speech_audio = learner.window(started[0] + 0.2, t_done - 0.3)
        rest_mouth, rest_audio = learner.window(t_done + 0.5, t_end)
        assert np.median(speech_audio) > 0.02 > np.median(idle_audio), "speech audio arrives"
        assert np.median(rest_audio) < 0.01, "silence after the segment"
        stats = {k: (round(float(np.median(v)), 2), round(float(np.std(v)), 2),
                     round(float(np.percentile(v, 90)), 2))
                 for k, v in (("idle", idle_mouth), ("speech", speech_mouth), ("rest", rest_mouth))}
        # the mouth moves with speech: it opens well past its rest shape, and keeps changing
        assert stats["speech"][2] > stats["idle"][0] + 3, stats
        assert stats["speech"][1] > 4 * max(stats["idle"][1], 0.2), stats
        # ...and rests in silence: back to the idle shape, still
        assert abs(stats["rest"][0] - stats["idle"][0]) < 1.5, stats
        assert stats["rest"][1] < stats["speech"][1] / 4, stats
        # By arrival time at a Python SDK subscriber, against what the same measure reads on
        # the exact viseme track of this sentence (see reference_lag_ms). This subscriber plays
        # audio ~50 ms later than video sent with it (NetEq, Opus framing), which the worker's
        # video delay (video.delay_ms, 40) is there for; it reads -5..+10 ms here.
        lag = learner.lag_ms(started[0] - 0.2, t_done + 0.3)
        offset = lag - reference_lag_ms(SENTENCE)
        assert abs(offset) <= 40, f"A/V offset at the subscriber {offset:+.0f} ms (lag {lag})"
        fps = (len(learner.video_t) - 1) / (learner.video_t[-1] - learner.video_t[0])
        assert fps > 23, f"video arrives at {fps:.1f} fps (WebRTC's default encoding caps 20)"
    finally:
        await vroom.disconnect()
        await learner.leave(lk)


async def test_clear_buffer_interrupts_within_200ms_and_next_segment_plays(stack):
    lk, redis, _w, _port = stack
    lesson = "av-clear"
    learner = Learner()
    await learner.join(lk, lesson)
    vroom, out, started, finished = await voice_agent(lk, lesson)
    try:
        await dispatch(lk, redis.url, WORKER, lesson)
        await learner.wait_tracks()
        speaking = asyncio.create_task(speak(out, "This is a long sentence that the learner will "
                                                "interrupt before it ends, because she has a "
                                                "question about the previous exercise."))
        while not started:
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.2)
        _, playing = learner.window(time.monotonic() - 0.5, time.monotonic())
        assert np.median(playing) > 0.02, "speaking before the interruption"
        t_clear = time.monotonic()
        out.clear_buffer()
        await speaking
        while not finished:
            assert time.monotonic() - t_clear < 5, "playback_finished always arrives"
            await asyncio.sleep(0.02)
        assert finished[0].interrupted is True
        assert 0.8 < finished[0].playback_position < 3.0
        await asyncio.sleep(0.8)
        at, rms = np.array(learner.audio_t), np.array(learner.audio_rms)
        after = rms[at > t_clear + 0.2]
        assert after.size and np.percentile(after, 90) < 0.01, \
            "audio stops within 200 ms of clear_buffer"

        finished.clear()
        started.clear()
        t_next = time.monotonic()
        duration = await speak(out, "Yes, of course. Let us go back.")
        while not finished:
            assert time.monotonic() - t_next < duration + 10
            await asyncio.sleep(0.05)
        assert finished[0].interrupted is False
        _, again = learner.window(t_next, time.monotonic())
        assert np.percentile(again, 75) > 0.02, "the next segment plays normally"
    finally:
        await vroom.disconnect()
        await learner.leave(lk)


async def test_lesson_text_is_spoken_with_a_transcription(stack):
    lk, redis, _w, _port = stack
    lesson = "av-say"
    learner = Learner()
    await learner.join(lk, lesson)
    try:
        await dispatch(lk, redis.url, WORKER, lesson, voice=None)  # a scripts-only lesson
        await learner.wait_tracks()
        text = "Buenos días. Hoy aprendemos los números."
        t_say = time.monotonic()
        await backend_say(lk, lesson, SayRequest(text=text, language="es"))
        deadline = time.monotonic() + 15
        while not learner.transcripts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)
        assert learner.transcripts, "the spoken text arrives as a transcription"
        said, attrs = learner.transcripts[0]
        assert said == text
        assert attrs["lk.transcribed_track_id"] == learner.tracks["avatar_audio"].sid
        # and the lesson's transcript has it, timed as it played
        [line] = await transcript(redis.url, lesson, 1)
        assert (line.speaker, line.text, line.language, line.source) == (
            "tutor", text, "es", "say")
        assert line.identity == avatar_identity(lesson)
        wall_say = time.time() - (time.monotonic() - t_say)
        assert wall_say < line.start < wall_say + 5 and line.end - line.start > 1.5
        mouth, audio = learner.window(t_say, time.monotonic())
        assert np.percentile(audio, 75) > 0.02, "the avatar speaks the text"
        assert np.max(mouth) > 5, "with its mouth"
    finally:
        await learner.leave(lk)


async def test_a_learner_cannot_make_the_tutor_speak(stack):
    """A learner whose token lets it publish data (the router's no longer does) sends the say
    packet and calls the say RPC: the tutor stays silent and the RPC is refused; the backend's
    say through LiveKit's server API still speaks."""
    lk, redis, _w, port = stack
    lesson = "av-hostile"
    learner = Learner()
    await learner.join(lk, lesson)
    try:
        await dispatch(lk, redis.url, WORKER, lesson, voice=None)
        await learner.wait_tracks()
        avatar = avatar_identity(lesson)
        hostile = SayRequest(text="Ignore the lesson. Everyone gets full marks.").model_dump_json()
        t0 = time.monotonic()
        await learner.room.local_participant.publish_data(
            hostile, reliable=True, topic=SAY_TOPIC, destination_identities=[avatar])
        with pytest.raises(rtc.RpcError, match="forbidden"):
            await learner.room.local_participant.perform_rpc(
                destination_identity=avatar, method=RPC_SAY, payload=hostile)
        await asyncio.sleep(3.0)
        _, audio = learner.window(t0, time.monotonic())
        assert not learner.transcripts, learner.transcripts
        assert np.percentile(audio, 90) < 0.01, "the tutor said nothing"
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
        refused = [ln for ln in body.decode().splitlines()
                   if ln.startswith('avatar_lesson_say_total{result="forbidden"}')]
        assert refused and float(refused[0].split()[1]) >= 2

        t_say = time.monotonic()
        await backend_say(lk, lesson, SayRequest(text="Let us begin."))
        deadline = time.monotonic() + 15
        while not learner.transcripts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        assert [t for t, _ in learner.transcripts] == ["Let us begin."]
        _, audio = learner.window(t_say, time.monotonic())
        # ~0.8 s of speech in the window (10 ms frames)
        assert (audio > 0.02).sum() * 0.01 > 0.4, "the backend's text is spoken"
    finally:
        await learner.leave(lk)


async def test_two_rooms_share_one_batch(stack):
    lk, redis, _w, port = stack
    rooms = []
    try:
        for lesson in ("batch-1", "batch-2"):
            learner = Learner()
            await learner.join(lk, lesson)
            await dispatch(lk, redis.url, WORKER, lesson, voice=None)
            rooms.append(learner)
        for learner in rooms:
            await learner.wait_tracks()

        def gauge() -> float:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            for line in body.decode().splitlines():
                if line.startswith("avatar_engine_batch_sessions "):
                    return float(line.split()[1])
            raise AssertionError("no avatar_engine_batch_sessions metric")

        deadline = time.monotonic() + 10
        while gauge() != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert gauge() == 2, "both lessons' frames are composed in one batch per tick"
    finally:
        for learner in rooms:
            await learner.leave(lk)


@pytest.mark.parametrize(("language", "said", "content"), [
    ("en", "Good morning teacher, I finished my homework.",
     {"morning", "teacher", "finished", "homework"}),
    ("es", "Buenos días, profesora. Terminé mi tarea de matemáticas.",
     {"buenos", "días", "profesora", "matemáticas"}),
])
async def test_learner_speech_is_captioned_in_its_language(stack, language, said, content):
    """The worker tells the deployment's lesson languages apart per utterance (Silero VAD cuts
    it, Whisper base detects and transcribes it)."""
    lk, redis, _w, _port = stack
    lesson = f"av-captions-{language}"
    learner = Learner()
    await learner.join(lk, lesson)
    try:
        await dispatch(lk, redis.url, WORKER, lesson, voice=None)
        await learner.wait_tracks()
        await learner.say_into_microphone(said, language)
        deadline = time.monotonic() + 20
        while not learner.transcripts and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert learner.transcripts, "the learner's speech comes back as a caption"
        text, attrs = learner.transcripts[0]
        assert attrs["lk.language"] == language, text
        # Whisper base on espeak-ng's voice after an Opus round trip mishears a word now and
        # then ("mi tarea" came back as "mitad"); the content words must come through
        assert len(content & set(tokens(text, language))) >= 3, text
        assert attrs["lk.transcribed_track_id"] == learner.mic.sid
        [line] = await transcript(redis.url, lesson, 1)
        assert (line.speaker, line.identity, line.text, line.source, line.language) == (
            "learner", learner.room.local_participant.identity, text, "captions", language)
        assert 2.0 < line.end - line.start < 7.0, "the utterance's span"
    finally:
        await learner.leave(lk)
