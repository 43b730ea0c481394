"""What every route shares: the error type, API-key roles as dependencies, the router service
from the app's state, and the path parameter types."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader
from redis.exceptions import (
    BusyLoadingError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.fleet import ID_PATTERN
from router.auth import hash_key, key_matches
from router.avatar_jobs import AvatarJobs
from router.avatar_storage import AvatarStorage
from router.schemas import ErrorBody
from router.service import Router

# Redis cannot answer for now (down, loading, a cluster slot without a primary during a
# failover, or a write that reached a primary just demoted to replica: READONLY): 503 with
# Retry-After, never a 500
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ClusterError,
                     RedisClusterException, TryAgainError, ReadOnlyError)

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
        keys = {"api": rs.api_key_sha256, "ops": rs.ops_key_sha256,
                "worker": rs.worker_key_sha256}
        if key_matches(presented, keys.pop(role)):
            return
        if any(key_matches(presented, other) for other in keys.values()):
            raise ApiError(403, "forbidden", f"this key may not call {role} endpoints")
        raise ApiError(401, "invalid_key", None, {"WWW-Authenticate": "Bearer"})
    return Depends(check)


backend = _need("api")  # the lesson backend's key
ops = _need("ops")  # the operators' key
worker = _need("worker")  # the avatar workers' key (fetching avatar assets)


def backend_owner(request: Request,
                  key: Annotated[str | None, Depends(api_key_header)]) -> str:
    """Who owns what a backend registers: derived from its key (after ``backend`` accepted it),
    so each backend key sees only its own avatars."""
    return hash_key(_presented(request, key) or "")[:32]


Owner = Annotated[str, Depends(backend_owner)]


def retry_after(request: Request) -> dict[str, str]:
    return {"Retry-After": str(request.app.state.settings.router.retry_after_s)}


def get_storage(request: Request) -> AvatarStorage:
    return request.app.state.avatar_storage


StorageDep = Annotated[AvatarStorage, Depends(get_storage)]


def get_jobs(request: Request) -> AvatarJobs:
    return request.app.state.avatar_jobs


JobsDep = Annotated[AvatarJobs, Depends(get_jobs)]


async def asset_for_join(storage: AvatarStorage, jobs: AvatarJobs, owner: str,
                         avatar_id: str) -> str:
    """The asset a join's ``avatar_id`` names, or the 4xx that says why it cannot be used."""
    record = await asyncio.to_thread(storage.get_record, owner, avatar_id)
    if record is None:
        raise ApiError(404, "unknown_avatar", "no such avatar for this key")
    record = jobs.effective(owner, record)
    if record["status"] == "pending":
        raise ApiError(409, "avatar_not_ready", "the avatar is still being registered; retry",
                       headers={"Retry-After": "2"})
    if record["status"] != "ready":
        raise ApiError(422, "avatar_unusable", {"status": record["status"],
                                                "reason": record.get("reason")})
    return record["asset_id"]
