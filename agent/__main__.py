"""``python -m agent start|dev``: run the avatar worker the livekit-agents way.

Settings come from config (AVATAR_* variables, .env, config/defaults.yaml); a bad value stops
the worker at start with the setting's name.
"""

from __future__ import annotations

import sys

from livekit.agents import cli

from config import SettingsError, load_settings
from config.logs import setup_logging


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    from agent.worker import build_server, check_models

    try:
        check_models(settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None

    cli.run_app(build_server(settings))


if __name__ == "__main__":
    main()
