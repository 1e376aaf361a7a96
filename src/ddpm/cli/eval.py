"""`ddpm eval`: FID, IS, KID, precision/recall of a run's samples or a samples file, bits/dim and
validation loss of a run; rows appended to metrics.csv (ddpm.evaluate)."""

from __future__ import annotations

import argparse
import time
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
    data_config,
    positive_int,
    seed,
)


def _generation_key(args: argparse.Namespace, run):
    """The cache key of the samples these options make (ddpm.eval_samples); refuses bad
    --eta/--class/--guidance before any work."""
    from ..eval_samples import generation_key

    return generation_key(
        run, sampler=args.sampler, steps=args.steps, spacing=args.spacing, eta=args.eta,
        guidance=args.guidance, class_label=args.class_label, precision=args.precision,
        compile=args.compile, seed=args.seed, n=args.n,
    )  # fmt: skip


def _generated_samples(args: argparse.Namespace, run, key, out_dir: Path):
    """Generate the samples `key` describes (or reuse the file an eval with the same key wrote)
    -> (uint8 images [N, C, H, W], the .npz they are in)."""
    from ..generate import generate, to_uint8
    from ..metrics.sample_files import load_samples, save_npz
    from .sample import class_labels

    path = out_dir / "samples" / key.file_name()
    if path.is_file():
        print(f"samples: reusing {path}")
        return load_samples(path), path
    started = time.perf_counter()
    images = generate(
        run.net, run.schedule, run.config, n=key.n, seed=key.seed, sampler=key.sampler,
        steps=key.steps, eta=key.eta, spacing=key.spacing, batch_size=args.batch_size,
        labels=class_labels(key.class_label, key.n), guidance=key.guidance,
        precision=key.precision, compile=key.compile, progress=not args.quiet,
    )  # fmt: skip
    images = to_uint8(images)
    save_npz(images, path)
    print(f"samples: {key.n} generated in {time.perf_counter() - started:.0f} s -> {path}")
    return images, path


def _network_columns(run, precision: str) -> dict:
    """metrics.csv's columns for a number computed with the run's network."""
    device = next(run.net.parameters()).device.type
    checkpoint = str(run.checkpoint) if run.checkpoint else None
    return dict(ema=run.use_ema, precision=precision, device=device, checkpoint=checkpoint)


def _sample_columns(run, key) -> dict:
    """metrics.csv's columns for the run's own samples: every part of their key."""
    from ..samplers import num_function_evals

    return _network_columns(run, key.precision) | dict(
        sampler=key.sampler, steps=key.steps, nfe=num_function_evals(key.sampler, key.steps),
        seed=key.seed, spacing=key.spacing, eta=key.eta, guidance=key.guidance,
        class_label=key.class_label, compile=key.compile,
    )  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..evaluate import (
        MODEL_METRICS,
        EvalRow,
        format_table,
        parse_metrics,
        read_metrics,
        reference_set,
        sample_metrics,
        write_rows,
    )  # fmt: skip
    from ..generate import load_run
    from ..metrics.extractors import resolve_feature_space
    from ..metrics.sample_files import load_samples

    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    if not args.run and not (args.dataset and args.samples):
        raise DDPMError("eval needs --run DIR, or --dataset NAME with --samples FILE|DIR")
    if not args.run and any(m in MODEL_METRICS for m in metrics):
        raise DDPMError("bpd and val-loss score a model: give --run DIR")
    if args.samples and (args.eta, args.class_label, args.guidance) != (None, None, 1.0):
        raise DDPMError("--eta, --class and --guidance make new samples; not with --samples")
    if args.run:
        run_dir = Path(args.run)
        out_dir = Path(
            args.out or (run_dir if run_dir.is_dir() else run_dir.parent.parent) / "eval"
        )
    else:
        out_dir = Path(args.out or "eval")
    check_output_folder(out_dir, "eval folder (--out)")  # metrics.csv and the sample cache
    sample_list = [m for m in metrics if m not in MODEL_METRICS]
    if sample_list:  # reference features are cached there
        check_output_folder(cache_dir() / "fidelity", "feature cache ($XDG_CACHE_HOME/ddpm)")
    read_metrics(out_dir / "metrics.csv")  # a file we cannot add to: refused before the work
    run = load_run(args.run, use_ema=not args.no_ema, device=device) if args.run else None
    if run is not None and sample_list and not args.samples:  # eval generates args.n images
        check_images_fit(run.config, args.n)
    key = _generation_key(args, run) if sample_list and not args.samples else None
    if sample_list:  # a missing feature network or weights file: refused before the sampling
        resolve_feature_space(args.features, inception_weights=args.inception_weights)
    if run is not None:
        data = run.config.data
    else:
        data = data_config(args.dataset, args.data_dir, None, None)
    reference = reference_set(data, args.reference, args.reference_n)
    ref_label = f"{data.dataset}:{args.reference}:{len(reference)}"
    step = run.step if run else None
    rows: list[EvalRow] = []
    if sample_list:
        if key is None:
            samples, source = load_samples(args.samples), args.samples
            made = dict(sampler=None, steps=None, nfe=None, seed=None)
        else:
            samples, source = _generated_samples(args, run, key, out_dir)
            made = _sample_columns(run, key)
        values, space = sample_metrics(
            samples, reference, f"{data.dataset}-{args.reference}", sample_list,
            features=args.features, inception_weights=args.inception_weights, device=device,
            quiet=args.quiet,
        )  # fmt: skip
        common = dict(feature_space=space, samples=str(source), n=len(samples), reference=ref_label)
        rows += [
            EvalRow(v.metric, v.value, v.spread, **common, **made, checkpoint_step=step)
            for v in values
        ]
    if "bpd" in metrics:
        rows.append(_bpd_row(args, run, reference, ref_label))
    if "val-loss" in metrics:
        rows.append(_val_loss_row(args, run, reference, ref_label))
    print(format_table(rows))
    print(f"written to {write_rows(rows, out_dir / 'metrics.csv')}")
    return 0


def _bpd_row(args: argparse.Namespace, run, reference, ref_label: str):
    from ..evaluate import EvalRow
    from ..metrics.likelihood import bits_per_dim
    from ..precision import resolve_precision

    images = reference.images[: args.bpd_n]
    T = run.schedule.num_timesteps
    per_image = T if args.bpd_timesteps is None else min(args.bpd_timesteps, T - 1) + 1
    started = time.perf_counter()
    precision = args.precision or "fp32"  # a measurement: fp32 unless asked otherwise
    with _progress(len(images) * per_image, "bits/dim", args.quiet) as bar:
        result = bits_per_dim(
            run, images, num_timesteps=args.bpd_timesteps, batch_size=args.batch_size or 256,
            precision=precision, progress=bar.update,
        )  # fmt: skip
    how = (
        f"all {T} terms"
        if result.exhaustive
        else f"{result.num_timesteps} of {T} terms per image (stratified estimate of the sum)"
    )
    print(
        f"bits/dim: {result.mean:.4f} +- {result.std_error:.4f} (standard error) over "
        f"{result.num_images} images, {how}; prior {result.prior:.2e}, decoder "
        f"{result.decoder:.4f}, KL terms {result.kl_terms:.4f} ({time.perf_counter() - started:.0f} s)"
    )
    terms = "" if result.exhaustive else f", {result.num_timesteps}/{T} t"
    device = next(run.net.parameters()).device
    return EvalRow(
        "bpd", result.mean, result.std_error, feature_space="-",
        samples=f"{args.reference} split{terms}", sampler=None, steps=None, nfe=None,
        n=result.num_images, reference=ref_label, seed=None, checkpoint_step=run.step,
        **_network_columns(run, resolve_precision(precision, device)),
    )  # fmt: skip


def _val_loss_row(args: argparse.Namespace, run, reference, ref_label: str):
    from ..evaluate import EvalRow
    from ..train.validation import validation_loss

    loss = validation_loss(run.net, reference, run.config, num_images=len(reference))
    return EvalRow(
        "val-loss", loss, None, feature_space="-", samples=f"{args.reference} split",
        sampler=None, steps=None, nfe=None, n=len(reference), reference=ref_label, seed=None,
        checkpoint_step=run.step, **_network_columns(run, "fp32"),  # validation runs in fp32
    )  # fmt: skip


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img-step", disable=quiet, leave=False)


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register `ddpm eval`."""
    evaluate = sub.add_parser("eval", help="FID, IS, KID, precision/recall, bits/dim, val loss")
    evaluate.add_argument("--run", help="run folder or checkpoint file")
    evaluate.add_argument("--dataset", help="the reference dataset when scoring --samples alone")
    evaluate.add_argument("--data-dir", help="where --dataset's files are")
    evaluate.add_argument("--samples", metavar="FILE.npz|DIR", help="score these, not new samples")
    evaluate.add_argument(
        "--metrics", default="fid,is,kid,pr", help="any of fid,is,kid,pr,bpd,val-loss"
    )
    evaluate.add_argument("--n", type=positive_int, default=10_000, help="samples to generate")
    evaluate.add_argument("--sampler", choices=sorted(SAMPLERS), default="dpmpp-2m")
    evaluate.add_argument("--steps", type=positive_int, default=20)
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
