"""Where the router keeps avatars: each backend's records and the content-addressed assets.

:class:`AvatarStorage` is the whole interface (a few blocking calls, which the routes run off the
event loop); :class:`DirectoryStorage` implements it on a directory, on Kubernetes a volume that
every router replica mounts (ReadWriteMany). Keys::

    records/<owner>/<avatar_id>.json     a backend's avatar: status, reason, asset id, name
    assets/<asset_id>/avatar.json ...    the asset's files (config/avatars.py), + preview.png

An S3 bucket plugs in as the same keys as object names: ``put_record``/``get_record`` as
PutObject/GetObject of small JSON objects, ``list_records`` as ListObjectsV2 on
``records/<owner>/``, ``put_asset`` as one PutObject per file (asset files are immutable, so no
locking is needed: the same id always has the same bytes), ``delete_*`` as DeleteObject(s).

``owner`` is derived from the backend's API key (router/routes/avatars.py), so one backend can
never read, list or delete another's avatars; two backends that upload the same photo get two
records and share one asset, which goes when the last record naming it does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from config.avatars import ASSET_PATH_PATTERN, AVATAR_ID_PATTERN

_ID = re.compile(AVATAR_ID_PATTERN)
_OWNER = re.compile(r"^[0-9a-f]{16,64}$")
_PATH = re.compile(ASSET_PATH_PATTERN)


class AvatarStorage(Protocol):
    def put_record(self, owner: str, record: dict) -> None: ...
    def get_record(self, owner: str, avatar_id: str) -> dict | None: ...
    def list_records(self, owner: str | None = None) -> list[dict]: ...
    def delete_record(self, owner: str, avatar_id: str) -> bool: ...
    def put_asset(self, asset_id: str, directory: Path) -> None: ...
    def read_asset_file(self, asset_id: str, path: str) -> bytes | None: ...
    def delete_asset(self, asset_id: str) -> None: ...


def _check(pattern: re.Pattern, value: str, what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"bad {what} {value!r}")
    return value


class DirectoryStorage:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "records").mkdir(parents=True, exist_ok=True)
        (self.root / "assets").mkdir(parents=True, exist_ok=True)

    def _record_path(self, owner: str, avatar_id: str) -> Path:
        return (self.root / "records" / _check(_OWNER, owner, "owner")
                / f"{_check(_ID, avatar_id, 'avatar id')}.json")

    def _asset_dir(self, asset_id: str) -> Path:
        return self.root / "assets" / _check(_ID, asset_id, "asset id")

    # --- records ---------------------------------------------------------------------------
    def put_record(self, owner: str, record: dict) -> None:
        path = self._record_path(owner, record["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rec-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)  # readers see the old record or the new one, never half

    def get_record(self, owner: str, avatar_id: str) -> dict | None:
        try:
            return json.loads(self._record_path(owner, avatar_id).read_text())
        except FileNotFoundError:
            return None

    def list_records(self, owner: str | None = None) -> list[dict]:
        base = self.root / "records"
        dirs = [base / _check(_OWNER, owner, "owner")] if owner else sorted(base.iterdir())
        out = []
        for d in dirs:
            for p in sorted(d.glob("*.json")) if d.is_dir() else ():
                with contextlib.suppress(FileNotFoundError, ValueError):
                    out.append(json.loads(p.read_text()))
        return out

    def delete_record(self, owner: str, avatar_id: str) -> bool:
        try:
            self._record_path(owner, avatar_id).unlink()
            return True
        except FileNotFoundError:
            return False

    # --- assets ----------------------------------------------------------------------------
    def put_asset(self, asset_id: str, directory: Path) -> None:
        final = self._asset_dir(asset_id)
        if final.is_dir():
            return  # content-addressed: already there with the same bytes
        tmp = Path(tempfile.mkdtemp(prefix=".asset-", dir=self.root / "assets"))
        try:
            shutil.copytree(directory, tmp, dirs_exist_ok=True)
            try:
                os.replace(tmp, final)
            except OSError:  # another replica stored the same asset first
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def read_asset_file(self, asset_id: str, path: str) -> bytes | None:
        p = self._asset_dir(asset_id) / _check(_PATH, path, "asset path")
        try:
            return p.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete_asset(self, asset_id: str) -> None:
        shutil.rmtree(self._asset_dir(asset_id), ignore_errors=True)
