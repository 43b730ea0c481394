"""A network drop for one program on this machine: every packet between it and a server's
ports is silently dropped (nftables, input hook), while everyone else keeps talking to the
same server. Used to cut a browser learner off LiveKit and let it come back.

    with cut_off({"tcp": [lk.port], "udp": [lk.rtc_udp_port]}, program="chrom"):
        ...

Which sockets keep going is decided when the drop starts: those of every other program (their
local ports). Any socket the program opens during the drop is cut off too. Needs root and
``nft``; :func:`available` says whether this machine has them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

_USERS = re.compile(r'users:\(\("([^"]+)"')


def available() -> bool:
    if shutil.which("nft") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["nft", "list", "tables"], capture_output=True)
    return probe.returncode == 0


def _other_ports(program: str) -> dict[str, set[int]]:
    """Local ports of every TCP/UDP socket not held by ``program`` (process name prefix)."""
    out = subprocess.run(["ss", "-tuanpH"], capture_output=True, text=True, check=True).stdout
    ports: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[0] not in ports:
            continue
        m = _USERS.search(line)
        if m and m.group(1).startswith(program):
            continue
        with contextlib.suppress(ValueError):
            ports[parts[0]].add(int(parts[4].rsplit(":", 1)[1]))
    return ports


@contextlib.contextmanager
def cut_off(server_ports: dict[str, list[int]], program: str = "chrom") -> Iterator[None]:
    """Drop all traffic between ``program`` and ``server_ports`` ({"tcp": [...], "udp": [...]})
    until the block exits."""
    keep = _other_ports(program)
    table = f"netdrop_{os.getpid()}"
    rules = []
    for proto, ports in server_ports.items():
        allowed = sorted(keep[proto] - set(ports))
        spare = f" {proto} sport != {{ {', '.join(map(str, allowed))} }}" if allowed else ""
        spare_d = f" {proto} dport != {{ {', '.join(map(str, allowed))} }}" if allowed else ""
        for port in ports:
            rules.append(f"{proto} dport {port}{spare} drop")
            rules.append(f"{proto} sport {port}{spare_d} drop")
    script = (f"table inet {table} {{\n chain input {{\n  type filter hook input priority -10;"
              " policy accept;\n" + "".join(f"  {r}\n" for r in rules) + " }\n}\n")
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
