"""Media in and out through PyAV: read speech audio (any container ffmpeg reads), read the first
frame of a video/GIF, and write H.264 MP4 (AAC) or VP8 WebM (Opus) with the audio."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from config.logs import get_logger

log = get_logger(__name__)

MAX_AUDIO_S = 30 * 60


class MediaError(ValueError):
    """An input file cannot be used; the message says why."""


def read_audio(path: str | os.PathLike, max_seconds: float = MAX_AUDIO_S) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to mono int16 at its own sample rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path}: has no audio stream")
            stream = c.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            res = av.AudioResampler(format="s16", layout="mono", rate=rate)
            chunks = []
            total = 0
            for frame in c.decode(stream):
                for f in res.resample(frame):
                    a = f.to_ndarray().reshape(-1)
                    chunks.append(a)
                    total += a.size
                if total > max_seconds * rate:
                    raise MediaError(f"{path}: longer than {max_seconds:.0f} s")
            for f in res.resample(None):
                chunks.append(f.to_ndarray().reshape(-1))
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable audio file ({exc})") from None
    pcm = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    if pcm.size == 0:
        raise MediaError(f"{path}: the audio is empty")
    return pcm, int(rate)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: int,
    pcm: np.ndarray | None = None,
    sample_rate: int = 16000,
    pixel_format: str = "i420",
    crf: int = 20,
) -> None:
    """Encode ``frames`` (I420 rows of ``width*height*3/2`` bytes, or (H, W, 3|4) RGB/RGBA) and
    the mono int16 ``pcm`` into an MP4 (H.264 + AAC) or WebM (VP8 + Opus), chosen by suffix."""
    import av

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".m4v", ".mov"):
        vcodec, acodec, arate = "libx264", "aac", 48000
    elif suffix == ".webm":
        vcodec, acodec, arate = "libvpx", "libopus", 48000
    else:
        raise MediaError(f"{path}: output must end in .mp4 or .webm")
    tmp = path.with_name(f".{path.name}.part{suffix}")
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = width, height
        vs.pix_fmt = "yuv420p"
        vs.time_base = Fraction(1, fps)
        if vcodec == "libx264":
            vs.options = {"crf": str(crf), "preset": "veryfast", "tune": "animation"}
        else:
            vs.options = {"crf": "10", "b": "2M", "deadline": "realtime", "cpu-used": "8"}
        ast = None
        if pcm is not None and len(pcm):
            ast = out.add_stream(acodec, rate=arate)
            ast.layout = "mono"
        for i, f in enumerate(frames):
            if pixel_format == "i420":
                vf = av.VideoFrame.from_ndarray(
                    np.asarray(f).reshape(height * 3 // 2, width), format="yuv420p")
            else:
                arr = np.asarray(f)
                vf = av.VideoFrame.from_ndarray(
                    arr, format="rgba" if arr.shape[-1] == 4 else "rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if ast is not None:
            _encode_audio(out, ast, np.ascontiguousarray(pcm, np.int16), sample_rate, arate)
    os.replace(tmp, path)
    log.info("media.written", path=str(path), codec=vcodec)


def _encode_audio(out, ast, pcm: np.ndarray, rate: int, out_rate: int) -> None:
    import av

    res = av.AudioResampler(format=ast.codec_context.format.name, layout="mono", rate=out_rate)
    chunk = 4096
    for start in range(0, len(pcm), chunk):
        block = pcm[start:start + chunk][None, :]
        af = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
        af.sample_rate = rate
        af.pts = start
        af.time_base = Fraction(1, rate)
        for rf in res.resample(af):
            for pkt in ast.encode(rf):
                out.mux(pkt)
    for rf in res.resample(None):
        for pkt in ast.encode(rf):
            out.mux(pkt)
    for pkt in ast.encode(None):
        out.mux(pkt)


def probe(path: str | os.PathLike) -> dict:
    """Decode a file fully and report what a player would see (for tests and checks)."""
    import av

    info: dict = {"video_frames": 0, "audio_samples": 0}
    with av.open(str(path)) as c:
        info["container_duration_s"] = (c.duration or 0) / 1_000_000
        if c.streams.video:
            vs = c.streams.video[0]
            info["video_codec"] = vs.codec_context.name
            info["width"], info["height"] = vs.codec_context.width, vs.codec_context.height
            info["fps"] = float(vs.average_rate or 0)
        if c.streams.audio:
            info["audio_codec"] = c.streams.audio[0].codec_context.name
            info["sample_rate"] = c.streams.audio[0].codec_context.sample_rate
        for frame in c.decode(*c.streams):
            if isinstance(frame, av.VideoFrame):
                info["video_frames"] += 1
            else:
                info["audio_samples"] += frame.samples
    if info.get("fps"):
        info["video_duration_s"] = info["video_frames"] / info["fps"]
    if info.get("sample_rate"):
        info["audio_duration_s"] = info["audio_samples"] / info["sample_rate"]
    return info
