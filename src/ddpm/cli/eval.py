"""`ddpm eval`: FID, IS, KID, precision/recall of a run's samples or a samples file, bits/dim and
validation loss of a run (ddpm.evaluate); rows printed and appended to metrics.csv
(ddpm.eval_csv). Here: the flags, and every check of them before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.cache import cache_dir
from ..errors import DDPMError
from ..output_paths import check_output_folder
from ..resources import check_images_fit
from ..samplers import SAMPLERS
from ..schedules import SPACINGS
from .args import (
    add_device_option,
    add_guidance_options,
    add_network_options,
    add_sampler_options,
    data_config,
    positive_int,
    sample_from_flags,
    seed,
)
from .run_option import add_run_options


def cmd_eval(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..eval_csv import format_table, read_metrics, write_rows
    from ..eval_samples import SampleRequest
    from ..evaluate import MODEL_METRICS, BpdSettings, Reference, evaluate, parse_metrics
    from ..loaded_run import load_run
    from ..metrics.extractors import resolve_feature_space

    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    if not args.run and not (args.dataset and args.samples):
        raise DDPMError("eval needs --run DIR, or --dataset NAME with --samples FILE|DIR")
    if not args.run and any(m in MODEL_METRICS for m in metrics):
        raise DDPMError("bpd and val-loss score a model: give --run DIR")
    if args.samples and (args.eta, args.class_label, args.guidance) != (None, None, None):
        raise DDPMError("--eta, --class and --guidance make new samples; not with --samples")
    out_dir = _out_dir(args)
    check_output_folder(out_dir, "eval folder (--out)")  # metrics.csv and the sample cache
    sample_list = [m for m in metrics if m not in MODEL_METRICS]
    if sample_list:  # reference features are cached there
        check_output_folder(cache_dir() / "fidelity", "feature cache ($XDG_CACHE_HOME/ddpm)")
    read_metrics(out_dir / "metrics.csv")  # a file we cannot add to: refused before the work
    run = load_run(args.run, use_ema=not args.no_ema, device=device) if args.run else None
    samples = args.samples
    if run is not None and sample_list and not args.samples:  # eval generates args.n images
        check_images_fit(run.config, args.n, option="--n")
        sample = sample_from_flags(args, run)
        samples = SampleRequest(sample, args.n, args.seed, args.class_label, args.guidance)
    if sample_list:  # a missing feature network or weights file: refused before the sampling
        resolve_feature_space(args.features, inception_weights=args.inception_weights)
    data = None if run else data_config(args.dataset, args.data_dir, None, None)
    rows = evaluate(
        metrics, run=run, samples=samples,
        reference=Reference(args.reference, args.reference_n, data),
        features=args.features, inception_weights=args.inception_weights,
        bpd=BpdSettings(args.bpd_n, args.bpd_timesteps, args.batch_size or 256,
                        args.precision or "fp32"),  # a measurement: fp32 unless asked otherwise
        out_dir=out_dir, device=device, quiet=args.quiet,
    )  # fmt: skip
    print(format_table(rows))
    print(f"written to {write_rows(rows, out_dir / 'metrics.csv')}")
    return 0


def _out_dir(args: argparse.Namespace) -> Path:
    """--out, else RUN/eval (a checkpoint file's run folder; a weights file's folder), else
    ./eval."""
    if args.run:
        run_dir = Path(args.run)
        if run_dir.is_file():
            folder = run_dir.parent
            run_dir = folder.parent if folder.name == "checkpoints" else folder
        return Path(args.out or run_dir / "eval")
    return Path(args.out or "eval")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm eval`."""
    evaluate = sub.add_parser("eval", help="FID, IS, KID, precision/recall, bits/dim, val loss")
    add_run_options(evaluate, required=False)
    evaluate.add_argument("--dataset", help="the reference dataset when scoring --samples alone")
    evaluate.add_argument("--data-dir", help="where --dataset's files are")
    evaluate.add_argument("--samples", metavar="FILE.npz|DIR", help="score these, not new samples")
    evaluate.add_argument(
        "--metrics", default="fid,is,kid,pr", help="any of fid,is,kid,pr,bpd,val-loss"
    )
    evaluate.add_argument("--n", type=positive_int, default=10_000, help="samples to generate")
    add_sampler_options(evaluate, sorted(SAMPLERS))
    evaluate.add_argument("--spacing", choices=SPACINGS, default=None)
    evaluate.add_argument("--seed", type=seed, default=0)
    evaluate.add_argument("--eta", type=float, default=None, help="DDIM eta (default: config)")
    add_guidance_options(evaluate)
    add_network_options(evaluate)
    evaluate.add_argument(
        "--features",
        default="inception",
        help="inception, or a feature network name or .safetensors file",
    )
    evaluate.add_argument(
        "--inception-weights", metavar="FILE.pth", help="torch-fidelity's Inception-v3 weights"
    )
    evaluate.add_argument(
        "--reference", choices=["test", "train"], default="test", help="reference split"
    )
    evaluate.add_argument(
        "--reference-n", type=positive_int, default=None,
        help="use only the first N reference images",
    )  # fmt: skip
    evaluate.add_argument(
        "--bpd-n", type=positive_int, default=256, help="test images for bits/dim"
    )
    evaluate.add_argument(
        "--bpd-timesteps",
        type=positive_int,
        default=None,
        help="estimate bits/dim from K stratified steps per image (default: all T)",
    )
    evaluate.add_argument("--batch-size", type=positive_int, default=None)
    evaluate.add_argument("--out", help="folder for metrics.csv (default: RUN/eval, or ./eval)")
    evaluate.add_argument(
        "--no-ema", action="store_true", help="score the raw weights, not the EMA"
    )
    add_device_option(evaluate)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(func=cmd_eval)
