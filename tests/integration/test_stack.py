"""The README's run command, end to end: the local stack (LiveKit, Redis, an avatar worker, two
routers behind NGINX, Prometheus, the demo voice agent) starts; in the demo lesson the tutor
greets a learner who joins and answers what they say; a lesson backend's join through NGINX
puts the avatar in the room and hands out a learner token that works; lesson text is spoken;
DELETE takes the avatar out; Prometheus scrapes every process and has the alert rules loaded;
Ctrl-C (SIGINT) stops it all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis as redis_sync
from livekit import api, rtc

from config.fleet import PoolKeys
from scripts.room_probe import Learner, LearnerMic
from scripts.servers import DEV_API_KEY

REPO = Path(__file__).resolve().parents[2]


def _env_file(path: Path, proc: subprocess.Popen, timeout: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if path.exists() and path.read_text().strip():
            return dict(line.split("=", 1) for line in path.read_text().splitlines())
        time.sleep(0.1)
    raise AssertionError("stack never wrote its env file")


def _prometheus(url: str, path: str) -> object:
    with urllib.request.urlopen(f"{url}/api/v1/{path}", timeout=5) as r:
        return json.loads(r.read())["data"]


def _prometheus_sees_the_fleet(url: str, timeout: float = 30) -> None:
    """Every process scraped and up, the lesson's join counted, every alert rule loaded."""
    deadline = time.monotonic() + timeout
    while True:
        targets = _prometheus(url, "targets")["activeTargets"]
        up = {(t["labels"]["job"], t["health"]) for t in targets}
        joins = _prometheus(url, "query?query=sum(router_assignments_total)")["result"]
        if (len(targets) == 3 and up == {("avatar-worker", "up"), ("avatar-router", "up")}
                and joins and float(joins[0]["value"][1]) >= 2):
            break
        assert time.monotonic() < deadline, (targets, joins)
        time.sleep(0.5)
    rules = [r for g in _prometheus(url, "rules")["groups"] for r in g["rules"]]
    assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), rules


def _redis_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16)


def _call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body
                                 else None, headers={"X-API-Key": DEV_API_KEY,
                                                     "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


async def _heard(learner: Learner, since: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        _, rms = learner.window(max(since, time.monotonic() - 1.0), time.monotonic())
        if len(rms) > 20 and (rms > 0.01).mean() > 0.3:
            return True
    return False


async def _demo_conversation(env: dict[str, str]) -> None:
    """The printed demo lesson: a learner joins, the voice agent's tutor greets them, the
    learner says something, the tutor answers (captions for both come from the agent)."""
    status, joined = await asyncio.to_thread(
        _call, "POST", f"{env['AVATAR_ROUTER_URL']}/v1/lessons/demo/join",
        {"user_id": "learner-2", "display_name": "Bo"})
    assert status == 200, joined
    learner = Learner()
    await learner.join(type("LK", (), {"url": joined["livekit_url"]}), "demo", joined["token"])
    try:
        await learner.wait_tracks()
        assert await _heard(learner, time.monotonic(), 30), "the tutor greets the learner"
        await asyncio.sleep(4.0)  # the greeting ends
        mic = await LearnerMic(learner.room).start()
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        await mic.say("Good morning teacher.")
        assert await _heard(learner, t0 + 1.0, 30), "the tutor answers"
        deadline = time.monotonic() + 15
        while not any("lovely to see you" in t for t, _ in learner.transcripts):
            assert time.monotonic() < deadline, learner.transcripts
            await asyncio.sleep(0.2)
        await mic.aclose()
    finally:
        await learner.leave()


async def _lesson_through_the_api(env: dict[str, str]) -> None:
    base = env["AVATAR_ROUTER_URL"]
    status, joined = await asyncio.to_thread(
        _call, "POST", f"{base}/v1/lessons/stack-demo/join",
        {"user_id": "learner-1", "display_name": "Ada"})
    assert status == 200, joined
    assert joined["worker_id"] == "local-1" and joined["avatar_identity"] == "avatar-stack-demo"

    lk = api.LiveKitAPI(env["AVATAR_LIVEKIT__URL"].replace("ws://", "http://"),
                        env["AVATAR_LIVEKIT__API_KEY"], env["AVATAR_LIVEKIT__API_SECRET"])
    learner = rtc.Room()
    transcripts: list[str] = []

    async def _on_text(reader):
        transcripts.append(await reader.read_all())

    learner.register_text_stream_handler(
        "lk.transcription", lambda r, who: asyncio.create_task(_on_text(r)))
    try:
        await learner.connect(joined["livekit_url"], joined["token"])  # the learner's token works
        assert learner.name == joined["room"]
        deadline = time.monotonic() + 20
        while joined["avatar_identity"] not in {
                p.identity for p in learner.remote_participants.values()}:
            assert time.monotonic() < deadline, "the avatar joins the lesson's room"
            await asyncio.sleep(0.1)

        deadline = time.monotonic() + 10
        while True:  # 409 until the worker has confirmed its avatar in the room
            status, said = await asyncio.to_thread(
                _call, "POST", f"{base}/v1/lessons/stack-demo/say",
                {"text": "Welcome to the lesson.", "language": "en"})
            if status != 409 or time.monotonic() > deadline:
                break
            assert said["error"] == "avatar_not_live"
            await asyncio.sleep(0.2)
        assert status == 202, said
        deadline = time.monotonic() + 15
        while not transcripts:
            assert time.monotonic() < deadline, "the lesson text is spoken"
            await asyncio.sleep(0.1)
        assert transcripts[0] == "Welcome to the lesson."

        status, _ = await asyncio.to_thread(_call, "DELETE", f"{base}/v1/lessons/stack-demo")
        assert status in (200, 204)
        deadline = time.monotonic() + 15
        while joined["avatar_identity"] in {
                p.identity for p in learner.remote_participants.values()}:
            assert time.monotonic() < deadline, "DELETE takes the avatar out of the room"
            await asyncio.sleep(0.1)
    finally:
        await learner.disconnect()
        await lk.aclose()


@pytest.mark.livekit
@pytest.mark.nginx
def test_run_command_serves_a_lesson_end_to_end_and_ctrl_c_stops_it(tmp_path):
    env_file = tmp_path / "stack.env"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.stack", "--env-file", str(env_file)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        env = _env_file(env_file, proc)
        lk_http = env["AVATAR_LIVEKIT__URL"].replace("ws://", "http://")
        redis_port = int(env["AVATAR_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        assert urllib.request.urlopen(lk_http, timeout=5).status == 200
        assert _redis_ping(redis_port).startswith(b"+PONG")
        client = redis_sync.Redis.from_url(env["AVATAR_REDIS_URL"])
        assert client.hget(PoolKeys("local").worker("local-1"), "state") == b"serving"

        asyncio.run(_demo_conversation(env))
        asyncio.run(_lesson_through_the_api(env))
        _prometheus_sees_the_fleet(env["AVATAR_PROMETHEUS_URL"])
        for asset in ("learner.html", "vendor/livekit-client.umd.js"):  # the learner page
            assert urllib.request.urlopen(f"{env['AVATAR_WEB_URL']}/{asset}", timeout=5).status == 200

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
        assert "Local stack is up" in out and "avatar-local-1" in out
        assert "/learner.html?url=" in out and "&token=" in out, "the demo lesson's page"
        assert "with a voice agent" in out
        assert f"Prometheus {env['AVATAR_PROMETHEUS_URL']}" in out
        for url in (lk_http, env["AVATAR_ROUTER_URL"] + "/healthz",
                    env["AVATAR_PROMETHEUS_URL"] + "/-/ready"):
            with pytest.raises(OSError):
                urllib.request.urlopen(url, timeout=2)
        with pytest.raises(OSError):
            _redis_ping(redis_port)
    finally:
        if proc.poll() is None:
            proc.kill()
