"""The sampling sub-commands beyond `ddpm sample`: interpolate and sweep, and helpers `ddpm sample`
shares with them (class labels, the sampler summary line). User errors are DDPMErrors."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.cache import cache_dir
from ..errors import DDPMError
from ..output_paths import check_output_file, check_output_folder
from ..precision import PRECISIONS
from ..resources import check_images_fit
from ..samplers import DETERMINISTIC_SAMPLERS, SAMPLERS, num_function_evals
from ..schedules import SPACINGS
from .args import finite_float, int64, positive_int, seed


def add_guidance_options(parser: argparse.ArgumentParser) -> None:
    """--class and --guidance, as `ddpm sample` and `ddpm interpolate` take them."""
    parser.add_argument(
        "--class", dest="class_label", type=int64, default=None, metavar="N",
        help="class-conditional models: make every image of class N",
    )  # fmt: skip
    parser.add_argument(
        "--guidance", type=finite_float, default=1.0, metavar="W",
        help="classifier-free guidance scale (Ho & Salimans 2022): null + W (cond - null); "
        "1 is plain conditional sampling (default), larger is sharper and less varied",
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


def class_labels(class_label: int | None, n: int) -> torch.Tensor | None:
    """LongTensor [n] of one class, or None (unconditional); generate() checks it fits the model."""
    return None if class_label is None else torch.full((n,), class_label, dtype=torch.long)


def sampler_summary(sampler: str, steps: int, spacing: str, *, guided: bool = False) -> str:
    """One line such as 'sampler: dpmpp-2m, 20 steps (uniform spacing), 20 NFE'."""
    nfe = num_function_evals(sampler, steps)
    pairs = " (each a batched conditional + null pair)" if guided else ""
    return f"sampler: {sampler}, {steps} steps ({spacing} spacing), {nfe} NFE{pairs}"


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..generate import generate, initial_noise, load_run, resolve_spacing, slerp
    from ..viz import save_grid

    if args.sampler not in DETERMINISTIC_SAMPLERS:
        raise DDPMError(
            f"interpolate needs a deterministic sampler ({', '.join(DETERMINISTIC_SAMPLERS)}), "
            f"not {args.sampler}"
        )
    if args.frames < 2:
        raise DDPMError(f"--frames must be >= 2, got {args.frames}")
    check_output_file(args.out, "interpolation strip (--out)", image=True)
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    check_images_fit(run.config, args.frames, option="--frames")
    c, size = run.config.data.channels, run.config.data.image_size
    z0, z1 = (initial_noise(1, (c, size, size), seed=seed)[0] for seed in args.seeds)
    noise = slerp(z0, z1, torch.linspace(0, 1, args.frames))
    images = generate(
        run.net, run.schedule, run.config, n=args.frames, sampler=args.sampler, steps=args.steps,
        eta=0.0 if args.sampler == "ddim" else None, spacing=args.spacing, noise=noise,
        labels=class_labels(args.class_label, args.frames), guidance=args.guidance,
        precision=args.precision, compile=args.compile, progress=not args.quiet,
    )  # fmt: skip
    spacing = resolve_spacing(args.sampler, run.config, args.spacing)
    print(sampler_summary(args.sampler, args.steps, spacing, guided=args.guidance != 1.0))
    print(f"interpolation strip: {save_grid(images, args.out, nrow=args.frames)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..generate import load_run
    from ..sweep import parse_plan, run_sweep, write_csv
    from ..viz import plot_sweep

    try:
        steps = [positive_int(k) for k in args.steps.split(",") if k.strip()]
    except argparse.ArgumentTypeError:
        raise DDPMError(
            f"--steps expects a comma-separated list of integers >= 1, got {args.steps[:80]!r}"
        ) from None
    plan = parse_plan(args.samplers, steps)
    run_path = Path(args.run)
    out = Path(args.out or (run_path if run_path.is_dir() else run_path.parent) / "sweep")
    check_output_folder(out, "sweep folder (--out)")
    if args.features:  # the reference features are cached there
        check_output_folder(cache_dir() / "fidelity", "feature cache ($XDG_CACHE_HOME/ddpm)")
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    check_images_fit(run.config, args.n)
    csv_path, png_path = out / "sweep.csv", out / "sweep.png"

    def save(rows: list) -> None:
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


def add_commands(sub: argparse._SubParsersAction, *, device: dict) -> None:
    """Register `ddpm interpolate` and `ddpm sweep`."""
    interp = sub.add_parser("interpolate", help="a strip of images between two seeds' noises")
    interp.add_argument("--run", required=True, help="run folder or checkpoint file")
    interp.add_argument("--seeds", type=seed, nargs=2, required=True, metavar=("A", "B"))
    interp.add_argument("--frames", type=positive_int, default=8, help="images in the strip")
    interp.add_argument("--sampler", choices=DETERMINISTIC_SAMPLERS, default="ddim")
    interp.add_argument("--steps", type=positive_int, default=50)
    interp.add_argument("--spacing", choices=SPACINGS, default=None)
    add_guidance_options(interp)
    add_network_options(interp)
    interp.add_argument("--out", default="interpolation.png", metavar="STRIP.png")
    interp.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    interp.add_argument("--device", **device)
    interp.add_argument("--quiet", action="store_true")
    interp.set_defaults(func=cmd_interpolate)

    sweep = sub.add_parser("sweep", help="quality and images/s against NFE for several samplers")
    sweep.add_argument("--run", required=True, help="run folder or checkpoint file")
    sweep.add_argument(
        "--samplers", default="ddim,dpmpp-2m,heun",
        help=f"comma-separated, from {', '.join(SAMPLERS)}; NAME:K runs NAME at K steps only "
        "(e.g. ddpm:1000 as the reference)",
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
    sweep.add_argument("--device", **device)
    sweep.add_argument("--quiet", action="store_true")
    sweep.set_defaults(func=cmd_sweep)
