"""`ddpm export`: a run's EMA network as a diffusers DDPMPipeline folder or as a ddpm weights
file (EMA + config only), for sampling anywhere (docs/interop.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..output_paths import check_output_file, check_output_folder


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def cmd_export(args: argparse.Namespace) -> int:
    from ..errors import DDPMError
    from ..interop.export import check_export_folder, export_diffusers, export_weights
    from ..loaded_run import load_run

    out = Path(args.out)
    if args.format == "diffusers":
        check_output_folder(out, "export folder (--out)")
        check_export_folder(out)
    else:
        if out.suffix != ".safetensors":
            raise DDPMError(f"--out for --format safetensors names a .safetensors file, got {out}")
        check_output_file(out, "weights file (--out)")
    run = load_run(args.run)  # the EMA network, on the CPU
    if args.format == "diffusers":
        files = export_diffusers(run, out)
        print(f"diffusers DDPMPipeline (step {run.step}): {out}")
        for path in files:
            print(f"  {path.relative_to(out)} ({_mb(path)})")
        return 0
    written = export_weights(run, out)
    source = run.checkpoint
    compared = f"; the checkpoint {source} is {_mb(source)}" if source and source != written else ""
    print(f"weights (EMA + config, step {run.step}): {written} ({_mb(written)}{compared})")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm export`."""
    export = sub.add_parser("export", help="a run's EMA network for diffusers or as one file")
    export.add_argument("--run", required=True, help="run folder or checkpoint file")
    export.add_argument(
        "--format", choices=["diffusers", "safetensors"], required=True,
        help="diffusers: a DDPMPipeline folder (UNet2DModel + DDPMScheduler); safetensors: one "
        "file of EMA weights and config, for `ddpm sample --weights`",
    )  # fmt: skip
    export.add_argument("--out", required=True, metavar="DIR|FILE.safetensors")
    export.set_defaults(func=cmd_export)
