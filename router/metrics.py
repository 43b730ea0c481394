"""The router's Prometheus metrics (one registry per app, so tests can build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from config.metrics import counter, gauge, histogram


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.join_seconds = histogram("router_join_seconds",
                                      "Join handling time inside the router", registry=r)
        self.assignments = counter("router_assignments_total",
                                   "Join outcomes: affinity, assigned, spilled, full, error",
                                   ("result",), registry=r)
        self.dispatches = counter("router_dispatches_total", "Agent dispatches by outcome",
                                  ("result",), registry=r)
        self.utilisation = gauge("router_pool_utilisation",
                                 "Assigned lessons / capacity of serving workers, per pool",
                                 ("pool", "region"), registry=r)
        self.live_workers = gauge("router_pool_live_workers", "Live workers per pool",
                                  ("pool", "region"), registry=r)
        self.reconciler = counter("router_reconciler_actions_total",
                                  "Reconciler actions: moved, spilled, no_capacity, redispatched,"
                                  " dead_worker", ("action",), registry=r)
        self.canary_percent = gauge("router_canary_percent",
                                    "Share of user buckets sent to canary pools (0-100)",
                                    registry=r)
        self.redis_errors = counter("router_redis_unavailable_total",
                                    "Requests answered 503 because Redis was unreachable",
                                    registry=r)
        self.avatar_jobs = counter("router_avatar_registrations_total",
                                   "Photo registrations by outcome: ready, refused, failed",
                                   ("result",), registry=r)
        self.avatar_job_seconds = histogram(
            "router_avatar_registration_seconds", "One photo registration job, start to end",
            buckets=(0.5, 1, 2, 5, 10, 20, 60, 120), registry=r)
