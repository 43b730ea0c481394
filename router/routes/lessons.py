"""Lessons: join (assign a worker, dispatch the avatar, mint the learner's token), say, transcript,
release."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from livekit import api as lkapi

from config.fleet import SayRequest, avatar_identity, pool_region, room_name
from config.logs import get_logger
from router.deps import (
    ERRORS,
    ApiError,
    JobsDep,
    LessonId,
    Owner,
    RouterDep,
    StorageDep,
    asset_for_join,
    backend,
    retry_after,
)
from router.schemas import (
    ErrorBody,
    JoinRequest,
    JoinResponse,
    ReleaseResponse,
    SayBody,
    SayResponse,
    TranscriptResponse,
)
from router.service import DispatchFailed, NoCapacity, UnknownRegion
from router.store import LessonOptions
from router.transcript import to_srt, to_vtt

log = get_logger("router.api")
routes = APIRouter(prefix="/v1/lessons", tags=["lessons"], dependencies=[backend])


@routes.post("/{lesson_id}/join", response_model=JoinResponse,
             responses={**ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody},
                        502: {"model": ErrorBody}})
async def join(lesson_id: LessonId, body: JoinRequest, router: RouterDep,
               request: Request, storage: StorageDep, jobs: JobsDep,
               owner: Owner) -> JoinResponse:
    """Assign a worker (or keep the lesson's), dispatch its avatar into the room, and mint
    the learner's token. Idempotent per lesson: retries get the same worker and dispatch
    nothing twice. ``avatar_id`` must name one of this backend's ready avatars (404
    ``unknown_avatar``, 409 ``avatar_not_ready``, 422 ``avatar_unusable``)."""
    t0 = time.perf_counter()
    rs = router.rs
    asset = (await asset_for_join(storage, jobs, owner, body.avatar_id) if body.avatar_id
             else "")
    opts = LessonOptions(voice=body.voice_agent_identity or "", output=body.output,
                         avatar=asset)
    try:
        jr = await router.join(lesson_id, body.user_id, hint=body.region, lat=body.lat,
                               lon=body.lon, opts=opts)
    except UnknownRegion as exc:
        raise ApiError(422, "unknown_region", f"no region {exc.args[0]!r}") from None
    except NoCapacity as exc:
        raise ApiError(503, "no_capacity", {"pools": list(exc.tried)},
                       retry_after(request)) from None
    except DispatchFailed as exc:
        raise ApiError(503, "dispatch_failed", str(exc), retry_after(request)) from None
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
    router.metrics.join_seconds.observe(time.perf_counter() - t0)
    return JSONResponse(resp)


@routes.post("/{lesson_id}/say", response_model=SayResponse, status_code=202,
             responses={**ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody},
                        502: {"model": ErrorBody}})
async def say(lesson_id: LessonId, body: SayBody, router: RouterDep) -> SayResponse:
    """Make the lesson's avatar speak ``text`` (a reliable data packet to the avatar
    participant, topic ``avatar.say``) in ``voice`` (``GET /v1/voices``; by default the
    language's default voice). 409 ``avatar_not_live`` (Retry-After) while the lesson's avatar
    is not yet confirmed in its room."""
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


@routes.get("/{lesson_id}/transcript", response_model=TranscriptResponse,
            responses={**ERRORS, 404: {"model": ErrorBody},
                       200: {"content": {"application/x-subrip": {}, "text/vtt": {}}}})
async def transcript(lesson_id: LessonId, router: RouterDep,
                     format: Annotated[Literal["json", "srt", "vtt"], Query(
                         description="json (timed lines), srt (SubRip) or vtt (WebVTT)")] = "json",
                     ) -> Response:
    """What the tutor and the learners said, timed: lesson text as it played, the voice
    agent's transcriptions, the worker's captions of learners. Kept a week after the lesson's
    last line (also after the lesson is released). 404 ``no_transcript`` for a lesson that is
    not assigned and has no lines."""
    lines = await router.store.transcript(lesson_id)
    if not lines and await router.store.lesson(lesson_id) is None:
        raise ApiError(404, "no_transcript", "no such lesson, or nothing said in it")
    if format == "srt":
        return Response(to_srt(lines), media_type="application/x-subrip")
    if format == "vtt":
        return Response(to_vtt(lines), media_type="text/vtt")
    body = TranscriptResponse(lesson_id=lesson_id,
                              started_at=lines[0].start if lines else None, lines=lines)
    return JSONResponse(body.model_dump(mode="json"))


@routes.delete("/{lesson_id}", response_model=ReleaseResponse, responses=ERRORS)
async def release(lesson_id: LessonId, router: RouterDep) -> ReleaseResponse:
    """Release the lesson (with its current fence) and remove the avatar from the room.
    Idempotent: releasing an unknown lesson answers ``released: false``."""
    try:
        return ReleaseResponse(**await router.release(lesson_id))
    except (lkapi.TwirpError, OSError, TimeoutError) as exc:
        raise ApiError(502, "livekit_error", repr(exc)) from None
