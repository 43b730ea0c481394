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
import time
from dataclasses import dataclass, field

import numpy as np
import redis as redis_sync
from livekit import api, rtc
from livekit.agents.types import TOPIC_TRANSCRIPTION
from livekit.agents.voice.avatar import DataStreamAudioOutput

from avatar_pipeline.avatar import AvatarRegistry
from avatar_pipeline.tts import default_engine
from config.fleet import DispatchMetadata, PoolKeys, agent_name, avatar_identity, room_name

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

    async def join(self, lk, lesson: str) -> None:
        asset = AvatarRegistry().default()
        box, self._size = asset.mouth_box, (asset.width, asset.height)
        # the middle of the mouth box (the sides reach the hair), with room for the idle sway
        self._crop = (slice(max(0, box.y - 8), box.y + box.height + 8),
                      slice(box.x + box.width // 5, box.x + box.width * 4 // 5))

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
        await self.room.connect(lk.url, token(lk, "learner", room_name(lesson)))

    async def _video(self, track):
        async for ev in rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA):
            f = ev.frame
            self.sizes.add((f.width, f.height))
            if (f.width, f.height) != self._size:
                continue  # a scaled-down frame: the mouth box is elsewhere (counted in sizes)
            img = np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 4)
            luma = img[self._crop][..., :3].astype(np.float32).mean(-1)
            self.video_t.append(time.monotonic())
            # mouth openness: share of teeth (bright) and cavity (dark) pixels, in percent; a
            # closed mouth shows lips and skin only. Robust to the idle sway (a few pixels).
            self.mouth.append(float(((luma < 90) | (luma > 215)).mean() * 100))

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
        deadline = time.monotonic() + timeout
        while len(self.tracks) < 2 or not self.video_t:
            assert time.monotonic() < deadline, f"avatar tracks: {list(self.tracks)}"
            await asyncio.sleep(0.1)

    def window(self, t0: float, t1: float):
        vt, at = np.array(self.video_t), np.array(self.audio_t)
        vm = np.array(self.mouth)[(vt >= t0) & (vt < t1)]
        ar = np.array(self.audio_rms)[(at >= t0) & (at < t1)]
        return vm, ar

    def av_offset_ms(self, t0: float, t1: float) -> float:
        """Lag of mouth activity behind the audio envelope (cross-correlation on a 5 ms grid)."""
        grid = np.arange(t0, t1, 0.005)
        a = np.interp(grid, self.audio_t, self.audio_rms)
        a = np.convolve(a, np.ones(8) / 8, mode="same")  # 40 ms envelope, like a video frame
        v = np.interp(grid, self.video_t, self.mouth)
        a, v = (a - a.mean()) / (a.std() + 1e-9), (v - v.mean()) / (v.std() + 1e-9)
        lags = np.arange(-40, 41)  # +-200 ms
        xc = [np.dot(a[max(0, -k):len(a) - max(0, k)], v[max(0, k):len(v) - max(0, -k)])
              for k in lags]
        return float(lags[int(np.argmax(xc))] * 5.0)

    async def leave(self, lk=None):
        """Leave; with ``lk``, also end the lesson (delete the room) so the avatar's job ends."""
        for t in self.tasks:
            t.cancel()
        name = self.room.name
        await self.room.disconnect()
        if lk is not None:
            async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))


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
