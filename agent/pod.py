"""The worker's own Pod on Kubernetes: keeps ``controller.kubernetes.io/pod-deletion-cost`` equal
to the lessons it is serving, so that when a pool scales down the ReplicaSet removes the idle
workers first (lowest cost) and lessons are not cut.

In-cluster credentials are the standard ones: the API server from ``KUBERNETES_SERVICE_HOST`` /
``_PORT``, the service account's token (re-read on every call: projected tokens rotate) and CA
from ``/var/run/secrets/kubernetes.io/serviceaccount``; the pod's name and namespace from the
Downward API (``POD_NAME``, ``POD_NAMESPACE``). The chart grants ``patch`` on pods (Role).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from config.logs import get_logger

log = get_logger("agent.pod")

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class PodError(RuntimeError):
    """Not running in a pod, or the pod's identity is not available."""


class PodDeletionCost:
    def __init__(self, api_url: str, namespace: str, pod: str, token_file: Path,
                 ssl_context: ssl.SSLContext | bool = True, timeout_s: float = 2.0) -> None:
        self.url = f"{api_url.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}"
        self.pod = pod
        self.token_file = token_file
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._written: int | None = None  # the cost the API server last accepted

    @classmethod
    def in_cluster(cls, sa_dir: Path | None = None,
                   env: Mapping[str, str] = os.environ) -> PodDeletionCost:
        sa_dir = sa_dir or Path(env.get("AVATAR_K8S_SERVICEACCOUNT_DIR", SA_DIR))
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        pod, ns = env.get("POD_NAME"), env.get("POD_NAMESPACE")
        missing = [n for n, v in (("KUBERNETES_SERVICE_HOST", host),
                                  ("KUBERNETES_SERVICE_PORT", port), ("POD_NAME", pod),
                                  ("POD_NAMESPACE", ns)) if not v]
        if missing or not (sa_dir / "token").exists():
            raise PodError("worker.pod_deletion_cost needs a pod: missing "
                           + ", ".join(missing or [str(sa_dir / "token")]))
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        ctx = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
        return cls(f"https://{host}:{port}", ns, pod, sa_dir / "token", ctx)

    async def update(self, sessions: int) -> bool:
        """Write ``sessions`` as the pod's deletion cost when it changed; True when written.
        A failure is logged and retried on the next call (it only affects which pod a
        scale-down picks, never a lesson)."""
        if sessions == self._written:
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {"metadata": {"annotations": {DELETION_COST: str(sessions)}}}
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}",
                   "Content-Type": "application/merge-patch+json"}
        try:
            async with self._session.patch(self.url, data=json.dumps(body), headers=headers,
                                           ssl=self._ssl) as r:
                if r.status >= 300:
                    log.warning("pod.deletion_cost_refused", pod=self.pod, status=r.status,
                                reason=(await r.text())[:300])
                    return False
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("pod.deletion_cost_failed", pod=self.pod, error=repr(exc))
            return False
        self._written = sessions
        log.info("pod.deletion_cost", pod=self.pod, cost=sessions)
        return True

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
