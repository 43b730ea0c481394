"""The other real servers of the harness: multi-node LiveKit over Redis, and NGINX."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest
from livekit import api, rtc

from scripts.servers import NginxServer, RouterProcess, ServerError


def _token(server, identity: str, room: str) -> str:
    return (api.AccessToken(server.api_key, server.api_secret).with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


@pytest.mark.livekit
async def test_multinode_livekit_shares_rooms_through_redis(livekit_multinode):
    node_a, node_b, _redis = livekit_multinode
    a, b = rtc.Room(), rtc.Room()
    joined = asyncio.get_running_loop().create_future()

    @a.on("participant_connected")
    def _on_join(p):
        if not joined.done():
            joined.set_result(p.identity)

    await a.connect(node_a.url, _token(node_a, "alice", "shared"))
    await b.connect(node_b.url, _token(node_b, "bob", "shared"))
    try:
        # One room across both nodes: whichever node hosts it, both see each other.
        if "bob" not in {p.identity for p in a.remote_participants.values()}:
            assert await asyncio.wait_for(joined, 15) == "bob"
        assert "alice" in {p.identity for p in b.remote_participants.values()}
        async with api.LiveKitAPI(node_b.http_url, node_b.api_key, node_b.api_secret) as lk:
            rooms = await lk.room.list_rooms(api.ListRoomsRequest())
            assert [r.name for r in rooms.rooms] == ["shared"]
            parts = await lk.room.list_participants(api.ListParticipantsRequest(room="shared"))
            assert sorted(p.identity for p in parts.participants) == ["alice", "bob"]
    finally:
        await a.disconnect()
        await b.disconnect()


NGINX_CONF = """
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path tmp;
  server {{
    listen 127.0.0.1:{port};
    location = /hello {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    location / {{ return 404; }}
  }}
}}
"""


@pytest.mark.nginx
def test_nginx_starts_with_a_generated_config_and_serves(nginx_factory):
    from scripts.servers import free_port

    port = free_port()
    server = nginx_factory(NGINX_CONF.format(port=port), port=port)
    assert urllib.request.urlopen(server.url + "/hello", timeout=5).read() == b"hello from nginx\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/nope", timeout=5)
    assert err.value.code == 404


@pytest.mark.nginx
def test_nginx_config_errors_are_reported_before_start():
    bad = NginxServer("events {} http { server { listen 127.0.0.1:1; bogus_directive on; } }")
    with pytest.raises(ServerError, match="bogus_directive"):
        bad.test_config()


@pytest.mark.livekit
@pytest.mark.redis
def test_a_router_whose_port_was_taken_meanwhile_starts_on_another(livekit_server, redis_server):
    # the port picked free when the process object was made is bound by someone else before
    # the router starts (CI saw this once: "address already in use")
    router = RouterProcess(livekit_server, redis_server.url)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        router.port = taken
        with router:
            assert router.port != taken
            with urllib.request.urlopen(f"http://{router.address}/readyz", timeout=5) as r:
                assert r.status == 200
    # a port the caller chose is the caller's: taken, it is a clear error
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        fixed = RouterProcess(livekit_server, redis_server.url, port=squatter.getsockname()[1])
        with pytest.raises(ServerError, match="address already in use"), fixed:
            pass
