"""Photo registrations, run off the event loop: each one is a process of its own
(``python -m avatar_pipeline.avatar.job``, seconds of numpy/OpenCV work), at most
``router.avatar_jobs`` at once, killed after ``router.avatar_job_timeout_s``. The router never
imports the pipeline: the job's one JSON line on stdout is the contract.

A registration's state lives in its record (router/avatar_storage.py), so any replica answers
``GET /v1/avatars/{id}``: ``pending`` -> ``ready`` (with the asset id) or ``refused`` (with the
reason the job gave: no face, too large, not an image) or ``failed`` (the job crashed or timed
out: our fault, logged at ERROR, worth a retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from config.logs import get_logger
from router.avatar_storage import AvatarStorage
from router.metrics import RouterMetrics

log = get_logger("router.avatars")
JOB_MODULE = "avatar_pipeline.avatar.job"


def _remove(out: Path, upload: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    upload.unlink(missing_ok=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AvatarJobs:
    def __init__(self, storage: AvatarStorage, metrics: RouterMetrics, *, jobs: int = 2,
                 timeout_s: float = 120.0, python: str = sys.executable) -> None:
        self.storage = storage
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.python = python
        self._slots = asyncio.Semaphore(jobs)
        self._tasks: dict[tuple[str, str], asyncio.Task] = {}

    def running(self, owner: str, avatar_id: str) -> bool:
        t = self._tasks.get((owner, avatar_id))
        return t is not None and not t.done()

    def effective(self, owner: str, record: dict) -> dict:
        """The record as it stands: one left ``pending`` past its job's timeout with no job
        running here (its router replica stopped) is ``failed``, so a backend uploads again."""
        if record["status"] != "pending" or self.running(owner, record["id"]):
            return record
        age = (datetime.now(UTC) - datetime.fromisoformat(record["updated_at"])).total_seconds()
        if age <= self.timeout_s + 30:
            return record
        return {**record, "status": "failed",
                "reason": "registration was interrupted; upload it again"}

    def submit(self, owner: str, record: dict, upload: Path) -> None:
        """Start registering ``upload`` (a file this call now owns) for the pending ``record``."""
        key = (owner, record["id"])
        task = asyncio.create_task(self._run(owner, dict(record), upload),
                                   name=f"avatar-{record['id']}")
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))

    async def _run(self, owner: str, record: dict, upload: Path) -> None:
        ids = {"avatar_id": record["id"], "owner": owner}
        out = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="avatar-job-"))
        try:
            async with self._slots:
                t0 = time.monotonic()
                result = await self._job(upload, out, record.get("name"), ids,
                                         record.get("renderer") or "sprite")
                self.metrics.avatar_job_seconds.observe(time.monotonic() - t0)
            if result.get("ok"):
                await asyncio.to_thread(self.storage.put_asset, result["asset_id"],
                                        out / "asset")
                record.update(status="ready", asset_id=result["asset_id"],
                              width=result["width"], height=result["height"], reason=None)
                log.info("avatar.ready", asset_id=result["asset_id"],
                         seconds=round(time.monotonic() - t0, 2), **ids)
            else:
                record.update(status=result["status"], reason=result["reason"])
            self.metrics.avatar_jobs.labels(record["status"]).inc()
        except asyncio.CancelledError:
            record.update(status="failed", reason="the router stopped during registration; "
                                                  "upload it again")
            raise
        except Exception as exc:  # storage trouble: the registration is lost, not hung
            log.exception("avatar.store_failed", **ids)
            record.update(status="failed", reason=f"storing the avatar failed: {exc!r}")
            self.metrics.avatar_jobs.labels("failed").inc()
        finally:
            record["updated_at"] = now_iso()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.storage.put_record, owner, record)
            await asyncio.to_thread(_remove, out, upload)

    async def _job(self, upload: Path, out: Path, name: str | None, ids: dict,
                   renderer: str = "sprite") -> dict:
        cmd = [self.python, "-m", JOB_MODULE, str(upload), str(out), "--renderer", renderer]
        if name:
            cmd += ["--name", name]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("avatar.job_timeout", timeout_s=self.timeout_s, **ids)
            return {"ok": False, "status": "failed",
                    "reason": f"registration took longer than {self.timeout_s:.0f} s"}
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        lines = stdout.decode(errors="replace").strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            log.error("avatar.job_crashed", rc=proc.returncode,
                      stderr=stderr.decode(errors="replace")[-2000:], **ids)
            return {"ok": False, "status": "failed",
                    "reason": "registration failed on our side; try again"}
        if not result.get("ok"):
            log.info("avatar.refused", reason=result.get("reason"), **ids)
            return {"ok": False, "status": "refused", "reason": result.get("reason")}
        return result

    async def aclose(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
