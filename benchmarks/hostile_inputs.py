"""Hostile inputs (issue 15): replay each bad input through `python -m ddpm` and print a table.

    python benchmarks/hostile_inputs.py [--only SUBSTRING] [--json ROWS.json] [--timeout 120]
                                        [--memory-limit-gb 3] [--keep]

Each case crafts its files (small on disk) in its own folder under a temporary directory, runs
`python -m ddpm ...` there in a subprocess against this checkout's src/ (XDG_CACHE_HOME in the
case folder unless the case sets it) and records: exit code, wall seconds, the child's peak RSS,
stderr's first line (a traceback's last), and the files created (+), modified (~) and deleted (-)
in the case folder. A row is clean when the exit code is the expected one (2 for a refusal, 0 for
a warn-and-continue or ok case), stderr is one `ddpm: ` line (refusals) or holds the expected
`ddpm: ` warning (warn cases), there is no traceback and no raw control character, peak RSS is
under 1.5 GB, the case finished within its limit, no existing file outside the cache was modified
or deleted, and a refusal created no file outside the cache. Prints the machine, the table, the
reasons of each dirty row and "N/M clean"; exits 1 if any row is dirty. Sample and eval cases use
a tiny digits run (and a digits feature network) trained once at the start (about a minute).
The helpers live beside this script: hostile_craft.py (the files), hostile_runner.py (the runs).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hostile_craft, hostile_runner
import hostile_craft as hf  # noqa: E402
from hostile_runner import ROOT, Case, Outcome, Row, child_env, format_table, run_case  # noqa: E402
from hostile_runner import run_ddpm as _run_ddpm  # noqa: E402

TINY_MODEL = ["model.base_channels=8", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
              "model.attention_resolutions=[4]", "model.num_groups=4", "model.dropout=0.0"]  # fmt: skip
# one step of training and everything it writes (checkpoint, grid, validation loss), fast
ONE_STEP = [*TINY_MODEL, "train.num_steps=1", "train.batch_size=4", "train.warmup_steps=0",
            "train.log_every=1", "train.checkpoint_every=1", "train.sample_every=1",
            "train.num_sample_images=1", "train.val_images=4", "sample.steps=1"]  # fmt: skip
# the run that sample and eval cases use (tests/test_cli_sampling.py's settings)
RUN = [*TINY_MODEL, "train.num_steps=4", "train.batch_size=16", "train.log_every=2",
       "train.warmup_steps=2", "train.checkpoint_every=4", "train.sample_every=4",
       "train.num_sample_images=2", "sample.steps=3", "train.val_images=16"]  # fmt: skip
SAMPLE = ["sample", "--run", "run", "--n", "4", "--steps", "3", "--out", "grid.png", "--quiet"]
EVAL = ["eval", "--run", "run", "--metrics", "fid", "--n", "16", "--steps", "3", "--features",
        "featnet.safetensors", "--reference-n", "64", "--quiet"]  # fmt: skip


def sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def train(*pairs: str, dataset: str = "digits", base: list[str] = ONE_STEP) -> list[str]:
    """`ddpm train` into ./out with `base` settings, `pairs` last (later --set values win)."""
    return ["train", "--dataset", dataset, "--out", "out", "--quiet", *sets([*base, *pairs])]


def folder_with(*extra: tuple[str, Callable[[Path], None]]) -> Callable[[Path], None]:
    """A craft: imgs/ with 60 normal 8x8 images plus `extra` (name, writer(path)) files."""

    def craft(folder: Path) -> None:
        hf.normal_images(folder / "imgs")
        for name, write in extra:
            write(folder / "imgs" / name)

    return craft


def write_text(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def big_pngs(folder: Path) -> None:
    folder_with()(folder)
    for i in range(8):
        hf.huge_png(folder / "imgs" / f"big_{i}.png", 9400)


def no_stderr(outcome: Outcome) -> str:
    return f"unexpected stderr: {outcome.stderr.strip()[:80]!r}" if outcome.stderr.strip() else ""


def no_payload(outcome: Outcome) -> str:
    return "the payload ran (pwned.txt exists)" if (outcome.folder / "pwned.txt").exists() else ""


def fresh_samples(outcome: Outcome) -> str:
    """eval --no-ema must score new samples of the raw weights, not the EMA's from before: the
    two FID values (EMA, then raw weights, which differ after 4 steps) must differ."""
    if "reusing" in outcome.stdout:
        return "eval --no-ema reused the EMA eval's samples"
    values = []
    for path in sorted((outcome.folder / "run" / "eval").glob("metrics*.csv")):
        with open(path, newline="") as f:
            values += [row["value"] for row in csv.DictReader(f) if row.get("metric") == "fid"]
    if len(values) < 2:
        return f"{len(values)} fid rows in run/eval/metrics*.csv, expected 2"
    return f"--no-ema gave the EMA's FID ({values[-1]})" if values[-1] == values[-2] else ""


FIT = dict(base=[], dataset="digits")  # the default model and batch: what a user would run
CASES = [
    Case("control-folder", train("data.data_dir=imgs", dataset="folder"), "ok",
         craft=folder_with(), check=no_stderr, limit=90),
    # 1. decompression and allocation bombs in IDX files
    Case("idx-gzip-4gib", train("data.data_dir=idx", "data.image_size=8", "train.val_images=0",
                                dataset="fashion-mnist"), "refuse",
         craft=lambda f: hf.idx_gzip_bomb(f / "idx")),
    Case("idx-dims-overflow", train("data.data_dir=idx", "data.image_size=8",
                                    "train.val_images=0", dataset="fashion-mnist"), "refuse",
         craft=lambda f: hf.idx_overflow(f / "idx"), fast=True),
    # 2. YAML alias bomb
    Case("yaml-alias-bomb", ["train", "--dataset", "digits", "--out", "out", "--config",
                             "bomb.yaml", "--quiet"], "refuse",
         craft=lambda f: hf.yaml_alias_bomb(f / "bomb.yaml"), fast=True),
    # 3. huge PNGs among normal images: refused or downscaled, with a warning naming them
    Case("png-10000x10000", train("data.data_dir=imgs", "data.channels=3", dataset="folder"),
         "warn", craft=folder_with(("huge.png", lambda p: hf.huge_png(p, 10000))),
         warning=r"huge\.png", limit=90),
    Case("png-8x9400x9400", train("data.data_dir=imgs", "data.channels=3", dataset="folder"),
         "warn", craft=big_pngs, warning=r"big_\d\.png|large|pixels|downscal", limit=90),
    # 4. a CIFAR-10 batch that declares 200,000 images
    Case("cifar-200k-images", train("data.data_dir=.", "data.channels=3", "train.val_images=0",
                                    dataset="cifar10"), "refuse",
         craft=hf.cifar_batch_bomb, fast=True),
    # 5. configs that cannot fit
    Case("fit-image-size-2048", train("data.image_size=2048", "model.attention_resolutions=[]",
                                      **FIT), "refuse", fast=True),
    Case("fit-timesteps-1e9", train("diffusion.num_timesteps=1e9", **FIT), "refuse", fast=True),
    Case("fit-timesteps-10^9", train("diffusion.num_timesteps=1000000000", **FIT), "refuse",
         fast=True),
    Case("fit-base-channels-1e5", train("model.base_channels=100000", **FIT), "refuse",
         fast=True),
    # 6. silently wrong values
    Case("sample-steps-0", SAMPLE + ["--steps", "0"], "refuse", needs_run=True),
    Case("sample-batch-size-0", SAMPLE + ["--batch-size", "0"], "refuse", needs_run=True),
    Case("sample-batch-size--1", SAMPLE + ["--batch-size", "-1"], "refuse", needs_run=True),
    Case("dry-run-sampler-bogus", train("sample.sampler=bogus") + ["--dry-run"], "refuse",
         fast=True),
    Case("dry-run-steps-5000", train("sample.steps=5000") + ["--dry-run"], "refuse", fast=True),
    Case("train-weight-decay-nan", train("train.weight_decay=nan"), "refuse", fast=True),
    Case("train-weight-decay--1", train("train.weight_decay=-1"), "refuse", fast=True),
    Case("train-seed-20-digits", train("train.seed=12345678901234567890"), "refuse", fast=True),
    # 7. output paths
    Case("sample-out-directory", SAMPLE + ["--out", "shots"], "refuse", needs_run=True,
         craft=lambda f: (f / "shots").mkdir() or (f / "shots" / "keep.txt").write_text("mine")),
    Case("sample-out-no-extension", SAMPLE + ["--out", "grid"], "refuse", needs_run=True),
    Case("sample-out-under-file", SAMPLE + ["--out", "blocker/grid.png"], "refuse",
         needs_run=True, craft=write_text("blocker", "a regular file")),
    Case("train-out-is-a-file", ["train", "--dataset", "digits", "--out", "notes.txt", "--quiet",
                                 *sets(ONE_STEP)], "refuse",
         craft=write_text("notes.txt", "my notes\n"), fast=True),
    Case("eval-cache-under-file", EVAL, "refuse", needs_run=True, cache="blocker/cache",
         craft=write_text("blocker", "a regular file")),
    # 8. terminal safety
    Case("folder-escape-name", train("data.data_dir=imgs", dataset="folder"), "warn",
         craft=folder_with(("\x1b[31mred.png", hf.unreadable_png)),
         warning=r"(\\x1b|\\033|\\e|\^\[|\\u001b)\[31mred\.png", limit=90),
    Case("folder-1x1-image", train("data.data_dir=imgs", dataset="folder"), "warn",
         craft=folder_with(("tiny.png", hf.one_pixel_png)),
         warning=r"(?=.*\b1\b)(?=.*(small|upscal|enlarg))", limit=90),
    # 9. eval --no-ema after eval on the same run
    Case("eval-no-ema-after-ema", EVAL + ["--no-ema"], "ok", needs_run=True, before=EVAL,
         check=fresh_samples, limit=90),
    # more, where the issue is silent: one line, nothing lost
    Case("ckpt-truncated", SAMPLE, "refuse", needs_run=True,
         craft=lambda f: hf.truncate(f / "run" / "checkpoints" / "step_00000004.safetensors")),
    Case("ckpt-pickle-payload", SAMPLE[:2] + ["model.pt"] + SAMPLE[3:], "refuse",
         craft=lambda f: hf.pickle_checkpoint(f / "model.pt"), check=no_payload, fast=True),
    Case("resume-garbage-config", ["train", "--resume", "run", "--quiet", *sets([
             "train.num_steps=5", "train.lr_schedule=constant", "train.lr=1e-4"])], "warn",
         needs_run=True,
         craft=lambda f: (f / "run" / "config.json").write_text('{"train": {"lr": 1e-3,}}'),
         warning=r"config\.json", may_change=("run/checkpoints/", "run/samples/", "run/loss.png"),
         limit=90),
    Case("folder-empty", train("data.data_dir=imgs", dataset="folder"), "refuse",
         craft=lambda f: (f / "imgs").mkdir(), fast=True),
    Case("folder-non-image-png", train("data.data_dir=imgs", dataset="folder"), "warn",
         craft=folder_with(("notes.png", hf.unreadable_png)), warning=r"notes\.png", limit=90),
    Case("config-unknown-key", train("train.lrr=1e-4"), "refuse", fast=True),
    Case("config-python-tag", ["train", "--dataset", "digits", "--out", "out", "--config",
                               "evil.yaml"], "refuse", check=no_payload, fast=True,
         craft=write_text("evil.yaml", 'train: !!python/object/apply:os.system ["touch pwned.txt"]\n')),
    Case("sample-n-negative", SAMPLE + ["--n", "-1"], "refuse", needs_run=True),
    Case("sample-n-1e9", SAMPLE + ["--n", "1000000000"], "refuse", needs_run=True),
    Case("sample-steps-5000", SAMPLE + ["--steps", "5000"], "refuse", needs_run=True),
    Case("sample-seed-20-digits", SAMPLE + ["--seed", "12345678901234567890"], "refuse",
         needs_run=True),
    Case("sample-npz-under-file", SAMPLE + ["--npz", "blocker/s.npz"], "refuse", needs_run=True,
         craft=write_text("blocker", "a regular file")),
]  # fmt: skip


def prepare_shared(root: Path, *, need_run: bool, timeout: float, memory_limit: int) -> Path:
    """root/_shared: logs, matplotlib's cache and, when needed, the tiny run and featnet."""
    shared = root / "_shared"
    (shared / "logs").mkdir(parents=True, exist_ok=True)
    if need_run and not (shared / "run").is_dir():
        print("training the tiny digits run and feature network ...", file=sys.stderr, flush=True)
        steps = {"run": ["train", "--dataset", "digits", "--out", "run", "--quiet", *sets(RUN)],
                 "featnet": ["featnet", "train", "--dataset", "digits", "--epochs", "1",
                             "--quiet"]}  # fmt: skip
        for name, args in steps.items():
            _ddpm(args, shared, shared, name, timeout=max(timeout, 300), memory_limit=memory_limit)
        featnet = next((shared / "cache").rglob("digits.safetensors"))  # ddpm's featnet cache
        shutil.copy(featnet, shared)
    return shared


def _ddpm(args: list[str], folder: Path, shared: Path, name: str, *, timeout: float,
          memory_limit: int, cache: str = "cache") -> None:  # fmt: skip
    """A setup step in `folder` that must succeed (SystemExit with its stderr otherwise)."""
    logs = shared / "logs" / f"setup-{name}"
    code, _, _ = _run_ddpm(args, cwd=folder, env=child_env(folder, cache, shared), logs=logs,
                           timeout=timeout, memory_limit=memory_limit)  # fmt: skip
    if code != 0:
        err = Path(f"{logs}.err").read_text(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"setup `ddpm {' '.join(args[:2])}` failed ({code}): {' | '.join(err)}")


def run_one(case: Case, root: Path, shared: Path, *, timeout: float, memory_limit: int) -> Row:
    """Craft the case's folder root/NAME (a copy of the tiny run first if it needs one), run it."""
    folder = root / case.name
    folder.mkdir(parents=True)
    if case.needs_run:
        shutil.copytree(shared / "run", folder / "run")
        shutil.copy(shared / "digits.safetensors", folder / "featnet.safetensors")
    if case.craft is not None:
        case.craft(folder)
    if case.before:
        _ddpm(case.before, folder, shared, case.name, timeout=timeout, memory_limit=memory_limit,
              cache=case.cache)  # fmt: skip
    return run_case(case, folder, shared=shared, timeout=timeout, memory_limit=memory_limit)


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                     if line.startswith("Model name"))  # fmt: skip
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                            capture_output=True, text=True).stdout.strip()[:70]  # fmt: skip
    return (f"machine: {model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
            f"\nsource:  {ROOT / 'src'} at {commit or 'unknown commit'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="SUBSTRING", action="append",
                        help="run the cases whose name has it (repeatable)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--memory-limit-gb", type=float, default=3.0, help="RLIMIT_DATA; 0: off")
    parser.add_argument("--keep", action="store_true", help="keep the case folders")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or any(s in c.name for s in args.only)]
    if not cases:
        parser.error(f"no case name contains any of {args.only}")
    limit = int(args.memory_limit_gb * (1 << 30))
    print(machine(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="ddpm-hostile-"))
    try:
        shared = prepare_shared(root, need_run=any(c.needs_run for c in cases),
                                timeout=args.timeout, memory_limit=limit)  # fmt: skip
        rows = []
        for case in cases:
            print(f"  {case.name} ...", file=sys.stderr, flush=True)
            rows.append(run_one(case, root, shared, timeout=args.timeout, memory_limit=limit))
    finally:
        if args.keep:
            print(f"case folders kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(format_table(rows))
    for row in rows:
        if not row.clean:
            print(f"DIRTY {row.case}: {'; '.join(row.problems)}")
        for note in row.notes:
            print(f"note  {row.case}: {note}")
    print(f"{sum(r.clean for r in rows)}/{len(rows)} clean")
    if args.json:
        Path(args.json).write_text(
            json.dumps([{**dataclasses.asdict(r), "clean": r.clean} for r in rows], indent=1)
        )
    return 0 if all(r.clean for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
