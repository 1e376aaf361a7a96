"""--run and --weights, the two ways to name the network that `ddpm sample` and `ddpm eval` use:
a run folder (or one of its checkpoint files), or a weights file of `ddpm export --format
safetensors` (its EMA network and config only). Both land in `args.run` (ddpm.loaded_run.load_run
reads either); argparse refuses the two together."""

from __future__ import annotations

import argparse
from pathlib import Path


def weights_file(text: str) -> str:
    """A file, not a folder (a run folder goes to --run)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a folder: give a run folder with --run, or the FILE.safetensors written "
            f"by `ddpm export --format safetensors` with --weights"
        )
    return text


def add_run_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--run RUN | --weights FILE.safetensors, mutually exclusive, into args.run."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--run", help="run folder or checkpoint file")
    group.add_argument(
        "--weights", dest="run", type=weights_file, metavar="FILE.safetensors",
        help="a weights file of `ddpm export --format safetensors` (EMA network + config)",
    )  # fmt: skip
