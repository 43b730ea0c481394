"""The HTTP API in-process (ASGI, lifespan run) against real Redis and a real LiveKit server."""

from __future__ import annotations

import asyncio
import io
import json

import jwt
import pytest
from livekit import api, rtc

from config.fleet import SAY_TOPIC, DispatchMetadata, PoolKeys, agent_name, avatar_identity
from config.logs import setup_logging
from router.auth import DEV_API_KEY, DEV_OPS_KEY
from tests.router.conftest import API, OPS, make_settings, running_app, write_regions

pytestmark = [pytest.mark.redis, pytest.mark.livekit]

BODY = {"user_id": "learner-1", "display_name": "Ada"}


@pytest.fixture
async def lk(livekit_server):
    client = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    yield client
    await client.aclose()


async def test_join_assigns_dispatches_once_and_token_is_scoped(client, workers, lk,
                                                                livekit_server):
    await workers("w1", capacity=4)
    r = await client.post("/v1/lessons/math-101/join", json=BODY, headers=API)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["worker_id"] == "w1" and body["region"] == "local"
    assert body["room"] == "lesson-math-101" and body["avatar_identity"] == "avatar-math-101"
    assert body["livekit_url"] == livekit_server.url
    claims = jwt.decode(body["token"], livekit_server.api_secret, algorithms=["HS256"])
    video = claims["video"]
    assert video["room"] == "lesson-math-101" and video["roomJoin"] is True
    assert video["canPublishSources"] == ["microphone"] and video["canSubscribe"] is True
    assert video["canPublishData"] is False  # nothing a learner sends may steer the tutor
    assert not any(video.get(k) for k in ("roomAdmin", "roomCreate", "roomList", "agent"))
    assert claims["sub"] == "learner-1" and claims["exp"] - claims["nbf"] <= 900
    # retries (same or other user) are idempotent: same worker, same fence, one dispatch
    for _ in range(3):
        again = (await client.post("/v1/lessons/math-101/join", json=BODY, headers=API)).json()
        assert (again["worker_id"], again["fence"]) == ("w1", body["fence"])
    # (LiveKit also lists the room's implicit dispatch for unnamed agents: ignore that one)
    dispatches = [d for d in await lk.agent_dispatch.list_dispatch("lesson-math-101")
                  if d.agent_name]
    assert len(dispatches) == 1
    d = dispatches[0]
    assert d.agent_name == agent_name("w1")
    meta = DispatchMetadata.from_json(d.metadata)
    assert (meta.lesson_id, meta.worker_id, meta.fence) == ("math-101", "w1", body["fence"])


async def test_learner_token_joins_the_room(client, workers, lk):
    await workers("w1")
    body = (await client.post("/v1/lessons/room-join/join", json=BODY, headers=API)).json()
    room = rtc.Room()
    await room.connect(body["livekit_url"], body["token"])
    try:
        assert room.name == "lesson-room-join"
        res = await lk.room.list_participants(api.ListParticipantsRequest(room=body["room"]))
        assert "learner-1" in [p.identity for p in res.participants]
        # microphone only: the token may not publish a camera
        perms = room.local_participant.permissions
        assert list(perms.can_publish_sources) == [rtc.TrackSource.SOURCE_MICROPHONE]
    finally:
        await room.disconnect()


def _token(livekit_server, identity: str, room: str) -> str:
    return (api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


async def _until_live(client, lesson: str, limit_s: float = 10.0) -> dict:
    """Re-join until the answer says the avatar is live (the worker confirmed it)."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        body = (await client.post(f"/v1/lessons/{lesson}/join", json=BODY, headers=API)).json()
        if body["avatar_state"] == "live" or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_say_is_refused_until_the_avatar_is_in_its_room(client, workers):
    """Text sent before the avatar is in the room would be heard by nobody: 409 with
    Retry-After, not a 202 that drops it."""
    w = await workers("w1")
    w.starts_jobs = False  # LiveKit took the dispatch, no avatar came (yet)
    body = (await client.post("/v1/lessons/say-early/join", json=BODY, headers=API)).json()
    assert body["avatar_state"] == "assigned"
    r = await client.post("/v1/lessons/say-early/say", headers=API, json={"text": "Hello"})
    assert r.status_code == 409 and r.json()["error"] == "avatar_not_live"
    assert r.headers["retry-after"] == "1"
    w.starts_jobs = True  # the avatar arrives and the worker confirms it
    assert (await _until_live(client, "say-early"))["avatar_state"] == "live"
    r = await client.post("/v1/lessons/say-early/say", headers=API, json={"text": "Hello"})
    assert r.status_code != 409, r.text


async def test_say_reaches_the_avatar_participant(client, workers, livekit_server):
    await workers("w1")
    body = await _until_live(client, "say-1")
    assert body["avatar_state"] == "live"
    avatar, bystander = rtc.Room(), rtc.Room()
    got: asyncio.Queue = asyncio.Queue()
    other: list = []
    avatar.on("data_received", lambda pkt: got.put_nowait(pkt))
    bystander.on("data_received", lambda pkt: other.append(pkt))
    await avatar.connect(livekit_server.url, _token(livekit_server, avatar_identity("say-1"),
                                                    body["room"]))
    await bystander.connect(livekit_server.url, _token(livekit_server, "someone", body["room"]))
    try:
        r = await client.post("/v1/lessons/say-1/say", headers=API,
                              json={"text": "Hello, class!", "language": "en"})
        assert r.status_code == 202, r.text
        pkt = await asyncio.wait_for(got.get(), 10)
        assert pkt.topic == SAY_TOPIC
        assert json.loads(pkt.data) == {"text": "Hello, class!", "language": "en"}
        await asyncio.sleep(0.5)
        assert other == []  # only the avatar identity is addressed
    finally:
        await avatar.disconnect()
        await bystander.disconnect()
    r = await client.post("/v1/lessons/never-joined/say", headers=API, json={"text": "x"})
    assert r.status_code == 404 and r.json()["error"] == "lesson_not_assigned"


async def test_delete_releases_and_removes_the_avatar(client, workers, livekit_server,
                                                      redis_client):
    await workers("w1", capacity=1)
    body = (await client.post("/v1/lessons/del-1/join", json=BODY, headers=API)).json()
    avatar = rtc.Room()
    gone = asyncio.Event()
    avatar.on("disconnected", lambda *_: gone.set())
    await avatar.connect(livekit_server.url, _token(livekit_server, avatar_identity("del-1"),
                                                    body["room"]))
    r = await client.delete("/v1/lessons/del-1", headers=API)
    assert r.status_code == 200 and r.json() == {"lesson_id": "del-1", "released": True,
                                                  "avatar_removed": True}
    await asyncio.wait_for(gone.wait(), 10)
    assert not await redis_client.exists(PoolKeys("local").lesson("del-1"))
    # capacity is free again; a second delete is harmless
    assert (await client.post("/v1/lessons/del-2/join", json=BODY, headers=API)).status_code == 200
    r = await client.delete("/v1/lessons/del-1", headers=API)
    assert r.status_code == 200 and r.json()["released"] is False


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "reason"), [
    ("post", "/v1/lessons/bad%20id/join", {"json": BODY, "headers": API}, 422, "invalid_request"),
    ("post", "/v1/lessons/" + "x" * 65 + "/join", {"json": BODY, "headers": API}, 422,
     "invalid_request"),
    ("post", "/v1/lessons/ok/join", {"json": {"user_id": "u"}, "headers": API}, 422,
     "invalid_request"),
    ("post", "/v1/lessons/ok/join", {"content": b"{not json", "headers": API}, 422,
     "invalid_request"),
    ("post", "/v1/lessons/ok/join", {"json": {**BODY, "lat": 10}, "headers": API}, 422,
     "invalid_request"),
    ("post", "/v1/lessons/ok/join", {"json": {**BODY, "user_id": "avatar-ok"}, "headers": API},
     422, "invalid_request"),
    ("post", "/v1/lessons/ok/join", {"json": {**BODY, "region": "mars"}, "headers": API}, 422,
     "unknown_region"),
    ("post", "/v1/lessons/ok/join", {"json": BODY}, 401, "missing_key"),
    ("post", "/v1/lessons/ok/join", {"json": BODY, "headers": {"X-API-Key": "nope"}}, 401,
     "invalid_key"),
    ("post", "/v1/lessons/ok/join", {"json": BODY, "headers": {"X-API-Key": DEV_OPS_KEY}}, 403,
     "forbidden"),
    ("get", "/v1/workers", {"headers": {"X-API-Key": DEV_API_KEY}}, 403, "forbidden"),
    ("put", "/v1/canary", {"json": {"percent": 101}, "headers": OPS}, 422, "invalid_request"),
    ("post", "/v1/lessons/ok/say", {"json": {"text": ""}, "headers": API}, 422,
     "invalid_request"),
    ("post", "/v1/workers/nobody/drain", {"headers": OPS}, 404, "worker_not_found"),
    ("get", "/v1/nothing-here", {}, 404, "not_found"),
])
async def test_bad_requests_are_json_4xx(client, workers, method, path, kwargs, status, reason):
    await workers("w1")
    r = await getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == reason


@pytest.mark.parametrize("body,field,says", [
    ({"text": "Hola.", "language": "xx"}, "language", "languages: en, en-us"),
    ({"text": "Hola.", "language": "es-ES"}, "language", "no voice speaks 'es-ES'"),
    ({"text": "Hi.", "voice": "Darth"}, "voice", "voices: f1"),
    ({"text": "a" * 1001}, "text", "at most 1000 characters"),
    ({"text": "سلام", "language": "fa", "voice": "joe"}, "voice", "it speaks en, en-us"),
])
async def test_say_refuses_what_no_tutor_can_say(client, workers, body, field, says):
    """Refused before anything is sent, with what would be accepted (not a 202 and silence)."""
    await workers("w1")
    assert (await client.post("/v1/lessons/say-bad/join", json=BODY, headers=API)).status_code \
        == 200
    r = await client.post("/v1/lessons/say-bad/say", json=body, headers=API)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_request"
    assert err["detail"][0]["loc"][-1] == field and says in err["detail"][0]["msg"]


async def test_voices_are_listed_for_the_backend(client, workers):
    r = await client.get("/v1/voices", headers=API)
    assert r.status_code == 200, r.text
    body = r.json()
    joe = next(v for v in body["voices"] if v["id"] == "joe")
    assert joe["engine"] == "piper" and joe["neural"] and joe["languages"] == ["en", "en-us"]
    assert body["defaults"]["en"] == "joe"
    assert {"f1", "m8"} <= {v["id"] for v in body["voices"]}
    assert (await client.get("/v1/voices")).status_code == 401


@pytest.mark.parametrize("name,says", [
    ("Ada\x00", "U+0000"), ("Ada\nLovelace", "U+000A"), ("gnp.\u202eexe", "U+202E"),
    ("<script>alert(1)</script>", "< or >"), ("\u200b", "U+200B"), ("   ", "blank"),
])
async def test_display_names_others_would_see_are_printable(client, workers, name, says):
    await workers("w1")
    r = await client.post("/v1/lessons/names/join", headers=API,
                          json={"user_id": "u-name", "display_name": name})
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"][0]["msg"]


async def test_real_names_pass_and_reach_the_token(client, workers, livekit_server):
    await workers("w1")
    for name, shown in (("  Zoë   O'Brien ", "Zoë O'Brien"), ("مریم\u200cسادات", "مریم\u200cسادات"),
                        ("李小龙", "李小龙")):
        r = await client.post("/v1/lessons/names-ok/join", headers=API,
                              json={"user_id": "u-ok", "display_name": name})
        assert r.status_code == 200, r.text
        claims = jwt.decode(r.json()["token"], livekit_server.api_secret, algorithms=["HS256"])
        assert claims["name"] == shown


async def test_no_capacity_is_503_with_retry_after(client, workers):
    await workers("w1", capacity=1)
    assert (await client.post("/v1/lessons/a/join", json=BODY, headers=API)).status_code == 200
    r = await client.post("/v1/lessons/b/join", json=BODY, headers=API)
    assert r.status_code == 503 and r.json()["error"] == "no_capacity"
    assert r.headers["retry-after"] == "2"


async def test_regions_hint_nearest_default_and_spill(tmp_path, redis_url, livekit_server,
                                                      workers):
    regions = write_regions(tmp_path / "r.yaml", livekit_server, ("local", "east", "west"))
    await workers("l1", capacity=1, region="local")
    await workers("e1", capacity=5, region="east")
    await workers("w1", capacity=5, region="west")
    async with running_app(make_settings(redis_url, regions)) as c:
        async def region(lesson, **extra):
            r = await c.post(f"/v1/lessons/{lesson}/join", json={**BODY, **extra}, headers=API)
            assert r.status_code == 200, r.text
            return r.json()["region"]
        assert await region("hint", region="west") == "west"
        assert await region("tokyo", lat=35.0, lon=139.0) == "east"
        assert await region("dflt") == "local"
        assert await region("spill") == "east"  # local full -> next by priority
        assert await region("hint", region="east") == "west"  # affinity beats a new hint


async def test_canary_share_and_instant_rollback(client, workers):
    await workers("stable", capacity=50)
    await workers("cand", capacity=50, region="local-canary")
    r = await client.put("/v1/canary", json={"percent": 100}, headers=OPS)
    assert r.status_code == 200 and r.json() == {"percent": 100.0}
    j = (await client.post("/v1/lessons/c1/join", json=BODY, headers=API)).json()
    assert (j["worker_id"], j["canary"], j["region"]) == ("cand", True, "local")
    await client.put("/v1/canary", json={"percent": 0}, headers=OPS)  # rollback
    j = (await client.post("/v1/lessons/c2/join", json=BODY, headers=API)).json()
    assert (j["worker_id"], j["canary"]) == ("stable", False)
    # 30 %: a stable share of users (bucketed by user id) goes to the canary
    await client.put("/v1/canary", json={"percent": 30}, headers=OPS)
    picks = {}
    for i in range(60):
        user = f"user{i}"
        r = await client.post(f"/v1/lessons/s{i}/join", headers=API,
                              json={"user_id": user, "display_name": "x"})
        picks[user] = r.json()["canary"]
    share = sum(picks.values()) / len(picks)
    assert 0.1 < share < 0.5
    for i in range(10):  # the same user lands the same way on a new lesson
        user = f"user{i}"
        r = await client.post(f"/v1/lessons/again{i}/join", headers=API,
                              json={"user_id": user, "display_name": "x"})
        assert r.json()["canary"] == picks[user]
    assert (await client.get("/v1/canary", headers=OPS)).json() == {"percent": 30.0}


async def test_ops_workers_and_drain(client, workers):
    await workers("w1", capacity=3)
    await workers("w2", capacity=3)
    r = await client.post("/v1/workers/w1/drain", headers=OPS)
    assert r.status_code == 200 and r.json()["drain"] is True
    for i in range(3):
        j = (await client.post(f"/v1/lessons/d{i}/join", json=BODY, headers=API)).json()
        assert j["worker_id"] == "w2"
    listed = {w["worker_id"]: w for w in (await client.get("/v1/workers", headers=OPS)).json()[
        "workers"]}
    assert listed["w1"]["draining_by_ops"] and listed["w2"]["load"] == 3
    assert listed["w2"]["capacity"] == 3 and listed["w2"]["alive"]
    await client.delete("/v1/workers/w1/drain", headers=OPS)
    j = (await client.post("/v1/lessons/d9/join", json=BODY, headers=API)).json()
    assert j["worker_id"] == "w1"


async def test_metrics_health_and_assignment_logs(redis_url, regions_file, workers):
    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    await workers("w1")
    async with running_app(make_settings(redis_url, regions_file)) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).status_code == 200
        await c.post("/v1/lessons/m1/join", json=BODY, headers=API)
        await c.post("/v1/lessons/m1/join", json=BODY, headers=API)
        await asyncio.sleep(0.5)  # a reconciler tick sets the pool gauges
        text = (await c.get("/metrics")).text
    assert 'router_assignments_total{result="assigned"} 1.0' in text
    assert 'router_assignments_total{result="affinity"} 1.0' in text
    assert "router_join_seconds_bucket" in text
    assert 'router_pool_utilisation{pool="local",region="local"} 0.25' in text
    lines = [json.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{")]
    assigned = [x for x in lines if x.get("event") == "assignment"]
    assert len(assigned) == 2
    for x in assigned:
        assert (x["lesson_id"], x["worker_id"], x["region"]) == ("m1", "w1", "local")
        assert x["fence"] >= 1
