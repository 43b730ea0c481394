"""NGINX in front of the router replicas: the config template and its renderer.

``render_config(["127.0.0.1:8081", "127.0.0.1:8082"], port=8080)`` returns a complete
``nginx.conf`` for ``nginx -p <dir> -c <dir>/nginx.conf``: ``least_conn`` over the routers,
retries to the next router (``non_idempotent`` only for the idempotent join), ``limit_req``
answering 429, ``/metrics`` not exposed, security headers, an optional ``/rtc`` WebSocket proxy to
LiveKit and an optional TLS server block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
TEMPLATE = HERE / "nginx.conf.template"
LOCATIONS = HERE / "locations.conf.template"


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str
    listen: str = "443"


def _fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", v)
    if "@@" in text:
        raise ValueError("unfilled placeholder in the nginx template")
    return text


def render_config(routers: list[str], port: int | None = None, *, listen: str | None = None,
                  rate_per_s: float = 500, burst: int = 1000, livekit: str | None = None,
                  tls: Tls | None = None, worker_processes: str | int = "auto",
                  access_log: bool = False, max_fails: int = 1,
                  fail_timeout_s: int = 5) -> str:
    """A complete nginx.conf. ``routers``: ``host:port`` of each replica; ``listen``: what the
    plain server listens on (default ``127.0.0.1:<port>``); ``livekit``: ``host:port`` of a
    LiveKit server to proxy under ``/rtc`` (WebSocket upgrade)."""
    if not routers:
        raise ValueError("at least one router")
    if listen is None:
        if port is None:
            raise ValueError("port or listen")
        listen = f"127.0.0.1:{port}"
    servers = "\n".join(f"        server {r} max_fails={max_fails} fail_timeout={fail_timeout_s}s;"
                        for r in routers)
    rate = f"{rate_per_s:g}"
    lk_upstream = lk_location = ""
    if livekit:
        lk_upstream = f"\n    upstream livekit {{\n        server {livekit};\n    }}\n"
        lk_location = (
            "\n        # LiveKit signalling (WebSocket) and its HTTP API on the same entry\n"
            "        location /rtc {\n"
            "            proxy_pass http://livekit;\n"
            "            proxy_set_header Host $host;\n"
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "            proxy_set_header Upgrade $http_upgrade;\n"
            "            proxy_set_header Connection $connection_upgrade;\n"
            "            proxy_read_timeout 1h;\n"
            "            proxy_send_timeout 1h;\n"
            "        }\n")

    def locations(hsts: bool) -> str:
        return _fill(LOCATIONS.read_text(), {
            "BURST": str(burst), "LIVEKIT_LOCATION": lk_location,
            "HSTS": ('        add_header Strict-Transport-Security '
                     '"max-age=31536000; includeSubDomains" always;') if hsts else ""})

    tls_server = ""
    if tls:
        tls_server = (
            "\n    server {\n"
            f"        listen {tls.listen} ssl http2;\n"
            f"        ssl_certificate {tls.cert};\n"
            f"        ssl_certificate_key {tls.key};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_prefer_server_ciphers off;\n"
            "        ssl_session_cache shared:SSL:10m;\n"
            "        ssl_session_timeout 1h;\n"
            + locations(hsts=True) + "    }\n")
    conf = _fill(TEMPLATE.read_text(), {
        "WORKER_PROCESSES": str(worker_processes),
        "ACCESS_LOG": "access_log logs/access.log upstream;" if access_log else "access_log off;",
        "RATE": rate, "ROUTER_SERVERS": servers, "LIVEKIT_UPSTREAM": lk_upstream,
        "LISTEN": listen, "TLS_SERVER": tls_server,
    })
    return conf.replace("        include_router_locations;\n", locations(hsts=False))
