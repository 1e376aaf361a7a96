"""ddpm's model section <-> the config.json of diffusers' `UNet2DModel`, both ways, with the
settings that have no counterpart refused by name (read and written as JSON: diffusers itself is
an optional extra, never imported here).

What corresponds (diffusers 0.42's UNet2DModel; tests/test_export.py checks it numerically):
- timestep embedding: ddpm's [cos, sin] of t * 10000^(-k / half) is `time_embedding_type`
  positional with `flip_sin_to_cos` true and `freq_shift` 0, MLP base -> 4 base -> 4 base;
  `flip_sin_to_cos` false ([sin, cos]) imports with the first linear layer's input columns
  swapped to match (`sin_cos_to_cos_sin`);
- blocks: ResBlock = ResnetBlock2D (`resnet_time_scale_shift` scale_shift for
  model.conditioning=scale_shift, default for additive: the bias added before the second norm);
  a level with attention is an Attn{Down,Up}Block2D; downsampling a stride-2 3x3 conv with
  padding 1 (`downsample_type` conv, `downsample_padding` 1), upsampling nearest + 3x3 conv;
- attention: one head of size `attention_head_dim` per that many channels; ddpm gives a layer
  narrower than model.attention_head_dim one head of its width, which diffusers does for every
  layer with `attention_head_dim` null; the middle attention has its group norm only with
  `attn_norm_num_groups` set (diffusers drops it for scale_shift otherwise);
- every GroupNorm has model.num_groups groups and eps 1e-5 (torch's default: `norm_eps`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import torch

from ..config import RunConfig, UNetConfig
from ..errors import DDPMError, shorten
from .diffusers_names import attention_levels

DIFFUSERS_VERSION = "0.42.1"  # the release this layout was checked against (tests/test_export.py)
NORM_EPS = 1e-5  # torch.nn.GroupNorm's default, which every ddpm norm uses
_SHIFT = {"scale_shift": "scale_shift", "additive": "default"}
_CONDITIONING: dict[str, Literal["scale_shift", "additive"]] = {
    "scale_shift": "scale_shift", "default": "additive"
}  # fmt: skip

# UNet2DModel's defaults for the fields read here (save_pretrained writes every field; a
# hand-written config.json may leave some out)
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2,
    "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv",
    "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8,
    "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None,
}  # fmt: skip
# fields whose value must be exactly this for ddpm's U-Net
_FIXED: dict[str, Any] = {
    "center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 0,
    "mid_block_type": "UNetMidBlock2D", "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv",
    "act_fn": "silu", "norm_eps": NORM_EPS, "add_attention": True, "class_embed_type": None,
}  # fmt: skip


def attention_channels(model: UNetConfig, image_size: int) -> list[int]:
    """The width of every self-attention layer's level, the middle one last."""
    levels = attention_levels(model, image_size)
    widths = [model.base_channels * m for m, a in zip(model.channel_mult, levels) if a]
    return [*widths, model.base_channels * model.channel_mult[-1]]


def _heads(width: int, head_dim: int) -> int:
    return max(1, width // head_dim)  # as ddpm.models.layers.SelfAttention


def check_exportable(config: RunConfig) -> None:
    """DDPMError naming the config key when the network or its use has no diffusers
    UNet2DModel + DDPMScheduler counterpart."""
    m, d, size = config.model, config.diffusion, config.data.image_size
    blocked = [
        (m.block == "convnext", "model.block=convnext (ConvNeXt blocks)"),
        (m.linear_attention and not all(attention_levels(m, size)),
         "model.linear_attention=true (linear attention at the levels without full attention)"),
        (m.augment_dim != 0, "model.augment_dim=6 (EDM's augmentation conditioning)"),
        (d.variance == "learned_range",
         "diffusion.variance=learned_range (a learned variance output)"),
        (d.prediction == "edm", "diffusion.prediction=edm (EDM's preconditioning)"),
    ]  # fmt: skip
    for failed, what in blocked:
        if failed:
            raise DDPMError(f"cannot export to diffusers: {what} has no UNet2DModel counterpart")
    diffusers_head_dim(m, size)


def diffusers_head_dim(model: UNetConfig, image_size: int) -> int | None:
    """UNet2DModel's attention_head_dim giving every attention layer ddpm's heads: ddpm's own
    when it divides every width, None (one head each) when every layer has one head."""
    widths = attention_channels(model, image_size)
    if all(w % model.attention_head_dim == 0 for w in widths):
        return model.attention_head_dim
    if all(_heads(w, model.attention_head_dim) == 1 for w in widths):
        return None
    raise DDPMError(
        f"cannot export to diffusers: model.attention_head_dim={model.attention_head_dim} splits "
        f"the attention widths {widths} into heads that one UNet2DModel attention_head_dim "
        f"cannot give; use a divisor of every width"
    )


def unet_config(config: RunConfig) -> dict[str, Any]:
    """The config.json of the UNet2DModel equal to the run's network (check_exportable first)."""
    m, data = config.model, config.data
    levels = attention_levels(m, data.image_size)
    return {
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        **UNET_DEFAULTS,
        **_FIXED,
        "flip_sin_to_cos": True,
        "sample_size": data.image_size,
        "in_channels": data.channels,
        "out_channels": data.channels,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in levels],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)],
        "block_out_channels": [m.base_channels * k for k in m.channel_mult],
        "layers_per_block": m.num_res_blocks,
        "dropout": m.dropout,
        "attention_head_dim": diffusers_head_dim(m, data.image_size),
        "norm_num_groups": m.num_groups,
        "attn_norm_num_groups": m.num_groups,
        "resnet_time_scale_shift": _SHIFT[m.conditioning],
        "num_class_embeds": m.num_classes + 1 if m.num_classes else None,
    }


def _refuse(field: str, value: Any, why: str) -> DDPMError:
    return DDPMError(f"cannot import this UNet2DModel: {field}={shorten(value)} ({why})")


def _int_list(cfg: dict[str, Any], field: str) -> list[int]:
    value = cfg[field]
    if not isinstance(value, list) or not value or not all(type(v) is int and v > 0 for v in value):
        raise _refuse(field, value, "expected a list of positive integers")
    return value


def unet_from_diffusers(cfg: dict[str, Any], base: UNetConfig) -> tuple[UNetConfig, int, int, int]:
    """A UNet2DModel config.json -> (model section over `base`, image size, channels, number of
    classes incl. the null one or 0). Refuses, naming the diffusers field, what ddpm's U-Net
    cannot be."""
    cfg = {**UNET_DEFAULTS, **cfg}
    for field, value in _FIXED.items():
        if cfg[field] != value:
            raise _refuse(field, cfg[field], f"ddpm's U-Net has {value}")
    size = cfg["sample_size"]
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if type(size) is not int or size < 1:
        raise _refuse("sample_size", size, "ddpm needs square images of a known size")
    widths = _int_list(cfg, "block_out_channels")
    base_ch = widths[0]
    if any(w % base_ch for w in widths):
        raise _refuse("block_out_channels", widths, "ddpm's widths are multiples of the first")
    if cfg["flip_sin_to_cos"] not in (True, False):
        raise _refuse("flip_sin_to_cos", cfg["flip_sin_to_cos"], "expected true or false")
    if cfg["time_embedding_dim"] not in (None, 4 * base_ch):
        raise _refuse("time_embedding_dim", cfg["time_embedding_dim"], f"ddpm's is {4 * base_ch}")
    if cfg["in_channels"] != cfg["out_channels"]:
        raise _refuse("out_channels", cfg["out_channels"], "ddpm predicts in_channels channels")
    if cfg["resnet_time_scale_shift"] not in _SHIFT.values():
        raise _refuse("resnet_time_scale_shift", cfg["resnet_time_scale_shift"],
                      "ddpm has default and scale_shift")  # fmt: skip
    if cfg["attn_norm_num_groups"] not in (cfg["norm_num_groups"], None) or (
        cfg["attn_norm_num_groups"] is None and cfg["resnet_time_scale_shift"] != "default"
    ):
        raise _refuse("attn_norm_num_groups", cfg["attn_norm_num_groups"],
                      "ddpm's middle attention has a group norm of norm_num_groups")  # fmt: skip
    attn = _attention_levels(cfg, len(widths))
    classes = cfg["num_class_embeds"] or 0
    if type(classes) is not int or classes == 1 or classes < 0:
        raise _refuse("num_class_embeds", classes, "ddpm needs the classes plus a null class")
    model = UNetConfig(
        base_channels=base_ch, channel_mult=tuple(w // base_ch for w in widths),
        num_res_blocks=cfg["layers_per_block"],
        attention_resolutions=tuple(size // 2**i for i, a in enumerate(attn) if a),
        attention_head_dim=base.attention_head_dim, linear_attention=False, block="resnet",
        conditioning=_CONDITIONING[cfg["resnet_time_scale_shift"]], dropout=cfg["dropout"], num_groups=cfg["norm_num_groups"],
        num_classes=max(classes - 1, 0), augment_dim=0,
    )  # fmt: skip
    head_dim = _ddpm_head_dim(cfg["attention_head_dim"], attention_channels(model, size), base)
    return replace(model, attention_head_dim=head_dim), size, cfg["in_channels"], classes


def _attention_levels(cfg: dict[str, Any], levels: int) -> list[bool]:
    down, up = cfg["down_block_types"], cfg["up_block_types"]
    known = {"DownBlock2D": False, "AttnDownBlock2D": True}
    if (
        not isinstance(down, list)
        or len(down) != levels
        or any(not isinstance(b, str) or b not in known for b in down)
    ):
        raise _refuse("down_block_types", down, f"ddpm has {len(known)} kinds: {sorted(known)}, "
                      "one per block_out_channels")  # fmt: skip
    attn = [known[b] for b in down]
    mirror = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    if up != mirror:
        raise _refuse("up_block_types", up, f"ddpm's up path mirrors the down path: {mirror}")
    return attn


def _ddpm_head_dim(diffusers: Any, widths: list[int], base: UNetConfig) -> int:
    """ddpm's model.attention_head_dim giving each attention layer diffusers' heads: `base`'s
    when it gives the same heads (a round trip keeps it), else diffusers' value, or for null (one
    head per layer) the widest layer's width."""
    if diffusers is None:
        heads = [1] * len(widths)
    elif type(diffusers) is int and diffusers > 0 and all(w % diffusers == 0 for w in widths):
        heads = [w // diffusers for w in widths]
    else:
        raise _refuse("attention_head_dim", diffusers,
                      f"ddpm needs one that divides every attention width {widths}")  # fmt: skip
    if [_heads(w, base.attention_head_dim) for w in widths] == heads:
        return base.attention_head_dim
    return max(widths) if diffusers is None else int(diffusers)


def sin_cos_to_cos_sin(weight: torch.Tensor) -> torch.Tensor:
    """The time MLP's first weight [E, D] for a [sin, cos] embedding (`flip_sin_to_cos` false)
    -> the same layer on ddpm's [cos, sin]: its input columns' halves swapped (an odd D's zero
    padding column stays last)."""
    half = weight.shape[1] // 2
    return torch.cat([weight[:, half : 2 * half], weight[:, :half], weight[:, 2 * half :]], dim=1)
