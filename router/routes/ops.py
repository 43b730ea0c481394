"""Operations: the workers of every pool, draining one, the canary share."""

from __future__ import annotations

from fastapi import APIRouter

from config.fleet import pool_region
from config.logs import get_logger
from router.deps import ERRORS, ApiError, RouterDep, WorkerId, ops
from router.schemas import CanaryBody, DrainResponse, ErrorBody, WorkersResponse, WorkerView
from router.service import Router

log = get_logger("router.api")
routes = APIRouter(prefix="/v1", tags=["ops"], dependencies=[ops])


@routes.get("/workers", response_model=WorkersResponse, responses=ERRORS)
async def workers(router: RouterDep) -> WorkersResponse:
    out = []
    for pool in router.all_pools():
        out += await router.store.workers(pool)
    return WorkersResponse(workers=[WorkerView(**w) for w in out])


async def _drain(router: Router, worker_id: str, drain: bool) -> DrainResponse:
    pool = await router.store.find_worker(worker_id, router.all_pools())
    if pool is None:
        raise ApiError(404, "worker_not_found", worker_id)
    await router.store.set_drain(pool, worker_id, drain)
    log.info("worker.drain", worker_id=worker_id, region=pool_region(pool), pool=pool,
             drain=drain)
    return DrainResponse(worker_id=worker_id, pool=pool, drain=drain)


@routes.post("/workers/{worker_id}/drain", response_model=DrainResponse,
             responses={**ERRORS, 404: {"model": ErrorBody}})
async def drain(worker_id: WorkerId, router: RouterDep) -> DrainResponse:
    """Stop assigning new lessons to the worker (its lessons stay)."""
    return await _drain(router, worker_id, True)


@routes.delete("/workers/{worker_id}/drain", response_model=DrainResponse,
               responses={**ERRORS, 404: {"model": ErrorBody}})
async def undrain(worker_id: WorkerId, router: RouterDep) -> DrainResponse:
    return await _drain(router, worker_id, False)


@routes.get("/canary", response_model=CanaryBody, responses=ERRORS)
async def get_canary(router: RouterDep) -> CanaryBody:
    return CanaryBody(percent=await router.store.canary_percent())


@routes.put("/canary", response_model=CanaryBody, responses=ERRORS)
async def put_canary(body: CanaryBody, router: RouterDep) -> CanaryBody:
    """Share of users (stable buckets of the user id) sent to canary pools; 0 rolls back
    at once for new lessons (routers cache it for ``canary_cache_s``)."""
    await router.set_canary(body.percent)
    log.info("canary", percent=body.percent)
    return body
