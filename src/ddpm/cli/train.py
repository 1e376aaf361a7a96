"""`ddpm train`: train a model on a dataset or preset, or resume a run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from ..config import (
    RESUMABLE_KEYS,
    RunConfig,
    diff_keys,
    from_dict,
    load_preset,
    preset_names,
    to_dict,
)
from ..config_yaml import load_yaml, parse_overrides
from ..data import DATASETS
from ..devices import use_deterministic_algorithms
from ..errors import DDPMError
from ..output_paths import check_output_folder
from .args import add_device_option

log = logging.getLogger(__name__)


def _resolve_train_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < dataset's or named preset < --config file < --set overrides."""
    if args.preset:
        config = load_preset(args.preset)
    elif args.dataset in preset_names():
        config = load_preset(args.dataset)
    else:
        if args.dataset not in DATASETS:
            raise DDPMError(
                f"unknown dataset {args.dataset!r}; known: {', '.join(sorted(DATASETS))}"
            )
        config = from_dict({"data": {"dataset": args.dataset}})
    if args.config:
        config = from_dict(load_yaml(args.config), base=config)
    if args.preset and args.dataset:
        config = from_dict({"data": {"dataset": args.dataset}}, base=config)
    return from_dict(parse_overrides(args.set), base=config)


def _resume_config(args: argparse.Namespace) -> RunConfig:
    from ..train.run_files import read_config

    run_dir = Path(args.resume)
    if not run_dir.is_dir():
        raise DDPMError(f"run folder not found: {run_dir}")
    saved = read_config(run_dir)
    config = from_dict(parse_overrides(args.set), base=saved)
    unsafe = [k for k in diff_keys(saved, config) if k not in RESUMABLE_KEYS]
    if unsafe:
        raise DDPMError(
            f"cannot change {', '.join(unsafe)} when resuming; only "
            f"{', '.join(sorted(RESUMABLE_KEYS))} may change"
        )
    for key in diff_keys(saved, config):
        log.warning("resuming with changed %s", key)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..resources import check_training_fits
    from ..train import train

    if args.resume:
        if args.dataset or args.preset or args.config or args.out or args.overwrite:
            raise DDPMError(
                "--resume takes the run's own folder and config; only --set may change safe keys"
            )
        config, run_dir = _resume_config(args), Path(args.resume)
    else:
        if not (args.dataset or args.preset) or not args.out:
            raise DDPMError("train needs --dataset NAME or --preset NAME, and --out DIR")
        config, run_dir = _resolve_train_config(args), Path(args.out)
    device = resolve_device(args.device)
    estimate, memory = check_training_fits(config, device)  # before anything is allocated
    check_output_folder(run_dir, "run folder")
    if args.deterministic:
        use_deterministic_algorithms()
    if args.dry_run:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        print(f"# estimated training memory: {estimate.describe()}; {memory.description} here")
        return 0
    result = train(
        config,
        run_dir,
        device=device,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        progress=not args.quiet,
        command=["ddpm", *getattr(args, "argv", [])],  # recorded in RUN/sessions.jsonl
    )
    print(f"trained to step {result.step}, final loss {result.last_loss:.4f}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"samples:    {result.samples}")
    print(f"log:        {run_dir / 'log.csv'} (plot: {run_dir / 'loss.png'})")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm train`."""
    train = sub.add_parser("train", help="train a model (or resume a run)")
    train.add_argument("--dataset", help=f"dataset: {', '.join(sorted(DATASETS))}")
    train.add_argument("--preset", help=f"reference configuration: {', '.join(preset_names())}")
    train.add_argument("--out", help="run folder to create (new or empty)")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run's files in --out (config, logs, checkpoints, samples, eval)",
    )
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    train.add_argument("--config", metavar="FILE.yaml", help="config file over the preset")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    add_device_option(train)
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels, so a resumed run matches an uninterrupted one bit for bit",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
