"""The router API's request and response bodies (pydantic; they are the OpenAPI schema)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.avatars import AVATAR_ID_PATTERN, Renderer
from config.fleet import SayRequest, TranscriptEntry

USER_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
# control, format (bidi overrides, zero-width), private-use, surrogate and unassigned code points
_REFUSED_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Cn"}
# ...except the zero-width (non-)joiners that Persian and Indic names and emoji need
_ALLOWED_FORMAT = {"\u200c", "\u200d"}


class ErrorBody(BaseModel):
    error: str
    detail: object = None


# --- bodies ---------------------------------------------------------------------------------------
class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(pattern=USER_PATTERN, description="learner identity (not avatar-*)")
    display_name: str = Field(min_length=1, max_length=128, description=(
        "shown to others in the room: printable text, no control or bidi-override "
        "characters, no < >"))
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,32}$", description="explicit hint")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    voice_agent_identity: str | None = Field(None, pattern=r"^[A-Za-z0-9_.@-]{1,128}$")
    output: Literal["video", "visemes"] = Field("video", description=(
        "what the avatar publishes: its video and voice, or its voice and the viseme stream "
        "only (docs/viseme-stream.md), for clients that draw the tutor themselves; set by the "
        "join that dispatches the avatar"))
    avatar_id: str | None = Field(None, pattern=AVATAR_ID_PATTERN, description=(
        "one of this backend's avatars (POST /v1/avatars), ready; none: the default tutor. "
        "Set by the join that dispatches the avatar"))

    @field_validator("user_id")
    @classmethod
    def _not_avatar(cls, v: str) -> str:
        if v.startswith("avatar-"):
            raise ValueError("user ids starting with 'avatar-' are reserved for avatars")
        return v

    @field_validator("display_name")
    @classmethod
    def _printable_name(cls, v: str) -> str:
        """A name other people's screens render: refused (not silently changed) when it
        carries control characters (NUL, newlines), bidi overrides or zero-width characters
        that disguise it, or markup."""
        v = unicodedata.normalize("NFC", v)
        bad = sorted({f"U+{ord(c):04X}" for c in v if c not in _ALLOWED_FORMAT
                      and unicodedata.category(c) in _REFUSED_CATEGORIES})
        if bad:
            raise ValueError(f"display_name has control or formatting characters: {bad[:5]}")
        if "<" in v or ">" in v:
            raise ValueError("display_name may not contain < or >")
        v = " ".join(v.split())
        if not v:
            raise ValueError("display_name is blank")
        return v

    @model_validator(mode="after")
    def _both(self) -> JoinRequest:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together")
        return self


class JoinResponse(BaseModel):
    livekit_url: str
    token: str
    room: str
    worker_id: str
    region: str
    avatar_identity: str
    fence: int
    # live: the worker reported this fence's avatar in the room; assigned: dispatched (or being
    # dispatched), not yet confirmed; the router dispatches again if it is not live in time
    avatar_state: Literal["live", "assigned"]
    canary: bool
    expires_at: datetime


class SayBody(SayRequest):
    model_config = ConfigDict(extra="forbid")


class VoiceView(BaseModel):
    id: str
    engine: str
    languages: list[str]
    description: str
    neural: bool


class VoicesResponse(BaseModel):
    voices: list[VoiceView]
    defaults: dict[str, str] = Field(description="language -> the voice it gets when a /say "
                                                 "names none (others: espeak-ng's default)")


class SayResponse(BaseModel):
    lesson_id: str
    sent: bool


class TranscriptResponse(BaseModel):
    lesson_id: str
    started_at: float | None = Field(description="Unix seconds the first line started; the "
                                                 "SRT and WebVTT cue times count from it")
    lines: list[TranscriptEntry]


class ReleaseResponse(BaseModel):
    lesson_id: str
    released: bool
    avatar_removed: bool


class CanaryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(ge=0, le=100, description="share of user buckets sent to canary pools")


class WorkerView(BaseModel):
    worker_id: str
    pool: str
    region: str
    state: str
    capacity: int
    load: int
    active: int
    draining_by_ops: bool
    heartbeat_age_ms: int
    alive: bool


class WorkersResponse(BaseModel):
    workers: list[WorkerView]


class DrainResponse(BaseModel):
    worker_id: str
    pool: str
    drain: bool


class AvatarView(BaseModel):
    id: str = Field(description="the avatar's id: what a join's avatar_id names")
    name: str
    status: Literal["pending", "ready", "refused", "failed"] = Field(description=(
        "pending: being registered; ready: usable in joins; refused: the photo cannot make an "
        "avatar (reason says why); failed: registration broke on our side, upload it again"))
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    renderer: Renderer = Field("sprite", description=(
        "how lessons draw the mouth (POST /v1/avatars)"))
    preview_url: str | None = Field(None, description="PNG of the 15 mouths, once ready")
    created_at: str
    updated_at: str


class AvatarsResponse(BaseModel):
    avatars: list[AvatarView]


class AvatarDeleted(BaseModel):
    id: str
    deleted: bool
