"""`ddpm interpolate`: a strip of images between two seeds' starting noises (slerp), sampled with
a deterministic sampler."""

from __future__ import annotations

import argparse

import torch

from ..errors import DDPMError
from ..output_paths import check_output_file
from ..resources import check_images_fit
from ..samplers import DETERMINISTIC_SAMPLERS
from ..schedules import SPACINGS
from .args import add_device_option, add_guidance_options, add_network_options, positive_int, seed
from .sample import class_labels, sampler_summary


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


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register `ddpm interpolate`."""
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
    add_device_option(interp)
    interp.add_argument("--quiet", action="store_true")
    interp.set_defaults(func=cmd_interpolate)
