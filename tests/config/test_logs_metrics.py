from __future__ import annotations

import io
import json
import logging
import urllib.request

from prometheus_client import CollectorRegistry

from config.logs import bind_ids, get_logger, setup_logging, unbind_ids
from config.metrics import counter, histogram, metrics_response, start_metrics_server
from scripts.servers import free_port


def test_json_log_lines_carry_bound_ids():
    buf = io.StringIO()
    setup_logging("info", "json", stream=buf)
    try:
        bind_ids(lesson_id="L1", session_id="s-9")
        get_logger("t", worker_id="w1").info("assigned", fence=4)
        logging.getLogger("some.library").warning("plain stdlib line")
        get_logger("t").debug("below the level")
    finally:
        unbind_ids("lesson_id", "session_id")
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["event"] == "assigned"
    assert {k: lines[0][k] for k in ("lesson_id", "session_id", "worker_id", "fence", "level")} == {
        "lesson_id": "L1", "session_id": "s-9", "worker_id": "w1", "fence": 4, "level": "info"}
    assert "timestamp" in lines[0]
    assert lines[1]["event"] == "plain stdlib line" and lines[1]["level"] == "warning"


def test_metrics_are_exposed_over_http():
    reg = CollectorRegistry()
    c = counter("avatar_test_frames_total", "frames", ("kind",), registry=reg)
    h = histogram("avatar_test_latency_seconds", "latency", registry=reg)
    c.labels("late").inc(3)
    h.observe(0.012)
    port = free_port()
    server, thread = start_metrics_server(port, registry=reg)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'avatar_test_frames_total{kind="late"} 3.0' in body
    assert 'avatar_test_latency_seconds_bucket{le="0.015"} 1.0' in body
    data, ctype = metrics_response(reg)
    assert b"avatar_test_frames_total" in data and ctype.startswith("text/plain")
