"""The fleet's Prometheus alert rules (k8s/avatar-fleet/files/prometheus/): valid (``promtool check rules``),
behaving as their unit tests say (``promtool test rules``), and naming only metrics that a
running worker and router really expose (scraped here from the real processes)."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from scripts.gotools import promtool
from scripts.servers import AvatarWorkerProcess, RouterProcess, free_port
from tests.ops.test_chart import CHART, render

RULES_DIR = Path(__file__).resolve().parents[2] / "k8s" / "avatar-fleet" / "files" / "prometheus"
RULES = RULES_DIR / "avatar-fleet.rules.yaml"
RULES_TEST = RULES_DIR / "avatar-fleet.rules.test.yaml"
DASHBOARD = RULES_DIR.parent / "grafana" / "avatar-fleet.dashboard.json"
METRIC = re.compile(r"\b((?:avatar|router)_[a-z0-9_]+)\b")


@pytest.fixture(scope="module")
def tool() -> Path:
    return promtool()


def test_rules_are_valid(tool):
    r = subprocess.run([str(tool), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_rules_fire_as_their_unit_tests_say(tool):
    r = subprocess.run([str(tool), "test", "rules", RULES_TEST.name], cwd=RULES_DIR,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_severity_and_an_action():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    for a in alerts:
        assert a["labels"]["severity"] in ("page", "ticket"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["action"], a["alert"]


def _exposed(url: str) -> set[str]:
    """Sample names a /metrics page can carry, from its TYPE lines (a labelled metric with no
    children yet has no samples, but is declared)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            elif kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count")}
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


@pytest.mark.livekit
@pytest.mark.redis
def test_every_metric_a_rule_a_panel_or_a_scaler_names_is_exposed(livekit_server, redis_server):
    """Rules, the Grafana dashboard and the chart's autoscaling queries name only metrics that
    a real worker and router serve (a renamed metric would silently empty a panel, never fire
    an alert, or stall a pool at its minimum)."""
    port = free_port()
    with AvatarWorkerProcess(livekit_server, redis_server.url, "w-metrics", capacity=1,
                             extra_env={"AVATAR_METRICS_PORT": str(port),
                                        "AVATAR_WORKER__CAPTIONS": "true"}), \
            RouterProcess(livekit_server, redis_server.url) as router:
        exposed = _exposed(f"http://127.0.0.1:{port}/metrics") | _exposed(
            f"http://{router.address}/metrics")
    scalers = "\n".join(json.dumps(o["spec"]["triggers"]) for o in render(
        CHART / "values" / "production-gpu.yaml") if o["kind"] == "ScaledObject")
    for what, text in (("a rule", RULES.read_text()), ("a dashboard panel", DASHBOARD.read_text()),
                       ("an autoscaling trigger", scalers)):
        # avatar_fleet_*: pod labels Prometheus adds (the chart's PodMonitor), not metrics
        named = {m for m in METRIC.findall(text) if not m.startswith("avatar_fleet_")}
        assert len(named) >= 3, f"{what} names metrics"
        missing = sorted(named - exposed)
        assert not missing, f"named by {what}, exposed by nobody: {missing}"
