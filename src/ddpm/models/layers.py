"""U-Net building blocks: timestep embedding, ResNet and ConvNeXt blocks, attention, resampling.

Every block keeps the input's memory format (channels_last works end to end) and takes the
conditioning embedding `emb` [B, E] where it needs it. torch types a submodule call as Any, so the
results that a forward returns go through names annotated `torch.Tensor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import SeededDropout

M = TypeVar("M", bound=nn.Module)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al. 2020, Sec. 4).

    t: [B] integer or float timesteps -> [B, dim] float32: [cos(t w_k), sin(t w_k)], with
    w_k = max_period^(-k / (dim/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, dim % 2))


def zero_init(module: M) -> M:
    """Zero a layer's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def film(
    norm: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """Condition normalised features on the embedding projection `cond` [B, C or 2C, 1, 1]:
    norm(h) * (1 + scale) + shift when it holds both halves, else norm(h + cond) (additive, as in
    Ho et al. 2020, where the bias is added before the second normalisation)."""
    if cond.shape[1] == 2 * h.shape[1]:
        scale, shift = cond.chunk(2, dim=1)
        return norm(h) * (1 + scale) + shift
    return norm(h + cond)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding as a scale-shift after the second norm
    (Dhariwal & Nichol 2021, "AdaGN"), dropout before the last conv, and a 1x1 skip if needed."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        *,
        dropout: float,
        groups: int,
        scale_shift: bool = True,
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, (2 if scale_shift else 1) * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = SeededDropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.conv1(F.silu(self.norm1(x)))
        h = film(self.norm2, h, self.emb(F.silu(emb))[:, :, None, None])
        h = self.conv2(self.dropout(F.silu(h)))
        skip: torch.Tensor = self.skip(x)
        return skip + h


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022): depthwise 7x7 conv, norm with the embedding as scale-shift,
    1x1 expand (x2) with GELU, 1x1 project; residual with a 1x1 skip if channels change."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        *,
        dropout: float,
        groups: int,
        scale_shift: bool = True,
    ):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 7, padding=3, groups=in_ch)
        self.emb = nn.Linear(emb_dim, (2 if scale_shift else 1) * in_ch)
        self.norm = nn.GroupNorm(1, in_ch)
        self.expand = nn.Conv2d(in_ch, 2 * out_ch, 1)
        self.dropout = SeededDropout(dropout)
        self.project = zero_init(nn.Conv2d(2 * out_ch, out_ch, 1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = film(
            self.norm, self.depthwise(x), self.emb(F.silu(emb))[:, :, None, None]
        )
        h = self.project(self.dropout(F.gelu(self.expand(h))))
        skip: torch.Tensor = self.skip(x)
        return skip + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all H*W positions via scaled_dot_product_attention, residual.

    The projections are 1x1 convolutions in the parameters (checkpoints keep their shapes) but run
    as matrix products on the [B, HW, C] tokens, so q, k and v have a contiguous head dimension:
    that is what the fused (flash) attention kernels take; strided inputs fall back to the
    unfused math path, twice as slow on the CPU.
    """

    def __init__(self, ch: int, *, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]; a view in channels_last
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # [B, HW, 3C]
        qkv = qkv.view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, head_dim]
        y = F.linear(
            y.transpose(1, 2).reshape(b, h * w, c), self.out.weight.flatten(1), self.out.bias
        )
        y = y.transpose(1, 2).reshape(b, c, h, w)  # channels_last strides, no copy
        return x + y  # the sum takes its first operand's layout: x's


class LinearAttention(nn.Module):
    """Linear-complexity attention (Shen et al. 2021, "efficient attention"): softmax of q over
    channels and of k over positions, so the cost is O(HW d^2) instead of O((HW)^2 d). Residual."""

    def __init__(self, ch: int, *, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.unbind(1)  # each [B, heads, head_dim, HW]
        q = q.softmax(dim=-2) * (c // self.heads) ** -0.5
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        y = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, c, h, w)
        out: torch.Tensor = self.out(y)
        return x + out


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution (Ho et al. 2020)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        return y


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling followed by a 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        y: torch.Tensor = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return y
