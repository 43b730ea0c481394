"""``avatar`` / ``python -m avatar_pipeline``: the offline main job, nothing else running.

    avatar render --text "Hello!" --lang en [--avatar default|ID|DIR|PHOTO] -o out.mp4
    avatar render --audio speech.wav -o out.webm --timeline track.png
    avatar render --text "..." --neural wav2lip.onnx -o out.mp4   # your Wav2Lip-class weights
    avatar register photo.jpg            # prints the new avatar id
    avatar list
    avatar sheet --avatar ID -o mouths.png

Bad input gives one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from avatar_pipeline.visemes.smoothing import SmoothingParams, smooth_known_track
from config.avatars import RENDERERS
from config.logs import get_logger, setup_logging

log = get_logger(__name__)

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatar", description="Talking-avatar offline tools.")
    p.add_argument("--cache-dir", help="avatar registry (default $FLEET_AVATAR_CACHE or "
                   "~/.cache/avatar-fleet/avatars)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("render", help="text or audio in, a lip-synced video out")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="say this text with the built-in TTS")
    src.add_argument("--audio", help="speech audio file (wav, mp3, ...)")
    r.add_argument("--lang", default="en", help="language for --text (en, es, zh, fa, ...)")
    r.add_argument("--voice", help="TTS voice (espeak-ng variant)")
    r.add_argument("--avatar", default="default",
                   help="'default', a registered avatar id, an asset directory or a photo")
    r.add_argument("-o", "--output", required=True, help="out.mp4 (H.264/AAC) or out.webm")
    r.add_argument("--fps", type=int, choices=(25, 30), help="default: settings video.fps")
    r.add_argument("--timeline", help="also draw the viseme track under the waveform (PNG)")
    r.add_argument("--seed", type=int, default=0, help="idle motion / blink seed")
    r.add_argument("--backend", default="numpy", choices=("numpy", "torch", "torch-cpu"))
    r.add_argument("--neural", metavar="MODEL.onnx",
                   help="repaint the mouth with a Wav2Lip-class ONNX model (your weights)")
    r.add_argument("--no-progress", action="store_true")

    g = sub.add_parser("register", help="make a photo avatar from a face photo (or video/GIF)")
    g.add_argument("photo")
    g.add_argument("--name", help="a name for it (default: the file name)")
    g.add_argument("--renderer", choices=RENDERERS, default="sprite",
                   help="how lessons draw its mouth: sprite, or neural (a worker's Wav2Lip-class "
                        "model, worker.neural_model)")

    sub.add_parser("list", help="registered avatars")

    s = sub.add_parser("sheet", help="contact sheet (PNG) of an avatar's 15 mouth shapes")
    s.add_argument("--avatar", default="default")
    s.add_argument("-o", "--output", required=True)
    return p


def _speech_from_text(text: str, lang: str, voice: str | None, fps: int):
    if not text.strip():
        raise CliError("--text is empty")
    try:
        from avatar_pipeline.tts import default_engine
    except ImportError as exc:
        raise CliError(f"the TTS (avatar_pipeline.tts) is not available: {exc}") from None
    try:
        speech = default_engine().synthesize(text, language=lang, voice=voice)
    except (ValueError, KeyError, LookupError) as exc:
        raise CliError(f"TTS refused the input: {exc}") from None
    pcm = np.asarray(speech.pcm, np.int16)
    if pcm.size == 0:
        raise CliError("TTS produced no audio for that text")
    return pcm, int(speech.sample_rate), np.asarray(speech.viseme_track(fps), np.float32)


def _speech_from_audio(path: str, fps: int):
    from avatar_pipeline.media import read_audio

    pcm, rate = read_audio(path)  # a bad file is reported before a missing model
    try:
        from avatar_pipeline.visemes import audio_to_visemes
    except (ImportError, AttributeError) as exc:
        raise CliError(
            "--audio needs avatar_pipeline.visemes.audio_to_visemes (the audio->viseme model), "
            f"which is not in this build yet ({exc}); use --text instead") from None
    try:
        # smoothed causally as the model emits frames, as in the worker
        track = np.asarray(audio_to_visemes(pcm, rate, fps, smoothing=SmoothingParams(fps=fps)),
                           np.float32)
    except FileNotFoundError as exc:
        raise CliError(f"--audio needs the audio->viseme model weights, which are not in this "
                       f"build yet ({exc}); use --text instead") from None
    return pcm, rate, track


def mouth_track(text: str | None, lang: str, voice: str | None, audio: str | None, fps: int
                ) -> tuple[np.ndarray, int, np.ndarray]:
    """The speech and the mouth track ``avatar render`` draws: one row per video frame
    covering all the audio, smoothed exactly as the worker smooths it (the one
    ``SmoothingParams()``): both ways for text (known in full, as the worker's ``say``),
    causally as the model emits frames for audio (as for a voice agent's stream)."""
    if text is not None:
        pcm, rate, track = _speech_from_text(text, lang, voice, fps)
    else:
        pcm, rate, track = _speech_from_audio(audio, fps)
    n_frames = int(np.ceil(round(len(pcm) / rate * fps, 6)))
    if len(track) < n_frames:  # pad with silence so video covers all the audio
        pad = np.zeros((n_frames - len(track), track.shape[1]), np.float32)
        pad[:, 0] = 1.0
        track = np.concatenate([track, pad])
    track = track[:n_frames]
    if text is not None:
        track = smooth_known_track(track, SmoothingParams(fps=fps))
    return pcm, rate, track


def cmd_render(args, registry) -> int:
    from avatar_pipeline.compose.offline import draw_timeline, render_frames
    from avatar_pipeline.media import write_video
    from config.settings import load_settings

    fps = args.fps or load_settings().video.fps
    out = Path(args.output)
    if out.suffix.lower() not in (".mp4", ".webm", ".m4v", ".mov"):
        raise CliError(f"{out}: output must end in .mp4 or .webm")
    if not out.parent.is_dir():
        raise CliError(f"{out.parent}: output directory does not exist")
    if args.timeline and not args.timeline.lower().endswith(".png"):
        raise CliError(f"{args.timeline}: --timeline must be a .png path")
    t0 = time.perf_counter()
    pcm, rate, track = mouth_track(args.text, args.lang, args.voice, args.audio, fps)
    n_frames = len(track)
    asset = registry.resolve(args.avatar)
    post, fmt = None, "i420"
    if args.neural:
        from avatar_pipeline.neural import ModelSignatureError, NeuralRenderer, mel_windows

        try:
            neural = NeuralRenderer(args.neural)
        except ModelSignatureError as exc:
            raise CliError(f"--neural: {exc}") from None
        neural.add_avatar(asset)
        mels = mel_windows(pcm, rate, fps)
        mels = np.concatenate([mels, np.repeat(mels[-1:], max(0, n_frames - len(mels)), 0)])

        def post(frames, start):
            neural.render(frames, mels[start:start + len(frames)], [asset.id] * len(frames))

        fmt = "rgba"
    frames = render_frames(asset, track, fps, seed=args.seed, backend=args.backend, fmt=fmt,
                           post=post)
    from tqdm import tqdm

    frames = tqdm(frames, total=n_frames, unit="frame", desc="render",
                  disable=args.no_progress or None)
    write_video(out, frames, asset.width, asset.height, fps, pcm, rate, pixel_format=fmt)
    if args.timeline:
        draw_timeline(args.timeline, pcm, rate, track, fps,
                      title=(args.text or Path(args.audio).name)[:100])
    dt = time.perf_counter() - t0
    log.info("render.done", output=str(out), frames=n_frames, audio_s=round(len(pcm) / rate, 3),
             seconds=round(dt, 2), avatar=asset.id)
    print(f"{out}  {n_frames} frames @ {fps} fps, {len(pcm) / rate:.2f} s audio, "
          f"avatar {asset.id}, {dt:.1f} s")
    return 0


def cmd_register(args, registry) -> int:
    from avatar_pipeline.avatar.photo import register_photo

    avatar_id = register_photo(args.photo, registry=registry, name=args.name,
                               renderer=args.renderer)
    print(avatar_id)
    return 0


def cmd_list(args, registry) -> int:
    for avatar_id in registry.ids():
        a = registry.get(avatar_id)
        print(f"{avatar_id}  {a.name:20s} {a.width}x{a.height}  {a.source.get('kind', '?')}")
    return 0


def cmd_sheet(args, registry) -> int:
    from PIL import Image

    from avatar_pipeline.compose.offline import mouth_sheet

    if not args.output.lower().endswith(".png"):
        raise CliError(f"{args.output}: the sheet is a .png")
    asset = registry.resolve(args.avatar)
    Image.fromarray(mouth_sheet(asset)).save(args.output, optimize=True)
    print(args.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("debug" if args.verbose else "warning")
    from avatar_pipeline.avatar import AvatarError, AvatarRegistry
    from avatar_pipeline.media import MediaError

    registry = AvatarRegistry(args.cache_dir)
    handlers = {"render": cmd_render, "register": cmd_register, "list": cmd_list,
                "sheet": cmd_sheet}
    try:
        return handlers[args.cmd](args, registry)
    except (CliError, AvatarError, MediaError, OSError) as exc:
        print(f"avatar {args.cmd}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
