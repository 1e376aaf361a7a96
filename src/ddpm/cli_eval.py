"""The `ddpm eval` and `ddpm featnet` sub-commands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cli_args import positive_int, seed
from .cli_sampling import add_network_options
from .config import DataConfig, load_preset, preset_names
from .data import DATASETS
from .data.cache import cache_dir
from .errors import DDPMError
from .output_paths import check_output_file, check_output_folder
from .resources import check_images_fit
from .samplers import SAMPLERS
from .schedules import SPACINGS


def _data_config(dataset: str, data_dir: str | None, image_size: int | None, channels: int | None):
    """A dataset's preset data section (its native size), with the user's overrides."""
    if dataset not in DATASETS:
        raise DDPMError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    base = load_preset(dataset).data if dataset in preset_names() else DataConfig(dataset=dataset)
    if dataset == "folder" and (image_size is None or data_dir is None):
        raise DDPMError("--dataset folder needs --data-dir DIR and --image-size N")
    changes = {"data_dir": data_dir, "image_size": image_size, "channels": channels}
    return DataConfig(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def _generated_samples(args: argparse.Namespace, run, out_dir: Path):
    """Generate args.n samples (or reuse the file an identical earlier eval wrote) -> (uint8
    images [N, C, H, W], the .npz they are in)."""
    from .generate import generate, resolve_spacing, to_uint8
    from .metrics.sample_files import load_samples, save_npz
    from .precision import resolve_precision

    spacing = resolve_spacing(args.sampler, run.config, args.spacing)
    device = next(run.net.parameters()).device
    precision = resolve_precision(args.precision or run.config.sample.precision, device)
    name = (f"step{run.step}-{args.sampler}-{args.steps}-{spacing}-n{args.n}-seed{args.seed}"
            f"-{precision}.npz")  # fmt: skip
    path = out_dir / "samples" / name
    if path.is_file():
        print(f"samples: reusing {path}")
        return load_samples(path), path
    started = time.perf_counter()
    images = generate(
        run.net, run.schedule, run.config, n=args.n, seed=args.seed, sampler=args.sampler,
        steps=args.steps, spacing=spacing, batch_size=args.batch_size, precision=precision,
        compile=args.compile, progress=not args.quiet,
    )  # fmt: skip
    images = to_uint8(images)
    save_npz(images, path)
    print(f"samples: {args.n} generated in {time.perf_counter() - started:.0f} s -> {path}")
    return images, path


def cmd_eval(args: argparse.Namespace) -> int:
    from .devices import resolve_device
    from .evaluate import (
        MODEL_METRICS,
        EvalRow,
        format_table,
        parse_metrics,
        reference_set,
        sample_metrics,
        write_rows,
    )  # fmt: skip
    from .generate import load_run
    from .metrics.sample_files import load_samples
    from .samplers import num_function_evals

    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    if not args.run and not (args.dataset and args.samples):
        raise DDPMError("eval needs --run DIR, or --dataset NAME with --samples FILE|DIR")
    if not args.run and any(m in MODEL_METRICS for m in metrics):
        raise DDPMError("bpd and val-loss score a model: give --run DIR")
    if args.run:
        run_dir = Path(args.run)
        out_dir = Path(
            args.out or (run_dir if run_dir.is_dir() else run_dir.parent.parent) / "eval"
        )
    else:
        out_dir = Path(args.out or "eval")
    check_output_folder(out_dir, "eval folder (--out)")  # metrics.csv and the sample cache
    if any(m not in MODEL_METRICS for m in metrics):  # reference features are cached there
        check_output_folder(cache_dir() / "fidelity", "feature cache ($XDG_CACHE_HOME/ddpm)")
    run = load_run(args.run, use_ema=not args.no_ema, device=device) if args.run else None
    if run is not None:
        if not args.samples:  # eval generates args.n images
            check_images_fit(run.config, args.n)
        data_config = run.config.data
    else:
        data_config = _data_config(args.dataset, args.data_dir, None, None)
    reference = reference_set(data_config, args.reference, args.reference_n)
    ref_label = f"{data_config.dataset}:{args.reference}:{len(reference)}"
    step = run.step if run else None
    rows: list[EvalRow] = []
    sample_list = [m for m in metrics if m not in MODEL_METRICS]
    if sample_list:
        sampler = steps = nfe = seed = None
        if args.samples:
            samples, source = load_samples(args.samples), args.samples
        else:
            samples, source = _generated_samples(args, run, out_dir)
            sampler, steps, seed = args.sampler, args.steps, args.seed
            nfe = num_function_evals(args.sampler, args.steps)
        values, space = sample_metrics(
            samples, reference, f"{data_config.dataset}-{args.reference}", sample_list,
            features=args.features, inception_weights=args.inception_weights, device=device,
            quiet=args.quiet,
        )  # fmt: skip
        common = dict(feature_space=space, samples=str(source), sampler=sampler, steps=steps)
        common |= dict(nfe=nfe, n=len(samples), reference=ref_label, seed=seed)
        rows += [
            EvalRow(v.metric, v.value, v.spread, **common, checkpoint_step=step) for v in values
        ]
    if "bpd" in metrics:
        rows.append(_bpd_row(args, run, reference, ref_label))
    if "val-loss" in metrics:
        from .train.validation import validation_loss

        loss = validation_loss(run.net, reference, run.config, num_images=len(reference))
        rows.append(
            EvalRow(
                "val-loss",
                loss,
                None,
                feature_space="-",
                samples=f"{args.reference} split",
                sampler=None,
                steps=None,
                nfe=None,
                n=len(reference),
                reference=ref_label,
                seed=None,
                checkpoint_step=step,
            )  # fmt: skip
        )
    print(format_table(rows))
    print(f"written to {write_rows(rows, out_dir / 'metrics.csv')}")
    return 0


def _bpd_row(args: argparse.Namespace, run, reference, ref_label: str):
    from .evaluate import EvalRow
    from .metrics.likelihood import bits_per_dim

    images = reference.images[: args.bpd_n]
    T = run.schedule.num_timesteps
    per_image = T if args.bpd_timesteps is None else min(args.bpd_timesteps, T - 1) + 1
    started = time.perf_counter()
    d = run.config.diffusion
    with _progress(len(images) * per_image, "bits/dim", args.quiet) as bar:
        result = bits_per_dim(
            run.net, run.schedule, images, prediction=d.prediction, variance=d.variance,
            clip=d.clip_denoised, num_timesteps=args.bpd_timesteps, batch_size=args.batch_size or 256,
            precision=args.precision or "fp32", sigma_data=d.sigma_data, progress=bar.update,
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
    return EvalRow(
        "bpd", result.mean, result.std_error, feature_space="-",
        samples=f"{args.reference} split{terms}", sampler=None, steps=None, nfe=None,
        n=result.num_images, reference=ref_label, seed=None, checkpoint_step=run.step,
    )  # fmt: skip


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img-step", disable=quiet, leave=False)


def cmd_featnet_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .devices import resolve_device
    from .metrics.featnet import FeatNetInfo, accuracy, featnet_path, save_featnet, train_featnet

    config = _data_config(args.dataset, args.data_dir, args.image_size, args.channels)
    name = args.name or (
        args.dataset if args.dataset != "folder" else f"folder-{Path(args.data_dir).resolve().name}"
    )
    if not name or Path(name).name != name or name.startswith("."):
        raise DDPMError(f"--name must be a plain name (no folders, not hidden), got {name[:80]!r}")
    check_output_file(featnet_path(name), "feature network cache file")
    if featnet_path(name).is_file() and not args.force:
        raise DDPMError(
            f"feature network {name!r} exists ({featnet_path(name)}); numbers scored with it would "
            f"no longer be comparable with a new one: pass --force to replace it, or --name NEW"
        )
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    started = time.perf_counter()
    with _progress(args.epochs * -(-len(train) // args.batch_size), "featnet", args.quiet) as bar:
        net = train_featnet(
            train, epochs=args.epochs, batch_size=args.batch_size, random_flip=config.random_flip,
            seed=args.seed, device=resolve_device(args.device),
            progress=lambda step, loss: (bar.update(step - bar.n), bar.set_postfix(loss=f"{loss:.3f}")),
        )  # fmt: skip
    test_accuracy = accuracy(net, test)
    info = FeatNetInfo(
        name=name, dataset=args.dataset, image_size=config.image_size, channels=config.channels,
        num_classes=train.num_classes, widths=(32, 64, 128), test_accuracy=test_accuracy,
        epochs=args.epochs, train_images=len(train),
    )  # fmt: skip
    path = save_featnet(net.cpu(), info, featnet_path(name))
    print(
        f"feature network {name!r}: test accuracy {test_accuracy:.2%} on {len(test)} images, "
        f"trained {args.epochs} epochs on {len(train)} in {time.perf_counter() - started:.0f} s"
    )
    print(f"saved: {path}  (use: ddpm eval --features {name})")
    return 0


def cmd_featnet_list(args: argparse.Namespace) -> int:
    from .metrics.featnet import featnet_path, load_featnet

    folder = featnet_path("x").parent
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        print(
            f"no feature networks in {folder}; train one with `ddpm featnet train --dataset NAME`"
        )
    for file in files:
        try:
            _, info = load_featnet(str(file))
        except DDPMError as error:
            print(f"{file.stem:20s} unreadable: {error}")
            continue
        print(
            f"{info.name:20s} {info.dataset:14s} {info.channels}x{info.image_size}x{info.image_size}  "
            f"test accuracy {info.test_accuracy:.2%}  {info.feature_space}"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction, *, device: dict) -> None:
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
    evaluate.add_argument("--device", **device)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

    featnet = sub.add_parser("featnet", help="offline feature networks for FID without Inception")
    actions = featnet.add_subparsers(dest="action", required=True, parser_class=type(featnet))
    train = actions.add_parser("train", help="train one on a labelled dataset")
    train.add_argument("--dataset", required=True, help=f"{', '.join(sorted(DATASETS))}")
    train.add_argument("--data-dir")
    train.add_argument("--image-size", type=positive_int)
    train.add_argument("--channels", type=int, choices=[1, 3])
    train.add_argument("--name", help="cache name (default: the dataset's)")
    train.add_argument("--epochs", type=positive_int, default=4)
    train.add_argument("--batch-size", type=positive_int, default=128)
    train.add_argument("--seed", type=seed, default=0)
    train.add_argument("--force", action="store_true", help="replace an existing network")
    train.add_argument("--device", **device)
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=cmd_featnet_train)
    listing = actions.add_parser("list", help="the feature networks in the cache")
    listing.set_defaults(func=cmd_featnet_list)
