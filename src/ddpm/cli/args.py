"""What several sub-commands share: the argparse `type=` functions for numbers (a count of 0, a
negative batch size, a NaN scale or a 20-digit seed is argparse's one-line error, before any run
is loaded), the flags several commands take (--device, --class/--guidance, --precision/--compile)
and the checks of those flags that need the loaded run."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from ..config import DataConfig, load_preset, preset_names
from ..data import DATASETS
from ..errors import DDPMError, shorten
from ..precision import PRECISIONS

if TYPE_CHECKING:
    from ..config import SampleConfig
    from ..loaded_run import LoadedRun


def _integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {shorten(text)}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [-2**63, 2**63), got {shorten(value)}"
        )
    return value


def positive_int(text: str) -> int:
    """An integer >= 1: counts, steps, batch sizes."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def int64(text: str) -> int:
    """Any integer that fits in 64 bits (a class index: the command checks its range)."""
    return _integer(text)


def class_choice(text: str) -> int | Literal["all"]:
    """A class index (the command checks its range) or "all" (every class in turn)."""
    return "all" if text.strip().lower() == "all" else _integer(text)


def seed(text: str) -> int:
    """0 <= seed < 2**63: torch's generators take 64 bits, and a negative seed would give the
    images of its absolute value (ddpm.rng)."""
    try:
        value = _integer(text)
    except argparse.ArgumentTypeError:
        value = None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {shorten(text)}")
    return value


def finite_float(text: str) -> float:
    """A finite number: NaN or inf would pass range checks (every comparison with NaN is false)
    and turn the images into NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shorten(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device auto|cpu|cuda."""
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run"
    )


def add_guidance_options(parser: argparse.ArgumentParser, *, every_class: bool = True) -> None:
    """--class and --guidance, as `ddpm sample`, `interpolate`, `eval`, `inpaint` and `edit` take
    them; every_class: --class also takes "all" (image i of class i % num_classes)."""
    parser.add_argument(
        "--class", dest="class_label", type=class_choice if every_class else int64,
        default=None, metavar="N|all" if every_class else "N",
        help="class-conditional models: make every image of class N"
        + (" (all: image i of class i mod the number of classes)" if every_class else ""),
    )  # fmt: skip
    parser.add_argument(
        "--guidance", type=finite_float, default=None, metavar="W",
        help="classifier-free guidance scale (Ho & Salimans 2022): null + W (cond - null); "
        "1 is plain conditional sampling, larger is sharper and less varied (default: the "
        "run's sample.guidance, 1 unless its config says otherwise)",
    )  # fmt: skip


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """--precision (the network's autocast while sampling) and --compile (torch.compile it);
    defaults: the run's sample.precision and sample.compile."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help="network precision while sampling (default: the run's sample.precision, auto: "
        "bf16 on CPUs with AVX512-BF16/AMX and on bf16 GPUs, else fp32)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the network: about a minute first, then faster steps; pays for long "
        "jobs (default: the run's sample.compile; falls back to eager if compiling fails)",
    )  # fmt: skip


def data_config(
    dataset: str, data_dir: str | None, image_size: int | None, channels: int | None
) -> DataConfig:
    """--dataset's preset data section (its native size) with --data-dir, --image-size and
    --channels over it (`ddpm eval --samples`, `ddpm featnet train`); a folder's size and
    channels, unless given, as `ddpm train --data-dir` picks them (data.folder_survey)."""
    if dataset not in DATASETS:
        raise DDPMError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    base = load_preset(dataset).data if dataset in preset_names() else DataConfig(dataset=dataset)
    if dataset == "folder":
        if data_dir is None:
            raise DDPMError("--dataset folder needs --data-dir DIR")
        if image_size is None or channels is None:
            from ..data.folder_survey import survey_folder

            survey = survey_folder(data_dir)
            image_size = survey.image_size if image_size is None else image_size
            channels = survey.channels if channels is None else channels
    return dataclasses.replace(
        base,
        data_dir=base.data_dir if data_dir is None else data_dir,
        image_size=base.image_size if image_size is None else image_size,
        channels=base.channels if channels is None else channels,
    )


def default_to_run(args: argparse.Namespace, run: LoadedRun) -> None:
    """Fill --sampler and --steps, when not given, with the run's sample.sampler and sample.steps:
    every command that samples has the one default (DPM-Solver++ at 20 steps unless the run's
    config names another)."""
    if args.sampler is None:
        args.sampler = run.config.sample.sampler
    if args.steps is None:
        args.steps = run.config.sample.steps
    if getattr(args, "guidance", 1.0) is None:  # the run's guidance applies to a --class only
        args.guidance = run.config.sample.guidance if args.class_label is not None else 1.0


def sample_from_flags(args: argparse.Namespace, run: LoadedRun) -> SampleConfig:
    """The SampleConfig that --sampler, --steps, --eta, --spacing, --batch-size, --precision and
    --compile ask for on this run, as `ddpm sample`, `eval`, `inpaint` and `edit` take them: the
    run's defaults filled in (default_to_run, --guidance too), the flags checked
    (check_generation_flags), then ddpm.generate.sample_config."""
    from ..generate import sample_config

    default_to_run(args, run)
    check_generation_flags(
        run, sampler=args.sampler, steps=args.steps, eta=args.eta, class_label=args.class_label,
        guidance=args.guidance,
    )  # fmt: skip
    return sample_config(
        run.config, sampler=args.sampler, steps=args.steps, eta=args.eta, spacing=args.spacing,
        batch_size=args.batch_size, precision=args.precision, compile=args.compile,
    )  # fmt: skip


def add_sampler_options(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    """--sampler and --steps, defaulting to the run's (default_to_run)."""
    parser.add_argument(
        "--sampler", choices=choices, default=None,
        help="default: the run's sample.sampler (dpmpp-2m unless its config says otherwise)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=positive_int, default=None,
        help="number of timesteps to visit (default: the run's sample.steps, 20 unless its "
        "config says otherwise)",
    )  # fmt: skip


def check_generation_flags(
    run: LoadedRun,
    *,
    sampler: str,
    steps: int,
    eta: float | None = None,
    class_label: int | Literal["all"] | None = None,
    guidance: float = 1.0,
) -> None:
    """Refuse, naming the flag, what generate() would refuse for this run: a --class the model
    does not have, --guidance without --class, more --steps than the run's T, an --eta out of
    [0, 1] or given to another sampler than ddim. Before any sampling work."""
    num_classes = run.net.config.num_classes
    if class_label is None and guidance != 1.0:
        raise DDPMError("--guidance needs --class (classifier-free guidance towards a class)")
    if class_label is not None:
        if num_classes == 0:
            raise DDPMError(
                "--class needs a class-conditional model; this run has model.num_classes=0"
            )
        if class_label != "all" and not 0 <= class_label < num_classes:
            raise DDPMError(f"--class must be in 0..{num_classes - 1} for this model")
        if guidance < 0:
            raise DDPMError(f"--guidance must be >= 0, got {guidance}")
    T = run.schedule.num_timesteps
    if not 1 <= steps <= T:
        raise DDPMError(f"--steps must be between 1 and {T}, got {steps}")
    if eta is not None and sampler != "ddim":
        raise DDPMError(f"--eta applies to the ddim sampler only, not {sampler}")
    if eta is not None and not 0.0 <= eta <= 1.0:
        raise DDPMError(f"--eta must be in [0, 1], got {eta}")
