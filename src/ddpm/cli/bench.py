"""`ddpm bench`: training and sampling speed, size and peak memory of a preset's model."""

from __future__ import annotations

import argparse
import json

from ..config import from_dict, load_preset, preset_names
from ..config_yaml import parse_overrides
from .args import add_device_option, positive_int


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import run_bench
    from ..devices import resolve_device
    from ..resources import check_training_fits

    config = from_dict(parse_overrides(args.set), base=load_preset(args.preset))
    device = resolve_device(args.device)
    check_training_fits(config, device, batch_size=args.batch)
    result = run_bench(
        config,
        preset=args.preset,
        device=device,
        batch_size=args.batch,
        train_steps=args.train_steps,
        sample_steps=args.sample_steps,
    )
    print(json.dumps(result.as_dict()) if args.json else "\n".join(result.lines()))
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm bench`."""
    bench = sub.add_parser("bench", help="measure speed and size of a preset's model")
    bench.add_argument("--preset", default="digits", help=f"one of: {', '.join(preset_names())}")
    bench.add_argument("--batch", type=positive_int, default=64)
    bench.add_argument("--train-steps", type=positive_int, default=20)
    bench.add_argument("--sample-steps", type=positive_int, default=50)
    bench.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    add_device_option(bench)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench)
