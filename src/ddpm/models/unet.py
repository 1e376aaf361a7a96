"""The noise-prediction U-Net of Ho et al. 2020 (a PixelCNN++-style backbone), with the later
improvements: scale-shift conditioning, multi-head attention, optional ConvNeXt blocks, linear
attention and class conditioning with a null class for classifier-free guidance.

Interface: `net(x_t [B, C, H, W], t LongTensor [B], labels LongTensor [B] | None) -> [B, C', H, W]`,
C' = out_channels: C (the prediction), or 2C with a learned variance (the prediction, then the
variance interpolation of ddpm.learned_variance); during training with data.augment_p the keyword
`augment=` [B, model.augment_dim] (the parameters of ddpm.augment; None, as every sampler passes,
means zeros: no augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig, check_unet_config
from .layers import (
    ConvNeXtBlock,
    Downsample,
    LinearAttention,
    ResBlock,
    SelfAttention,
    Upsample,
    timestep_embedding,
    zero_init,
)

BLOCKS = {"resnet": ResBlock, "convnext": ConvNeXtBlock}


class Stage(nn.ModuleList):
    """A sequence of layers that each take (x, emb)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb)
        return x


class UNet(nn.Module):
    def __init__(
        self,
        config: UNetConfig,
        *,
        image_size: int,
        in_channels: int,
        out_channels: int | None = None,
    ):
        """out_channels: the output's channels, in_channels when None (a network of an earlier
        version: its state dict is unchanged); 2 in_channels for diffusion.variance=learned_range."""
        super().__init__()
        check_unet_config(config, image_size=image_size, in_channels=in_channels)
        self.config = config
        base, groups = config.base_channels, config.num_groups
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(
            nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.label_emb = (
            nn.Embedding(config.num_classes + 1, emb_dim) if config.num_classes else None
        )
        # bias-free, so a zero vector (no augmentation, sampling) adds exactly nothing (EDM)
        self.augment_emb = (
            nn.Linear(config.augment_dim, emb_dim, bias=False) if config.augment_dim else None
        )
        block_type = BLOCKS[config.block]

        def block(cin: int, cout: int) -> nn.Module:
            return block_type(
                cin,
                cout,
                emb_dim,
                dropout=config.dropout,
                groups=groups,
                scale_shift=config.conditioning == "scale_shift",
            )

        def attention(ch: int, resolution: int) -> list[nn.Module]:
            kwargs = dict(head_dim=config.attention_head_dim, groups=groups)
            if resolution in config.attention_resolutions:
                return [SelfAttention(ch, **kwargs)]
            return [LinearAttention(ch, **kwargs)] if config.linear_attention else []

        ch, resolution = base, image_size
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, skips = nn.ModuleList(), [ch]
        last_level = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                self.down.append(
                    Stage([block(ch, base * mult), *attention(base * mult, resolution)])
                )
                ch = base * mult
                skips.append(ch)
            if level != last_level:
                self.down.append(Stage([Downsample(ch)]))
                resolution //= 2
                skips.append(ch)
        self.middle = Stage(
            [
                block(ch, ch),
                SelfAttention(ch, head_dim=config.attention_head_dim, groups=groups),
                block(ch, ch),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [block(ch + skips.pop(), base * mult), *attention(base * mult, resolution)]
                ch = base * mult
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    resolution *= 2
                self.up.append(Stage(layers))
        self.norm_out = nn.GroupNorm(groups, ch)
        self.out_channels = out_channels or in_channels
        self.conv_out = zero_init(nn.Conv2d(ch, self.out_channels, 3, padding=1))
        self.memory_format = torch.contiguous_format

    def use_memory_format(self, memory_format: torch.memory_format) -> UNet:
        """Store the weights in `memory_format` (torch.channels_last or torch.contiguous_format)
        and run every forward in it: inputs are converted once at the entry, every block keeps
        the format, so no layer converts on the way. channels_last pays with cuDNN and large
        convolutions; on CPUs, PyTorch's GroupNorm is several times slower in it (see the README,
        Performance), so the trainer picks it per device. Loading a state dict keeps the format."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    @property
    def null_label(self) -> int:
        """The label index meaning "no class" (classifier-free guidance)."""
        return self.config.num_classes

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        augment: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, C, H, W], t LongTensor [B], labels LongTensor [B] or None, augment [B, D] or None
        (zeros) -> [B, out_channels, H, W]."""
        x = x.contiguous(memory_format=self.memory_format)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels).to(x.dtype))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.null_label)
            emb = emb + self.label_emb(labels)
        if self.augment_emb is not None and augment is not None:
            emb = emb + self.augment_emb(augment.to(emb.dtype))
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        out: torch.Tensor = self.conv_out(F.silu(self.norm_out(h)))  # a submodule call is typed Any
        return out


def build_unet(
    config: UNetConfig, *, image_size: int, in_channels: int, out_channels: int | None = None
) -> UNet:
    return UNet(config, image_size=image_size, in_channels=in_channels, out_channels=out_channels)
