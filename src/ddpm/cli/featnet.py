"""`ddpm featnet train|list`: offline feature networks for FID without Inception."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from ..data import DATASETS
from ..errors import DDPMError
from ..output_paths import check_output_file
from .args import add_device_option, data_config, positive_int, seed


def cmd_featnet_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data import load_dataset
    from ..devices import resolve_device
    from ..metrics.featnet import (
        FeatNetInfo,
        accuracy,
        featnet_path,
        require_labels,
        save_featnet,
        train_featnet,
    )  # fmt: skip

    config = data_config(args.dataset, args.data_dir, args.image_size, args.channels)
    # a classifier learns the classes: a folder's come from its sub-folders
    config = dataclasses.replace(config, labels_from_subfolders=config.dataset == "folder")
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
    require_labels(train), require_labels(test)  # before training, not after it
    started = time.perf_counter()
    total = args.epochs * -(-len(train) // args.batch_size)
    with tqdm(total=total, desc="featnet", unit="img-step", disable=args.quiet, leave=False) as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}")

        net = train_featnet(
            train, epochs=args.epochs, batch_size=args.batch_size, random_flip=config.random_flip,
            seed=args.seed, device=resolve_device(args.device), progress=progress,
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
    from ..metrics.featnet import featnet_path, load_featnet

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


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm featnet train` and `ddpm featnet list`."""
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
    add_device_option(train)
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=cmd_featnet_train)
    listing = actions.add_parser("list", help="the feature networks in the cache")
    listing.set_defaults(func=cmd_featnet_list)
