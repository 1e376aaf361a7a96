"""`ddpm presets`: the reference configurations with their model's size and cost."""

from __future__ import annotations

import argparse

from ..config import load_preset, preset_names


def cmd_presets(args: argparse.Namespace) -> int:
    from ..bench import model_size

    for name in preset_names():
        config = load_preset(name)
        size = model_size(config)
        d = config.data
        print(
            f"{name:16s} {size.parameters / 1e6:6.1f}M  {size.forward_gflop_per_image:8.3f} GFLOP/image  "
            f"{d.dataset} {d.channels}x{d.image_size}x{d.image_size}"
        )
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm presets`."""
    presets = sub.add_parser("presets", help="list the reference configurations")
    presets.set_defaults(func=cmd_presets)
