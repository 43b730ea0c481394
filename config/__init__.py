"""Settings and the contracts shared by the worker (agent) and the router.

Imports flow one way: ``config`` <- ``avatar_pipeline`` <- ``agent``; ``router`` <- ``config``.
Nothing here imports the other packages.
"""

from config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
