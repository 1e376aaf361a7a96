"""`ddpm import --from diffusers DIR --out RUN`: a diffusers UNet2DModel (a DDPMPipeline folder
or the model's own folder) as a ddpm run folder, to sample with ddpm's samplers and score with
`ddpm eval` (docs/interop.md)."""

from __future__ import annotations

import argparse

from ..output_paths import check_output_folder


def cmd_import(args: argparse.Namespace) -> int:
    from ..config import DataConfig
    from ..data import DATASETS
    from ..errors import DDPMError
    from ..interop.import_diffusers import import_diffusers

    check_output_folder(args.out, "run folder (--out)")
    data = None
    if args.dataset or args.data_dir:
        dataset = args.dataset or "folder"
        if dataset not in DATASETS:
            raise DDPMError(f"unknown --dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
        data = DataConfig(dataset=dataset, data_dir=args.data_dir)
    imported = import_diffusers(args.source, args.out, data=data)
    for note in imported.notes:
        print(f"note: {note}")
    m, d = imported.config.model, imported.config.diffusion
    print(
        f"imported {args.source} -> {args.out}: U-Net {m.base_channels}x{list(m.channel_mult)}, "
        f"{d.schedule} schedule T={d.num_timesteps}, {d.prediction} prediction; "
        f"checkpoint {imported.checkpoint}"
    )
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm import`."""
    imp = sub.add_parser("import", help="a diffusers UNet2DModel as a ddpm run folder")
    imp.add_argument("--from", dest="source_format", choices=["diffusers"], required=True,
                     help="the format of DIR")  # fmt: skip
    imp.add_argument("source", metavar="DIR", help="a DDPMPipeline folder or a UNet2DModel folder")
    imp.add_argument("--out", required=True, metavar="RUN", help="the new run folder")
    imp.add_argument("--dataset", help="the dataset to score against (default: folder)")
    imp.add_argument("--data-dir", help="where that dataset's files are (data.data_dir)")
    imp.set_defaults(func=cmd_import)
