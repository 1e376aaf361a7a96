"""`ddpm sample`: a grid of images from a run (and optionally an .npz of them and a
progressive-denoising strip)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import SampleConfig
from ..output_paths import check_distinct, check_output_file, check_output_folder
from ..samplers import SAMPLERS, num_function_evals
from ..schedules import SPACINGS
from .args import (
    add_device_option,
    add_guidance_options,
    add_network_options,
    add_sampler_options,
    finite_float,
    positive_int,
    sample_from_flags,
    seed,
)
from .run_option import add_run_options


def sampler_summary(sample: SampleConfig, *, guided: bool = False, nfe: int | None = None) -> str:
    """One line such as 'sampler: dpmpp-2m, 20 steps (uniform spacing), 20 NFE' (nfe: when it is
    not the sampler's own count for sample.steps)."""
    nfe = num_function_evals(sample.sampler, sample.steps) if nfe is None else nfe
    pairs = " (each a batched conditional + null pair)" if guided else ""
    return (
        f"sampler: {sample.sampler}, {sample.steps} steps ({sample.spacing} spacing), {nfe} NFE"
        f"{pairs}"
    )


def cmd_sample(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..generate import class_labels, generate
    from ..loaded_run import load_run
    from ..metrics.sample_files import save_npz
    from ..pixels import to_uint8
    from ..resources import check_images_fit
    from ..viz import TrajectoryRecorder, save_grid, save_images, save_progressive

    # the grid: --out, else samples.png unless --out-dir asks for one file per image instead
    out = None if args.out_dir and not args.out else Path(args.out or "samples.png")
    progressive = None
    if args.progressive is not None:
        named = out or Path("samples.png")
        progressive = Path(args.progressive or named.with_name(named.stem + "_progressive.png"))
    if out is not None:
        check_output_file(out, "sample grid (--out)", image=True)
    if args.out_dir:
        check_output_folder(args.out_dir, "image folder (--out-dir)")
    if progressive is not None:
        check_output_file(progressive, "progressive strip (--progressive)", image=True)
    if args.npz:
        check_output_file(args.npz, "sample file (--npz)")
    check_distinct({"--out": out, "--progressive": progressive, "--npz": args.npz})
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    check_images_fit(run.config, args.n, option="--n")
    sample = sample_from_flags(args, run)
    recorder = None
    if args.progressive is not None:
        recorder = TrajectoryRecorder(args.steps, num_frames=10, num_images=min(4, args.n))
    images = generate(
        run, sample, n=args.n, seed=args.seed, guidance=args.guidance, callback=recorder,
        labels=class_labels(args.class_label, args.n, run.net.config.num_classes),
        progress=not args.quiet,
    )  # fmt: skip
    # --class all: image i is of class i % K, so a grid of K columns has one class per column
    columns = run.net.config.num_classes if args.class_label == "all" else None
    print(sampler_summary(sample, guided=args.guidance != 1.0))
    if out is not None:
        print(f"grid: {save_grid(images, out, nrow=columns)}")
    if args.out_dir:
        written = save_images(images, args.out_dir)
        print(f"images: {len(written)} PNGs in {args.out_dir} ({written[0].name} ...)")
    if recorder is not None and progressive is not None:
        print(f"progressive denoising: {save_progressive(recorder, images, progressive)}")
    if args.npz:
        save_npz(to_uint8(images), args.npz)
        print(
            f"npz: {args.npz} (arr_0: uint8 {args.n}x{images.shape[2]}x{images.shape[3]}x{images.shape[1]})"
        )
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm sample`."""
    sample = sub.add_parser("sample", help="generate images from a run")
    add_run_options(sample, required=True)
    sample.add_argument("--n", type=positive_int, default=64, help="number of images")
    add_sampler_options(sample, sorted(SAMPLERS))
    sample.add_argument("--eta", type=finite_float, default=None, help="DDIM eta (default: config)")
    sample.add_argument(
        "--spacing",
        choices=SPACINGS,
        default=None,
        help="timestep spacing (default: the sampler's own, heun: karras; others: sample.spacing)",
    )
    add_guidance_options(sample)
    add_network_options(sample)
    sample.add_argument("--seed", type=seed, default=0, help="0 <= seed < 2**63")
    sample.add_argument(
        "--out", default=None, metavar="GRID.png",
        help="the grid (default: samples.png, none when only --out-dir is given)",
    )  # fmt: skip
    sample.add_argument(
        "--out-dir", default=None, metavar="DIR",
        help="also write each image as its own PNG: DIR/000000.png, 000001.png, ...",
    )  # fmt: skip
    sample.add_argument("--npz", metavar="FILE.npz", help="also write arr_0: uint8 [N, H, W, C]")
    sample.add_argument(
        "--progressive",
        nargs="?",
        const="",
        metavar="STRIP.png",
        help="also write a progressive-denoising strip",
    )
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    sample.add_argument("--batch-size", type=positive_int, default=None)
    add_device_option(sample)
    sample.add_argument("--quiet", action="store_true")
    sample.set_defaults(func=cmd_sample)
