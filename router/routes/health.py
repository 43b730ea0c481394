"""Liveness, readiness (Redis reachable, scripts loaded) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from config.metrics import metrics_response
from router.deps import REDIS_UNAVAILABLE, ApiError, RouterDep, retry_after
from router.schemas import ErrorBody

routes = APIRouter(tags=["health"])


@routes.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@routes.get("/readyz", responses={503: {"model": ErrorBody}})
async def readyz(router: RouterDep, request: Request) -> dict:
    try:
        await router.redis.ping()
        if not await router.store.scripts.loaded():
            await router.store.scripts.load()
    except REDIS_UNAVAILABLE as exc:
        raise ApiError(503, "redis_unavailable", repr(exc), retry_after(request)) from None
    return {"status": "ready"}


@routes.get("/metrics", include_in_schema=False)
async def prometheus(router: RouterDep) -> Response:
    body, ctype = metrics_response(router.metrics.registry)
    return Response(body, media_type=ctype)
