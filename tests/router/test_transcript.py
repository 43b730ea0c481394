"""GET /v1/lessons/{id}/transcript: the lines a worker wrote (with the worker's own writer, into
the real Redis), as JSON, SubRip and WebVTT."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from agent.transcript import TranscriptWriter
from config.fleet import TRANSCRIPT_TTL_S, TranscriptEntry, transcript_key
from router.transcript import to_srt, to_vtt
from tests.router.conftest import API

T0 = 1_796_000_000.0


def _lines() -> list[TranscriptEntry]:
    return [
        TranscriptEntry(speaker="tutor", identity="avatar-t1", start=T0, end=T0 + 2.25,
                        text="Hello! Shall we read?", language="en", source="say"),
        TranscriptEntry(speaker="learner", identity="ana", start=T0 + 3.5, end=T0 + 4.0,
                        text="Yes <please> & thanks --> go", language="en", source="captions"),
        TranscriptEntry(speaker="tutor", identity="voice-agent", start=T0 + 61.0,
                        end=T0 + 3725.1, text="Good.\nVery good.", source="voice_agent"),
    ]


async def test_a_workers_lines_come_back_timed_in_every_format(client, redis_url):
    lesson = "tr-1"
    r = aioredis.Redis.from_url(redis_url)
    writer = TranscriptWriter(r, asyncio.get_running_loop(), lesson)
    for e in reversed(_lines()):  # written as they finished, read as they started
        writer.add(e)
    writer.add(TranscriptEntry(speaker="learner", identity="ana", start=T0, end=T0,
                               text="  ", source="captions"))  # nothing said: no line
    deadline = time.monotonic() + 5
    while await r.xlen(transcript_key(lesson)) < 3:
        assert time.monotonic() < deadline, "the writer wrote the lines"
        await asyncio.sleep(0.02)
    assert 0 < await r.ttl(transcript_key(lesson)) <= TRANSCRIPT_TTL_S

    got = await client.get(f"/v1/lessons/{lesson}/transcript", headers=API)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["started_at"] == T0
    assert [(x["speaker"], x["text"]) for x in body["lines"]] == [
        ("tutor", "Hello! Shall we read?"), ("learner", "Yes <please> & thanks --> go"),
        ("tutor", "Good.\nVery good.")]

    srt = await client.get(f"/v1/lessons/{lesson}/transcript?format=srt", headers=API)
    assert srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text == (
        "1\n00:00:00,000 --> 00:00:02,250\nTutor: Hello! Shall we read?\n\n"
        "2\n00:00:03,500 --> 00:00:04,000\nLearner: Yes <please> & thanks - -> go\n\n"
        "3\n00:01:01,000 --> 01:02:05,100\nTutor: Good. Very good.\n")
    vtt = await client.get(f"/v1/lessons/{lesson}/transcript?format=vtt", headers=API)
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.250\n<v Tutor>Hello!")
    assert "<v Learner>Yes &lt;please&gt; &amp; thanks - -&gt; go\n" in vtt.text
    assert "3\n00:01:01.000 --> 01:02:05.100\n<v Tutor>Good. Very good.\n" in vtt.text
    await r.aclose()


async def test_unknown_lessons_bad_formats_and_keys_are_refused(client):
    got = await client.get("/v1/lessons/never-held/transcript", headers=API)
    assert got.status_code == 404 and got.json()["error"] == "no_transcript"
    bad = await client.get("/v1/lessons/never-held/transcript?format=docx", headers=API)
    assert bad.status_code == 422
    assert (await client.get("/v1/lessons/never-held/transcript")).status_code == 401


def test_a_short_line_stays_on_screen_long_enough_to_read():
    e = TranscriptEntry(speaker="learner", identity="ana", start=T0, end=T0 + 0.1, text="Yes",
                        source="captions")
    assert "00:00:00,000 --> 00:00:00,500" in to_srt([e])
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n"
