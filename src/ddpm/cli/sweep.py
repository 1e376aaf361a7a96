"""`ddpm sweep`: quality and images/s against NFE for several samplers (ddpm.sweep); the
--samplers and --steps lists become its plan here."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..config import SamplerName
from ..data.cache import cache_dir
from ..errors import DDPMError
from ..output_paths import check_output_folder
from ..resources import check_images_fit
from ..samplers import SAMPLERS, is_sampler_name
from .args import (
    add_device_option,
    add_network_options,
    check_generation_flags,
    positive_int,
    seed,
)

COMPARED_SAMPLERS = ("ddim", "dpmpp-2m", "heun")  # --samplers' default, after the run's own


def parse_plan(samplers: str, steps: Sequence[int]) -> list[tuple[SamplerName, int]]:
    """'ddpm:1000,ddim,heun' and steps [10, 20] -> [(ddpm, 1000), (ddim, 10), (ddim, 20),
    (heun, 10), (heun, 20)]: NAME:K pins a sampler to K steps (a DDPM-1000 reference)."""
    plan = []
    for item in filter(None, (part.strip() for part in samplers.split(","))):
        name, _, pinned = item.partition(":")
        if not is_sampler_name(name):
            raise DDPMError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
        if pinned:
            if not pinned.isdigit() or int(pinned) < 1:
                raise DDPMError(f"--samplers: expected NAME or NAME:STEPS, got {item!r}")
            plan.append((name, int(pinned)))
        else:
            plan.extend((name, k) for k in steps)
    if not plan:
        raise DDPMError("--samplers needs at least one sampler")
    return plan


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..loaded_run import load_run
    from ..sweep import SweepRow, run_sweep, write_csv
    from ..viz import plot_sweep

    try:
        steps = [positive_int(k) for k in args.steps.split(",") if k.strip()]
    except argparse.ArgumentTypeError:
        raise DDPMError(
            f"--steps expects a comma-separated list of integers >= 1, got {args.steps[:80]!r}"
        ) from None
    plan = parse_plan(args.samplers, steps) if args.samplers else []
    run_path = Path(args.run)
    out = Path(args.out or (run_path if run_path.is_dir() else run_path.parent) / "sweep")
    check_output_folder(out, "sweep folder (--out)")
    if args.features:  # the reference features are cached there
        check_output_folder(cache_dir() / "fidelity", "feature cache ($XDG_CACHE_HOME/ddpm)")
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    if not args.samplers:  # the run's own sampler, then the usual comparison
        compared = dict.fromkeys([run.config.sample.sampler, *COMPARED_SAMPLERS])
        plan = parse_plan(",".join(compared), steps)
    check_images_fit(run.config, args.n, option="--n")
    if args.n < 2:
        raise DDPMError(f"--n must be >= 2 to fit a covariance, got {args.n}")
    for sampler, num_steps in plan:  # before the first point's work
        check_generation_flags(run, sampler=sampler, steps=num_steps)
    csv_path, png_path = out / "sweep.csv", out / "sweep.png"

    def save(rows: list[SweepRow]) -> None:
        write_csv(rows, csv_path)
        plot_sweep(rows, png_path)
        r = rows[-1]
        print(f"{r.sampler:>13s} {r.steps:5d} steps {r.nfe:5d} NFE  {r.metric} {r.score:9.4f}  "
              f"{r.images_per_s:8.2f} images/s  ({r.seconds:.1f} s)", flush=True)  # fmt: skip

    run_sweep(
        run, plan, n=args.n, seed=args.seed, batch_size=args.batch_size,
        precision=args.precision, compile=args.compile, progress=not args.quiet,
        features=args.features, on_row=save,
    )  # fmt: skip
    print(f"csv: {csv_path}\nplot: {png_path}")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm sweep`."""
    sweep = sub.add_parser("sweep", help="quality and images/s against NFE for several samplers")
    sweep.add_argument("--run", required=True, help="run folder or checkpoint file")
    sweep.add_argument(
        "--samplers", default=None,
        help=f"comma-separated, from {', '.join(SAMPLERS)}; NAME:K runs NAME at K steps only "
        f"(e.g. ddpm:1000 as the reference); default: the run's sample.sampler and "
        f"{', '.join(COMPARED_SAMPLERS)}",
    )  # fmt: skip
    sweep.add_argument("--steps", default="5,10,20,50,100", help="comma-separated step counts")
    sweep.add_argument("--n", type=positive_int, default=1000, help="images per point")
    sweep.add_argument("--seed", type=seed, default=0)
    sweep.add_argument("--features", help="score with FID in this feature space (inception or a "
                       "`ddpm featnet` name); default: pixel-FD")  # fmt: skip
    sweep.add_argument("--out", metavar="DIR", help="where sweep.csv and sweep.png go "
                       "(default: RUN/sweep)")  # fmt: skip
    sweep.add_argument("--batch-size", type=positive_int, default=None)
    add_network_options(sweep)
    sweep.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    add_device_option(sweep)
    sweep.add_argument("--quiet", action="store_true")
    sweep.set_defaults(func=cmd_sweep)
