"""`ddpm train`: train a model on a dataset or preset, or resume a run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
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
from ..data.folder_survey import FolderSurvey, survey_folder
from ..devices import use_deterministic_algorithms
from ..errors import DDPMError
from ..output_paths import check_output_folder
from .args import add_device_option, positive_int

log = logging.getLogger(__name__)


def _merge(layer: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """`more`'s sections over `layer`'s, key by key (a non-mapping is left for from_dict to
    refuse)."""
    merged = dict(layer)
    for name, values in more.items():
        old = merged.get(name)
        both = isinstance(old, dict) and isinstance(values, dict)
        merged[name] = {**old, **values} if both else values  # type: ignore[dict-item]
    return merged


def _flag_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The data keys the train flags set (--dataset over a --preset, --data-dir, --image-size,
    --channels, --labels-from-subfolders)."""
    data: dict[str, Any] = {}
    if args.preset and args.dataset:
        data["dataset"] = args.dataset
    flags = {"data_dir": args.data_dir, "image_size": args.image_size, "channels": args.channels}
    data.update({key: value for key, value in flags.items() if value is not None})
    if args.labels_from_subfolders:
        data["labels_from_subfolders"] = True
    return {"data": data} if data else {}


def _dataset_name(args: argparse.Namespace) -> str | None:
    """--dataset, or "folder" when only --data-dir names the data."""
    if args.dataset or args.preset:
        return str(args.dataset) if args.dataset else None
    return "folder" if args.data_dir else None


def _resolve_train_config(args: argparse.Namespace) -> tuple[RunConfig, FolderSurvey | None]:
    """Defaults < dataset's or named preset < --config file < flags < --set overrides, the last
    three as one layer (so model.preset=auto sees them all); a folder's image size, channels and
    classes come from a survey of its images unless given."""
    dataset = _dataset_name(args)
    if args.preset:
        base = load_preset(args.preset)
    elif dataset in preset_names():
        base = load_preset(dataset)
    else:
        if dataset not in DATASETS:
            raise DDPMError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
        base = from_dict({"data": {"dataset": dataset}})
    layer = load_yaml(args.config) if args.config else {}
    layer = _merge(_merge(layer, _flag_layer(args)), parse_overrides(args.set))
    config = from_dict(layer, base=base)
    if config.data.dataset != "folder":
        return config, None
    if not config.data.data_dir:
        raise DDPMError("the folder dataset needs --data-dir DIR (or data.data_dir)")
    survey = survey_folder(config.data.data_dir)
    given: dict[str, Any] = layer.get("data") or {}  # a mapping: from_dict took it
    data = {"image_size": survey.image_size, "channels": survey.channels, **given}
    model: dict[str, Any] = {}
    if config.data.labels_from_subfolders and "num_classes" not in (layer.get("model") or {}):
        if len(survey.classes) < 2:
            raise DDPMError(
                f"--labels-from-subfolders needs images in at least 2 sub-folders of "
                f"{config.data.data_dir} (one per class); found {len(survey.classes)}"
            )
        model["num_classes"] = len(survey.classes)
    return from_dict(_merge(layer, {"data": data, "model": model}), base=base), survey


def _describe_choice(config: RunConfig, survey: FolderSurvey, device: torch.device) -> list[str]:
    """What `ddpm train` picked for a folder: the data's size and channels, and the U-Net with
    its parameter count and a measured first estimate of training images/s here."""
    from ..bench import estimate_training_rate
    from ..resources import count_parameters

    d, m = config.data, config.model
    lines = [
        f"data: {survey.describe()} -> trained at {d.image_size}x{d.image_size}, "
        f"{d.channels} channel{'s' if d.channels > 1 else ''} (--image-size, --channels to change)"
    ]
    if d.labels_from_subfolders:
        lines.append(f"classes: {len(survey.classes)} sub-folders ({', '.join(survey.classes[:10])}"
                     f"{', ...' if len(survey.classes) > 10 else ''})")  # fmt: skip
    batch = min(16, config.train.batch_size)
    rate = estimate_training_rate(config, device, batch_size=batch)
    lines.append(
        f"model ({'model.preset=auto' if m.preset == 'auto' else 'as configured'}): base "
        f"{m.base_channels} channels x {list(m.channel_mult)}, {m.num_res_blocks} {m.block} "
        f"block{'s' if m.num_res_blocks > 1 else ''} per level, attention at {list(m.attention_resolutions)}"
        f"{', linear attention elsewhere' if m.linear_attention else ''}: "
        f"{count_parameters(config) / 1e6:.2f} M parameters; about {rate:.0f} training "
        f"images/s here (a few steps timed at batch {batch})"
    )
    return lines


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
        if (
            args.dataset
            or args.preset
            or args.config
            or args.out
            or args.overwrite
            or (args.data_dir or args.image_size or args.channels or args.labels_from_subfolders)
        ):
            raise DDPMError(
                "--resume takes the run's own folder and config; only --set may change safe keys"
            )
        config, run_dir, survey = _resume_config(args), Path(args.resume), None
    else:
        if not (args.dataset or args.preset or args.data_dir) or not args.out:
            raise DDPMError(
                "train needs --dataset NAME, --preset NAME or --data-dir DIR, and --out DIR"
            )
        (config, survey), run_dir = _resolve_train_config(args), Path(args.out)
    device = resolve_device(args.device)
    estimate, memory = check_training_fits(config, device)  # before anything is allocated
    check_output_folder(run_dir, "run folder")
    if not args.resume and survey is not None:  # after the cheap checks: it times a few steps
        print("\n".join(_describe_choice(config, survey, device)), flush=True)
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
    train.add_argument(
        "--data-dir", metavar="DIR",
        help="where the dataset's files are; alone: a folder of images to train on (--dataset "
        "folder: size and channels read off the images, a U-Net sized for them)",
    )  # fmt: skip
    train.add_argument(
        "--image-size", type=positive_int, default=None, metavar="N",
        help="train at NxN (default: the dataset's; a folder: its most common size, rounded)",
    )  # fmt: skip
    train.add_argument(
        "--channels", type=int, choices=(1, 3), default=None,
        help="1 (grey) or 3 (RGB) (default: the dataset's; a folder: RGB unless all are grey)",
    )  # fmt: skip
    train.add_argument(
        "--labels-from-subfolders", action="store_true",
        help="a folder: its first-level sub-folders are classes (a class-conditional model)",
    )  # fmt: skip
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
