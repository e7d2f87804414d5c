"""PyTorch mirror of :class:`flowjax.nets.MLP`, so that both frameworks time the same network.

Same layers, widths and FLOPs as ``MLP(hidden, depth, time_dim)``: a sinusoidal embedding of
``1000 t`` projected by ``Linear(time_dim, time_dim)`` and SiLU, then ``depth`` x
``SiLU(Linear([h, emb]))`` with the time embedding re-injected at every layer, then
``Linear(hidden, d)``. Imported only when torch is installed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TIME_SCALE = 1000.0


class MirrorMLP(nn.Module):
    def __init__(self, d: int, hidden: int = 256, depth: int = 3, time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        half = time_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / max(half, 1))
        self.register_buffer("freqs", freqs)
        self.t_proj = nn.Linear(time_dim, time_dim)
        layers, width = [], d
        for _ in range(depth):
            layers.append(nn.Linear(width + time_dim, hidden))
            width = hidden
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(hidden, d)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        args = (TIME_SCALE * t)[:, None] * self.freqs[None, :]
        emb = self.act(self.t_proj(torch.cat([torch.cos(args), torch.sin(args)], dim=-1)))
        h = x
        for layer in self.layers:
            h = self.act(layer(torch.cat([h, emb], dim=-1)))
        return self.out(h)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
