"""`ddpm inpaint` (fill what a mask leaves out) and `ddpm edit` (SDEdit image-to-image): a run
applied to a user's images (ddpm.editing), one command each, sharing their flags and outputs.

Outputs: a grid with one row per input image (the input, for inpaint its mask, then the n
results), and optionally each result as a PNG (--out-dir: STEM-00.png, STEM-01.png, ...) and an
.npz (arr_0: uint8 [N n, H, W, C], image-major)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import DDPMError
from ..output_paths import check_distinct, check_output_file, check_output_folder
from ..safe_text import printable
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

if TYPE_CHECKING:
    from ..config import SampleConfig
    from ..image_inputs import InputImages
    from ..loaded_run import LoadedRun

REPAINT_STEPS = 250  # RePaint's T (Lugmayr et al. 2022, Sec. 5): --resample without --steps


def _check_outputs(args: argparse.Namespace) -> None:
    check_output_file(args.out, "grid (--out)", image=True)
    if args.out_dir:
        check_output_folder(args.out_dir, "image folder (--out-dir)")
    if args.npz:
        check_output_file(args.npz, "result file (--npz)")
    check_distinct({"--out": Path(args.out), "--npz": args.npz})


def result_names(names: list[str], n: int) -> list[str]:
    """--out-dir's file stems, image-major: STEM-00 ... STEM-{n-1} per input, its folder path
    flattened with '_' (sub/c.png -> sub_c-00); DDPMError when two inputs would write the same
    files (a.png and a.jpg, sub/c.png and sub_c.png; compared case-blind for file systems that
    are), which would silently overwrite one's results with the other's."""
    stems = [Path(name).with_suffix("").as_posix().replace("/", "_") for name in names]
    seen: dict[str, str] = {}
    for name, stem in zip(names, stems):
        if stem.casefold() in seen:
            raise DDPMError(
                f"--out-dir: {printable(seen[stem.casefold()])} and {printable(name)} would both "
                f"be written as {printable(stem)}-00.png, ...: rename one of them"
            )
        seen[stem.casefold()] = name
    return [f"{stem}-{j:02d}" for stem in stems for j in range(n)]


def _prepare(args: argparse.Namespace) -> tuple[LoadedRun, InputImages]:
    """Check the outputs, load the run and read --image -> (run, images)."""
    from ..devices import resolve_device
    from ..image_inputs import read_images
    from ..loaded_run import load_run
    from ..resources import check_images_fit

    _check_outputs(args)
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    data = run.config.data
    images = read_images(
        args.image, size=data.image_size, channels=data.channels, resize=args.resize,
        convert=args.convert,
    )  # fmt: skip
    if args.out_dir:  # before any sampling: two inputs must not write the same files
        result_names(images.names, args.n)
    check_images_fit(run.config, len(images.names) * args.n, option="--n x images")
    return run, images


def _sample_settings(
    args: argparse.Namespace, run: LoadedRun, total: int
) -> tuple[SampleConfig, torch.Tensor | None]:
    """The SampleConfig and labels of the flags (checked as `ddpm sample` checks them)."""
    from ..generate import class_labels

    sample = sample_from_flags(args, run)
    return sample, class_labels(args.class_label, total, run.net.config.num_classes)


def _write(
    args: argparse.Namespace,
    inputs: InputImages,
    columns: list[torch.Tensor],
    results: torch.Tensor,
) -> None:
    """The grid (a row per input: `columns` then its n results), --out-dir and --npz."""
    from ..metrics.sample_files import save_npz
    from ..pixels import to_uint8
    from ..viz import save_grid, save_images

    n = args.n
    rows = [torch.cat([*(c[i : i + 1] for c in columns), results[i * n : (i + 1) * n]])
            for i in range(len(inputs.names))]  # fmt: skip
    print(f"grid: {save_grid(torch.cat(rows), args.out, nrow=len(columns) + n)}")
    if args.out_dir:
        written = save_images(results, args.out_dir, names=result_names(inputs.names, n))
        print(f"images: {len(written)} PNGs in {args.out_dir} ({written[0].name} ...)")
    if args.npz:
        save_npz(to_uint8(results), args.npz)
        h, w, c = results.shape[2], results.shape[3], results.shape[1]
        print(f"npz: {args.npz} (arr_0: uint8 {results.shape[0]}x{h}x{w}x{c}, image-major)")


def cmd_inpaint(args: argparse.Namespace) -> int:
    from ..editing import inpaint
    from ..pixels import from_uint8
    from .sample import sampler_summary

    if args.resample > 1:
        if args.sampler not in (None, "ddpm"):
            raise DDPMError(f"--resample (RePaint) needs --sampler ddpm, not {args.sampler}")
        args.sampler = "ddpm"
    from ..image_inputs import read_masks

    run, inputs = _prepare(args)
    data = run.config.data
    keep = read_masks(args.mask, inputs, size=data.image_size, resize=args.resize)
    if args.resample > 1:  # RePaint's 250 steps unless asked, at most the run's T
        args.steps = args.steps or min(REPAINT_STEPS, run.schedule.num_timesteps)
        if args.jump >= args.steps:
            raise DDPMError(f"--jump must be below --steps ({args.steps}), got {args.jump}")
    total = len(inputs.names) * args.n
    sample, labels = _sample_settings(args, run, total)
    images = from_uint8(inputs.pixels)
    results = inpaint(
        run, images, keep, n=args.n, seed=args.seed, sample=sample, resample=args.resample,
        jump=args.jump, labels=labels, guidance=args.guidance, progress=not args.quiet,
    )  # fmt: skip
    nfe = num_function_evals(sample.sampler, sample.steps, resample=args.resample, jump=args.jump)
    method = (
        f"RePaint (resample {args.resample}, jump {args.jump})"
        if args.resample > 1
        else "replacement"
    )
    print(
        f"{sampler_summary(sample, guided=args.guidance != 1.0, nfe=nfe)}; inpainting by {method}"
    )
    shown_mask = (keep.float() * 2 - 1).expand_as(images)  # white: kept
    _write(args, inputs, [images, shown_mask], results)
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from ..conditioning import edit_timestep
    from ..editing import edit
    from ..pixels import from_uint8
    from .sample import sampler_summary

    run, inputs = _prepare(args)
    total = len(inputs.names) * args.n
    sample, labels = _sample_settings(args, run, total)
    images = from_uint8(inputs.pixels)
    results = edit(
        run, images, strength=args.strength, n=args.n, seed=args.seed, sample=sample,
        labels=labels, guidance=args.guidance, progress=not args.quiet,
    )  # fmt: skip
    t = edit_timestep(run.schedule, args.strength)
    if t < 0:
        print(f"strength {args.strength} noises to no timestep (under 1/T): the images are "
              f"returned unchanged, no network evaluation")  # fmt: skip
    else:
        taken = dataclasses.replace(sample, steps=min(sample.steps, t + 1))  # at most t + 1
        print(f"{sampler_summary(taken, guided=args.guidance != 1.0)}; "
              f"SDEdit from t = {t} of {run.schedule.num_timesteps}")  # fmt: skip
    _write(args, inputs, [images], results)
    return 0


def _common_options(parser: argparse.ArgumentParser, *, out: str) -> None:
    add_run_options(parser, required=True)
    parser.add_argument("--image", required=True, metavar="FILE|DIR",
                        help="an image, or a folder of images (each gets --n results)")  # fmt: skip
    parser.add_argument("--n", type=positive_int, default=4, help="results per image")
    add_sampler_options(parser, sorted(SAMPLERS))
    parser.add_argument("--eta", type=finite_float, default=None, help="DDIM eta (default: config)")
    parser.add_argument("--spacing", choices=SPACINGS, default=None,
                        help="timestep spacing (default: the sampler's own, as ddpm sample)")  # fmt: skip
    add_guidance_options(parser)
    add_network_options(parser)
    parser.add_argument("--seed", type=seed, default=0, help="0 <= seed < 2**63")
    parser.add_argument("--resize", action="store_true",
                        help="resize images (and masks) of another size to the run's, as "
                        "training does (default: refuse them)")  # fmt: skip
    parser.add_argument("--convert", action="store_true",
                        help="convert colour images for a grey run (luminance) or grey ones for a "
                        "colour run (default: refuse them)")  # fmt: skip
    parser.add_argument("--out", default=out, metavar="GRID.png",
                        help=f"the grid: a row per image, then its results (default: {out})")  # fmt: skip
    parser.add_argument("--out-dir", default=None, metavar="DIR",
                        help="also write each result as a PNG: DIR/STEM-00.png, ...")  # fmt: skip
    parser.add_argument("--npz", metavar="FILE.npz",
                        help="also write arr_0: uint8 [images x n, H, W, C], image-major")  # fmt: skip
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    add_device_option(parser)
    parser.add_argument("--quiet", action="store_true")


def _strength(text: str) -> float:
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm inpaint` and `ddpm edit`."""
    inpaint = sub.add_parser("inpaint", help="fill the masked part of images with a run")
    _common_options(inpaint, out="inpaint.png")
    inpaint.add_argument("--mask", required=True, metavar="FILE|DIR",
                         help="white (>= 128) keeps the pixel, black generates it; one file for "
                         "every image or a folder with one per image (same names)")  # fmt: skip
    inpaint.add_argument("--resample", type=positive_int, default=1, metavar="R",
                         help="RePaint (Lugmayr et al. 2022): go back --jump steps R - 1 times "
                         f"every --jump steps; needs the ddpm sampler (default steps then "
                         f"{REPAINT_STEPS}); 1: replacement only, any sampler (default)")  # fmt: skip
    inpaint.add_argument("--jump", type=positive_int, default=10, metavar="J",
                         help="RePaint's jump length in steps (default 10, the paper's)")  # fmt: skip
    inpaint.set_defaults(func=cmd_inpaint)
    edit = sub.add_parser("edit", help="SDEdit: noise images part way and denoise them")
    _common_options(edit, out="edit.png")
    edit.add_argument("--strength", type=_strength, default=0.5, metavar="S",
                      help="how far to noise, 0..1: t = round(S T) - 1; 0 returns the image, 1 "
                      "ignores it (default 0.5)")  # fmt: skip
    edit.set_defaults(func=cmd_edit)
