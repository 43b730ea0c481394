"""Audio -> visemes -> frames. Knows nothing of LiveKit rooms: audio frames in, video frames out,
usable offline, in tests and in benchmarks alone. Depends on ``config`` only."""
