"""A stand-in for a Wav2Lip-class lip-sync generator, made by our code: the same ONNX signature
(mel 1x1x80x16 + face 1x6x96x96 -> 1x3x96x96, batch dimension dynamic) and, at the default width,
about the same size (Wav2Lip's generator has ~36 M parameters). Its convolutional weights are
random, so on their own they would paint a face that ignores the audio; the output is therefore
mostly a fixed rule a test can check: the reference face's lower half with a dark mouth opening
whose height follows the loudness of the window's first 50 ms (the audio of the frame itself),
plus 15 % of the random network (so its cost is what a real generator's is). It exists so the
neural slot can be tested and benchmarked without anyone's weights.

    python -m avatar_pipeline.neural.testmodel out.onnx [--width 1.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from config.logs import get_logger

log = get_logger(__name__)

MOUTH_RULE = 0.85
"""The share of the output drawn by the mouth rule (the rest is the random network's)."""

DEFAULT_WIDTH = 1.5
"""Channel multiplier: 1.5 gives ~35 M parameters, about Wav2Lip's generator (~36 M)."""


def _build(width: float, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def c(n: int) -> int:
        return max(8, int(round(n * width)))

    def block(i, o, k=3, s=1, p=1):
        return nn.Sequential(nn.Conv2d(i, o, k, s, p), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    def up(i, o):
        return nn.Sequential(nn.ConvTranspose2d(i, o, 3, 2, 1, output_padding=1),
                             nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            ch = [c(16), c(32), c(64), c(128), c(256), c(512)]
            self.face = nn.ModuleList([
                nn.Sequential(block(6, ch[0], 7, 1, 3)),                      # 96
                nn.Sequential(block(ch[0], ch[1], 3, 2, 1), block(ch[1], ch[1])),  # 48
                nn.Sequential(block(ch[1], ch[2], 3, 2, 1), block(ch[2], ch[2])),  # 24
                nn.Sequential(block(ch[2], ch[3], 3, 2, 1), block(ch[3], ch[3])),  # 12
                nn.Sequential(block(ch[3], ch[4], 3, 2, 1), block(ch[4], ch[4])),  # 6
                nn.Sequential(block(ch[4], ch[5], 3, 2, 1), block(ch[5], ch[5])),  # 3
                nn.Sequential(block(ch[5], ch[5], 3, 1, 0), block(ch[5], ch[5], 1, 1, 0)),  # 1
            ])
            self.audio = nn.Sequential(
                block(1, ch[1]), block(ch[1], ch[1]),
                block(ch[1], ch[2], 3, (3, 1), 1), block(ch[2], ch[2]),
                block(ch[2], ch[3], 3, 3, 1), block(ch[3], ch[3]),
                block(ch[3], ch[4], 3, (3, 2), 1), block(ch[4], ch[4]),
                block(ch[4], ch[5], 3, 1, 0), block(ch[5], ch[5], 1, 1, 0),
            )
            self.up = nn.ModuleList([
                nn.Sequential(nn.ConvTranspose2d(ch[5], ch[5], 3, 1, 0),
                              nn.BatchNorm2d(ch[5]), nn.ReLU(inplace=True)),       # 3
                up(ch[5] * 2, ch[4]),  # 6
                up(ch[4] * 2, ch[3]),  # 12
                up(ch[3] * 2, ch[2]),  # 24
                up(ch[2] * 2, ch[1]),  # 48
                up(ch[1] * 2, ch[0]),  # 96
            ])
            self.out = nn.Sequential(block(ch[0] * 2, ch[0]), nn.Conv2d(ch[0], 3, 1), nn.Sigmoid())
            grid = (torch.arange(96, dtype=torch.float32) + 0.5) / 96
            self.register_buffer("yy", grid[:, None].expand(96, 96).clone())
            self.register_buffer("xx", grid[None, :].expand(96, 96).clone())

        def forward(self, mel, face):
            return MOUTH_RULE * self.mouth(mel, face) + (1 - MOUTH_RULE) * self.net(mel, face)

        def mouth(self, mel, face):
            # loudness of the frame's own audio: mel steps 0-3 (-25..+62 ms), bands 10-60
            level = (mel[:, :, 10:60, 0:4].mean(dim=(1, 2, 3)) + 4.0) / 8.0  # 0 (silent)..1
            opening = torch.clamp((level - 0.3) / 0.4, 0.0, 1.0)[:, None, None, None]
            ry = 0.005 + 0.08 * opening
            inside = 1 - ((self.xx - 0.5) / 0.14) ** 2 - ((self.yy - 0.66) / ry) ** 2
            mask = torch.sigmoid(inside * 12.0)
            upper = face[:, 0:3] * (self.yy < 0.5).float()
            lower = face[:, 3:6] * (self.yy >= 0.5).float()
            return (upper + lower) * (1 - mask) + 0.08 * mask

        def net(self, mel, face):
            feats = []
            x = face
            for f in self.face:
                x = f(x)
                feats.append(x)
            a = self.audio(mel)  # (N, C, 1, 1)
            x = a + feats[-1]
            for i, u in enumerate(self.up):
                x = u(x)
                x = torch.cat([x, feats[-2 - i]], 1)
            return self.out(x)

    return Generator().eval()


def make_test_model(path: str | Path, width: float = DEFAULT_WIDTH, seed: int = 0) -> dict:
    """Export the stand-in generator to ONNX at ``path``; returns {params, bytes}."""
    import torch

    model = _build(width, seed)
    n_params = sum(p.numel() for p in model.parameters())
    mel = torch.zeros(1, 1, 80, 16)
    face = torch.zeros(1, 6, 96, 96)
    with torch.no_grad():
        assert model(mel, face).shape == (1, 3, 96, 96)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated but needs no onnxscript; it is fine for this net
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (mel, face), str(path), input_names=["mel", "face"], output_names=["out"],
            dynamic_axes={"mel": {0: "batch"}, "face": {0: "batch"}, "out": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    info = {"params": int(n_params), "bytes": path.stat().st_size, "width": width}
    log.info("neural.test_model", path=str(path), **info)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--width", type=float, default=DEFAULT_WIDTH)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(make_test_model(a.out, a.width, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
