"""Debian's nginx with a generated config (``nginx -t`` before every start)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import structlog

from scripts.servers._base import (
    ServerError,
    _Process,
    _wait,
    find_program,
    free_port,
)

log = structlog.get_logger("scripts.servers")


class NginxServer(_Process):
    """nginx run in the foreground with a generated config (the caller renders it; ``port`` is
    reserved for the caller to put in its ``listen``). ``nginx -t`` runs before every start."""

    name = "nginx"

    def __init__(self, config_text: str, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.config_text = config_text
        (self.workdir / "logs").mkdir()
        self.conf = self.workdir / "nginx.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def test_config(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the generated config; raises ServerError with nginx's words."""
        self.conf.write_text(self.config_text)
        r = subprocess.run([find_program("nginx", "/usr/sbin"), "-t", "-p", str(self.workdir),
                            "-c", str(self.conf)], capture_output=True, text=True)
        if r.returncode != 0:
            raise ServerError(f"nginx -t failed:\n{r.stderr}")
        return r

    def start(self) -> NginxServer:
        self.test_config()
        self._spawn([find_program("nginx", "/usr/sbin"), "-p", str(self.workdir), "-c",
                     str(self.conf), "-g", "daemon off;"])
        _wait(self._ready, self.proc, "nginx", 20, self.logfile)
        return self

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def reload(self, config_text: str) -> None:
        self.config_text = config_text
        self.test_config()
        os.kill(self.proc.pid, signal.SIGHUP)


