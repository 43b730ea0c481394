"""The learner page (``web/``) served over HTTP on loopback."""

from __future__ import annotations

import ctypes
import functools
import http.server
import threading

import structlog

from scripts.gotools import REPO

log = structlog.get_logger("scripts.servers")


WEB = REPO / "web"
CLONE_NEWNET = 0x40000000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_web(port: int = 0, netns: str | None = None) -> http.server.ThreadingHTTPServer:
    """``web/`` (the learner page and its client) over HTTP on loopback, on a thread; stop it
    with ``.shutdown()``. With ``netns`` (a name under /var/run/netns), on that network
    namespace's loopback: the listening socket is made by a thread that joined it (setns), so
    a browser inside the namespace loads the page from its own 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(WEB))
    if netns is None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    else:
        server = _in_netns(netns, lambda: http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                                                           handler))
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    return server


def _in_netns(netns: str, make):
    """``make()`` run on a thread that has joined network namespace ``netns`` (sockets made
    there stay in it; the namespace is per thread, so the rest of the process is untouched)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out: dict = {}

    def run() -> None:
        try:
            with open(f"/var/run/netns/{netns}") as f:
                if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            out["value"] = make()
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
