"""The voices lesson text can be spoken in (``config.voices``), for a backend to offer."""

from __future__ import annotations

from fastapi import APIRouter

from config.voices import DEFAULT_VOICES, VOICES
from router.deps import ERRORS, backend
from router.schemas import VoicesResponse, VoiceView

routes = APIRouter(prefix="/v1", tags=["voices"], dependencies=[backend])


@routes.get("/voices", response_model=VoicesResponse, responses=ERRORS)
async def voices() -> VoicesResponse:
    """Every voice ``/say`` accepts (its ``voice`` field), the languages each speaks, and the
    voice a language gets when a request names none."""
    return VoicesResponse(
        voices=[VoiceView(id=v.id, engine=v.engine, languages=list(v.languages),
                          description=v.description, neural=v.neural) for v in VOICES.values()],
        defaults=DEFAULT_VOICES)
