"""``python -m avatar_pipeline render|register|list`` (see :mod:`avatar_pipeline.cli`)."""

from avatar_pipeline.cli import main

raise SystemExit(main())
