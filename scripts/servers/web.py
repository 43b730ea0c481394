"""The learner page (``web/``) served over HTTP on loopback."""

from __future__ import annotations

import functools
import http.server
import threading

import structlog

from scripts.gotools import REPO

log = structlog.get_logger("scripts.servers")


WEB = REPO / "web"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_web(port: int = 0) -> http.server.ThreadingHTTPServer:
    """``web/`` (the learner page and its client) over HTTP on loopback, on a thread; stop it
    with ``.shutdown()``."""
    handler = functools.partial(_QuietHandler, directory=str(WEB))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    return server
