"""The avatar worker: a livekit-agents worker that joins rooms as the avatar participant and
publishes lip-synced video with the audio. Depends on ``avatar_pipeline`` and ``config``."""
