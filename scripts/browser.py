"""A learner in a real browser: headless Chromium (Debian's, driven by Playwright) opens
``web/learner.html``, which joins the lesson room with livekit-client and records what the
learner is shown and played, timed where it happens (``web/measure.js``). Unlike a Python SDK
subscriber, the browser lines audio and video of one stream up (LiveKit ``sync_streams``) the
way learners get them.

    async with BrowserLearner(lk, lesson) as b: ...; await b.collect(); b.lag_ms(t0, t1)

With ``measure=False`` it is the page as a learner has it: a microphone (Chromium's fake device
playing ``mic_wav`` in a loop, or none), and autoplay allowed or blocked as browsers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tempfile
import time
import urllib.parse

import numpy as np

from avatar_pipeline.avatar import AvatarRegistry
from config.fleet import room_name
from scripts.room_probe import SKEW_SIZE, in_sync_source, lag_ms, mouth_crop, token
from scripts.servers import WEB, serve_web

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Chromium found: scripts/setup.sh installs Debian's `chromium`")


def audio_as_played(blocks, delivered, output_delay_ms: float = 0.0, step_ms: float = 10.0):
    """The loudness of the audio a page plays, on a ``step_ms`` grid of page time (ms).

    ``blocks``: [RTP timestamp, rms] of each 10 ms of decoded audio (48 kHz RTP clock);
    ``delivered``: [page time, RTP timestamp] of packets as WebRTC hands them to playout. A block
    plays when its packet does, plus its place in the packet, plus the output device's delay.
    Where nothing was sent (Opus DTX in silence) the grid reads 0."""
    b = np.asarray(blocks, np.float64).reshape(-1, 2)
    d = np.asarray(delivered, np.float64).reshape(-1, 2)
    d = d[np.argsort(d[:, 1], kind="stable")]
    if not len(d) or not len(b):
        return np.zeros(0), np.zeros(0)
    i = np.searchsorted(d[:, 1], b[:, 0], side="right") - 1
    into = b[:, 0] - d[np.clip(i, 0, None), 1]
    ok = (i >= 0) & (into < 48 * 100)  # played within 100 ms of a packet seen delivered
    t = d[np.clip(i, 0, None), 0][ok] + into[ok] / 48.0 + output_delay_ms
    rms = b[ok, 1]
    order = np.argsort(t, kind="stable")
    t, rms = t[order], rms[order]
    if not len(t):
        return np.zeros(0), np.zeros(0)
    grid = np.arange(t[0], t[-1] + step_ms, step_ms)
    j = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, None)
    return grid, np.where(grid - t[j] < step_ms, rms[j], 0.0)


class BrowserLearner:
    def __init__(self, lk, lesson: str, identity: str = "learner-browser",
                 who: str | None = None, size: int | None = None, crop=None,
                 room: str | None = None, measure: bool = True, mic_wav=None,
                 autoplay: bool = True, page: str = "learner.html",
                 netns: str | None = None, url: str | None = None) -> None:
        """Joins ``lesson``'s room (or ``room``) and measures the tutor (or the participant
        ``who``, whose frames are ``size`` wide, measured in ``crop`` = (rows, columns)).
        ``measure=False``: no measuring; the page's microphone plays ``mic_wav`` (a 16-bit WAV,
        looped by Chromium) or is off; ``autoplay=False`` blocks audio until a click. ``page``:
        which page of ``web/`` (``visemes.html`` draws the tutor from its viseme stream).
        ``netns``: run Chromium, and serve the page, inside that network namespace (an
        impaired-room test's learner), joining LiveKit at ``url``."""
        self.lk, self.lesson, self.identity = lk, lesson, identity
        self.who, self.size, self.crop = who, size, crop
        self.room = room or room_name(lesson)
        self.measure, self.mic_wav, self.autoplay = measure, mic_wav, autoplay
        self.page_name = page
        self.netns, self.lk_url = netns, url or lk.url
        self.record: dict = {}

    async def __aenter__(self) -> BrowserLearner:
        from playwright.async_api import async_playwright

        if not (WEB / "vendor" / "livekit-client.umd.js").exists():
            raise RuntimeError("web/vendor/livekit-client.umd.js is missing: run scripts/setup.sh")
        self._http = serve_web(netns=self.netns)
        self._pw = await async_playwright().start()
        args = ["--no-sandbox", "--autoplay-policy=" + (
            "no-user-gesture-required" if self.autoplay else "document-user-activation-required")]
        if self.mic_wav:
            args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={self.mic_wav}"]
        self._browser = await self._pw.chromium.launch(
            executable_path=self._chromium(), headless=True, args=args)
        self.page = await self._browser.new_page()
        self._cdp = await self.page.context.new_cdp_session(self.page)
        query = {"url": self.lk_url, "token": token(self.lk, self.identity, self.room)}
        if self.measure:
            crop = self.crop or mouth_crop(AvatarRegistry().default())
            query["measure"] = f"{crop[1].start},{crop[0].start},{crop[1].stop},{crop[0].stop}"
            if self.size:
                query["size"] = str(self.size)
            if self.who:
                query["who"] = self.who
        elif not self.mic_wav:
            query["mic"] = "0"
        port = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{port}/{self.page_name}?" + urllib.parse.urlencode(query)
        await self.page.goto(self.url)
        for _ in range(200):
            state = await self.js("[window.avRecord.ready, window.avRecord.error]")
            if state[0] or state[1]:
                break
            await asyncio.sleep(0.1)
        if not state[0]:
            raise RuntimeError(f"the learner page did not join: {state[1]}")
        return self

    def _chromium(self) -> str:
        """Chromium, or a launcher that starts it inside ``self.netns`` (Playwright talks to
        it over inherited pipes, which ``ip netns exec`` keeps)."""
        if self.netns is None:
            return chromium_path()
        self._launcher = tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False)
        self._launcher.write(f'#!/bin/sh\nexec ip netns exec {shlex.quote(self.netns)} '
                             f'{shlex.quote(chromium_path())} "$@"\n')
        self._launcher.close()
        os.chmod(self._launcher.name, 0o755)
        return self._launcher.name

    async def js(self, expression: str):
        """The value of a JavaScript expression in the page, read as a script and not as the
        user: Playwright's ``evaluate`` runs with a user gesture, which unlocks autoplay."""
        r = await self._cdp.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
            "userGesture": False})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def ui(self) -> dict:
        """What the page shows (``window.learnerUi`` in ``web/learner.js``)."""
        return await self.js("window.learnerUi")

    async def wait_ui(self, predicate, what: str, timeout_s: float = 30.0) -> dict:
        """Poll the page's state until ``predicate(state)`` holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = await self.ui()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what}: state={state['state']} "
                                     f"errors={state['errors']}")
            await asyncio.sleep(0.1)

    async def frames_shown(self) -> int:
        """Video frames of the tutor the page has presented so far."""
        return await self.js(
            "document.getElementById('tutor').getVideoPlaybackQuality().totalVideoFrames")

    async def now_ms(self) -> float:
        return await self.js("performance.now()")

    async def page_ms(self, monotonic_s: float) -> float:
        """A ``time.monotonic()`` instant in page time (to within the evaluate round trip)."""
        before = time.monotonic()
        now = await self.now_ms()
        return now - ((before + time.monotonic()) / 2 - monotonic_s) * 1000

    async def collect(self) -> dict:
        """What the page recorded so far (``web/measure.js``), with ``audio`` as played:
        [[page time ms, rms]] every 10 ms, heard after the output device's delay."""
        rec = await self.page.evaluate("window.avMeasure.rec")
        if rec["errors"]:
            raise RuntimeError(f"the page could not measure: {rec['errors'][:3]}")
        t, rms = audio_as_played(rec["blocks"], rec["delivered"], rec["outputDelayMs"] or 0.0)
        rec["audio"] = np.stack([t, rms], 1).tolist() if len(t) else []
        self.record = rec
        return rec

    def playout_estimate_skew_ms(self, t0_ms: float | None = None,
                                 t1_ms: float | None = None) -> float | None:
        """WebRTC's own view (getStats ``estimatedPlayoutTimestamp``): how much later the
        capture time of the video on screen is than that of the audio playing, median (of
        the readings between page times ``t0_ms`` and ``t1_ms``, when given)."""
        lo, hi = t0_ms if t0_ms is not None else -np.inf, t1_ms if t1_ms is not None else np.inf
        rows = [r for r in self.record.get("playoutEstimate", [])
                if r[1] and r[2] and lo <= r[0] < hi]
        return float(np.median([r[2] - r[1] for r in rows])) if rows else None

    async def receive_stats(self) -> dict:
        """Per kind of the tutor's tracks: the browser's MediaStream id, and its average
        jitter-buffer and processing delays in ms (WebRTC ``getStats()``, inbound-rtp); for
        video also the frames decoded so far and the stats' time (``at_ms``)."""
        return await self.page.evaluate("""async (who) => {
          const out = {};
          for (const p of window.lkRoom.remoteParticipants.values()) {
            if (who ? p.identity !== who : !p.identity.startsWith("avatar-")) continue;
            for (const pub of p.trackPublications.values()) {
              const t = pub.track;
              if (!t || !t.receiver) continue;
              const row = { stream: t.mediaStream ? t.mediaStream.id : null };
              (await t.receiver.getStats()).forEach((s) => {
                if (s.type !== "inbound-rtp" || !s.jitterBufferEmittedCount) return;
                row.jitter_buffer_ms = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
                row.processing_ms = 1000 * s.totalProcessingDelay / s.jitterBufferEmittedCount;
                if (s.framesDecoded !== undefined) {
                  row.frames_decoded = s.framesDecoded;
                  row.at_ms = s.timestamp;
                }
              });
              out[pub.kind] = row;
            }
          }
          return out;
        }""", self.who)

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
        if getattr(self, "_launcher", None) is not None:
            os.unlink(self._launcher.name)


async def browser_skew_ms(lk, room: str, seconds: float = 6.0) -> float:
    """The A/V skew headless Chromium adds by itself: :func:`lag_ms` between the flash and the
    tone of :func:`scripts.room_probe.in_sync_source`, as the page shows and plays them (the
    avatar's offset in the page is measured the same way). Uses its own room."""
    full = (slice(0, SKEW_SIZE), slice(0, SKEW_SIZE))
    async with BrowserLearner(lk, room, room=room, who="skew-source", size=SKEW_SIZE,
                              crop=full) as page:
        start = await in_sync_source(lk, room, seconds)
        t0 = await page.page_ms(start)
        await page.collect()
        return page.lag_ms(t0, t0 + seconds * 1000)
