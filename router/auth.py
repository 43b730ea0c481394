"""API keys: stored as sha256 hex digests, compared in constant time. Three roles: the lesson
backend (``api``), ops (``ops``) and the avatar workers (``worker``: fetching avatar assets);
no key works for another role's endpoints."""

from __future__ import annotations

import hashlib
import hmac

# Dev keys for tests and the local stack ONLY (the shipped defaults accept no key at all).
DEV_API_KEY = "dev-backend-key"
DEV_OPS_KEY = "dev-ops-key"
DEV_WORKER_KEY = "dev-worker-key"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def dev_env() -> dict[str, str]:
    """Environment that makes a router accept the dev keys."""
    return {"AVATAR_ROUTER__API_KEY_SHA256": f'["{hash_key(DEV_API_KEY)}"]',
            "AVATAR_ROUTER__OPS_KEY_SHA256": f'["{hash_key(DEV_OPS_KEY)}"]',
            "AVATAR_ROUTER__WORKER_KEY_SHA256": f'["{hash_key(DEV_WORKER_KEY)}"]'}


def key_matches(presented: str | None, hashes: list[str]) -> bool:
    """Constant time per stored hash; every hash is compared (no early exit)."""
    if not presented or not hashes:
        return False
    digest = hash_key(presented).encode()
    ok = False
    for h in hashes:
        ok |= hmac.compare_digest(digest, h.encode())
    return ok
