"""``python -m router`` runs the API with uvicorn; ``python -m router hash-key KEY`` prints the
sha256 to put in ``AVATAR_ROUTER__API_KEY_SHA256`` / ``AVATAR_ROUTER__OPS_KEY_SHA256``."""

from __future__ import annotations

import argparse
import sys

from config.logs import setup_logging
from config.settings import SettingsError, load_settings
from router.auth import hash_key


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m router")
    sub = p.add_subparsers(dest="cmd")
    h = sub.add_parser("hash-key", help="print the sha256 of an API key")
    h.add_argument("key")
    p.add_argument("--host", help="default: AVATAR_ROUTER__HOST")
    p.add_argument("--port", type=int, help="default: AVATAR_ROUTER__PORT")
    p.add_argument("--no-reconciler", action="store_true", help="serve the API only")
    args = p.parse_args(argv)
    if args.cmd == "hash-key":
        print(hash_key(args.key))
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not settings.router.api_key_sha256:
        print("AVATAR_ROUTER__API_KEY_SHA256 is empty: no backend could call the router "
              "(python -m router hash-key KEY prints a hash)", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, "json")
    import logging

    logging.captureWarnings(True)  # library warnings come out as JSON log lines too
    import uvicorn

    from router.app import create_app

    app = create_app(settings, reconciler=not args.no_reconciler)
    import gc

    gc.collect()
    gc.freeze()  # start-up objects (FastAPI, pydantic, livekit) leave the GC's scans
    uvicorn.run(app, host=args.host or settings.router.host, port=args.port or settings.router.port,
                loop="uvloop", http="httptools", access_log=False, log_config=None,
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
