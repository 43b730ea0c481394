"""The viseme stream: each frame's mouth (15 Oculus/OpenXR viseme weights) and blink, published
on the data topic :data:`config.fleet.VISEME_TOPIC` for clients that draw their own avatar
(Unity, three.js, a 3D rig). Protocol: ``docs/viseme-stream.md``.

Each packet says when its first frame's audio starts to play into the avatar's audio track
(``t``, the sender's wall clock, Unix ms) and when the packet was sent (``s``, same clock). A
client learns the sender's clock from ``s`` (the smallest arrival minus ``s`` over the last
seconds: clock difference plus the network's delay, which the audio shares) and adds its own
audio receive delay (jitter buffer, output), so it shows each frame when its audio is heard.
(Browsers report the sender time of the audio playing, ``estimatedPlayoutTimestamp``, only for
audio synchronised with a video track, so the stream does not rely on it.) Frames go out
``frames_per_packet`` at a time as lossy data packets, before their audio plays (the audio
source holds some queued).
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
from livekit import rtc

from avatar_pipeline.viseme_set import VISEMES
from config.fleet import VISEME_TOPIC
from config.logs import get_logger

VERSION = 1
CHANNELS = (*VISEMES, "blink")  # the order of each frame's values

log = get_logger("agent.viseme_stream")


class VisemeStream:
    def __init__(self, room: rtc.Room, fps: int, frames_per_packet: int = 2) -> None:
        self.room, self.fps, self.per_packet = room, fps, frames_per_packet
        self._t0: float | None = None
        self._rows: list[list[float]] = []
        self._tasks: set[asyncio.Task] = set()
        self.packets_sent = 0

    def frame(self, audio_at: float, weights: np.ndarray, blink: float) -> None:
        """One frame whose audio starts to play at ``audio_at`` (event-loop clock)."""
        loop = asyncio.get_running_loop()
        if not self._rows:
            self._t0 = (time.time() - (loop.time() - audio_at)) * 1000.0
        w = np.clip(np.asarray(weights, np.float64), 0.0, None)
        total = w.sum()
        w = w / total if total > 1e-9 else np.eye(len(VISEMES))[0]
        self._rows.append([round(float(x), 3) for x in w] + [round(float(blink), 2)])
        if len(self._rows) >= self.per_packet:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        payload = json.dumps({"v": VERSION, "fps": self.fps, "t": round(self._t0, 1),
                              "s": round(time.time() * 1000.0, 1), "f": self._rows},
                             separators=(",", ":")).encode()
        self._rows = []
        task = asyncio.create_task(self._send(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, payload: bytes) -> None:
        try:
            await self.room.local_participant.publish_data(payload, reliable=False,
                                                           topic=VISEME_TOPIC)
            self.packets_sent += 1
        except Exception as exc:  # the room is going away: frames are lost, nothing else
            log.debug("viseme_stream.send_failed", error=repr(exc))
