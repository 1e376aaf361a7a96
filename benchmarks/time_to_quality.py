"""Time to quality: train the same dataset for the same wall-clock minutes with several recipes,
one process at a time, and score every run the same way.

    ddpm featnet train --dataset fashion-mnist          # once: the feature space of the scores
    pip install -e '.[compare]'                         # for the diffusers / lucidrains recipes
    python benchmarks/time_to_quality.py --dataset fashion-mnist --budgets 10,20 --curve \\
        --recipes preset,budget,budget+min-snr,diffusers,denoising-diffusion-pytorch \\
        --n 1000 --out docs/time-to-quality

Recipes (ddpm's: each a list of --set overrides on the dataset's preset, see RECIPES):
- `preset`: the preset as it is, stopped by SIGTERM when the budget is spent, as a user with that
  many minutes would (its learning-rate schedule is sized for train.num_steps, not the budget);
- `budget`: the preset with train.time_budget, so the cosine decay ends with the budget;
- `budget+min-snr`, `budget+lognormal`, `budget+laplace`, ...: one change more each;
- `diffusers`, `denoising-diffusion-pytorch`: the two usual alternatives with their own default
  recipes (diffusers' train_unconditional example; lucidrains' README Trainer), in
  benchmarks/alternatives.py: one run (its own process) to the largest budget saves its EMA
  weights at every budget's minutes, since neither recipe's learning rate depends on the run's
  length; each snapshot is sampled with ddpm's DPM-Solver++(2M) 20 NFE on their network and
  alpha_bar, and with their own default sampler where that fits in --own-minutes (the n column
  says how many images it scored). Fashion-MNIST and MNIST only (padded 28 -> 32).
Training minutes count from the first log file write (start-up and data loading excluded, as in
train.time_budget). Every ddpm run is scored with `ddpm eval`: n samples from its EMA weights with
DPM-Solver++(2M) at 20 NFE (seed 0), FID/KID/precision/recall in the feature network's space
against the test split; the alternatives' samples with `ddpm eval --samples`, the same scores.
--curve: ddpm recipes without a budget (`preset`, constant-LR ones) train once to the largest
budget with train.eval_every at the budgets' minutes (train.eval_n = --n, evaluations not counted
as training time, seed ddpm.train.quality.EVAL_SEED) and give one row per budget from
RUN/eval/during_training.csv, instead of one run per budget.
Writes OUT/time_to_quality.csv and OUT/time_to_quality.png (FID against minutes, one line per
recipe and sampler) and prints the table with the machine it ran on.
"""

from __future__ import annotations

import argparse
import csv
import math
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
    # the fashion-mnist preset's objective before 2026-12-02: uniform t, eps, Huber (the README's
    # "previous preset" curve)
    "previous-preset": [
        "diffusion.prediction=eps",
        "diffusion.loss=huber",
        "diffusion.loss_weight=none",
        "train.t_sampling=uniform",
    ],  # fmt: skip
    "lognormal": ["train.t_sampling=lognormal"],
    # EDM (Karras et al. 2022): preconditioning, lambda = 1 / c_out^2 weighting on l2, log-normal
    # sigma; sigma_data = the std of Fashion-MNIST's training images in [-1, 1] (0.71)
    "edm": [
        "diffusion.prediction=edm",
        "diffusion.loss_weight=edm",
        "diffusion.sigma_data=0.71",
        "diffusion.loss=l2",
        "train.t_sampling=lognormal",
    ],  # fmt: skip
    "budget+min-snr+lognormal": [
        "BUDGET",
        "diffusion.loss_weight=min_snr",
        "train.t_sampling=lognormal",
    ],
}
FIELDS = ["dataset", "recipe", "budget_min", "steps", "train_s", "n", "sampler", "nfe",
          "feature_space", "fid", "kid", "precision", "recall"]  # fmt: skip
QUIET = ["train.sample_every=1000000", "train.checkpoint_every=1000000", "train.log_every=25"]
ALTERNATIVES = ("diffusers", "denoising-diffusion-pytorch")  # benchmarks/alternatives.py
ALTERNATIVES_SCRIPT = Path(__file__).with_name("alternatives.py")


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


def score_samples(samples: Path, dataset: str, features: str, out: Path) -> dict[str, str]:
    """`ddpm eval --samples` of a sample file -> its metrics.csv values by metric name."""
    args = [sys.executable, "-m", "ddpm", "eval", "--samples", str(samples), "--dataset", dataset,
            "--features", features, "--metrics", "fid,kid,pr", "--out", str(out), "--quiet"]  # fmt: skip
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv", newline="") as f:
        return {r["metric"]: r for r in csv.DictReader(f)}


def alternative(recipe: str, args: argparse.Namespace, budgets: list[float], run: Path) -> list:
    """One run of an alternative's own recipe (its own process) with a snapshot at every budget,
    each snapshot's sample files scored by `ddpm eval --samples` -> CSV rows."""
    command = [sys.executable, str(ALTERNATIVES_SCRIPT), recipe, "--out", str(run),
               "--snapshots", ",".join(f"{b:g}" for b in budgets), "--dataset", args.dataset,
               "--n", str(args.n), "--own-minutes", f"{args.own_minutes:g}"]  # fmt: skip
    process = subprocess.run(command, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    if process.returncode == 2:  # not installed: one line, the other recipes go on
        print(process.stderr.strip().splitlines()[-1])
        return []
    if process.returncode != 0:
        raise SystemExit(f"{recipe}: failed ({process.returncode}): {process.stderr[-2000:]}")
    with open(run / "snapshots.csv", newline="") as f:
        snapshots = list(csv.DictReader(f))
    rows = []
    for snap in snapshots:
        samples = Path(snap["samples"])
        metrics = score_samples(samples, args.dataset, args.features or args.dataset,
                                run / "eval" / samples.stem)  # fmt: skip
        rows.append(row(args.dataset, recipe, snap["minutes"], snap["steps"], snap["train_s"],
                        snap["n"], snap["sampler"], snap["nfe"], metrics))  # fmt: skip
    return rows


def curve(recipe: str, args: argparse.Namespace, budgets: list[float], run: Path) -> list:
    """One run of a ddpm recipe without a budget to the largest budget, evaluated while training
    at every budget's minutes (train.eval_every: their greatest common divisor in seconds) ->
    one CSV row per budget, the first evaluation at or past it, from during_training.csv."""
    every = math.gcd(*(round(b * 60) for b in budgets))
    sets = [*QUIET, f"train.eval_every={every}s", f"train.eval_n={args.n}",
            "train.eval_max_fraction=1000", *RECIPES[recipe]]  # fmt: skip
    if args.features:
        sets.append(f"train.eval_features={args.features}")
    command = [sys.executable, "-m", "ddpm", "train", "--preset", args.dataset, "--out", str(run),
               "--quiet", *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    table, rows = run / "eval" / "during_training.csv", []
    while process.poll() is None:  # stop once the largest budget's evaluation is written
        time.sleep(1.0)
        rows = read_rows(table)
        if rows and float(rows[-1]["train_seconds"]) >= max(budgets) * 60 - 1:
            process.send_signal(signal.SIGTERM)
            break
    _, err = process.communicate()
    if process.returncode not in (0, 130):
        raise SystemExit(f"{recipe}: training failed ({process.returncode}): {err[-2000:]}")
    out = []
    for budget, r in zip(budgets, at_budgets(read_rows(table), budgets)):
        if r is None:
            print(f"{recipe}: no evaluation at {budget:g} min (the run ended before)")
            continue
        metrics = {m: {"value": r[m], "feature_space": r["feature_space"]}
                   for m in ("fid", "kid", "precision", "recall")}  # fmt: skip
        out.append(row(args.dataset, recipe, f"{budget:g}", r["step"],
                       f"{float(r['train_seconds']):.0f}", r["n"], r["sampler"], r["nfe"],
                       metrics))  # fmt: skip
    return out


def at_budgets(rows: list[dict], budgets: list[float]) -> list[dict | None]:
    """For each budget (minutes), the first during-training row whose training seconds reach it
    (within 1 s: an evaluation is due once the interval has passed), or None."""
    chosen = []
    for budget in budgets:
        past = [r for r in rows if float(r["train_seconds"]) >= budget * 60 - 1]
        chosen.append(min(past, key=lambda r: float(r["train_seconds"])) if past else None)
    return chosen


def read_rows(path: Path) -> list[dict]:
    """The complete rows of a CSV being written (a torn last line is left out)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("recall") not in (None, "")]


def row(dataset, recipe, minutes, steps, train_s, n, sampler, nfe, metrics) -> dict:
    """One CSV row from a recipe's run and its metrics by name."""
    return {"dataset": dataset, "recipe": recipe, "budget_min": minutes, "steps": steps,
            "train_s": train_s, "n": n, "sampler": sampler, "nfe": nfe,
            "feature_space": metrics["fid"]["feature_space"], "fid": metrics["fid"]["value"],
            "kid": metrics["kid"]["value"], "precision": metrics["precision"]["value"],
            "recall": metrics["recall"]["value"]}  # fmt: skip


def plot(rows: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for recipe, sampler in dict.fromkeys((r["recipe"], r["sampler"]) for r in rows):
        points = sorted(
            (float(r["budget_min"]), float(r["fid"]))
            for r in rows
            if (r["recipe"], r["sampler"]) == (recipe, sampler)
        )
        label = recipe if sampler == "dpmpp-2m" else f"{recipe} ({sampler})"
        ax.plot(*zip(*points), marker="o", label=label, ls="-" if sampler == "dpmpp-2m" else ":")
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
    parser.add_argument("--curve", action="store_true",
                        help="one run per recipe without a budget, evaluated at every budget")  # fmt: skip
    parser.add_argument("--own-minutes", type=float, default=15.0,
                        help="cap on an alternative's own sampler per snapshot")  # fmt: skip
    parser.add_argument("--out", default="time-to-quality", help="folder for the CSV and plot")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES and r not in ALTERNATIVES]
    if unknown:
        known = ", ".join([*RECIPES, *ALTERNATIVES])
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {known}")
    out = Path(args.out)
    runs = out / "runs"
    budgets = [float(b) for b in args.budgets.split(",")]
    machine, rows = cpu_model(), []
    print(f"machine: {machine}; torch threads default; one run at a time")
    once = [r for r in recipes if r in ALTERNATIVES or (args.curve and "BUDGET" not in RECIPES[r])]
    jobs = [(r, None) for r in once] + [(r, m) for m in budgets for r in recipes if r not in once]
    for recipe, minutes in jobs:
        run = runs / (recipe if minutes is None else f"{recipe}-{minutes:g}m")
        shutil.rmtree(run, ignore_errors=True)
        if recipe in ALTERNATIVES:
            new = alternative(recipe, args, budgets, run)
        elif minutes is None:
            new = curve(recipe, args, budgets, run)
        else:
            steps, seconds = train(args.dataset, recipe, minutes, run)
            metrics = score(run, args.features or args.dataset, args.n)
            fid = metrics["fid"]
            new = [row(args.dataset, recipe, f"{minutes:g}", steps, f"{seconds:.0f}", args.n,
                       fid["sampler"], fid["nfe"], metrics)]  # fmt: skip
        for r in new:
            print(" ".join(f"{k}={r[k]}" for k in FIELDS), flush=True)
        rows += new
        if rows:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "time_to_quality.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            plot(rows, out / "time_to_quality.png", machine)
        if not args.keep_runs:
            for folder in ("checkpoints", "samples"):
                shutil.rmtree(run / folder, ignore_errors=True)
            for weights in run.glob("ema-*.pt"):
                weights.unlink()
    print(f"wrote {out / 'time_to_quality.csv'} and {out / 'time_to_quality.png'}")


if __name__ == "__main__":
    main()
