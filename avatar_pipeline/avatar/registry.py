"""Avatar registry: assets stored under a cache directory, keyed by content hash.

Layout::

    <cache>/<avatar_id>/avatar.json ...     one asset per id (see asset.py)
    <cache>/refs/<name>                     a text file holding an id ("default", a photo's hash)

The default cache is ``$FLEET_AVATAR_CACHE``, else ``$XDG_CACHE_HOME/avatar-fleet/avatars``
(``~/.cache/avatar-fleet/avatars``). The variable deliberately avoids the ``AVATAR_`` prefix:
that namespace belongs to ``config.settings``, which refuses unknown keys in a ``.env`` file.

``$FLEET_AVATAR_SEED`` names a read-only registry laid out the same (the worker image draws the
default tutor into one at build time), read when the cache has no default: a pod starts without
drawing it, while photos still register into the writable cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avatar_pipeline.avatar.asset import AvatarAsset, AvatarError, load_asset, save_asset
from config.logs import get_logger

log = get_logger(__name__)

_ID_RE = re.compile(r"^[0-9a-f]{24}$")
_REF_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def default_cache_dir() -> Path:
    env = os.environ.get("FLEET_AVATAR_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "avatar-fleet" / "avatars"


class AvatarRegistry:
    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self._loaded: dict[str, AvatarAsset] = {}

    def path(self, avatar_id: str) -> Path:
        if not _ID_RE.match(avatar_id):
            raise AvatarError(f"{avatar_id!r} is not an avatar id (24 hex digits)")
        return self.root / avatar_id

    def add(self, asset: AvatarAsset, ref: str | None = None) -> str:
        """Store ``asset`` (idempotent: same content, same id) and optionally name it."""
        import shutil
        import tempfile

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root)) / "asset"
        try:
            avatar_id = save_asset(asset, tmp)
            final = self.root / avatar_id
            if not final.exists():
                try:
                    os.replace(tmp, final)
                except OSError:  # another process stored the same content first
                    if not final.is_dir():
                        raise
        finally:
            shutil.rmtree(tmp.parent, ignore_errors=True)
        if ref:
            self.set_ref(ref, avatar_id)
        self._loaded[avatar_id] = asset
        return avatar_id

    def set_ref(self, ref: str, avatar_id: str) -> None:
        if not _REF_RE.match(ref):
            raise AvatarError(f"bad reference name {ref!r}")
        (self.root / "refs").mkdir(parents=True, exist_ok=True)
        tmp = self.root / "refs" / f".{ref}.{os.getpid()}"
        tmp.write_text(avatar_id)
        os.replace(tmp, self.root / "refs" / ref)

    def ref(self, ref: str) -> str | None:
        p = self.root / "refs" / ref
        if not p.is_file():
            return None
        avatar_id = p.read_text().strip()
        return avatar_id if (_ID_RE.match(avatar_id) and (self.root / avatar_id).is_dir()) else None

    def get(self, avatar_id: str) -> AvatarAsset:
        if avatar_id not in self._loaded:
            p = self.path(avatar_id)
            if not p.is_dir():
                raise AvatarError(f"avatar {avatar_id} is not registered in {self.root}")
            self._loaded[avatar_id] = load_asset(p)
        return self._loaded[avatar_id]

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _ID_RE.match(p.name))

    def default(self) -> AvatarAsset:
        """The shipped tutor, drawn on first use and cached (deterministic)."""
        from avatar_pipeline.avatar.default import DEFAULT_REF, build_default_avatar

        avatar_id = self.ref(DEFAULT_REF)
        if avatar_id:
            try:
                return self.get(avatar_id)
            except AvatarError as exc:
                log.warning("avatar.default_cache_broken", reason=str(exc))
        seed = os.environ.get("FLEET_AVATAR_SEED")
        if seed and Path(seed) != self.root:
            seeded = AvatarRegistry(seed)
            if (seed_id := seeded.ref(DEFAULT_REF)) is not None:
                try:
                    return seeded.get(seed_id)
                except (AvatarError, OSError) as exc:  # e.g. unreadable: draw it instead
                    log.warning("avatar.default_seed_broken", seed=seed, reason=str(exc))
        log.info("avatar.default_building", cache=str(self.root))
        asset = build_default_avatar()
        self.add(asset, ref=DEFAULT_REF)
        return asset

    def resolve(self, spec: str | os.PathLike | None) -> AvatarAsset:
        """``"default"``/None, a registered id, an asset directory, or a photo/video file
        (registered on the fly, cached by the photo's content hash)."""
        if spec is None or str(spec) == "default":
            return self.default()
        s = str(spec)
        if _ID_RE.match(s) and (self.root / s).is_dir():
            return self.get(s)
        p = Path(s).expanduser()
        if p.is_dir():
            return load_asset(p)
        if p.is_file():
            from avatar_pipeline.avatar.photo import register_photo

            return self.get(register_photo(p, registry=self))
        raise AvatarError(f"avatar {s!r}: not 'default', a registered id, an asset directory "
                          "or a photo file")
