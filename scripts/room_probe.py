"""A learner and a stock voice agent in a real room: the probe that tests and benchmarks use to
see the avatar as a user would.

* :class:`Learner` subscribes to the avatar and records, by arrival time, how open its mouth is
  (share of teeth and cavity pixels in the middle of the mouth box) and the audio level;
* :func:`voice_agent` joins as a livekit-agents voice agent with the stock
  ``DataStreamAudioOutput`` (the avatar protocol), and :func:`speak` sends it our TTS's speech
  faster than real time, as a TTS does;
* :func:`dispatch` does the router's part for one lesson (Redis fence + explicit dispatch).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import redis as redis_sync
from livekit import api, rtc
from livekit.agents.types import TOPIC_TRANSCRIPTION
from livekit.agents.voice.avatar import DataStreamAudioOutput

from agent.lesson import resample
from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.tts import default_engine
from config.fleet import (
    AUDIO_STREAM_TOPIC,
    RPC_CLEAR_BUFFER,
    RPC_PLAYBACK_FINISHED,
    RPC_PLAYBACK_STARTED,
    DispatchMetadata,
    PoolKeys,
    agent_name,
    avatar_identity,
    room_name,
)

VOICE = "voice-agent"


def token(lk, identity: str, room: str) -> str:
    return (api.AccessToken(lk.api_key, lk.api_secret).with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


async def dispatch(lk, redis_url: str, worker: str, lesson: str, fence: int = 1,
                   voice: str | None = VOICE, region: str = "local") -> None:
    r = redis_sync.Redis.from_url(redis_url)
    r.hset(PoolKeys(region).lesson(lesson), mapping={"worker": worker, "fence": fence})
    meta = DispatchMetadata(lesson_id=lesson, worker_id=worker, fence=fence,
                            voice_agent_identity=voice)
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
        await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=agent_name(worker), room=room_name(lesson), metadata=meta.to_json()))


def _hold(grid: np.ndarray, t, values) -> np.ndarray:
    """The value last received at or before each grid time (the first one before it)."""
    i = np.searchsorted(np.asarray(t), grid, side="right") - 1
    return np.asarray(values, np.float64)[np.clip(i, 0, len(values) - 1)]


def mouth_crop(asset) -> tuple[slice, slice]:
    """The middle of the mouth box (its sides reach the hair), with room for the idle sway."""
    box = asset.mouth_box
    return (slice(max(0, box.y - 8), box.y + box.height + 8),
            slice(box.x + box.width // 5, box.x + box.width * 4 // 5))


def mouth_openness(rgb_crop: np.ndarray) -> float:
    """Share of teeth (bright) and cavity (dark) pixels, in percent: a closed mouth shows lips
    and skin only. Robust to the idle sway (a few pixels)."""
    luma = rgb_crop[..., :3].astype(np.float32).mean(-1)
    return float(((luma < 90) | (luma > 215)).mean() * 100)


def lag_ms(audio_t, audio_rms, video_t, mouth, t0: float, t1: float) -> float:
    """Lag of mouth activity behind the audio envelope: cross-correlation on a 5 ms grid.

    Both signals as the learner gets them: a frame is on screen from its arrival until the next
    one, a 10 ms audio frame plays from its arrival for 10 ms (sample and hold). Linear
    interpolation between arrivals would date each frame by its first instant instead, which
    reads as video 15 ms early ((40 - 10) / 2)."""
    grid = np.arange(t0, t1, 0.005)
    a = _hold(grid, audio_t, audio_rms)
    a = np.convolve(a, np.ones(8) / 8, mode="same")  # 40 ms envelope, like a video frame
    v = _hold(grid, video_t, mouth)
    a, v = (a - a.mean()) / (a.std() + 1e-9), (v - v.mean()) / (v.std() + 1e-9)
    lags = np.arange(-40, 41)  # +-200 ms
    xc = [np.dot(a[max(0, -k):len(a) - max(0, k)], v[max(0, k):len(v) - max(0, -k)])
          for k in lags]
    return float(lags[int(np.argmax(xc))] * 5.0)


def reference_lag_ms(text: str, language: str = "en", fps: int = 25) -> float:
    """What :func:`lag_ms` reads for ``text`` when mouth and audio are exactly in sync.

    Mouth openness and loudness do not peak together in speech (a mouth opens for a vowel before
    it is loudest, closes while a consonant still sounds), so the measure has a bias of its own,
    different for every sentence. Here the engine renders our TTS's audio with its exact viseme
    track (from the phoneme events, no model) on a simulated clock, and the same measure is
    taken on that output: an A/V offset is a measured lag minus this one."""
    from avatar_pipeline.compose import i420_to_rgb
    from avatar_pipeline.engine import AvatarEngine, EngineConfig

    sp = default_engine().synthesize(text, language)
    asset = AvatarRegistry().default()
    crop = mouth_crop(asset)
    clock = [0.0]
    engine = AvatarEngine(asset, EngineConfig(fps=fps, sample_rate=sp.sample_rate),
                          clock=lambda: clock[0])
    frames = []
    session = engine.open_session(frames.append)
    session.say(sp.pcm, sp.viseme_track(fps))
    for _ in range(len(sp.viseme_track(fps)) + 10):
        engine.tick()
        clock[0] += 1 / fps
    mouth, rms = [], []
    spf, step = sp.sample_rate // fps, sp.sample_rate // 100
    for f in frames:
        img = i420_to_rgb(np.frombuffer(f.video, np.uint8), f.width, f.height)
        mouth.append(mouth_openness(img[crop]))
        a = (f.audio if f.audio is not None else np.zeros(spf, np.int16)) / 32768.0
        rms += [float(np.sqrt(np.mean(c * c))) for c in a[:spf // step * step].reshape(-1, step)]
    n = len(frames)
    return lag_ms(np.arange(len(rms)) / 100, rms, np.arange(n) / fps, mouth, 0.0, n / fps)


async def resubscribe_dropped(room: rtc.Room, identity: str, retried: set[str],
                              missing: Callable[[rtc.RemoteTrackPublication], bool]) -> None:
    """Ask once more for each of ``identity``'s publications that ``missing`` says has no
    track yet (``retried`` keeps the ones asked already). The Rust SDK drops a subscription
    whose track it hears of before the publication ("could not find published track with
    sid") and never subscribes again; a client retries."""
    for p in list(room.remote_participants.values()):  # the SDK changes them meanwhile
        if p.identity != identity:
            continue
        for pub in list(p.track_publications.values()):
            if missing(pub) and pub.sid not in retried:
                retried.add(pub.sid)
                pub.set_subscribed(False)
                await asyncio.sleep(0.2)
                pub.set_subscribed(True)


@dataclass
class Learner:
    """Subscribes to the avatar and records arrival times of video (mouth activity) and audio."""

    room: rtc.Room = field(default_factory=rtc.Room)
    video_t: list[float] = field(default_factory=list)
    mouth: list[float] = field(default_factory=list)
    audio_t: list[float] = field(default_factory=list)
    audio_rms: list[float] = field(default_factory=list)
    transcripts: list[tuple[str, dict]] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)  # video frame sizes seen
    tracks: dict[str, rtc.Track] = field(default_factory=dict)
    tasks: list[asyncio.Task] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)  # why LiveKit or the SDK let us go

    async def join(self, lk, lesson: str, access_token: str | None = None) -> None:
        """Join the lesson's room (with the router's learner token, or one minted here)."""
        asset = AvatarRegistry().default()
        self._size, self._crop = (asset.width, asset.height), mouth_crop(asset)
        self._avatar = avatar_identity(lesson)

        @self.room.on("disconnected")
        def _on_disconnected(reason):
            self.disconnects.append(rtc.DisconnectReason.Name(reason)
                                    if isinstance(reason, int) else str(reason))

        @self.room.on("track_subscribed")
        def _on_track(track, pub, participant):
            if participant.identity != avatar_identity(lesson):
                return
            self.tracks[pub.name] = track
            reader = self._video if track.kind == rtc.TrackKind.KIND_VIDEO else self._audio
            self.tasks.append(asyncio.create_task(reader(track)))

        async def _on_text(reader: rtc.TextStreamReader, who: str):
            self.transcripts.append((await reader.read_all(), dict(reader.info.attributes)))

        self.room.register_text_stream_handler(
            TOPIC_TRANSCRIPTION, lambda r, who: self.tasks.append(
                asyncio.create_task(_on_text(r, who))))
        await self.room.connect(lk.url, access_token or token(lk, "learner", room_name(lesson)))

    async def _video(self, track):
        async for ev in rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA):
            f = ev.frame
            self.sizes.add((f.width, f.height))
            if (f.width, f.height) != self._size:
                continue  # a scaled-down frame: the mouth box is elsewhere (counted in sizes)
            img = np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 4)
            self.video_t.append(time.monotonic())
            self.mouth.append(mouth_openness(img[self._crop]))

    async def _audio(self, track):
        async for ev in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            x = np.frombuffer(ev.frame.data, np.int16).astype(np.float32) / 32768
            self.audio_t.append(time.monotonic())
            self.audio_rms.append(float(np.sqrt(np.mean(x * x))))

    async def say_into_microphone(self, text: str, language: str = "en") -> float:
        """Publish a microphone track and speak ``text`` into it (our TTS), in real time."""
        sp = await asyncio.to_thread(default_engine().synthesize, text, language)
        src = rtc.AudioSource(sp.sample_rate, 1)
        self.mic = await self.room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("microphone", src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        await asyncio.sleep(1.0)  # let the avatar subscribe
        n = sp.sample_rate // 100
        pcm = np.concatenate([sp.pcm, np.zeros(sp.sample_rate, np.int16)])  # then 1 s of quiet
        for i in range(0, len(pcm) - n + 1, n):
            await src.capture_frame(rtc.AudioFrame(pcm[i:i + n].tobytes(), sp.sample_rate, 1, n))
        return sp.duration_s

    async def wait_tracks(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        """Until both of the avatar's tracks are subscribed and video frames arrive. The Rust
        SDK drops a subscription whose track it hears of before the publication ("could not
        find published track with sid"), and then never subscribes to it: a publication still
        unsubscribed after 3 s is asked for again (as a learner's client would retry)."""
        start = time.monotonic()
        deadline, retried = start + timeout, set()
        while len(self.tracks) < 2 or not self.video_t:
            assert time.monotonic() < deadline, f"avatar tracks: {list(self.tracks)}"
            if time.monotonic() - start > 3.0:
                await resubscribe_dropped(self.room, self._avatar, retried,
                                          lambda pub: pub.name not in self.tracks)
            await asyncio.sleep(0.1)

    def window(self, t0: float, t1: float):
        vt, at = np.array(self.video_t), np.array(self.audio_t)
        vm = np.array(self.mouth)[(vt >= t0) & (vt < t1)]
        ar = np.array(self.audio_rms)[(at >= t0) & (at < t1)]
        return vm, ar

    def lag_ms(self, t0: float, t1: float) -> float:
        """The mouth's lag behind the audio envelope between ``t0`` and ``t1``, as received
        (see :func:`lag_ms`; subtract :func:`reference_lag_ms` for the A/V offset)."""
        return lag_ms(self.audio_t, self.audio_rms, self.video_t, self.mouth, t0, t1)

    async def rejoin(self, lk, lesson: str, access_token: str | None = None) -> None:
        """Join again on a new connection after the room let this learner go, as the learner
        page does; what was recorded so far is kept."""
        for t in self.tasks:
            t.cancel()
        self.tasks.clear()
        self.tracks.clear()
        self.room = rtc.Room()
        await self.join(lk, lesson, access_token)

    async def leave(self, lk=None):
        """Leave; with ``lk``, also end the lesson (delete the room) so the avatar's job ends."""
        for t in self.tasks:
            t.cancel()
        name = self.room.name
        await self.room.disconnect()
        if lk is not None:
            async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))


class LearnerMic:
    """A learner's live microphone: a track that sends audio every 10 ms in real time, quiet
    (low noise) until :meth:`play` puts speech (a WAV's samples) into it, as a real microphone
    does. A VAD needs the quiet after speech to end the utterance."""

    RATE = 48000

    def __init__(self, room: rtc.Room, noise_rms: float = 30.0) -> None:
        self.room, self.noise_rms = room, noise_rms
        self._queue: list[tuple[np.ndarray, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._rng = np.random.default_rng(7)
        self.track_sid: str | None = None

    async def start(self) -> LearnerMic:
        self._src = rtc.AudioSource(self.RATE, 1)
        pub = await self.room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("microphone", self._src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        self.track_sid = pub.sid
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        n = self.RATE // 100
        t_next = time.monotonic()
        while True:
            if self._queue:
                head, done = self._queue[0]
                chunk, rest = head[:n], head[n:]
                self._queue[0] = (rest, done)
                if not len(rest):
                    self._queue.pop(0)
                    done.set_result(None)
                chunk = np.pad(chunk, (0, n - len(chunk)))
            else:
                chunk = (self._rng.standard_normal(n) * self.noise_rms).astype(np.int16)
            await self._src.capture_frame(rtc.AudioFrame(chunk.astype(np.int16).tobytes(),
                                                         self.RATE, 1, n))
            t_next += 0.01
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))

    async def play(self, pcm: np.ndarray, sample_rate: int) -> float:
        """Speak int16 mono ``pcm`` into the microphone; returns when it has been sent."""
        x = resample(np.asarray(pcm, np.int16), sample_rate, self.RATE)
        done = asyncio.get_running_loop().create_future()
        self._queue.append((x, done))
        await done
        return len(x) / self.RATE

    async def say(self, text: str, language: str = "en") -> float:
        """Our TTS's ``text`` into the microphone (a learner reading a sentence)."""
        sp = await asyncio.to_thread(default_engine().synthesize, text, language)
        return await self.play(sp.pcm, sp.sample_rate)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def voice_agent(lk, lesson: str) -> tuple[rtc.Room, DataStreamAudioOutput, list, list]:
    room = rtc.Room()
    await room.connect(lk.url, token(lk, VOICE, room_name(lesson)))
    out = DataStreamAudioOutput(room, destination_identity=avatar_identity(lesson),
                                wait_playback_start=True)
    started, finished = [], []
    out.on("playback_started", lambda ev: started.append(time.monotonic()))
    out.on("playback_finished", lambda ev: finished.append(ev))
    return room, out, started, finished


async def speak(out: DataStreamAudioOutput, text: str, chunk_ms: int = 20) -> float:
    """Our TTS's audio through the stock sender, pushed faster than real time (as TTS does)."""
    sp = await asyncio.to_thread(default_engine().synthesize, text, "en")
    n = sp.sample_rate * chunk_ms // 1000
    for i in range(0, len(sp.pcm), n):
        chunk = sp.pcm[i:i + n]
        await out.capture_frame(rtc.AudioFrame(chunk.tobytes(), sp.sample_rate, 1, len(chunk)))
        await asyncio.sleep(chunk_ms / 1000 / 5)
    out.flush()
    return sp.duration_s


async def speak_until_played(out: DataStreamAudioOutput, text: str, finished: list,
                             slack_s: float = 10.0) -> float:
    """:func:`speak`, then wait (up to its duration + ``slack_s``) for the avatar's
    ``playback_finished`` to land in ``finished`` (from :func:`voice_agent`)."""
    duration = await speak(out, text)
    deadline = time.monotonic() + duration + slack_s
    while not finished and time.monotonic() < deadline:  # noqa: ASYNC110 (a list the emitter fills)
        await asyncio.sleep(0.1)
    return duration


@dataclass
class RawVoiceAgent:
    """A voice agent written out on the wire, for what the stock sender never does: streams with
    any attributes, streams left open (a stall), leaving mid-stream. It records the avatar's
    ``lk.playback_started`` (arrival time) and ``lk.playback_finished`` (payload, arrival time)."""

    identity: str = VOICE
    room: rtc.Room = field(default_factory=rtc.Room)
    started: list[float] = field(default_factory=list)
    finished: list[tuple[dict, float]] = field(default_factory=list)

    async def join(self, lk, lesson: str) -> RawVoiceAgent:
        self.lesson = lesson

        async def _started(_data: rtc.RpcInvocationData) -> str:
            self.started.append(time.monotonic())
            return "ok"

        async def _finished(data: rtc.RpcInvocationData) -> str:
            self.finished.append((json.loads(data.payload), time.monotonic()))
            return "ok"

        await self.room.connect(lk.url, token(lk, self.identity, room_name(lesson)))
        lp = self.room.local_participant
        lp.register_rpc_method(RPC_PLAYBACK_STARTED, _started)
        lp.register_rpc_method(RPC_PLAYBACK_FINISHED, _finished)
        return self

    async def send(self, pcm: np.ndarray, rate: int, attributes: dict[str, str] | None = None,
                   *, chunk_ms: int = 20, speed: float = 5.0, close: bool = True,
                   channels: int = 1):
        """Stream int16 ``pcm`` (``channels`` interleaved) at ``speed`` x real time; returns
        the writer (closed or not)."""
        attrs = attributes if attributes is not None else {
            "sample_rate": str(rate), "num_channels": str(channels)}
        writer = await self.room.local_participant.stream_bytes(
            name=f"AUDIO_{time.monotonic_ns()}", topic=AUDIO_STREAM_TOPIC,
            destination_identities=[avatar_identity(self.lesson)], attributes=attrs)
        n = max(1, rate * chunk_ms // 1000) * channels
        for i in range(0, len(pcm), n):
            await writer.write(np.asarray(pcm[i:i + n], np.int16).tobytes())
            await asyncio.sleep(chunk_ms / 1000 / speed)
        if close:
            await writer.aclose()
        return writer

    async def clear_buffer(self) -> str:
        return await self.room.local_participant.perform_rpc(
            destination_identity=avatar_identity(self.lesson), method=RPC_CLEAR_BUFFER,
            payload="")

    async def wait_finished(self, n: int, timeout: float) -> list[tuple[dict, float]]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while len(self.finished) < n and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.finished


SKEW_SIZE = 64  # the in-sync source's frames: gray, and white for the flash


async def in_sync_source(lk, room: str, seconds: float, fps: int = 25) -> float:
    """A publisher whose audio and video are in sync by construction: a gray picture that
    flashes white for one frame (40 ms) while a 40 ms, 1 kHz tone plays, once a second for
    ``seconds`` (after 1 s of settling). Its audio queue is kept near empty and every frame is
    captured when the audio pushed with it starts to play, with no extra video delay (written
    out here rather than through ``agent/sync.py``, so the reference does not share the code it
    judges): what a subscriber measures on it is that subscriber's own skew. Both tracks in one stream, as the
    avatar's. Returns when the first event was due (``time.monotonic()``, as the loop's clock)."""
    rate, size = 48000, SKEW_SIZE
    pub = rtc.Room()
    audio_src = rtc.AudioSource(rate, 1, queue_size_ms=50)
    video_src = rtc.VideoSource(size, size)
    pending: list[asyncio.TimerHandle] = []
    try:
        await pub.connect(lk.url, token(lk, "skew-source", room))
        await pub.local_participant.publish_track(
            rtc.LocalVideoTrack.create_video_track("v", video_src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False,
                                    stream="sync", video_encoding=rtc.VideoEncoding(
                                        max_framerate=fps, max_bitrate=300_000)))
        await pub.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("a", audio_src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, stream="sync"))
        gray = np.full((size, size, 4), 128, np.uint8)
        white = np.full((size, size, 4), 255, np.uint8)
        n10 = rate // 100
        tone = (0.5 * 32767 * np.sin(2 * np.pi * 1000 * np.arange(4 * n10) / rate)).astype(np.int16)
        silence = np.zeros(n10, np.int16)
        loop = asyncio.get_running_loop()
        start = loop.time() + 1.0  # let the subscriptions settle
        tick, last_due = 0, 0.0
        while loop.time() < start + seconds + 1.0:
            # every 10 ms: 10 ms of audio; every 40 ms: a frame; once a second: the event
            await asyncio.sleep(max(0.0, start + tick * 0.01 - loop.time()))
            event = tick % 100 == 0 and loop.time() >= start
            if tick % (100 // fps) == 0:  # one white frame (40 ms) with the 40 ms tone
                frame = rtc.VideoFrame(size, size, rtc.VideoBufferType.RGBA,
                                       (white if event else gray).tobytes())
                # every frame goes out when the audio pushed now starts to play
                last_due = max(loop.time() + audio_src.queued_duration, last_due + 0.001)
                pending.append(loop.call_at(last_due, video_src.capture_frame, frame))
            if event:
                await audio_src.capture_frame(rtc.AudioFrame(tone.tobytes(), rate, 1, len(tone)))
                tick += 4
            else:
                await audio_src.capture_frame(rtc.AudioFrame(silence.tobytes(), rate, 1, n10))
                tick += 1
        await asyncio.sleep(0.5)
        return start
    finally:
        for h in pending:
            h.cancel()
        await pub.disconnect()


async def subscriber_skew_ms(lk, room: str, seconds: float = 6.0) -> float:
    """The A/V skew a Python SDK subscriber adds by itself: :func:`lag_ms` between the flash
    and the tone of :func:`in_sync_source`, by arrival, as the learner measures the avatar.
    Uses its own room, so it does not disturb a lesson."""
    rate = 48000
    sub = rtc.Room()
    got_t, luma, aud_t, rms = [], [], [], []
    tasks: list[asyncio.Task] = []

    async def read_video(track):
        async for ev in rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA):
            img = np.frombuffer(ev.frame.data, np.uint8)
            got_t.append(time.monotonic())
            luma.append(float(img.reshape(-1, 4)[:, :3].mean()))

    async def read_audio(track):
        async for ev in rtc.AudioStream(track, sample_rate=rate, num_channels=1):
            x = np.frombuffer(ev.frame.data, np.int16).astype(np.float32) / 32768
            aud_t.append(time.monotonic())
            rms.append(float(np.sqrt(np.mean(x * x))))

    @sub.on("track_subscribed")
    def _on_track(track, _pub, _participant):
        reader = read_video if track.kind == rtc.TrackKind.KIND_VIDEO else read_audio
        tasks.append(asyncio.create_task(reader(track)))

    try:
        await sub.connect(lk.url, token(lk, "skew-listener", room))
        t0 = await in_sync_source(lk, room, seconds)
        return lag_ms(aud_t, rms, got_t, luma, t0, t0 + seconds)
    finally:
        for t in tasks:
            t.cancel()
        await sub.disconnect()
