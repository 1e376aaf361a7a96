"""`ddpm interpolate`: a strip of images between two seeds' starting noises (slerp), sampled with
a deterministic sampler."""

from __future__ import annotations

import argparse

from ..errors import DDPMError
from ..output_paths import check_output_file
from ..resources import check_images_fit
from ..samplers import DETERMINISTIC_SAMPLERS
from ..schedules import SPACINGS
from .args import (
    add_device_option,
    add_guidance_options,
    add_network_options,
    add_sampler_options,
    check_generation_flags,
    default_to_run,
    positive_int,
    seed,
)
from .sample import sampler_summary


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..generate import class_labels, generate, sample_config
    from ..interpolate import interpolation_noise
    from ..loaded_run import load_run
    from ..viz import save_grid

    if args.frames < 2:
        raise DDPMError(f"--frames must be >= 2, got {args.frames}")
    check_output_file(args.out, "interpolation strip (--out)", image=True)
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    if args.sampler is None and run.config.sample.sampler not in DETERMINISTIC_SAMPLERS:
        args.sampler = "dpmpp-2m"  # the run's is stochastic: the deterministic default
    default_to_run(args, run)
    check_images_fit(run.config, args.frames, option="--frames")
    check_generation_flags(
        run, sampler=args.sampler, steps=args.steps, class_label=args.class_label,
        guidance=args.guidance,
    )  # fmt: skip
    sample = sample_config(
        run.config, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
        eta=0.0 if args.sampler == "ddim" else None,  # deterministic: the noise decides all
        precision=args.precision, compile=args.compile,
    )  # fmt: skip
    c, size = run.config.data.channels, run.config.data.image_size
    noise = interpolation_noise(args.seeds, args.frames, (c, size, size))
    images = generate(
        run, sample, n=args.frames, noise=noise, labels=class_labels(args.class_label, args.frames),
        guidance=args.guidance, progress=not args.quiet,
    )  # fmt: skip
    print(sampler_summary(sample, guided=args.guidance != 1.0))
    print(f"interpolation strip: {save_grid(images, args.out, nrow=args.frames)}")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm interpolate`."""
    interp = sub.add_parser("interpolate", help="a strip of images between two seeds' noises")
    interp.add_argument("--run", required=True, help="run folder or checkpoint file")
    interp.add_argument("--seeds", type=seed, nargs=2, required=True, metavar=("A", "B"))
    interp.add_argument("--frames", type=positive_int, default=8, help="images in the strip")
    add_sampler_options(interp, DETERMINISTIC_SAMPLERS)
    interp.add_argument("--spacing", choices=SPACINGS, default=None)
    add_guidance_options(interp, every_class=False)
    add_network_options(interp)
    interp.add_argument("--out", default="interpolation.png", metavar="STRIP.png")
    interp.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    add_device_option(interp)
    interp.add_argument("--quiet", action="store_true")
    interp.set_defaults(func=cmd_interpolate)
