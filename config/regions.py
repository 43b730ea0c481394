"""The regions YAML: which LiveKit deployment serves which region, where it is, in what order
to spill. Shared by the router (choosing) and the worker (knowing its own region)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator

REGIONS_FILE = Path(__file__).with_name("regions.yaml")


class Region(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    livekit_url: str
    api_key: str = Field(min_length=1)
    api_secret: SecretStr
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    priority: int = 0

    def distance_km(self, lat: float, lon: float) -> float:
        """Great-circle distance from (lat, lon) to this region, in km."""
        p1, p2 = math.radians(self.lat), math.radians(lat)
        dp, dl = p2 - p1, math.radians(lon - self.lon)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 6371.0 * 2 * math.asin(math.sqrt(min(1.0, a)))


class RegionsConfig(BaseModel):
    default: str
    regions: list[Region] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RegionsConfig:
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"region names must be unique, got {names}")
        if self.default not in names:
            raise ValueError(f"default region {self.default!r} is not one of {names}")
        return self

    def get(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def by_priority(self) -> list[Region]:
        return sorted(self.regions, key=lambda r: (r.priority, r.name))

    def nearest(self, lat: float, lon: float) -> Region:
        return min(self.regions, key=lambda r: (r.distance_km(lat, lon), r.priority))


def load_regions(path: Path | str | None = None) -> RegionsConfig:
    """Load and validate a regions file; errors name the file and the field."""
    from config.settings import SettingsError  # local: settings imports this module

    p = Path(path) if path else REGIONS_FILE
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"AVATAR_REGIONS_FILE: cannot read {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"AVATAR_REGIONS_FILE: {p} is not valid YAML: {exc}") from None
    try:
        return RegionsConfig.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"AVATAR_REGIONS_FILE: {p}: {msgs}") from None
