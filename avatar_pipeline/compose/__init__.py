"""Batched composition: viseme weights + time + blink -> frames for N sessions in one call.

Two backends produce the same frames within :data:`TOLERANCE` levels: :class:`NumpyCompositor`
(CPU) and :class:`TorchCompositor` (CUDA, or CPU torch). See :mod:`.base` for the worker-facing
usage.
"""

from avatar_pipeline.compose.base import (
    TOLERANCE,
    TOP_K,
    BlinkSchedule,
    FrameState,
    SessionClock,
    i420_to_rgb,
    prepare_avatar,
)
from avatar_pipeline.compose.numpy_backend import FrameBatch, NumpyCompositor


def make_compositor(backend: str = "numpy", fmt: str = "rgba", max_batch: int = 64,
                    device: str | None = None):
    """``numpy``, ``torch`` (CUDA when available) or ``torch-cpu``."""
    if backend == "numpy":
        return NumpyCompositor(fmt=fmt, max_batch=max_batch)
    if backend in ("torch", "torch-cpu", "torch-cuda"):
        from avatar_pipeline.compose.torch_backend import TorchCompositor

        dev = device or {"torch-cpu": "cpu", "torch-cuda": "cuda"}.get(backend)
        return TorchCompositor(fmt=fmt, max_batch=max_batch, device=dev)
    raise ValueError(f"unknown compositor backend {backend!r} (numpy, torch, torch-cpu)")


__all__ = [
    "TOLERANCE", "TOP_K", "BlinkSchedule", "FrameBatch", "FrameState", "NumpyCompositor",
    "SessionClock", "i420_to_rgb", "make_compositor", "prepare_avatar",
]
