# ruff: noqa: ASYNC110, ASYNC230, ASYNC240  (polling files written by a subprocess is the point)
"""Against the real LiveKit server: a join dispatches to the chosen worker's agent name (a real
livekit-agents worker in a subprocess gets exactly that job, with the metadata), the avatar
joins as its stable identity, and the learner token joins the same room."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from livekit import api, rtc

from tests.router.conftest import API, BODY_TEMPLATE, REPO

pytestmark = [pytest.mark.redis, pytest.mark.livekit]


def start_agent(worker_id, livekit_server, redis_url, tmp_path: Path):
    out = tmp_path / f"{worker_id}.jsonl"
    log = open(tmp_path / f"{worker_id}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests/router/agent_worker.py"), worker_id,
         livekit_server.url, livekit_server.api_key, livekit_server.api_secret, redis_url,
         str(out)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out


def jobs(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_join_dispatches_to_the_chosen_workers_agent(client, workers, redis_url,
                                                           livekit_server, tmp_path):
    # two real agent workers registered with LiveKit; in Redis w-busy carries more load
    procs = [start_agent(w, livekit_server, redis_url, tmp_path) for w in ("w-idle", "w-busy")]
    try:
        deadline = time.monotonic() + 60
        for proc, out in procs:
            while not Path(str(out) + ".ready").exists():
                assert proc.poll() is None, (tmp_path / "w-idle.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "agent worker did not register"
                await asyncio.sleep(0.1)
        await workers("w-idle", capacity=4)
        busy = await workers("w-busy", capacity=4)
        for i in range(3):  # load w-busy first (w-idle drained meanwhile)
            await client.post("/v1/workers/w-idle/drain", headers={"X-API-Key": "dev-ops-key"})
            r = await client.post(f"/v1/lessons/filler{i}/join", json=BODY_TEMPLATE, headers=API)
            assert r.json()["worker_id"] == busy.id
        await client.delete("/v1/workers/w-idle/drain", headers={"X-API-Key": "dev-ops-key"})
        r = await client.post("/v1/lessons/lk-1/join", json=BODY_TEMPLATE, headers=API)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["worker_id"] == "w-idle"  # the least loaded
        for _ in range(2):  # retried joins dispatch nothing more
            await client.post("/v1/lessons/lk-1/join", json=BODY_TEMPLATE, headers=API)
        # the learner joins and sees the avatar arrive under its stable identity
        room = rtc.Room()
        await room.connect(body["livekit_url"], body["token"])
        try:
            deadline = time.monotonic() + 20
            while body["avatar_identity"] not in room.remote_participants:
                assert time.monotonic() < deadline, "avatar never joined"
                await asyncio.sleep(0.1)
            assert room.remote_participants[body["avatar_identity"]].kind == \
                rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        finally:
            await room.disconnect()
        idle_jobs = [j for j in jobs(procs[0][1]) if j["room"] == "lesson-lk-1"]
        busy_jobs = [j for j in jobs(procs[1][1]) if j["room"] == "lesson-lk-1"]
        assert len(idle_jobs) == 1 and busy_jobs == []
        j = idle_jobs[0]
        assert j["agent_name"] == "avatar-w-idle" and j["fence_current"] is True
        assert j["metadata"] == {"lesson_id": "lk-1", "worker_id": "w-idle",
                                 "fence": body["fence"], "region": "local"}
        # the filler lessons went to w-busy's agent, one job each
        deadline = time.monotonic() + 10
        while len(jobs(procs[1][1])) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert sorted(j["room"] for j in jobs(procs[1][1])) == [
            "lesson-filler0", "lesson-filler1", "lesson-filler2"]
        lk = api.LiveKitAPI(livekit_server.url, livekit_server.api_key,
                            livekit_server.api_secret)
        try:
            named = [d for d in await lk.agent_dispatch.list_dispatch("lesson-lk-1")
                     if d.agent_name]
            assert [d.agent_name for d in named] == ["avatar-w-idle"]
        finally:
            await lk.aclose()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
