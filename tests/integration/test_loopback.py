"""Every server the harness starts listens on 127.0.0.1 only, LiveKit's media ports included."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest

pytestmark = [pytest.mark.livekit, pytest.mark.redis]

_LISTEN, _UNCONN = "0A", "07"  # TCP LISTEN; an unconnected UDP socket


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _addr(hex_addr: str) -> str:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = struct.unpack("<4I", raw)  # /proc prints IPv6 as four host-order words
    return f"[{socket.inet_ntop(socket.AF_INET6, struct.pack('>4I', *words))}]:{int(port, 16)}"


def bound_addresses(pid: int) -> list[str]:
    """The local addresses of the listening TCP and bound UDP sockets process ``pid`` holds."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            state, inode = f[3], f[9]
            if inode in inodes and state in (_LISTEN, _UNCONN):
                found.append(f"{table} {_addr(f[1])}")
    return found


def test_livekit_and_redis_bind_loopback_only(livekit_server, redis_server):
    for server in (livekit_server, redis_server):
        addrs = bound_addresses(server.proc.pid)
        assert addrs, f"{server.name} holds no sockets?"
        outside = [a for a in addrs if not a.split()[1].startswith("127.0.0.1:")]
        assert not outside, f"{server.name} binds beyond loopback: {outside}"
    # LiveKit's media: the UDP mux is there, on loopback, on the port we chose
    assert f"udp 127.0.0.1:{livekit_server.rtc_udp_port}" in bound_addresses(
        livekit_server.proc.pid)
