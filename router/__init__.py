"""The control plane: room-token API, Redis assignment, regions, canary, reconciler.
Depends on ``config`` only."""
