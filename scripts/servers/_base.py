"""What every server process shares: free loopback ports, finding programs, and the process
wrapper that starts a program, waits until it answers and stops it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("scripts.servers")


class ServerError(RuntimeError):
    """A server could not be found, built, started or did not become ready."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on 127.0.0.1 right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1 for both TCP and UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_tcp_udp_port() -> int:
    """A port number free for both TCP and UDP (LiveKit's RTC ports)."""
    for _ in range(50):
        p = free_port(socket.SOCK_DGRAM)
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", p))
            return p
    raise ServerError("no port free for both TCP and UDP")


def _wait(check: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float,
          logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with {proc.returncode}:\n{_tail(logfile)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise ServerError(f"{what} not ready after {timeout:.0f}s:\n{_tail(logfile)}")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class _Process:
    """A child process in its own session, logging to a file, stopped on exit."""

    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"avatar-{self.name}-"))
        self.logfile = self.workdir / f"{self.name}.log"

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        log.info("server.start", server=self.name, argv=argv[:3], log=str(self.logfile))
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, env={**os.environ, **(env or {})}, start_new_session=True,
            )

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        # A second SIGTERM makes livekit-server skip its graceful drain; others exit on the first.
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.info("server.stop", server=self.name, rc=p.returncode)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if not os.environ.get("AVATAR_KEEP_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def find_program(name: str, *extra_dirs: str) -> str:
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).exists()), None)
    if not path:
        raise ServerError(f"{name} not found: run scripts/setup.sh (it apt-get installs it)")
    return path


