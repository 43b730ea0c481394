"""Typed settings for every process of the fleet.

One source of truth: ``config/defaults.yaml`` < a ``.env`` file < environment variables, all
under the prefix ``AVATAR_`` (nested fields with ``__``, e.g. ``AVATAR_VIDEO__FPS=30``).
A bad value stops the process at start with :class:`SettingsError`, whose message names the
setting (as the environment variable a user would set) and what is allowed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from config.regions import RegionsConfig, load_regions
from config.voices import SAY_LANGUAGES, Voice, build, install

ENV_PREFIX = "AVATAR_"
DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")


class SettingsError(ValueError):
    """A setting has a value that is not allowed; the message says which and why."""


class LiveKitSettings(BaseModel):
    url: str = "ws://127.0.0.1:7880"
    api_key: str = Field("devkey", min_length=1)
    api_secret: SecretStr = SecretStr("secret")

    @field_validator("url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        if not v.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("must start with ws://, wss://, http:// or https://")
        return v

    @property
    def http_url(self) -> str:
        """The same server as an http(s) URL, for the server API (livekit-api)."""
        return self.url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


class WorkerSettings(BaseModel):
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    capacity: int = Field(8, ge=1, le=4096)
    heartbeat_interval_s: float = Field(1.0, gt=0, le=10)
    heartbeat_ttl_s: float = Field(4.0, ge=2, le=30)
    # The longest the worker waits on Redis for one reply (and to connect); a command is tried
    # twice at most. A Redis that stops answering then fails a heartbeat in ~2x this instead
    # of holding the heartbeat loop (fence checks, new dispatches) for redis-py's 5 s.
    # Unset: as long as the ttl allows, (ttl - interval) / 2, at most 1.5 s (1.5 s at the
    # defaults): the wait includes the worker's own event loop, which a busy box can hold up.
    redis_timeout_s: float | None = Field(None, gt=0, le=10)
    captions: bool = False  # transcribe learners' microphones (agent/captions.py)
    # base: multilingual Whisper base; tiny.en: English only, about half the CPU
    captions_model: Literal["base", "tiny.en"] = "base"
    # the lesson languages captions tell apart (our codes, config.voices.SAY_LANGUAGES); one:
    # always that language; none: Whisper's detection among all it knows
    captions_languages: list[str] = []
    # publish each frame's viseme weights on the avatar.visemes topic (docs/viseme-stream.md)
    # in every lesson; visemes-only lessons always do
    viseme_stream: bool = False
    # livekit-server's ``agents.target_load``: it offers jobs only to workers reporting less.
    livekit_target_load: float = Field(0.7, gt=0, le=1)
    # A voice agent's stream that sends nothing for this long ends its segment (agent/audio_in).
    # The stream rides SCTP, whose retransmission timeout starts at 1 s and doubles on each
    # loss: a half-second outage with two retransmissions lost holds it up 1 + 2 + 4 s.
    stall_s: float = Field(8.0, ge=0.2, le=30)
    # The most audio a voice agent may queue ahead of playback; the rest of that stream is cut.
    max_queued_s: float = Field(60.0, ge=1, le=600)
    # livekit-agents' health endpoint (GET / and /worker): 0 = any free port; Kubernetes probes
    # need a fixed one.
    health_port: int = Field(0, ge=0, le=65535)
    # SIGTERM lets running lessons finish for up to this long (pods: terminationGracePeriod).
    drain_timeout_s: int = Field(3600, ge=1, le=86400)
    # On Kubernetes: keep controller.kubernetes.io/pod-deletion-cost = sessions on this pod, so
    # a scale-down removes idle workers first (agent/pod.py; needs POD_NAME and POD_NAMESPACE).
    pod_deletion_cost: bool = False
    # Per-lesson avatars (config/avatars.py): where the worker fetches them and with which
    # key (one of the router's worker_key_sha256); unset: every lesson gets the default tutor.
    router_url: str | None = None
    router_key: SecretStr | None = None
    # fetched avatars kept on disk (least recently used ones go first)
    avatar_cache_mb: int = Field(512, ge=16, le=65536)
    # A Wav2Lip-class ONNX generator (your weights: mel [N,1,80,16] + face [N,6,96,96] ->
    # [N,3,96,96]) for avatars registered with renderer "neural"; CUDA when onnxruntime has it.
    # Unset: those avatars are drawn with their sprites. A model that does not load or has
    # another signature stops the worker at start.
    neural_model: Path | None = None

    @field_validator("captions_languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        bad = [lang for lang in v if lang not in SAY_LANGUAGES]
        if bad:
            raise ValueError(f"{bad} not among {', '.join(SAY_LANGUAGES)}")
        return v

    @model_validator(mode="after")
    def _english_model(self) -> WorkerSettings:
        if self.captions_model == "tiny.en" and any(
                not lang.startswith("en") for lang in self.captions_languages):
            raise ValueError("captions_model tiny.en hears English only; use base for "
                             f"{self.captions_languages}")
        return self

    @model_validator(mode="after")
    def _heartbeat_fits_ttl(self) -> WorkerSettings:
        # a heartbeat that times out on both tries must leave time for the next one
        if self.redis_timeout_s is None:
            self.redis_timeout_s = min(
                1.5, (self.heartbeat_ttl_s - self.heartbeat_interval_s) / 2)
        if 2 * self.redis_timeout_s + self.heartbeat_interval_s > self.heartbeat_ttl_s:
            raise ValueError(
                f"2 x redis_timeout_s ({self.redis_timeout_s}) + heartbeat_interval_s "
                f"({self.heartbeat_interval_s}) must not exceed heartbeat_ttl_s "
                f"({self.heartbeat_ttl_s}): a heartbeat that times out would leave the worker "
                "looking dead")
        return self

    @field_validator("neural_model")
    @classmethod
    def _model_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v}: no such file")
        return v

    @field_validator("router_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v

    def resolved_id(self) -> str:
        """The configured id, or one made from the host name and pid (stable for the process)."""
        if self.id:
            return self.id
        host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
        return f"{host[:40]}-{os.getpid()}"


class VideoSettings(BaseModel):
    width: int = Field(512, ge=64, le=4096, multiple_of=2)
    height: int = Field(512, ge=64, le=4096, multiple_of=2)
    fps: int = 25
    # One VP8 encode per session instead of two or three: a lesson has one learner, so there are
    # no mixed subscribers for layers to serve, and the encoder is what limits a CPU worker.
    simulcast: bool = False
    max_bitrate: int = Field(1_200_000, ge=100_000, le=20_000_000)  # bits/s of the VP8 track
    # Each frame is captured this long after its audio starts to play: receivers play audio
    # ~40-50 ms later than video captured with it (agent/sync.py); 0 = exact capture times.
    delay_ms: int = Field(40, ge=0, le=200)

    @field_validator("fps")
    @classmethod
    def _fps(cls, v: int) -> int:
        if v not in (25, 30):
            raise ValueError("Input should be 25 or 30")
        return v


class CoquiVoiceSettings(BaseModel):
    """A user's own Coqui (``coqui-tts``) VITS checkpoint as a lesson voice (needs the ``coqui``
    extra on the workers). The router only lists and validates it; the workers load the files."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    model_path: Path
    config_path: Path
    languages: list[str] = Field(min_length=1)
    description: str = "Coqui VITS checkpoint"


class VoicesSettings(BaseModel):
    """Lesson voices (config/voices.py): a deployment's default voice per language, e.g.
    ``AVATAR_VOICES__DEFAULTS='{"en": "kokoro-alpha"}'`` on GPU workers, and its own Coqui
    checkpoints (``AVATAR_VOICES__COQUI='[{"id": "anna", ...}]'``)."""

    defaults: dict[str, str] = {}
    coqui: list[CoquiVoiceSettings] = []

    def catalog(self) -> list[Voice]:
        return [Voice(c.id, "coqui", tuple(c.languages), c.description, neural=True,
                      model_path=str(c.model_path), config_path=str(c.config_path))
                for c in self.coqui]

    @model_validator(mode="after")
    def _installable(self) -> VoicesSettings:
        build(self.catalog(), self.defaults)  # raises, naming the voice, before anything runs
        return self

    def install(self) -> None:
        install(self.catalog(), self.defaults)


class RouterSettings(BaseModel):
    """The router (``python -m router``). Keys are stored as sha256 hex digests, never in clear:
    ``python -m router hash-key <key>`` prints one. Lists are JSON in the environment, e.g.
    ``AVATAR_ROUTER__API_KEY_SHA256='["<hex>"]'``."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_key_sha256: list[str] = []
    ops_key_sha256: list[str] = []
    token_ttl_s: int = Field(900, ge=60, le=86400)
    reconcile_interval_s: float = Field(1.0, gt=0, le=60)
    dispatch_lease_s: float = Field(5.0, gt=0, le=120)
    # A worker whose Redis connection was seen to go (CLIENT LIST, router/liveness.py) and that
    # has not heartbeaten for this long is dead without waiting out the heartbeat ttl (a
    # killed process); a little over the heartbeat interval. 0 = the ttl only.
    disconnect_grace_s: float = Field(1.2, ge=0, le=30)
    livekit_timeout_s: float = Field(3.0, gt=0, le=60)
    redis_timeout_s: float = Field(0.5, gt=0, le=30)
    retry_after_s: int = Field(2, ge=1, le=300)
    canary_cache_s: float = Field(1.0, ge=0, le=60)
    # the workers' key (fetching avatar assets), as sha256 hex digests like the others
    worker_key_sha256: list[str] = []
    # avatar storage: a directory (on Kubernetes a volume every replica shares); registration
    # jobs (a subprocess each, off the event loop) run at most this many at once
    avatar_dir: Path = Field(default_factory=lambda: Path(
        os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "avatar-fleet" / "router-avatars")
    avatar_jobs: int = Field(2, ge=1, le=64)
    avatar_job_timeout_s: float = Field(120.0, ge=5, le=3600)
    # origins whose pages may call the API from a browser (web/avatars.html), e.g.
    # ["https://admin.example.com"]; none by default
    cors_origins: list[str] = []

    @field_validator("api_key_sha256", "ops_key_sha256", "worker_key_sha256")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        for h in v:
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h.lower()):
                raise ValueError("each entry must be a sha256 hex digest (64 hex characters)")
        return [h.lower() for h in v]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        yaml_file=DEFAULTS_FILE,
    )

    livekit: LiveKitSettings = LiveKitSettings()
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False  # redis_url is one node of a Redis Cluster
    regions_file: Path | None = None
    region: str = Field("local", pattern=r"^[a-z0-9-]{1,32}$")
    worker: WorkerSettings = WorkerSettings()
    router: RouterSettings = RouterSettings()
    video: VideoSettings = VideoSettings()
    voices: VoicesSettings = VoicesSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_port: int = Field(0, ge=0, le=65535)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier wins: explicit arguments, then the environment, then .env, then the YAML defaults.
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            YamlConfigSettingsSource(settings_cls),
        )

    def regions(self) -> RegionsConfig:
        """The regions YAML (``regions_file`` or the shipped one), validated."""
        return load_regions(self.regions_file)


def _env_name(loc: tuple[object, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc if not isinstance(p, int))


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings`, turning validation errors into one readable SettingsError."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        settings.regions()  # a broken regions file is a start-up error too
        settings.voices.install()  # the voices /say accepts, for this process
        return settings
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{_env_name(err['loc'])}: {msg}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
