"""The worker keeps its pod's ``controller.kubernetes.io/pod-deletion-cost`` equal to the lessons
it serves (agent/pod.py), so a pool's scale-down removes idle workers first.

The Kubernetes API server is a FAKE here (kube-apiserver and etcd do not run on this machine):
a small HTTPS server on 127.0.0.1 with a self-signed certificate that answers the one call the
worker makes (a JSON merge-patch of its pod) and records it. The worker, LiveKit and Redis are
real."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import redis as redis_sync
from aiohttp import web
from livekit import api

from agent.pod import DELETION_COST, PodDeletionCost, PodError
from config.fleet import PoolKeys, room_name
from scripts.servers import AvatarWorkerProcess, free_port
from tests.agent.test_worker_fleet import _dispatch

TOKEN = "sa-token-123"


class FakeKubeApi:
    """FAKE kube-apiserver: PATCH /api/v1/namespaces/<ns>/pods/<name> with merge-patch."""

    def __init__(self, sa_dir: Path) -> None:
        self.sa_dir = sa_dir
        self.patches: list[tuple[str, dict]] = []
        self.annotations: dict[str, str] = {}
        self.refuse = False
        self.port = free_port()

    async def _patch(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        if request.content_type != "application/merge-patch+json":
            return web.json_response({"kind": "Status", "code": 415}, status=415)
        if self.refuse:
            return web.json_response({"kind": "Status", "code": 403,
                                      "reason": "Forbidden"}, status=403)
        body = await request.json()
        self.patches.append((request.path, body))
        self.annotations.update(body["metadata"]["annotations"])
        return web.json_response({"kind": "Pod", "metadata": {"annotations": self.annotations}})

    async def __aenter__(self) -> FakeKubeApi:
        self.sa_dir.mkdir(parents=True, exist_ok=True)
        key, crt = self.sa_dir / "tls.key", self.sa_dir / "ca.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
        (self.sa_dir / "token").write_text(TOKEN + "\n")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        app = web.Application()
        app.router.add_patch("/api/v1/namespaces/{ns}/pods/{name}", self._patch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    def env(self, pod: str = "fleet-worker-abc") -> dict[str, str]:
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port),
                "POD_NAME": pod, "POD_NAMESPACE": "tutors",
                "AVATAR_K8S_SERVICEACCOUNT_DIR": str(self.sa_dir)}


async def test_cost_written_on_change_over_verified_tls_and_retried_after_refusal(tmp_path):
    async with FakeKubeApi(tmp_path / "sa") as kube:
        cost = PodDeletionCost.in_cluster(env=kube.env())
        try:
            assert await cost.update(0) is True
            assert await cost.update(0) is False, "unchanged: no call"
            assert await cost.update(3) is True
            assert kube.patches == [
                ("/api/v1/namespaces/tutors/pods/fleet-worker-abc",
                 {"metadata": {"annotations": {DELETION_COST: "0"}}}),
                ("/api/v1/namespaces/tutors/pods/fleet-worker-abc",
                 {"metadata": {"annotations": {DELETION_COST: "3"}}})]
            kube.refuse = True  # e.g. the Role is missing: logged, never raised
            assert await cost.update(1) is False
            kube.refuse = False
            assert await cost.update(1) is True, "retried on the next heartbeat"
            assert kube.annotations[DELETION_COST] == "1"
        finally:
            await cost.aclose()
        # a server whose certificate the service account's CA did not sign is not trusted
        other = FakeKubeApi(tmp_path / "other")
        async with other:
            env = {**other.env(), "AVATAR_K8S_SERVICEACCOUNT_DIR": str(kube.sa_dir)}
            wrong = PodDeletionCost.in_cluster(env=env)
            assert await wrong.update(2) is False
            await wrong.aclose()
        assert other.patches == []


def test_outside_a_pod_the_setting_says_what_is_missing(tmp_path):
    with pytest.raises(PodError, match="POD_NAME, POD_NAMESPACE"):
        PodDeletionCost.in_cluster(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                        "KUBERNETES_SERVICE_PORT": "443",
                                        "AVATAR_K8S_SERVICEACCOUNT_DIR": str(tmp_path)})


@pytest.mark.livekit
@pytest.mark.redis
async def test_a_worker_pods_cost_follows_its_lessons(tmp_path, livekit_server, redis_url):
    async with FakeKubeApi(tmp_path / "sa") as kube:
        env = {**kube.env("w-pod"), "AVATAR_WORKER__POD_DELETION_COST": "true"}
        with AvatarWorkerProcess(livekit_server, redis_url, "w-pod", "local", capacity=2,
                                 extra_env=env):

            async def cost_is(value: str, timeout: float = 20) -> bool:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if kube.annotations.get(DELETION_COST) == value:
                        return True
                    await asyncio.sleep(0.1)
                return False

            assert await cost_is("0"), "an idle worker is the cheapest to remove"
            r = redis_sync.Redis.from_url(redis_url)
            r.hset(PoolKeys("local").lesson("L-cost"), mapping={"worker": "w-pod", "fence": 5})
            async with api.LiveKitAPI(livekit_server.http_url, livekit_server.api_key,
                                      livekit_server.api_secret) as lk:
                await _dispatch(lk, "L-cost", fence=5, worker="w-pod")
                assert await cost_is("1"), json.dumps(kube.patches)
                await lk.room.delete_room(api.DeleteRoomRequest(room=room_name("L-cost")))
                assert await cost_is("0"), "the lesson ended: cheap again"
        paths = {p for p, _ in kube.patches}
        assert paths == {"/api/v1/namespaces/tutors/pods/w-pod"}
