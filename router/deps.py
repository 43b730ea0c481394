"""What every route shares: the error type, API-key roles as dependencies, the router service
from the app's state, and the path parameter types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader
from redis.exceptions import (
    BusyLoadingError,
    ClusterError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.fleet import ID_PATTERN
from router.auth import key_matches
from router.schemas import ErrorBody
from router.service import Router

# Redis cannot answer for now (down, loading, or a cluster slot without a primary during a
# failover): 503 with Retry-After, never a 500
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ClusterError,
                     RedisClusterException, TryAgainError)

LessonId = Annotated[str, Path(pattern=ID_PATTERN, description="1-64 of A-Z a-z 0-9 _ -")]
WorkerId = Annotated[str, Path(pattern=ID_PATTERN)]

ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody},
          503: {"model": ErrorBody}}


class ApiError(Exception):
    """Answered as JSON ``{"error": reason, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, reason: str, detail: object = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers


def get_router(request: Request) -> Router:
    return request.app.state.router


RouterDep = Annotated[Router, Depends(get_router)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="backend or ops key (or Authorization: Bearer <key>)")


def _presented(request: Request, header_key: str | None) -> str | None:
    if header_key:
        return header_key
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def _need(role: str):
    def check(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
        rs = request.app.state.settings.router
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


backend = _need("api")  # the lesson backend's key
ops = _need("ops")  # the operators' key


def retry_after(request: Request) -> dict[str, str]:
    return {"Retry-After": str(request.app.state.settings.router.retry_after_s)}
