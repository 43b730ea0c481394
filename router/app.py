"""The room-token API (FastAPI, the "bigger applications" layout): the app, its lifespan and
error handlers; each resource's routes live in ``router/routes/`` and share ``router/deps.py``.
OpenAPI at ``/openapi.json``.

Errors are JSON ``{"error": <reason>, "detail": ...}``; a bad lesson id, body or key is a 4xx;
Redis unreachable is 503 with ``Retry-After`` and the next request after it is back just works.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.logs import get_logger
from config.redis_client import connect as connect_redis
from config.regions import RegionsConfig
from config.settings import Settings, load_settings
from router.avatar_jobs import AvatarJobs
from router.avatar_storage import DirectoryStorage
from router.deps import REDIS_UNAVAILABLE, ApiError
from router.metrics import RouterMetrics
from router.routes import avatars, health, lessons, ops, voices
from router.service import Router

log = get_logger("router.api")


def create_app(settings: Settings | None = None, *, regions: RegionsConfig | None = None,
               reconciler: bool = True) -> FastAPI:
    settings = settings or load_settings()
    settings.voices.install()  # the voices /say accepts and GET /v1/voices lists
    rs = settings.router
    metrics = RouterMetrics()
    retry_after = {"Retry-After": str(rs.retry_after_s)}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        redis = connect_redis(settings.redis_url, settings.redis_cluster,
                              timeout_s=rs.redis_timeout_s, max_connections=256)
        router = Router(settings, redis, metrics, regions)
        app.state.router = router
        app.state.avatar_storage = DirectoryStorage(rs.avatar_dir)
        app.state.avatar_jobs = jobs = AvatarJobs(
            app.state.avatar_storage, metrics, jobs=rs.avatar_jobs,
            timeout_s=rs.avatar_job_timeout_s)
        try:
            await router.store.scripts.load()
        except REDIS_UNAVAILABLE as exc:
            log.warning("router.start.redis_unavailable", error=repr(exc))  # /readyz says so
        stop = asyncio.Event()
        task = asyncio.create_task(router.run_reconciler(stop)) if reconciler else None
        log.info("router.start", regions=[r.name for r in router.regions.regions])
        try:
            yield
        finally:
            stop.set()
            if task:
                await task
            await jobs.aclose()
            await router.lk.aclose()
            await redis.aclose()

    app = FastAPI(title="avatar-fleet router", version="0.1.0", lifespan=lifespan,
                  description="Assigns lessons to avatar workers, dispatches them into LiveKit "
                              "rooms, and mints learner tokens.")
    app.state.settings = settings
    if rs.cors_origins:  # the avatar registration page, served from another origin
        app.add_middleware(CORSMiddleware, allow_origins=rs.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Authorization"], max_age=600)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError):
        return JSONResponse({"error": exc.reason, "detail": exc.detail}, exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        errs = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                for e in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": jsonable_encoder(errs)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": reason, "detail": exc.detail}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    for exc_type in REDIS_UNAVAILABLE:
        @app.exception_handler(exc_type)
        async def _redis_down(_req: Request, exc: Exception):
            metrics.redis_errors.inc()
            log.warning("redis.unavailable", error=repr(exc))
            return JSONResponse({"error": "redis_unavailable", "detail": "retry later"}, 503,
                                headers=retry_after)

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception):
        log.exception("internal_error", error=repr(exc))
        return JSONResponse({"error": "internal", "detail": None}, 500)

    for resource in (lessons, avatars, voices, ops, health):
        app.include_router(resource.routes)
    app.include_router(avatars.assets)
    return app
