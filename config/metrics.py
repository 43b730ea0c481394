"""Prometheus helpers: one registry per process and its HTTP exposition.

Each package declares its metrics on :data:`REGISTRY` (or its own registry in tests) and a
process exposes them with :func:`start_metrics_server` (worker) or :func:`metrics_response`
(inside an HTTP framework such as the router's FastAPI app).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets for per-frame and per-request timings, in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15,
                   0.25, 0.5, 1.0, 2.5)


def counter(name: str, doc: str, labels: tuple[str, ...] = (), registry=None) -> Counter:
    return Counter(name, doc, labels, registry=registry or REGISTRY)


def gauge(name: str, doc: str, labels: tuple[str, ...] = (), registry=None) -> Gauge:
    return Gauge(name, doc, labels, registry=registry or REGISTRY)


def histogram(name: str, doc: str, labels: tuple[str, ...] = (), buckets=LATENCY_BUCKETS,
              registry=None) -> Histogram:
    return Histogram(name, doc, labels, buckets=buckets, registry=registry or REGISTRY)


def start_metrics_server(port: int, addr: str = "127.0.0.1", registry=None):
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns (server, thread)."""
    return start_http_server(port, addr=addr, registry=registry or REGISTRY)


def metrics_response(registry=None) -> tuple[bytes, str]:
    """Body and content type of a ``/metrics`` answer."""
    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST
