"""Go programs the harness builds from the Go module proxy with ``go install``, into
``.cache/bin`` (locked, so parallel callers build once): livekit-server, promtool, prometheus,
helm."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("scripts.gotools")

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("AVATAR_CACHE_DIR", REPO / ".cache"))
PROMTOOL_MODULE = "github.com/prometheus/prometheus/cmd/promtool@v0.316.0"
PROMETHEUS_MODULE = "github.com/prometheus/prometheus/cmd/prometheus@v0.316.0"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm@v3.22.0"


class BuildError(RuntimeError):
    """Go is missing or ``go install`` failed."""


def go_install(module: str, built_name: str, target_name: str,
               is_current: Callable[[Path], bool] = Path.exists) -> Path:
    """``.cache/bin/<target_name>``, built from ``module`` (``path@version``) unless
    ``is_current`` says the one there is already right."""
    bindir = CACHE / "bin"
    target = bindir / target_name
    if target.exists() and is_current(target):
        return target
    bindir.mkdir(parents=True, exist_ok=True)
    with open(bindir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and is_current(target):
            return target
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(go).exists():
            raise BuildError(f"go not found: install Go >= 1.23 to build {target_name}")
        gobin = bindir / "go-install"
        log.info("go.build", module=module, gobin=str(gobin))
        r = subprocess.run([go, "install", module], env={**os.environ, "GOBIN": str(gobin)},
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"go install {module} failed:\n{r.stderr[-4000:]}")
        (gobin / built_name).replace(target)
    return target


def promtool() -> Path:
    """Prometheus's promtool (``check rules``, ``test rules``)."""
    return go_install(PROMTOOL_MODULE, "promtool", "promtool")


def prometheus() -> Path:
    """The Prometheus server (``make run`` starts one; the scrape test runs one)."""
    return go_install(PROMETHEUS_MODULE, "prometheus", "prometheus")


def helm() -> Path:
    """Helm 3 (``helm lint`` / ``helm template`` of k8s/avatar-fleet)."""
    return go_install(HELM_MODULE, "helm", "helm")
