"""A real Prometheus server (built with ``go install``) on loopback, scraping the fleet's
processes and evaluating the alert rules: ``make run`` starts one, the scrape test runs one."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import structlog
import yaml

from scripts.gotools import prometheus
from scripts.servers._base import _Process, _wait, free_port

log = structlog.get_logger("scripts.servers")


class PrometheusServer(_Process):
    """``targets``: job name -> ``host:port`` list (``/metrics`` scraped every
    ``scrape_interval_s``); ``rule_files``: rule files it loads and evaluates."""

    name = "prometheus"

    def __init__(self, targets: dict[str, list[str]], rule_files: list[Path] = (),
                 port: int | None = None, scrape_interval_s: float = 5.0) -> None:
        super().__init__()
        self.port = port or free_port()
        self.targets = targets
        self.rule_files = [Path(f).resolve() for f in rule_files]
        self.scrape_interval_s = scrape_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        every = f"{self.scrape_interval_s:g}s"
        return {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(f) for f in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addrs)}]}
                for job, addrs in self.targets.items()],
        }

    def start(self) -> PrometheusServer:
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._spawn([str(prometheus()), f"--config.file={cfg}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     f"--storage.tsdb.path={self.workdir / 'data'}",
                     "--storage.tsdb.retention.time=1d", "--web.enable-lifecycle"])
        _wait(self._ready, self.proc, "prometheus", 60, self.logfile)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
            return r.status == 200

    def api(self, path: str, **params: str) -> object:
        """``GET /api/v1/<path>``'s ``data`` (raises on an error status)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        return self.api("query", query=expr)["result"]
