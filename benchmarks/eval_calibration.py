"""Calibrate ddpm's metrics in a feature network's space, and check them against torch-fidelity.

1. Calibration: a random subset of the training split, untouched, blurred and noised, scored
   against the test split. A trustworthy FID is near 0 for the clean subset and rises
   monotonically with the corruption.
2. Agreement: the clean subset and the test split are written as PNG folders and scored by
   torch-fidelity's own command-line entry point (`fidelity`, run in a subprocess after
   `import ddpm.metrics.extractors` registers "ddpm-featnet"); FID and precision/recall must equal
   ddpm's to 1e-3 relative.

    python benchmarks/eval_calibration.py --features fashion-mnist --dataset fashion-mnist --n 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from ddpm.config import load_preset
from ddpm.data import load_dataset
from ddpm.metrics.extractors import FEATNET_EXTRACTOR, resolve_feature_space
from ddpm.metrics.fidelity import cached_reference_features, extract_features, fidelity_metrics

METRICS = ["fid", "kid", "pr", "is"]
TORCH_FIDELITY_CLI = (
    "import sys, ddpm.metrics.extractors as e; e.register(); "
    "from torch_fidelity.fidelity import main; sys.argv[0] = 'fidelity'; main()"
)


def corrupt(images: torch.Tensor, kind: str, level: float, seed: int = 0) -> torch.Tensor:
    """uint8 [N, C, H, W] -> blurred (Gaussian, sigma `level` pixels) or noised (Gaussian, std
    `level` grey levels of 255) uint8 images."""
    if kind == "clean":
        return images
    x = images.float()
    if kind == "blur":
        size = 2 * int(3 * level) + 1
        x = TF.gaussian_blur(x, kernel_size=[size, size], sigma=[level, level])
    else:
        x = x + level * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return x.round().clamp(0, 255).to(torch.uint8)


def write_pngs(images: torch.Tensor, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        array = image.permute(1, 2, 0).squeeze(-1).numpy()
        Image.fromarray(array).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--features", default="fashion-mnist")
    parser.add_argument("--n", type=int, default=10_000, help="training images per case")
    args = parser.parse_args()

    config = load_preset(args.dataset).data
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.n]
    subset = train.images[pick]
    space = resolve_feature_space(args.features)
    layers = ["features", "logits"]
    reference, _ = cached_reference_features(f"{args.dataset}-test", test.images, space, layers)
    print(f"feature space {space.label}; reference {args.dataset} test ({len(test)} images)")
    print(f"{'case':14s} {'FID':>9s} {'KID':>9s} {'precision':>9s} {'recall':>7s} {'IS':>6s}")
    cases = [("clean", 0)] + [("blur", s) for s in (0.5, 1.0, 2.0)]
    cases += [("noise", s) for s in (4, 8, 16, 32, 64)]
    fids: dict[str, list[float]] = {}
    for kind, level in cases:
        images = corrupt(subset, kind, level)
        features = extract_features(images, space, layers)
        values = {v.metric: v.value for v in fidelity_metrics(features, reference, METRICS, space)}
        fids.setdefault(kind, []).append(values["fid"])
        name = "train subset" if kind == "clean" else f"{kind} {level:g}"
        print(
            f"{name:14s} {values['fid']:9.3f} {values['kid']:9.5f} {values['precision']:9.3f} "
            f"{values['recall']:7.3f} {values['is']:6.2f}"
        )
    clean = fids["clean"][0]
    for kind in ("blur", "noise"):
        rising = all(a < b for a, b in zip([clean] + fids[kind], fids[kind]))
        print(f"FID rises monotonically with {kind}: {rising}")

    with tempfile.TemporaryDirectory() as tmp:
        write_pngs(subset, Path(tmp) / "subset")
        write_pngs(test.images, Path(tmp) / "test")
        started = time.perf_counter()
        command = [sys.executable, "-c", TORCH_FIDELITY_CLI, "--input1", f"{tmp}/subset"]
        command += ["--input2", f"{tmp}/test", "--fid", "--prc", "--cpu", "--json", "--silent"]
        command += ["--no-cache", "--save-cpu-ram", "--feature-extractor", FEATNET_EXTRACTOR]
        command += ["--feature-extractor-weights-path", str(space.weights_path)]
        theirs = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
        seconds = time.perf_counter() - started
    ours = {
        v.metric: v.value
        for v in fidelity_metrics(
            extract_features(subset, space, ["features"]), reference, ["fid", "pr"], space
        )
    }
    print(f"\ntorch-fidelity's own CLI on PNG folders ({seconds:.0f} s) vs ddpm:")
    for ours_key, their_key in [
        ("fid", "frechet_inception_distance"),
        ("precision", "precision"),
        ("recall", "recall"),
    ]:
        relative = abs(ours[ours_key] - theirs[their_key]) / max(abs(theirs[their_key]), 1e-12)
        print(
            f"  {ours_key:9s} torch-fidelity {theirs[their_key]:.6f}  ddpm {ours[ours_key]:.6f}  "
            f"relative difference {relative:.1e} ({'ok' if relative < 1e-3 else 'MISMATCH'})"
        )


if __name__ == "__main__":
    main()
