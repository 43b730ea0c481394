"""The room-token API (FastAPI). OpenAPI at ``/openapi.json``.

Errors are JSON ``{"error": <reason>, "detail": ...}``; a bad lesson id, body or key is a 4xx;
Redis unreachable is 503 with ``Retry-After`` and the next request after it is back just works.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from livekit import api as lkapi
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.fleet import ID_PATTERN, SayRequest, avatar_identity, pool_region, room_name
from config.logs import get_logger
from config.metrics import metrics_response
from config.redis_client import connect as connect_redis
from config.regions import RegionsConfig
from config.settings import Settings, load_settings
from router.auth import key_matches
from router.metrics import RouterMetrics
from router.schemas import (
    CanaryBody,
    DrainResponse,
    ErrorBody,
    JoinRequest,
    JoinResponse,
    ReleaseResponse,
    SayBody,
    SayResponse,
    WorkersResponse,
    WorkerView,
)
from router.service import DispatchFailed, NoCapacity, Router, UnknownRegion

# Redis cannot answer for now (down, loading, or a cluster slot without a primary during a
# failover): 503 with Retry-After, never a 500
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ClusterError,
                     RedisClusterException, TryAgainError)

log = get_logger("router.api")

LessonId = Annotated[str, Path(pattern=ID_PATTERN, description="1-64 of A-Z a-z 0-9 _ -")]
WorkerId = Annotated[str, Path(pattern=ID_PATTERN)]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, detail: object = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers


ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody},
          503: {"model": ErrorBody}}

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="backend or ops key (or Authorization: Bearer <key>)")


def _presented(request: Request, header_key: str | None) -> str | None:
    if header_key:
        return header_key
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def create_app(settings: Settings | None = None, *, regions: RegionsConfig | None = None,
               reconciler: bool = True) -> FastAPI:
    settings = settings or load_settings()
    rs = settings.router
    metrics = RouterMetrics()
    retry_after = {"Retry-After": str(rs.retry_after_s)}
    state: dict[str, Router] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        redis = connect_redis(settings.redis_url, settings.redis_cluster,
                              socket_timeout=rs.redis_timeout_s,
                              socket_connect_timeout=rs.redis_timeout_s,
                              retry=Retry(NoBackoff(), 1), max_connections=256)
        router = Router(settings, redis, metrics, regions)
        state["router"] = router
        app.state.router = router
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
            await router.lk.aclose()
            await redis.aclose()

    app = FastAPI(title="avatar-fleet router", version="0.1.0", lifespan=lifespan,
                  description="Assigns lessons to avatar workers, dispatches them into LiveKit "
                              "rooms, and mints learner tokens.")

    # --- errors -------------------------------------------------------------------------------
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

    # --- auth ---------------------------------------------------------------------------------
    def need(role: str):
        def check(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
            presented = _presented(request, key)
            if not presented:
                raise ApiError(401, "missing_key", "send X-API-Key or Authorization: Bearer",
                               {"WWW-Authenticate": "Bearer"})
            own = rs.api_key_sha256 if role == "api" else rs.ops_key_sha256
            if key_matches(presented, own):
                return
            other = rs.ops_key_sha256 if role == "api" else rs.api_key_sha256
            if key_matches(presented, other):
                raise ApiError(403, "forbidden", f"this key may not call {role} endpoints")
            raise ApiError(401, "invalid_key", None, {"WWW-Authenticate": "Bearer"})
        return Depends(check)

    backend, ops = need("api"), need("ops")

    def R() -> Router:
        return state["router"]

    # --- lessons ------------------------------------------------------------------------------
    @app.post("/v1/lessons/{lesson_id}/join", response_model=JoinResponse, dependencies=[backend],
              responses={**ERRORS, 502: {"model": ErrorBody}}, tags=["lessons"])
    async def join(lesson_id: LessonId, body: JoinRequest) -> JoinResponse:
        """Assign a worker (or keep the lesson's), dispatch its avatar into the room, and mint
        the learner's token. Idempotent per lesson: retries get the same worker and dispatch
        nothing twice."""
        t0 = time.perf_counter()
        router = R()
        try:
            jr = await router.join(lesson_id, body.user_id, hint=body.region, lat=body.lat,
                                   lon=body.lon, voice=body.voice_agent_identity,
                                   output=body.output)
        except UnknownRegion as exc:
            raise ApiError(422, "unknown_region", f"no region {exc.args[0]!r}") from None
        except NoCapacity as exc:
            raise ApiError(503, "no_capacity", {"pools": list(exc.tried)}, retry_after) from None
        except DispatchFailed as exc:
            raise ApiError(503, "dispatch_failed", str(exc), retry_after) from None
        a = jr.assignment
        token = router.lk.learner_token(jr.region, lesson_id, body.user_id, body.display_name,
                                        rs.token_ttl_s)
        # built as a plain dict (the response_model above documents it): skipping the output
        # validation saves a good part of a join's CPU
        resp = {
            "livekit_url": router.livekit_urls[jr.region], "token": token,
            "room": room_name(lesson_id), "worker_id": a.worker_id, "region": jr.region,
            "avatar_identity": avatar_identity(lesson_id), "fence": a.fence,
            "avatar_state": "live" if a.live else "assigned",
            "canary": jr.canary,
            "expires_at": (datetime.now(UTC) + timedelta(seconds=rs.token_ttl_s)).isoformat(),
        }
        metrics.join_seconds.observe(time.perf_counter() - t0)
        return JSONResponse(resp)

    @app.post("/v1/lessons/{lesson_id}/say", response_model=SayResponse, status_code=202,
              dependencies=[backend], responses={**ERRORS, 404: {"model": ErrorBody},
                                                 409: {"model": ErrorBody},
                                                 502: {"model": ErrorBody}}, tags=["lessons"])
    async def say(lesson_id: LessonId, body: SayBody) -> SayResponse:
        """Make the lesson's avatar speak ``text`` (a reliable data packet to the avatar
        participant, topic ``avatar.say``). 409 ``avatar_not_live`` (Retry-After) while the
        lesson's avatar is not yet confirmed in its room."""
        router = R()
        got = await router.store.lesson(lesson_id)
        if got is None:
            raise ApiError(404, "lesson_not_assigned", "join the lesson first")
        lesson = got[1]
        if lesson.get("dispatch_state") != "live" or lesson.get("dispatch_fence") != lesson.get(
                "fence"):
            # nobody in the room would hear it: refused, not accepted and dropped
            raise ApiError(409, "avatar_not_live",
                           "the avatar is not in the room yet (join answers avatar_state); retry",
                           headers={"Retry-After": "1"})
        region = pool_region(got[0])
        try:
            await router.lk.say(region, lesson_id, SayRequest(**body.model_dump()))
        except lkapi.TwirpError as exc:
            if exc.status == 404:
                raise ApiError(404, "room_not_found", exc.message) from None
            raise ApiError(502, "livekit_error", exc.message) from None
        except (OSError, TimeoutError) as exc:
            raise ApiError(502, "livekit_unreachable", repr(exc)) from None
        log.info("say", lesson_id=lesson_id, worker_id=got[1].get("worker"),
                 fence=int(got[1].get("fence", 0)), region=region, chars=len(body.text))
        return SayResponse(lesson_id=lesson_id, sent=True)

    @app.delete("/v1/lessons/{lesson_id}", response_model=ReleaseResponse,
                dependencies=[backend], responses=ERRORS, tags=["lessons"])
    async def release(lesson_id: LessonId) -> ReleaseResponse:
        """Release the lesson (with its current fence) and remove the avatar from the room.
        Idempotent: releasing an unknown lesson answers ``released: false``."""
        try:
            return ReleaseResponse(**await R().release(lesson_id))
        except (lkapi.TwirpError, OSError, TimeoutError) as exc:
            raise ApiError(502, "livekit_error", repr(exc)) from None

    # --- ops ----------------------------------------------------------------------------------
    @app.get("/v1/workers", response_model=WorkersResponse, dependencies=[ops], responses=ERRORS,
             tags=["ops"])
    async def workers() -> WorkersResponse:
        router = R()
        out = []
        for pool in router.all_pools():
            out += await router.store.workers(pool)
        return WorkersResponse(workers=[WorkerView(**w) for w in out])

    async def _drain(worker_id: str, drain: bool) -> DrainResponse:
        router = R()
        pool = await router.store.find_worker(worker_id, router.all_pools())
        if pool is None:
            raise ApiError(404, "worker_not_found", worker_id)
        await router.store.set_drain(pool, worker_id, drain)
        log.info("worker.drain", worker_id=worker_id, region=pool_region(pool), pool=pool,
                 drain=drain)
        return DrainResponse(worker_id=worker_id, pool=pool, drain=drain)

    @app.post("/v1/workers/{worker_id}/drain", response_model=DrainResponse, dependencies=[ops],
              responses={**ERRORS, 404: {"model": ErrorBody}}, tags=["ops"])
    async def drain(worker_id: WorkerId) -> DrainResponse:
        """Stop assigning new lessons to the worker (its lessons stay)."""
        return await _drain(worker_id, True)

    @app.delete("/v1/workers/{worker_id}/drain", response_model=DrainResponse,
                dependencies=[ops], responses={**ERRORS, 404: {"model": ErrorBody}},
                tags=["ops"])
    async def undrain(worker_id: WorkerId) -> DrainResponse:
        return await _drain(worker_id, False)

    @app.get("/v1/canary", response_model=CanaryBody, dependencies=[ops], responses=ERRORS,
             tags=["ops"])
    async def get_canary() -> CanaryBody:
        return CanaryBody(percent=await R().store.canary_percent())

    @app.put("/v1/canary", response_model=CanaryBody, dependencies=[ops], responses=ERRORS,
             tags=["ops"])
    async def put_canary(body: CanaryBody) -> CanaryBody:
        """Share of users (stable buckets of the user id) sent to canary pools; 0 rolls back
        at once for new lessons (routers cache it for ``canary_cache_s``)."""
        await R().set_canary(body.percent)
        log.info("canary", percent=body.percent)
        return body

    # --- health -------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorBody}})
    async def readyz() -> dict:
        router = R()
        try:
            await router.redis.ping()
            if not await router.store.scripts.loaded():
                await router.store.scripts.load()
        except REDIS_UNAVAILABLE as exc:
            raise ApiError(503, "redis_unavailable", repr(exc), retry_after) from None
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, ctype = metrics_response(metrics.registry)
        return Response(body, media_type=ctype)

    return app
