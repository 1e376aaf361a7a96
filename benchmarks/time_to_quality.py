"""Time to quality: train the same dataset for the same wall-clock minutes with several recipes,
one process at a time, and score every run the same way.

    ddpm featnet train --dataset fashion-mnist          # once: the feature space of the scores
    python benchmarks/time_to_quality.py --dataset fashion-mnist --budgets 10,20 \\
        --recipes preset,budget,budget+min-snr --n 2000 --out docs/time-to-quality

Recipes (each a list of --set overrides on the dataset's preset, see RECIPES):
- `preset`: the preset as it is, stopped by SIGTERM when the budget is spent, as a user with that
  many minutes would (its learning-rate schedule is sized for train.num_steps, not the budget);
- `budget`: the preset with train.time_budget, so the cosine decay ends with the budget;
- `budget+min-snr`, `budget+lognormal`, `budget+laplace`, ...: one change more each.
Training minutes count from the first log file write (start-up and data loading excluded, as in
train.time_budget). Every run is scored with `ddpm eval`: n samples from its EMA weights with
DPM-Solver++(2M) at 20 NFE (seed 0), FID/KID/precision/recall in the feature network's space
against the test split. Writes OUT/time_to_quality.csv and OUT/time_to_quality.png (FID against
minutes, one line per recipe) and prints the table with the machine it ran on.
"""

from __future__ import annotations

import argparse
import csv
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

RECIPES: dict[str, list[str]] = {
    "preset": [],
    "budget": ["BUDGET"],
    "budget+min-snr": ["BUDGET", "diffusion.loss_weight=min_snr"],
    "budget+lognormal": ["BUDGET", "train.t_sampling=lognormal"],
    "budget+laplace": ["BUDGET", "train.t_sampling=laplace"],
    "budget+min-snr+lognormal": [
        "BUDGET",
        "diffusion.loss_weight=min_snr",
        "train.t_sampling=lognormal",
    ],
}
FIELDS = ["dataset", "recipe", "budget_min", "steps", "train_s", "n", "sampler", "nfe",
          "feature_space", "fid", "kid", "precision", "recall"]  # fmt: skip
QUIET = ["train.sample_every=1000000", "train.checkpoint_every=1000000", "train.log_every=25"]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    isa = "AVX512-BF16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2"
    return (
        f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, {isa}"
    )


def train(dataset: str, recipe: str, minutes: float, out: Path) -> tuple[int, float]:
    """Train one recipe for `minutes` of training time -> (steps, training seconds)."""
    sets = [s if s != "BUDGET" else f"train.time_budget={minutes:g}m" for s in RECIPES[recipe]]
    sets = [*QUIET, "train.num_steps=1000000" if "BUDGET" in RECIPES[recipe] else "", *sets]
    args = [sys.executable, "-m", "ddpm", "train", "--preset", dataset, "--out", str(out),
            "--quiet", *[a for s in sets if s for a in ("--set", s)]]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (out / "log.csv").exists() and process.poll() is None:
        time.sleep(0.2)
    started = time.monotonic()
    if recipe == "preset":  # a user who stops the run when their minutes are up
        while process.poll() is None and time.monotonic() - started < minutes * 60:
            time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    if process.returncode not in (0, 130):
        raise SystemExit(f"{recipe}: training failed ({process.returncode}): {err[-2000:]}")
    from ddpm.checkpoint import list_checkpoints, load_checkpoint

    checkpoint = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    return checkpoint.step, time.monotonic() - started


def score(run: Path, features: str, n: int) -> dict[str, str]:
    """`ddpm eval` of a run -> its metrics.csv values by metric name."""
    args = [sys.executable, "-m", "ddpm", "eval", "--run", str(run), "--features", features,
            "--n", str(n), "--sampler", "dpmpp-2m", "--steps", "20", "--seed", "0",
            "--metrics", "fid,kid,pr", "--quiet"]  # fmt: skip
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with open(run / "eval" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["metric"]: r for r in rows}


def plot(rows: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        points = sorted(
            (float(r["budget_min"]), float(r["fid"])) for r in rows if r["recipe"] == recipe
        )
        ax.plot(*zip(*points), marker="o", label=recipe)
    ax.set(xlabel="training minutes", ylabel=f"FID ({rows[0]['feature_space']})",
           title=f"Time to quality, {rows[0]['dataset']} ({machine})")  # fmt: skip
    ax.title.set_fontsize(8)
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--budgets", default="10,20", help="training minutes, comma-separated")
    parser.add_argument("--recipes", default="preset,budget,budget+min-snr,budget+lognormal")
    parser.add_argument("--n", type=int, default=2000, help="samples scored per run")
    parser.add_argument("--features", default=None, help="feature network (default: dataset)")
    parser.add_argument("--out", default="time-to-quality", help="folder for the CSV and plot")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    out = Path(args.out)
    runs = out / "runs"
    machine, rows = cpu_model(), []
    print(f"machine: {machine}; torch threads default; one run at a time")
    for minutes in [float(b) for b in args.budgets.split(",")]:
        for recipe in recipes:
            run = runs / f"{recipe}-{minutes:g}m"
            shutil.rmtree(run, ignore_errors=True)
            steps, seconds = train(args.dataset, recipe, minutes, run)
            metrics = score(run, args.features or args.dataset, args.n)
            fid = metrics["fid"]
            row = {"dataset": args.dataset, "recipe": recipe, "budget_min": f"{minutes:g}",
                   "steps": steps, "train_s": f"{seconds:.0f}", "n": args.n,
                   "sampler": fid["sampler"], "nfe": fid["nfe"],
                   "feature_space": fid["feature_space"], "fid": fid["value"],
                   "kid": metrics["kid"]["value"], "precision": metrics["precision"]["value"],
                   "recall": metrics["recall"]["value"]}  # fmt: skip
            rows.append(row)
            print(" ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "time_to_quality.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            plot(rows, out / "time_to_quality.png", machine)
            if not args.keep_runs:
                shutil.rmtree(run / "checkpoints", ignore_errors=True)
    print(f"wrote {out / 'time_to_quality.csv'} and {out / 'time_to_quality.png'}")


if __name__ == "__main__":
    main()
