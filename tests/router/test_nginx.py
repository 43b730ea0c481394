"""Real NGINX in front of real router processes: config checks (nginx -t), a router killed
during load gives 0 client-visible errors, past the rate -> 429, /metrics not exposed, the
LiveKit signalling WebSocket proxied."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
from livekit import rtc

from nginx import Tls, render_config
from scripts.servers import NginxServer, free_port
from tests.router.conftest import API, BODY_TEMPLATE, fire, router_env

pytestmark = [pytest.mark.nginx, pytest.mark.redis, pytest.mark.livekit]


def test_rendered_config_passes_nginx_t(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    for conf in (
        render_config(["127.0.0.1:1"], 8080),
        render_config(["127.0.0.1:1", "127.0.0.1:2"], 8080, livekit="127.0.0.1:7880",
                      tls=Tls(str(cert), str(key), f"127.0.0.1:{free_port()}")),
    ):
        server = NginxServer(conf)
        try:
            r = server.test_config()
            assert "test is successful" in r.stderr
        finally:
            server.__exit__(None, None, None)
    with pytest.raises(ValueError):
        render_config([], 8080)


@pytest.fixture
async def two_routers(redis_url, regions_file, router_procs, workers):
    for i in range(4):
        await workers(f"w{i}", capacity=100)
    return router_procs(router_env(redis_url, regions_file), 2)


async def test_kill_one_router_during_load_zero_errors(two_routers, nginx_factory):
    a, b = two_routers
    ngx = nginx_factory(render_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
                                      port=(port := free_port()), rate_per_s=10000,
                                      burst=10000, worker_processes=1, access_log=True),
                        port=port)
    url = ngx.url
    n, rate = 600, 100.0  # 6 s of joins over 150 lessons, open loop
    results: list = []

    async def load() -> None:
        import aiohttp
        async with aiohttp.ClientSession(headers=API) as s:
            async def one(i: int) -> None:
                try:
                    async with s.post(f"{url}/v1/lessons/k{i % 150}/join",
                                      json=BODY_TEMPLATE) as r:
                        results.append((r.status, await r.text()))
                except aiohttp.ClientError as exc:
                    results.append((0, repr(exc)))
            tasks, t0 = [], time.monotonic()
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

    task = asyncio.create_task(load())
    await asyncio.sleep(2.0)
    a.kill()  # SIGKILL mid-load: in-flight requests on it are retried on b by NGINX
    await task
    errors = [r for r in results if r[0] != 200]
    assert len(results) == n
    assert errors == [], errors[:5]
    assert b.proc.poll() is None
    # NGINX's log: both routers served, and requests that met the dead router were retried
    log = (ngx.workdir / "logs" / "access.log").read_text().splitlines()
    ups = [line.split(" up=")[1].split(" ")[0] for line in log if "/join" in line]
    assert any(u == f"127.0.0.1:{a.port}" for u in ups)
    assert any(u == f"127.0.0.1:{b.port}" for u in ups)
    retried = [line for line in log if f"127.0.0.1:{a.port}, 127.0.0.1:{b.port}" in line]
    assert retried and all(" 200 " in line for line in retried)


async def test_past_the_rate_is_429_json(two_routers, nginx_factory):
    a, b = two_routers
    port = free_port()
    ngx = nginx_factory(render_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], port=port,
                                      rate_per_s=5, burst=5), port=port)
    reqs = [("POST", f"{ngx.url}/v1/lessons/rl{i}/join", BODY_TEMPLATE) for i in range(40)]
    res = await fire(reqs, concurrency=40)
    codes = [c for c, _ in res]
    assert codes.count(200) >= 5 and codes.count(429) >= 20
    assert set(codes) <= {200, 429}
    limited = next(body for c, body in res if c == 429)
    assert limited["error"] == "rate_limited"


async def test_metrics_hidden_headers_and_websocket_proxy(two_routers, nginx_factory,
                                                          livekit_server):
    a, b = two_routers
    port = free_port()
    lk_hostport = livekit_server.url.removeprefix("ws://")
    ngx = nginx_factory(render_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], port=port,
                                      livekit=lk_hostport), port=port)
    async with httpx.AsyncClient(base_url=ngx.url) as c:
        assert (await c.get("/metrics")).status_code == 404
        assert (await httpx.AsyncClient().get(a.url + "/metrics")).status_code == 200
        r = await c.get("/healthz")
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "server" not in r.headers or "nginx/" not in r.headers["server"]
        j = (await c.post("/v1/lessons/ws-1/join", json=BODY_TEMPLATE, headers=API)).json()
    # the learner's signalling WebSocket goes through NGINX (/rtc upgrade), media direct
    room = rtc.Room()
    await room.connect(ngx.url.replace("http://", "ws://"), j["token"])
    try:
        assert room.name == "lesson-ws-1"
    finally:
        await room.disconnect()


def _raw(port: int, data: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the whole answer: (status, headers, body)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not b:
                break
            chunks.append(b)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_the_edge_always_answers_json(two_routers, nginx_factory):
    """Abusive and malformed requests get a JSON error with a reason from NGINX or the router,
    never an HTML page; the API's docs and schema are not public."""
    import json

    a, b = two_routers
    port = free_port()
    nginx_factory(render_config([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
                                      port=port), port=port)
    host = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"
    key = f"X-API-Key: {API['X-API-Key']}\r\n"
    cases = {
        "body over 64 kB": (b"POST /v1/lessons/x/say HTTP/1.1\r\n" + host.encode() + key.encode()
                            + b"Content-Type: application/json\r\nContent-Length: 70000\r\n\r\n"
                            + b"{" * 70000, 413),
        "10 kB lesson id": (f"GET /v1/lessons/{'a' * 10000} HTTP/1.1\r\n{host}\r\n".encode(),
                            414),
        "NUL in the path": (f"GET /v1/lessons/a%00b/join HTTP/1.1\r\n{host}\r\n".encode(), 400),
        "20 kB header": (f"GET /healthz HTTP/1.1\r\n{host}X-Big: {'b' * 20000}\r\n\r\n".encode(),
                         431),
        "TRACE": (f"TRACE /healthz HTTP/1.1\r\n{host}\r\n".encode(), 405),
        "PATCH": (f"PATCH /v1/lessons/x/join HTTP/1.1\r\n{host}\r\n".encode(), 405),
        "garbage request line": (b"HELLO THERE\r\n\r\n", 400),
        "docs": (f"GET /docs HTTP/1.1\r\n{host}\r\n".encode(), 404),
        "schema": (f"GET /openapi.json HTTP/1.1\r\n{host}\r\n".encode(), 404),
        "unknown path": (f"GET /nothing HTTP/1.1\r\n{host}\r\n".encode(), 404),
        "bad JSON": (b"POST /v1/lessons/x/join HTTP/1.1\r\n" + host.encode() + key.encode()
                     + b"Content-Type: application/json\r\nContent-Length: 3\r\n\r\n{{{", 422),
    }
    for what, (req, status) in cases.items():
        got, headers, body = await asyncio.to_thread(_raw, port, req)
        assert got == status, (what, got, body[:200])
        assert headers.get("content-type", "").startswith("application/json"), (what, headers)
        err = json.loads(body)
        assert err["error"] and "detail" in err, (what, err)
    # the router itself still serves its schema to whoever reaches it directly
    assert (await httpx.AsyncClient().get(a.url + "/openapi.json")).status_code == 200


async def test_photos_pass_through_nginx_and_assets_do_not(redis_url, regions_file, router_procs,
                                                           nginx_factory):
    """An avatar photo of several MB reaches the routers (the API's bodies are 64 kB at most
    elsewhere); a browser's CORS preflight is answered by them; the workers' asset path is not
    published."""
    import io

    import numpy as np
    from PIL import Image

    (r,) = router_procs(router_env(redis_url, regions_file,
                                   AVATAR_ROUTER__CORS_ORIGINS='["http://admin.test"]'), 1)
    ngx = nginx_factory(render_config([f"127.0.0.1:{r.port}"], port=(port := free_port())),
                        port=port)
    buf = io.BytesIO()  # a 6 MB PNG of noise: big, and no face in it
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (1500, 1400, 3), np.uint8)).save(
        buf, format="PNG", compress_level=0)
    assert buf.tell() > 5_000_000
    async with httpx.AsyncClient(base_url=ngx.url, timeout=30) as c:
        up = await c.post("/v1/avatars", headers=API,
                          files={"file": ("noise.png", buf.getvalue(), "image/png")})
        assert up.status_code == 202, up.text
        assert (await c.post("/v1/lessons/x/join", headers=API,
                             content=b"x" * 100_000)).status_code == 413
        pre = await c.options("/v1/avatars", headers={
            "Origin": "http://admin.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://admin.test"
        assert (await c.get(f"/v1/assets/{'0' * 24}/avatar.json",
                            headers=API)).status_code == 404
