"""The local stack: real servers on loopback for development, started by ``make run``.

Starts redis-server and livekit-server (dev keys) on their usual ports when free (Redis 6379,
LiveKit 7880 signal / 7882 RTC UDP on 127.0.0.1 only), on free ports otherwise; one avatar worker
(``python -m agent start``, worker id ``local-1``); two router replicas (``python -m router``)
behind NGINX on 8080 (when free); the learner page (``web/``) on 8000 (when free); Prometheus on
9090 (when free) scraping the worker and the routers with the fleet's alert rules loaded. Joins a demo
lesson through the router, dispatches the demo voice agent into it (``examples/tutor_agent.py``:
our STT, a scripted stand-in for an LLM, espeak-ng, FleetAvatar) and prints the page's address,
so a browser shows the tutor, who greets the learner and answers what they say. Prints how to connect and writes the same as environment variables to
``.cache/stack.env``; stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from livekit import api

from config.fleet import room_name
from config.logs import get_logger, setup_logging
from nginx import render_config
from scripts.servers import (
    CACHE,
    DEV_API_KEY,
    DEV_OPS_KEY,
    REPO,
    AvatarWorkerProcess,
    LiveKitServer,
    NginxServer,
    PrometheusServer,
    RedisServer,
    RouterProcess,
    VoiceAgentProcess,
    free_port,
    port_is_free,
    serve_web,
)

log = get_logger("scripts.stack")
RULES = REPO / "k8s" / "avatar-fleet" / "files" / "prometheus" / "avatar-fleet.rules.yaml"


def _port(preferred: int) -> int | None:
    return preferred if port_is_free(preferred) else None


def connection_env(redis: RedisServer, livekit: LiveKitServer) -> dict[str, str]:
    """The settings (see config/settings.py) that point a router or worker at this stack."""
    return {
        "AVATAR_REDIS_URL": redis.url,
        "AVATAR_LIVEKIT__URL": livekit.url,
        "AVATAR_LIVEKIT__API_KEY": livekit.api_key,
        "AVATAR_LIVEKIT__API_SECRET": livekit.api_secret,
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
    }


def demo_join(router_url: str, lesson: str = "demo") -> dict | None:
    """Join ``lesson`` through the router as a demo learner (the lesson backend's call)."""
    req = urllib.request.Request(
        f"{router_url}/v1/lessons/{lesson}/join", method="POST",
        data=json.dumps({"user_id": "learner-1", "display_name": "Ada"}).encode(),
        headers={"X-API-Key": DEV_API_KEY, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except OSError as exc:
        log.warning("stack.demo_join_failed", error=str(exc))
        return None


async def dispatch_voice_agent(livekit: LiveKitServer, lesson: str, agent_name: str) -> None:
    """What a lesson backend does to bring its voice agent into the lesson's room."""
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lkapi:
        await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name=agent_name, room=room_name(lesson)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=CACHE / "stack.env",
                        help="where to write the connection variables")
    parser.add_argument("--no-voice-agent", action="store_true",
                        help="no demo voice agent: the tutor speaks only what /say sends")
    parser.add_argument("--exit-after-start", action="store_true",
                        help="start, print, stop (a smoke test of the stack)")
    args = parser.parse_args(argv)
    setup_logging("info", "auto")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer(port=_port(6379)))
        livekit = stack.enter_context(LiveKitServer(
            port=_port(7880), rtc_udp_port=_port(7882)))
        web = serve_web(_port(8000) or free_port())
        stack.callback(web.shutdown)
        web_url = f"http://127.0.0.1:{web.server_address[1]}"
        # both routers share one avatar store (on Kubernetes, a volume); the registration page
        # (web/avatars.html) calls them from the web server's origin
        router_env = {"AVATAR_ROUTER__AVATAR_DIR": str(CACHE / "stack-avatars"),
                      "AVATAR_ROUTER__CORS_ORIGINS": json.dumps([web_url])}
        routers = [stack.enter_context(RouterProcess(livekit, redis.url, extra_env=router_env))
                   for _ in range(2)]
        worker_metrics = free_port()
        worker = stack.enter_context(AvatarWorkerProcess(
            livekit, redis.url, "local-1",
            extra_env={"AVATAR_METRICS_PORT": str(worker_metrics)},
            router_url=f"http://{routers[0].address}"))  # lesson avatars, like a pod's Service
        prom = stack.enter_context(PrometheusServer(
            {"avatar-worker": [f"127.0.0.1:{worker_metrics}"],
             "avatar-router": [r.address for r in routers]},
            rule_files=[RULES], port=_port(9090)))
        api_port = _port(8080) or free_port()
        nginx = stack.enter_context(NginxServer(render_config(
            [r.address for r in routers], port=api_port, worker_processes=1,
            livekit=livekit.url.removeprefix("ws://")), port=api_port))
        env = connection_env(redis, livekit)
        env["AVATAR_ROUTER_URL"] = nginx.url
        # what a voice agent's FleetAvatar reads (examples/tutor_agent.py)
        env["FLEET_AVATAR_ROUTER_URL"], env["FLEET_AVATAR_API_KEY"] = nginx.url, DEV_API_KEY
        env["AVATAR_WEB_URL"] = web_url
        env["AVATAR_PROMETHEUS_URL"] = prom.url
        joined = demo_join(nginx.url)
        voice = None
        if joined and not args.no_voice_agent:
            voice = stack.enter_context(VoiceAgentProcess(livekit, nginx.url, DEV_API_KEY))
            asyncio.run(dispatch_voice_agent(livekit, "demo", voice.agent_name))
        page = (f"{web_url}/learner.html?" + urllib.parse.urlencode(
            {"url": joined["livekit_url"], "token": joined["token"]})) if joined else None
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        args.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        print(
            "\nLocal stack is up (Ctrl-C stops it):\n"
            f"  LiveKit  {livekit.url}   keys {livekit.api_key} / {livekit.api_secret}"
            f"   RTC udp {livekit.rtc_udp_port} (127.0.0.1 only)\n"
            f"  Redis    {redis.url}\n"
            f"  Worker   local-1 (agent name avatar-local-1, capacity {worker.env['AVATAR_WORKER__CAPACITY']})\n"
            f"  Router   {nginx.url} (NGINX -> {', '.join(r.address for r in routers)})"
            f"   backend key {DEV_API_KEY}, ops key {DEV_OPS_KEY}\n"
            f"  Prometheus {prom.url} (scrapes the worker and both routers; alert rules loaded)\n"
            f"  Logs     {livekit.logfile}  {redis.logfile}  {worker.logfile}"
            + (f"  {voice.logfile}" if voice else "") + "\n"
            f"Point other processes at it with:  set -a; . {args.env_file}; set +a\n"
            f"Try:  curl -s -X POST {nginx.url}/v1/lessons/demo/join -H 'X-API-Key: {DEV_API_KEY}'"
            f" -H 'content-type: application/json' -d '{{\"user_id\": \"u1\", "
            f"\"display_name\": \"Ada\"}}'\n"
            f"Register a tutor's photo (then join with its avatar_id):  {web_url}/avatars.html?"
            f"router={nginx.url}  (backend key {DEV_API_KEY})\n"
            + ("\nOpen the demo lesson in a browser (the tutor is in it"
               + (", with a voice agent: talk to it" if voice else "") + f"):\n  {page}\n"
               f"Make the tutor speak:  curl -s -X POST {nginx.url}/v1/lessons/demo/say"
               f" -H 'X-API-Key: {DEV_API_KEY}' -H 'content-type: application/json'"
               f" -d '{{\"text\": \"Hello! Shall we start?\", \"language\": \"en\"}}'\n"
               if page else ""),
            flush=True,
        )
        log.info("stack.ready", livekit=livekit.url, redis=redis.url)
        while not stop.is_set() and not args.exit_after_start:
            parts = {"redis": redis, "livekit": livekit, "worker": worker, "nginx": nginx,
                     "prometheus": prom, **({"voice-agent": voice} if voice else {}),
                     **{f"router{i}": r for i, r in enumerate(routers)}}
            dead = [name for name, p in parts.items() if not p.running]
            if dead:
                log.error("stack.server_died", dead=dead)
                return 1
            stop.wait(1.0)
        log.info("stack.stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
