"""Per-lesson avatars on a worker: the asset a dispatch names (``DispatchMetadata.avatar``),
fetched from the router, verified, cached on disk and loaded into the engine once.

* **fetched** from the router (``worker.router_url``, ``ASSET_FILE_PATH`` with the worker key):
  ``avatar.json`` first, then every file it names.
* **verified**: the asset's id is the sha256 of its canonical ``avatar.json``, which holds the
  sha256 of every file; ``load_asset`` checks each file and the id is compared, so a corrupted or
  substituted byte is refused.
* **cached** under ``$FLEET_AVATAR_CACHE/lessons`` (an :class:`AvatarRegistry`-style directory
  per asset id), least recently used first out past ``worker.avatar_cache_mb``.
* **fitted** to the worker's output size (``avatar_pipeline.avatar.fit``), like the default.
* **never fatal**: an avatar that cannot be had (no router configured, unknown, unreachable,
  corrupt, one that does not fit the output size) gives the lesson the default tutor, with a log
  line and ``avatar_lesson_avatars_total{result}``; corrupt or unreachable is an ERROR (someone
  must look at the router or its storage), the others a warning.

Loaded avatars are counted per lesson using them: one no lesson uses is freed from the engine
(tens of MB of prepared sprites) once more than ``keep_unused`` such are loaded, least recently
released first; its files stay in the disk cache.

Blocking work (HTTP, PNG decoding, preparing the sprites) runs in a thread: jobs run on their own
event loops, and a lock per asset makes concurrent lessons with one avatar fetch it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from avatar_pipeline.avatar import AvatarAsset, AvatarError, default_cache_dir, load_asset
from avatar_pipeline.avatar.fit import fit_asset
from avatar_pipeline.engine import AvatarEngine
from config.avatars import ASSET_FILE_PATH, ASSET_META_FILE
from config.logs import get_logger
from config.metrics import counter
from config.settings import WorkerSettings

log = get_logger("agent.avatars")
RESULTS = counter("avatar_lesson_avatars_total",
                  "Lessons that asked for an avatar, by result: loaded (in memory), cached "
                  "(from disk), fetched (from the router), or the fallback's reason",
                  ("result",))


class AvatarUnavailable(Exception):
    def __init__(self, reason: str, detail: str, error: bool = False) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.error = reason, detail, error


class LessonAvatars:
    def __init__(self, engine: AvatarEngine, settings: WorkerSettings,
                 cache_dir: Path | None = None, timeout_s: float = 10.0,
                 keep_unused: int = 4) -> None:
        self.engine = engine
        self.router_url = settings.router_url
        self.key = settings.router_key.get_secret_value() if settings.router_key else None
        self.cache_dir = cache_dir or default_cache_dir() / "lessons"
        self.max_bytes = settings.avatar_cache_mb * 1024 * 1024
        self.timeout_s = timeout_s
        self._loaded: dict[str, str] = {}  # asset id -> the engine's avatar id
        self._users: dict[str, int] = {}  # asset id -> lessons showing it
        self._unused: list[str] = []  # loaded, shown by none: least recently released first
        self.keep_unused = keep_unused
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    async def for_lesson(self, asset_id: str | None, **ids) -> str | None:
        """The engine's avatar id for a lesson's asset; None (the default tutor) when it
        asked for none or its avatar cannot be had."""
        if not asset_id:
            return None
        try:
            result, engine_id = await asyncio.to_thread(self._get, asset_id)
        except AvatarUnavailable as exc:
            RESULTS.labels(exc.reason).inc()
            (log.error if exc.error else log.warning)(
                "avatar.fallback_to_default", asset_id=asset_id, reason=exc.reason,
                detail=exc.detail, **ids)
            return None
        RESULTS.labels(result).inc()
        log.info("avatar.for_lesson", asset_id=asset_id, result=result, **ids)
        return engine_id

    # --- worker threads ----------------------------------------------------------------------
    def _get(self, asset_id: str) -> tuple[str, str]:
        with self._guard:
            lock = self._locks.setdefault(asset_id, threading.Lock())
        with lock:
            if asset_id in self._loaded:
                self._use(asset_id)
                return "loaded", self._loaded[asset_id]
            asset, result = self._from_disk(asset_id), "cached"
            if asset is None:
                asset, result = self._fetch(asset_id), "fetched"
            try:
                asset = fit_asset(asset, self.engine.width, self.engine.height)
            except AvatarError as exc:
                raise AvatarUnavailable("size", str(exc)) from None
            self._loaded[asset_id] = self.engine.add_avatar(asset)
            self._use(asset_id)
            return result, self._loaded[asset_id]

    def _use(self, asset_id: str) -> None:
        with self._guard:
            self._users[asset_id] = self._users.get(asset_id, 0) + 1
            if asset_id in self._unused:
                self._unused.remove(asset_id)

    def release(self, asset_id: str | None) -> None:
        """A lesson that showed ``asset_id`` (as :meth:`for_lesson` gave it) has ended."""
        if not asset_id or asset_id not in self._loaded:
            return
        with self._guard:
            self._users[asset_id] = max(0, self._users.get(asset_id, 0) - 1)
            if self._users[asset_id]:
                return
            self._unused.append(asset_id)
            spare = self._unused[:-self.keep_unused] if len(self._unused) > self.keep_unused \
                else []
        for old in spare:
            with self._guard:
                lock = self._locks.setdefault(old, threading.Lock())
            with lock, self._guard:
                if self._users.get(old) or old not in self._unused:
                    continue  # a lesson took it up again meanwhile
                if self.engine.remove_avatar(self._loaded[old]):
                    self._unused.remove(old)
                    del self._loaded[old]
                    log.info("avatar.unloaded", asset_id=old)

    def _from_disk(self, asset_id: str) -> AvatarAsset | None:
        path = self.cache_dir / asset_id
        if not path.is_dir():
            return None
        try:
            asset = load_asset(path)
        except AvatarError as exc:  # damaged on disk: fetch it again
            log.warning("avatar.cache_damaged", asset_id=asset_id, reason=str(exc))
            shutil.rmtree(path, ignore_errors=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return asset

    def _fetch(self, asset_id: str) -> AvatarAsset:
        if not self.router_url:
            raise AvatarUnavailable("not_configured",
                                    "worker.router_url is not set: this worker cannot fetch "
                                    "lesson avatars")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.cache_dir))
        try:
            meta_raw = self._download(asset_id, ASSET_META_FILE)
            try:
                files = json.loads(meta_raw)["files"]
            except (ValueError, KeyError, TypeError):
                raise AvatarUnavailable("invalid", "avatar.json is not an asset's",
                                        error=True) from None
            (tmp / ASSET_META_FILE).write_bytes(meta_raw)
            for rel in files:
                if ".." in Path(rel).parts or Path(rel).is_absolute():
                    raise AvatarUnavailable("invalid", f"file path {rel!r}", error=True)
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(self._download(asset_id, rel))
            try:
                asset = load_asset(tmp)  # every file's sha256
            except AvatarError as exc:
                raise AvatarUnavailable("invalid", str(exc), error=True) from None
            if asset.id != asset_id:
                raise AvatarUnavailable("invalid", f"avatar.json hashes to {asset.id}, not the "
                                                   "id asked for", error=True)
            final = self.cache_dir / asset_id
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
            self._evict(keep=asset_id)
            return asset
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _download(self, asset_id: str, path: str) -> bytes:
        url = self.router_url + ASSET_FILE_PATH.format(asset_id=asset_id, path=path)
        req = urllib.request.Request(url, headers={"X-API-Key": self.key or ""})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise AvatarUnavailable("not_found", f"the router has no {path} of this "
                                                     "avatar") from None
            raise AvatarUnavailable("router_error", f"{url}: HTTP {exc.code}",
                                    error=True) from None
        except (OSError, TimeoutError) as exc:
            raise AvatarUnavailable("unreachable", f"{url}: {exc!r}", error=True) from None

    def _evict(self, keep: str) -> None:
        """Remove the least recently used assets until the cache fits its budget."""
        entries = []
        for d in self.cache_dir.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                entries.append((d.stat().st_mtime, size, d))
        total = sum(size for _, size, _ in entries)
        for _mtime, size, d in sorted(entries):
            if total <= self.max_bytes:
                break
            if d.name == keep:
                continue
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            log.info("avatar.cache_evicted", asset_id=d.name, bytes=size,
                     cache_bytes=total, limit_bytes=self.max_bytes)
