"""Build the fleet's container images here and run them against the local stack.

    python -m scripts.images build   # base image (mmdebstrap) when missing, then worker + router
    python -m scripts.images smoke   # the built images serve a lesson with real Redis + LiveKit
    python -m scripts.images plot    # benchmarks/results/images.png from images.json

``build`` needs Debian's podman, runc and mmdebstrap (apt-get install podman runc mmdebstrap);
no image registry is reachable from these machines, so the base image is made from Debian's
own packages and stands in for ``debian:bookworm-slim`` (the Containerfile's ``BASE``). It writes
each image's size and build time to benchmarks/results/images.json (plotted in images.png).

``smoke`` starts redis-server and livekit-server on loopback, runs the router image and the
worker image with ``--network host`` (they reach 127.0.0.1, nothing else), joins a lesson
through the containerised router, waits for the containerised worker's avatar in the room,
and stops the worker with SIGTERM (its drain path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from scripts.gotools import REPO
from scripts.servers import AvatarWorkerProcess, LiveKitServer, RedisServer, RouterProcess

BASE_IMAGE = "localhost/debian-base:bookworm"
IMAGES = {"worker": "localhost/avatar-worker:0.1.0", "router": "localhost/avatar-router:0.1.0"}
# crun refuses hybrid cgroups and raising rlimits is not permitted on these machines; a real
# cluster's runtime needs neither flag (../shared/ops-tools.md)
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
RESULTS = REPO / "benchmarks" / "results" / "images.json"


def host_trust() -> list[str]:
    """Build-time mounts of this machine's CA bundle and pip config, where its egress to the
    package registries goes through a proxy with its own CA (as here); nothing is copied into
    the images. Empty on a machine that reaches the registries directly."""
    bundle, pip_conf = Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pip.conf")
    if not (bundle.exists() and pip_conf.exists() and str(bundle) in pip_conf.read_text()):
        return []
    return ["--volume", f"{bundle}:{bundle}:ro", "--volume", f"{pip_conf}:{pip_conf}:ro"]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(argv), flush=True)
    return subprocess.run(argv, check=True, **kw)


def image_size(ref: str) -> int:
    out = subprocess.run(PODMAN + ["image", "inspect", ref, "--format", "{{.Size}}"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def build_base() -> None:
    if subprocess.run(PODMAN + ["image", "exists", BASE_IMAGE]).returncode == 0:
        return
    for tool in ("podman", "mmdebstrap", "runc"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install podman runc mmdebstrap")
    tar = REPO / ".cache" / "debian-base.tar"
    tar.parent.mkdir(exist_ok=True)
    _run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", str(tar)])
    _run(PODMAN + ["import", str(tar), BASE_IMAGE])
    tar.unlink()


def build(targets: list[str]) -> dict:
    build_base()
    out = {}
    for target in targets:
        t0 = time.monotonic()
        _run(PODMAN + ["build", "--network", "host", *LIMITS, *host_trust(), "--build-arg",
                       f"BASE={BASE_IMAGE}", "--target", target, "-t", IMAGES[target], "."],
             cwd=REPO)
        out[target] = {"image": IMAGES[target], "build_s": round(time.monotonic() - t0, 1),
                       "size_mb": round(image_size(IMAGES[target]) / 1e6, 1)}
        print(f"{target}: {out[target]}", flush=True)
    base = round(image_size(BASE_IMAGE) / 1e6, 1)
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    record.update({"benchmark": "images", "base": {"image": BASE_IMAGE, "size_mb": base,
                   "note": "mmdebstrap minbase bookworm + ca-certificates, standing in for "
                           "debian:bookworm-slim (no registry reachable)"}, **out})
    from benchmarks.machine import machine

    record["machine"] = machine()
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    return out


class _InContainer:
    """Runs one of our processes' commands from its image instead of this checkout."""

    image: str
    mounts: list[Path] = []

    def command(self) -> list[str]:
        self.container = f"avatar-smoke-{uuid.uuid4().hex[:8]}"
        args = self.args()  # may name files to mount
        env = [x for k, v in self.env.items() if k != "PYTHONPATH" for x in ("-e", f"{k}={v}")]
        vols = [x for p in self.mounts for x in ("-v", f"{p}:{p}:ro")]
        return PODMAN + ["run", "--rm", "--name", self.container, "--network", "host", *LIMITS,
                         "--read-only", "--tmpfs", "/tmp", *env, *vols, self.image, *args]

    def terminate(self, timeout: float = 60.0) -> int | None:
        """One SIGTERM, as the kubelet sends (podman proxies it to the container), then wait."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        subprocess.run(PODMAN + ["rm", "-f", "--ignore", self.container], capture_output=True)


class WorkerContainer(_InContainer, AvatarWorkerProcess):
    image = IMAGES["worker"]

    def args(self) -> list[str]:
        return ["start"]


class RouterContainer(_InContainer, RouterProcess):
    image = IMAGES["router"]

    def args(self) -> list[str]:
        self.mounts = [Path(self.env["AVATAR_REGIONS_FILE"])]
        return ["--host", "127.0.0.1", "--port", str(self.port)]


async def smoke() -> dict:
    from livekit import rtc

    from scripts.failover import join

    out = {}
    with RedisServer() as redis, LiveKitServer() as lk:
        t0 = time.monotonic()
        with RouterContainer(lk, redis.url) as router:
            out["router_ready_s"] = round(time.monotonic() - t0, 1)
            t0 = time.monotonic()
            worker = WorkerContainer(lk, redis.url, "w-image", capacity=2)
            with worker:
                out["worker_ready_s"] = round(time.monotonic() - t0, 1)
                print(f"router ready in {out['router_ready_s']} s, worker serving in "
                      f"{out['worker_ready_s']} s (containers)", flush=True)
                t1 = time.monotonic()
                j = join(router, "image-smoke")
                room = rtc.Room()
                await room.connect(j["livekit_url"], j["token"])
                deadline = time.monotonic() + 20
                while j["avatar_identity"] not in {
                        p.identity for p in room.remote_participants.values()}:
                    if time.monotonic() > deadline:
                        raise SystemExit("no avatar from the worker image within 20 s:\n"
                                         + worker.logfile.read_text()[-3000:])
                    await asyncio.sleep(0.05)
                out["avatar_s"] = round(time.monotonic() - t1, 2)
                out["worker_id"] = j["worker_id"]
                print(f"avatar from the worker image in the room after {out['avatar_s']} s",
                      flush=True)
                await room.disconnect()
                t2 = time.monotonic()
                out["worker_sigterm_rc"] = worker.terminate()  # drains, leaves the pool
                out["worker_sigterm_exit_s"] = round(time.monotonic() - t2, 1)
                text = worker.logfile.read_text(errors="replace")
                out["worker_drained"] = "fleet.draining" in text and "fleet.left" in text
                print(f"worker: SIGTERM -> exit {out['worker_sigterm_rc']} after "
                      f"{out['worker_sigterm_exit_s']} s, drained: {out['worker_drained']}")
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    record["smoke"] = out
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    return out


def plot() -> Path:
    """benchmarks/results/images.png from images.json: size and build time per image, and the
    smoke run's start-to-ready times, with the machine named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.machine import machine_label

    rec = json.loads(RESULTS.read_text())
    names = [n for n in ("base", "worker", "router") if n in rec]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].bar(names, [rec[n]["size_mb"] for n in names], color="tab:blue")
    axes[0].set_ylabel("MB")
    axes[0].set_title("image size")
    built = [n for n in names if "build_s" in rec[n]]
    axes[1].bar(built, [rec[n]["build_s"] for n in built], color="tab:orange")
    axes[1].set_ylabel("s")
    axes[1].set_title("build time")
    smoke = rec.get("smoke", {})
    keys = [k for k in ("router_ready_s", "worker_ready_s", "avatar_s") if k in smoke]
    axes[2].bar([k.removesuffix("_s") for k in keys], [smoke[k] for k in keys], color="tab:green")
    axes[2].set_ylabel("s")
    axes[2].set_title("smoke: containers against the local stack")
    for ax in axes:
        for b in ax.patches:
            ax.annotate(f"{b.get_height():g}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"scripts/images.py on {machine_label(rec.get('machine'))} (base: mmdebstrap "
                 "minbase, standing in for debian:bookworm-slim)", fontsize=9)
    fig.tight_layout()
    out = RESULTS.with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the base, worker and router images")
    b.add_argument("targets", nargs="*", metavar="worker|router",
                   help="what to build (default: both)")
    sub.add_parser("smoke", help="run the built images against the local stack")
    sub.add_parser("plot", help="draw images.png from images.json")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        unknown = set(args.targets) - set(IMAGES)
        if unknown:
            ap.error(f"unknown target(s) {sorted(unknown)}: choose from {sorted(IMAGES)}")
        build(args.targets or list(IMAGES))
    elif args.cmd == "smoke":
        asyncio.run(smoke())
    print(f"wrote {plot()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
