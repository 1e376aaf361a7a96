"""`model.preset=auto`: one documented rule that sizes a U-Net for an image size, and the rule that
rounds a folder's image size to one it trains at. Pure functions over integers (no torch), so the
config can apply them while it is built.

The rule scales the two networks measured here to train fastest to good images on a CPU (the digits
and Fashion-MNIST presets; README, Time to quality) to any size, without the Fashion-MNIST preset's
linear attention (never measured to help here, and diffusers has no such block: every network the
rule makes exports with `ddpm export --format diffusers`):
- levels: halve the image while it is even and the half is at least 4 pixels, and stop below 8
  (8 -> 8, 4; 28 -> 28, 14, 7; 32 -> 32, 16, 8, 4; 64 -> 64, 32, 16, 8, 4);
- widths: 32 channels at the top, times 1, 2, 4, 4, ... per level (channel_mult min(2^i, 4));
- one ResNet block per level, 8 groups, scale-shift conditioning;
- full attention at the lowest resolution (and in the bottleneck, as every U-Net here).
"""

from __future__ import annotations

from typing import Any

BASE_CHANNELS = 32
MAX_MULT = 4
MIN_SIZE = 8  # the smallest image the rule trains at (the digits)
MAX_SIZE = (
    64  # the largest image size picked from a folder; --image-size / data.image_size for more
)
SIZE_MULTIPLE = 4  # a size picked from a folder is a multiple of 4: at least three levels from 16

# the keys of the model section the rule sets; the others (dropout, num_classes, conditioning...)
# keep their configured values
AUTO_KEYS = (
    "base_channels", "channel_mult", "num_res_blocks", "attention_resolutions",
    "attention_head_dim", "linear_attention", "block", "num_groups",
)  # fmt: skip


def auto_resolutions(image_size: int) -> list[int]:
    """The U-Net's resolutions for this image size, top to bottom: e.g. 28 -> [28, 14, 7]."""
    resolutions = [image_size]
    while resolutions[-1] >= MIN_SIZE and resolutions[-1] % 2 == 0:
        resolutions.append(resolutions[-1] // 2)
    return resolutions


def auto_unet_keys(image_size: int) -> dict[str, Any]:
    """The model section's architecture keys (AUTO_KEYS) the rule picks for `image_size` pixels."""
    resolutions = auto_resolutions(image_size)
    return {
        "base_channels": BASE_CHANNELS,
        "channel_mult": tuple(min(2**i, MAX_MULT) for i in range(len(resolutions))),
        "num_res_blocks": 1,
        "attention_resolutions": (resolutions[-1],),
        "attention_head_dim": 32,
        "linear_attention": False,
        "block": "resnet",
        "num_groups": 8,
    }


def auto_image_size(short_side: int) -> int:
    """The size a folder of images with this shorter side (pixels) trains at: clamped to
    [MIN_SIZE, MAX_SIZE], then the nearest multiple of SIZE_MULTIPLE (halves round up)."""
    clamped = min(max(short_side, MIN_SIZE), MAX_SIZE)
    return max(MIN_SIZE, SIZE_MULTIPLE * ((clamped + SIZE_MULTIPLE // 2) // SIZE_MULTIPLE))
