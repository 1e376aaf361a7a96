"""Parameter names between ddpm's U-Net (ddpm.models.unet) and diffusers' `UNet2DModel`.

Both are the U-Net of Ho et al. 2020 with the same order of layers, so the mapping is a renaming
plus two reshapes, fixed by the config (model.channel_mult, num_res_blocks, attention
resolutions):

    ddpm                          diffusers
    time_mlp.0 / time_mlp.2       time_embedding.linear_1 / linear_2
    label_emb                     class_embedding (num_classes + 1 rows, the last the null class)
    conv_in, norm_out, conv_out   conv_in, conv_norm_out, conv_out
    down.{i}: level l, block j    down_blocks.{l}.resnets.{j} (+ .attentions.{j})
    down.{i}: Downsample          down_blocks.{l}.downsamplers.0
    middle.0 / 1 / 2              mid_block.resnets.0 / attentions.0 / resnets.1
    up.{i}: level l, block j      up_blocks.{L-1-l}.resnets.{j} (+ .attentions.{j},
                                  + .upsamplers.0 after the level's last block)
    ResBlock norm1 conv1 emb norm2 conv2 skip
                                  ResnetBlock2D norm1 conv1 time_emb_proj norm2 conv2 conv_shortcut
    SelfAttention norm, qkv [3C, C, 1, 1], out [C, C, 1, 1]
                                  Attention group_norm, to_q / to_k / to_v [C, C], to_out.0 [C, C]

The qkv convolution's output channels are q, k, v in that order, each head-major (SelfAttention
views them as [3, heads, head_dim]), which is how diffusers' Attention splits to_q/to_k/to_v into
heads. Both conversions move tensors without arithmetic, so a round trip is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from ..config import UNetConfig
from ..errors import DDPMError

Kind = Literal["same", "qkv", "conv1x1"]
# sub-layer -> leaf renames inside a block
_RESNET = {"norm1": "norm1", "conv1": "conv1", "emb": "time_emb_proj", "norm2": "norm2",
           "conv2": "conv2", "skip": "conv_shortcut"}  # fmt: skip
_TOP = {"time_mlp.0": "time_embedding.linear_1", "time_mlp.2": "time_embedding.linear_2",
        "label_emb": "class_embedding", "conv_in": "conv_in", "norm_out": "conv_norm_out",
        "conv_out": "conv_out"}  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One ddpm tensor and the diffusers tensor(s) holding it: `same` (equal shape), `qkv` (one
    [3C, ...] tensor split into to_q, to_k, to_v) or `conv1x1` (a [C, C, 1, 1] weight stored as a
    linear [C, C] one)."""

    ddpm: str
    diffusers: tuple[str, ...]
    kind: Kind


def attention_levels(config: UNetConfig, image_size: int) -> list[bool]:
    """Per level (0 = full resolution): whether its blocks are followed by self-attention."""
    return [image_size // 2**level in config.attention_resolutions
            for level in range(len(config.channel_mult))]  # fmt: skip


def sublayer_names(config: UNetConfig, image_size: int) -> dict[str, str]:
    """ddpm prefix of every layer inside a stage ("down.3.1") -> diffusers prefix
    ("down_blocks.1.attentions.0"), in the order ddpm's UNet builds them."""
    attn, levels = attention_levels(config, image_size), len(config.channel_mult)
    names: dict[str, str] = {}

    def stage(prefix: str, parts: list[str]) -> None:
        names.update({f"{prefix}.{k}": part for k, part in enumerate(parts)})

    i = 0
    for level in range(levels):
        for j in range(config.num_res_blocks):
            block = f"down_blocks.{level}"
            stage(f"down.{i}", [f"{block}.resnets.{j}", *[f"{block}.attentions.{j}"] * attn[level]])
            i += 1
        if level != levels - 1:
            stage(f"down.{i}", [f"down_blocks.{level}.downsamplers.0"])
            i += 1
    stage("middle", ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"])
    i = 0
    for level in reversed(range(levels)):
        block = f"up_blocks.{levels - 1 - level}"
        for j in range(config.num_res_blocks + 1):
            parts = [f"{block}.resnets.{j}", *[f"{block}.attentions.{j}"] * attn[level]]
            if level and j == config.num_res_blocks:
                parts.append(f"{block}.upsamplers.0")
            stage(f"up.{i}", parts)
            i += 1
    return names


def rule_for(key: str, sublayers: Mapping[str, str]) -> Rule:
    """The rule of one ddpm state-dict key (e.g. "down.3.1.qkv.weight")."""
    module, _, param = key.rpartition(".")
    if module in _TOP:
        return Rule(key, (f"{_TOP[module]}.{param}",), "same")
    prefix, _, leaf = module.rpartition(".")
    target = sublayers.get(prefix)
    if target is None:
        raise DDPMError(f"the parameter {key} has no diffusers UNet2DModel counterpart")
    if ".resnets." in target and leaf in _RESNET:
        return Rule(key, (f"{target}.{_RESNET[leaf]}.{param}",), "same")
    if ".attentions." in target and leaf == "qkv":
        return Rule(key, tuple(f"{target}.to_{n}.{param}" for n in "qkv"), "qkv")
    if ".attentions." in target and leaf == "out":
        return Rule(key, (f"{target}.to_out.0.{param}",), "conv1x1")
    if ".attentions." in target and leaf == "norm":
        return Rule(key, (f"{target}.group_norm.{param}",), "same")
    if "samplers." in target and leaf == "conv":
        return Rule(key, (f"{target}.conv.{param}",), "same")
    raise DDPMError(f"the parameter {key} has no diffusers UNet2DModel counterpart")


def to_diffusers(
    state: Mapping[str, torch.Tensor], config: UNetConfig, image_size: int
) -> dict[str, torch.Tensor]:
    """A ddpm U-Net state dict -> the state dict of the equivalent UNet2DModel (contiguous)."""
    sublayers = sublayer_names(config, image_size)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        rule = rule_for(key, sublayers)
        if rule.kind == "qkv":
            parts = value.chunk(3, dim=0)
            out |= {
                name: p.flatten(1) if p.dim() == 4 else p for name, p in zip(rule.diffusers, parts)
            }
        elif rule.kind == "conv1x1" and value.dim() == 4:
            out[rule.diffusers[0]] = value.flatten(1)
        else:
            out[rule.diffusers[0]] = value
    return {k: v.detach().contiguous() for k, v in out.items()}


def from_diffusers(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    config: UNetConfig,
    image_size: int,
) -> dict[str, torch.Tensor]:
    """A UNet2DModel state dict -> ddpm's, for the network whose state dict is `expected` (its
    keys and shapes); a missing, extra or misshapen tensor is a DDPMError naming it."""
    sublayers = sublayer_names(config, image_size)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, like in expected.items():
        rule = rule_for(key, sublayers)
        missing = [n for n in rule.diffusers if n not in state]
        if missing:
            raise DDPMError(f"the diffusers weights lack {missing[0]} (ddpm's {key})")
        parts = [state[n] for n in rule.diffusers]
        value = torch.cat(parts) if rule.kind == "qkv" else parts[0]
        if rule.kind != "same" and value.numel() == like.numel():  # linear [C, C] -> conv
            value = value.reshape(like.shape)
        if value.shape != like.shape:
            raise DDPMError(
                f"the diffusers tensor {rule.diffusers[0]} has shape {list(parts[0].shape)}, "
                f"which does not fit ddpm's {key} {list(like.shape)}"
            )
        out[key] = value
        used.update(rule.diffusers)
    extra = sorted(set(state) - used)
    if extra:
        raise DDPMError(
            f"the diffusers weights hold {extra[0]}, which ddpm's U-Net has no place for"
        )
    return out
