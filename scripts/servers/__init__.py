"""Real servers on loopback for tests, benchmarks and the local stack.

Each server is a context manager that starts the real program on free loopback ports, waits
until it answers, and stops it (SIGTERM, then SIGKILL). Nothing here is a mock:

* :class:`LiveKitServer`  - livekit-server v1.13.5 built with ``go install`` into ``.cache/bin``
  (dev keys ``devkey``/``secret``); pass ``redis_url`` for the multi-node variant.
* :class:`RedisServer`    - Debian ``redis-server``, append-only file on (a restart keeps it);
  :class:`RedisClusterServer` - three masters and three replicas.
* :class:`NginxServer`    - Debian ``nginx`` with a generated config, ``nginx -t`` first.
* :class:`PrometheusServer` - Prometheus (``go install``) scraping given targets, with rules.
* :class:`AvatarWorkerProcess` - our worker, ``python -m agent start``, ready when serving.
* :class:`RouterProcess`  - our router, ``python -m router``, ready on ``/readyz``.

Missing programs are installed by ``scripts/setup.sh``; the Go builds also run here on first
use (they are cached, so later runs only check the binary).
"""

from scripts.gotools import CACHE, REPO
from scripts.servers._base import (
    ServerError,
    find_program,
    free_port,
    free_tcp_udp_port,
    port_is_free,
)
from scripts.servers.fleet import (
    DEV_API_KEY,
    DEV_OPS_KEY,
    DEV_WORKER_KEY,
    AvatarWorkerProcess,
    RouterProcess,
    VoiceAgentProcess,
    write_regions_file,
)
from scripts.servers.livekit_server import (
    DEV_KEY,
    DEV_SECRET,
    LIVEKIT_VERSION,
    LiveKitServer,
    livekit_binary,
)
from scripts.servers.nginx_server import NginxServer
from scripts.servers.prometheus_server import PrometheusServer
from scripts.servers.redis_server import RedisClusterServer, RedisServer
from scripts.servers.web import WEB, serve_web

__all__ = [
    "CACHE", "DEV_API_KEY", "DEV_KEY", "DEV_OPS_KEY", "DEV_SECRET", "DEV_WORKER_KEY", "LIVEKIT_VERSION", "REPO",
    "WEB", "AvatarWorkerProcess", "LiveKitServer", "NginxServer", "RedisClusterServer",
    "PrometheusServer", "RedisServer", "RouterProcess", "ServerError", "VoiceAgentProcess", "find_program", "free_port",
    "free_tcp_udp_port", "livekit_binary", "port_is_free", "serve_web", "write_regions_file",
]
