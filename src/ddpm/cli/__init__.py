"""The `ddpm` command line: train, sample, interpolate, sweep, bench. User errors print one line
and exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from ..config import (
    RESUMABLE_KEYS,
    RunConfig,
    diff_keys,
    from_dict,
    load_preset,
    load_yaml,
    parse_overrides,
    preset_names,
    to_dict,
)
from ..data import DATASETS
from ..devices import use_deterministic_algorithms
from ..errors import DDPMError
from ..output_paths import check_distinct, check_output_file, check_output_folder
from ..samplers import SAMPLERS
from ..schedules import SPACINGS
from .args import finite_float, positive_int, seed
from .eval import add_commands as add_eval_commands
from .interpolate import add_commands as add_sampling_commands
from .interpolate import add_guidance_options, add_network_options

log = logging.getLogger(__name__)
MAX_MESSAGE = 1000  # characters of an error line; longer ones are cut (a value shown in full)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(2, f"ddpm: error: {message} (see: {self.prog} --help)\n")


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
    from ..models import check_unet_config
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
    check_unet_config(
        config.model, image_size=config.data.image_size, in_channels=config.data.channels
    )
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
    )
    print(f"trained to step {result.step}, final loss {result.last_loss:.4f}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"samples:    {result.samples}")
    print(f"log:        {run_dir / 'log.csv'} (plot: {run_dir / 'loss.png'})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..generate import generate, load_run, resolve_spacing, to_uint8
    from ..metrics.sample_files import save_npz
    from ..resources import check_images_fit
    from ..viz import TrajectoryRecorder, save_grid, save_progressive
    from .interpolate import class_labels, sampler_summary

    out = Path(args.out)
    progressive = None
    if args.progressive is not None:
        progressive = Path(args.progressive or out.with_name(out.stem + "_progressive.png"))
    check_output_file(out, "sample grid (--out)", image=True)
    if progressive is not None:
        check_output_file(progressive, "progressive strip (--progressive)", image=True)
    if args.npz:
        check_output_file(args.npz, "sample file (--npz)")
    check_distinct({"--out": out, "--progressive": progressive, "--npz": args.npz})
    run = load_run(args.run, use_ema=not args.no_ema, device=resolve_device(args.device))
    check_images_fit(run.config, args.n)
    recorder = None
    if args.progressive is not None:
        recorder = TrajectoryRecorder(args.steps, num_frames=10, num_images=min(4, args.n))
    images = generate(
        run.net,
        run.schedule,
        run.config,
        n=args.n,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        spacing=args.spacing,
        batch_size=args.batch_size,
        labels=class_labels(args.class_label, args.n),
        guidance=args.guidance,
        precision=args.precision,
        compile=args.compile,
        callback=recorder,
        progress=not args.quiet,
    )
    spacing = resolve_spacing(args.sampler, run.config, args.spacing)
    print(sampler_summary(args.sampler, args.steps, spacing, guided=args.guidance != 1.0))
    print(f"grid: {save_grid(images, out)}")
    if recorder is not None:
        print(f"progressive denoising: {save_progressive(recorder, images, progressive)}")
    if args.npz:
        save_npz(to_uint8(images), args.npz)
        print(
            f"npz: {args.npz} (arr_0: uint8 {args.n}x{images.shape[2]}x{images.shape[3]}x{images.shape[1]})"
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import run_bench
    from ..devices import resolve_device
    from ..models import check_unet_config
    from ..resources import check_training_fits

    config = from_dict(parse_overrides(args.set), base=load_preset(args.preset))
    check_unet_config(
        config.model, image_size=config.data.image_size, in_channels=config.data.channels
    )
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


def cmd_presets(args: argparse.Namespace) -> int:
    from ..bench import model_size

    for name in preset_names():
        config = load_preset(name)
        size = model_size(config)
        d = config.data
        print(
            f"{name:16s} {size.parameters / 1e6:6.1f}M  {size.forward_gflop_per_image:8.3f} GFLOP/image  "
            f"{d.dataset} {d.channels}x{d.image_size}x{d.image_size}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddpm", description="Denoising diffusion probabilistic models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    device = dict(choices=["auto", "cpu", "cuda"], default="auto", help="where to run")

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
    train.add_argument("--device", **device)
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels, so a resumed run matches an uninterrupted one bit for bit",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    sample = sub.add_parser("sample", help="generate images from a run")
    sample.add_argument("--run", required=True, help="run folder or checkpoint file")
    sample.add_argument("--n", type=positive_int, default=64, help="number of images")
    sample.add_argument("--sampler", choices=sorted(SAMPLERS), default="ddim")
    sample.add_argument(
        "--steps", type=positive_int, default=50, help="number of timesteps to visit"
    )
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
    sample.add_argument("--out", default="samples.png", metavar="GRID.png")
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
    sample.add_argument("--device", **device)
    sample.add_argument("--quiet", action="store_true")
    sample.set_defaults(func=cmd_sample)
    add_sampling_commands(sub, device=device)
    add_eval_commands(sub, device=device)

    presets = sub.add_parser("presets", help="list the reference configurations")
    presets.set_defaults(func=cmd_presets)

    bench = sub.add_parser("bench", help="measure speed and size of a preset's model")
    bench.add_argument("--preset", default="digits", help=f"one of: {', '.join(preset_names())}")
    bench.add_argument("--batch", type=positive_int, default=64)
    bench.add_argument("--train-steps", type=positive_int, default=20)
    bench.add_argument("--sample-steps", type=positive_int, default=50)
    bench.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    bench.add_argument("--device", **device)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="ddpm: %(message)s"
    )
    try:
        return args.func(args)
    except DDPMError as error:
        from ..train.signals import TrainingStopped

        message = str(error)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        print(
            f"ddpm: {'stopped' if isinstance(error, TrainingStopped) else 'error'}: {message}",
            file=sys.stderr,
        )
        return 130 if isinstance(error, TrainingStopped) else 2
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130
