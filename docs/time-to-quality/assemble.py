"""Assemble the runs of pinned_runs.sh into time_to_quality.csv / .png with the functions of
benchmarks/time_to_quality.py (the same rows its --curve and alternative recipes write).

    python docs/time-to-quality/assemble.py RUNS OUT
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from time_to_quality import FIELDS, at_budgets, cpu_model, plot, read_rows, row, score_samples  # noqa: E402

CURVES = {
    "previous-preset": ("preset-60m", [10, 20, 30, 40, 50, 60]),
    "edm": ("edm", [5, 10, 15, 20]),
}
ALTERNATIVES = ["denoising-diffusion-pytorch", "diffusers"]


def main() -> None:
    runs, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = []
    for recipe, (folder, budgets) in CURVES.items():
        table = read_rows(runs / folder / "eval" / "during_training.csv")
        for budget, r in zip(budgets, at_budgets(table, budgets)):
            if r is None:
                continue
            metrics = {m: {"value": r[m], "feature_space": r["feature_space"]}
                       for m in ("fid", "kid", "precision", "recall")}  # fmt: skip
            rows.append(row("fashion-mnist", recipe, f"{budget:g}", r["step"],
                            f"{float(r['train_seconds']):.0f}", r["n"], r["sampler"], r["nfe"],
                            metrics))  # fmt: skip
    for name in ALTERNATIVES:
        run = runs / f"alt-{name}"
        if not (run / "snapshots.csv").exists():
            continue
        with open(run / "snapshots.csv", newline="") as f:
            for snap in csv.DictReader(f):
                samples = Path(snap["samples"])
                metrics = score_samples(samples, "fashion-mnist", "fashion-mnist",
                                        run / "eval" / samples.stem)  # fmt: skip
                rows.append(row("fashion-mnist", name, snap["minutes"], snap["steps"],
                                snap["train_s"], snap["n"], snap["sampler"], snap["nfe"],
                                metrics))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "time_to_quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    machine = cpu_model().replace("2 CPUs", "1 of 2 CPUs (taskset), 1 thread")
    plot(rows, out / "time_to_quality.png", machine)
    for r in rows:
        print(" ".join(f"{k}={r[k]}" for k in FIELDS))


if __name__ == "__main__":
    main()
