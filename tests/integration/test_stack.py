"""The README's run command starts the local stack: real LiveKit and Redis answer on loopback,
an avatar worker serves in the Redis pool, and Ctrl-C (SIGINT) stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis as redis_sync

from config.fleet import PoolKeys

REPO = Path(__file__).resolve().parents[2]


def _env_file(path: Path, proc: subprocess.Popen, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if path.exists() and path.read_text().strip():
            return dict(line.split("=", 1) for line in path.read_text().splitlines())
        time.sleep(0.1)
    raise AssertionError("stack never wrote its env file")


def _redis_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16)


@pytest.mark.livekit
def test_run_command_starts_livekit_and_redis_and_ctrl_c_stops_them(tmp_path):
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

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Local stack is up" in out and "avatar-local-1" in out
        with pytest.raises(OSError):
            urllib.request.urlopen(lk_http, timeout=2)
        with pytest.raises(OSError):
            _redis_ping(redis_port)
    finally:
        if proc.poll() is None:
            proc.kill()
