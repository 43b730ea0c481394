"""A learner in a real browser: headless Chromium (Debian's, driven by Playwright) opens
``web/learner.html``, which joins the lesson room with livekit-client and records what the
learner is shown and played (see the page). Unlike a Python SDK subscriber, the browser lines
audio and video of one stream up (LiveKit ``sync_streams``) the way learners get them.

    async with BrowserLearner(lk, lesson) as b: ...; b.lag_ms()
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from avatar_pipeline.avatar import AvatarRegistry
from config.fleet import room_name
from scripts.room_probe import lag_ms, mouth_crop, token
from scripts.servers import WEB, serve_web

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Chromium found: scripts/setup.sh installs Debian's `chromium`")


class BrowserLearner:
    def __init__(self, lk, lesson: str, identity: str = "learner-browser") -> None:
        self.lk, self.lesson, self.identity = lk, lesson, identity
        self.record: dict = {}

    async def __aenter__(self) -> BrowserLearner:
        from playwright.async_api import async_playwright

        if not (WEB / "vendor" / "livekit-client.umd.js").exists():
            raise RuntimeError("web/vendor/livekit-client.umd.js is missing: run scripts/setup.sh")
        self._http = serve_web()
        self._pw = await async_playwright().start()
        self._browser = await self._pw.chromium.launch(
            executable_path=chromium_path(), headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        self.page = await self._browser.new_page()
        crop = mouth_crop(AvatarRegistry().default())
        measure = f"{crop[1].start},{crop[0].start},{crop[1].stop},{crop[0].stop}"
        jwt = token(self.lk, self.identity, room_name(self.lesson))
        port = self._http.server_address[1]
        await self.page.goto(f"http://127.0.0.1:{port}/learner.html?url={self.lk.url}"
                             f"&token={jwt}&measure={measure}")
        for _ in range(200):
            state = await self.page.evaluate("[window.avRecord.ready, window.avRecord.error]")
            if state[0] or state[1]:
                break
            await asyncio.sleep(0.1)
        if not state[0]:
            raise RuntimeError(f"the learner page did not join: {state[1]}")
        return self

    async def now_ms(self) -> float:
        return await self.page.evaluate("performance.now()")

    async def collect(self) -> dict:
        self.record = await self.page.evaluate("({video: avRecord.video, audio: avRecord.audio})")
        return self.record

    async def receive_stats(self) -> dict:
        """Per kind of the tutor's tracks: the browser's MediaStream id, and its average
        jitter-buffer and processing delays in ms (WebRTC ``getStats()``, inbound-rtp)."""
        return await self.page.evaluate("""async () => {
          const out = {};
          for (const p of window.lkRoom.remoteParticipants.values()) {
            if (!p.identity.startsWith("avatar-")) continue;
            for (const pub of p.trackPublications.values()) {
              const t = pub.track;
              if (!t || !t.receiver) continue;
              const row = { stream: t.mediaStream ? t.mediaStream.id : null };
              (await t.receiver.getStats()).forEach((s) => {
                if (s.type !== "inbound-rtp" || !s.jitterBufferEmittedCount) return;
                row.jitter_buffer_ms = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
                row.processing_ms = 1000 * s.totalProcessingDelay / s.jitterBufferEmittedCount;
              });
              out[pub.kind] = row;
            }
          }
          return out;
        }""")

    def lag_ms(self, t0_ms: float, t1_ms: float) -> float:
        """Mouth vs audio lag as shown and played in the page, between page times (ms)."""
        v = self.record["video"]
        a = self.record["audio"]
        return lag_ms([t / 1000 for t, _ in a], [x for _, x in a],
                      [t / 1000 for t, _ in v], [x for _, x in v], t0_ms / 1000, t1_ms / 1000)

    async def __aexit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            await self._browser.close()
        with contextlib.suppress(Exception):
            await self._pw.stop()
        self._http.shutdown()
