"""The viseme network: a small causal dilated-convolution stack (TCN) on 80-bin log-mel.

Every convolution is causal; the model sees no future frame. Lookahead comes from the training
target instead: the output at step ``t`` is trained to give the viseme of frame ``t - LOOKAHEAD``,
so a viseme is decided once 30 ms (``LOOKAHEAD`` hops) after its 10 ms frame have been heard.
30 ms, not more: a 40 ms video frame then needs audio up to 30 ms (+ 1 ms of resampler) past its
end, so the engine ships it one tick after its audio leaves the jitter buffer (50 ms took two).

The same forward serves training (whole sequences, zero initial state) and streaming (chunks of
any length with the carried state): each block's left context is an explicit state tensor, so
``forward(chunk_1, s0) ; forward(chunk_2, s1)`` equals ``forward(chunk_1 + chunk_2, s0)``.
Requires torch (the ``train`` extra); inference uses the exported ONNX only.
"""

from __future__ import annotations

import torch
from torch import nn

from avatar_pipeline.features import N_MELS
from avatar_pipeline.viseme_set import NUM_VISEMES

LOOKAHEAD = 3  # frames of 10 ms
KERNEL = 3
DILATIONS = (1, 2, 4, 8, 1, 2, 4, 8)
CHANNELS = 128


def state_size(dilations=DILATIONS, kernel=KERNEL) -> int:
    return sum((kernel - 1) * d for d in dilations)


class CausalTCN(nn.Module):
    def __init__(self, channels: int = CHANNELS, dilations=DILATIONS, kernel: int = KERNEL,
                 n_in: int = N_MELS, n_out: int = NUM_VISEMES) -> None:
        super().__init__()
        self.channels, self.dilations, self.kernel = channels, tuple(dilations), kernel
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.inp = nn.Conv1d(n_in, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d)
                                   for d in self.dilations)
        self.mixes = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)
        self.out = nn.Conv1d(channels, n_out, 1)
        self.act = nn.GELU()
        self.ctx = [(kernel - 1) * d for d in self.dilations]

    def state_size(self) -> int:
        return sum(self.ctx)

    def zero_state(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.channels, self.state_size())

    def forward(self, feats: torch.Tensor, state: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (N, T, 80) raw log-mel, state (N, C, S) -> logits (N, T, 15), new state."""
        h = ((feats - self.mean) / self.std).transpose(1, 2)
        h = self.inp(h)
        new_states = []
        pos = 0
        for conv, mix, c in zip(self.convs, self.mixes, self.ctx, strict=True):
            full = torch.cat([state[:, :, pos:pos + c], h], dim=2)
            new_states.append(full[:, :, full.shape[2] - c:])
            pos += c
            h = h + mix(self.act(conv(full)))
        logits = self.out(self.act(h)).transpose(1, 2)
        return logits, torch.cat(new_states, dim=2)


class ExportWrapper(nn.Module):
    """What the ONNX holds: probabilities instead of logits."""

    def __init__(self, net: CausalTCN) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: torch.Tensor, state: torch.Tensor):
        logits, new_state = self.net(feats, state)
        return torch.softmax(logits, dim=-1), new_state


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
