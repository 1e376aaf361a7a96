"""Kill-and-resume fault test (issues 6 and 13): train a short digits run, interrupt it at random
moments in three ways, resume each time, and compare the final weights with an uninterrupted run.

    python benchmarks/fault_test.py [--cycles 20] [--steps 1000] [--grace 10] [--seed 0]

Each cycle is one of: SIGKILL at a random moment; SIGTERM, then SIGKILL `--grace` seconds later
(a cluster's pre-emption: SLURM's KillWait and Kubernetes' grace period are 30 s); or a second
`ddpm train --resume` started on the same folder while the first trains (it must be refused,
naming the first's PID), then SIGKILL of the first. Prints: the cycles, checkpoints lost (a file
that no longer loads after a kill), for each SIGTERM whether the process saved and exited inside
the grace period and how many steps it saved past the last log line, whether every second writer
was refused, and whether the final model and EMA weights equal the uninterrupted run's bit for bit.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ddpm.checkpoint import list_checkpoints, load_checkpoint
from ddpm.errors import DDPMError

TINY = [
    "model.base_channels=16",
    "model.channel_mult=[1,2]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[4]",
    "model.num_groups=8",
    "model.dropout=0.1",
    "train.batch_size=32",
    "train.log_every=25",
    "train.checkpoint_every=10",
    "train.sample_every=100000",
    "train.num_sample_images=4",
    "sample.steps=5",
    "train.val_images=64",
]


def command(out: Path, steps: int, resume: bool) -> list[str]:
    sets = [a for pair in [*TINY, f"train.num_steps={steps}"] for a in ("--set", pair)]
    head = ["--resume", str(out)] if resume else ["--dataset", "digits", "--out", str(out)]
    return [sys.executable, "-m", "ddpm", "train", *head, "--deterministic", "--quiet", *sets]


def final_weights(out: Path, steps: int) -> dict[str, torch.Tensor]:
    tensors = load_checkpoint(out / "checkpoints" / f"step_{steps:08d}.safetensors").tensors
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}


def wait_until_training(process: subprocess.Popen, log: Path, launched: float) -> None:
    """Until the process has (re)opened its log, i.e. it is past start-up and training."""
    while process.poll() is None:
        if log.exists() and log.stat().st_mtime >= launched:
            return
        time.sleep(0.02)


def last_logged_step(log: Path) -> int:
    rows = log.read_text().strip().splitlines() if log.exists() else []
    return int(rows[-1].split(",")[0]) if len(rows) > 1 else 0


def sigterm(process: subprocess.Popen, log: Path, grace: float) -> tuple[bool, int | None]:
    """SIGTERM, SIGKILL after `grace` s: (exited on its own in time, steps saved past the log)."""
    logged = last_logged_step(log)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False, None
    if " at step " not in err:
        return process.returncode == 0, None  # it had finished anyway
    return True, int(err.split(" at step ")[1].split(";")[0]) - logged


def second_writer(out: Path, steps: int, first: subprocess.Popen) -> bool | None:
    """A second writer on the folder must be refused, naming the first's PID (None: the first
    had finished meanwhile, so there was nothing to refuse)."""
    result = subprocess.run(command(out, steps, True), capture_output=True, text=True)
    if first.poll() is not None:
        return None
    return result.returncode == 2 and f"in use by process {first.pid}" in result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--grace", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ddpm-fault-"))
    try:
        subprocess.run(
            command(work / "reference", args.steps, False), check=True, stdout=subprocess.DEVNULL
        )
        rows = (work / "reference" / "log.csv").read_text().strip().splitlines()
        seconds_per_step = float(rows[-1].split(",")[5]) / args.steps
        checkpoint_s = 10 * seconds_per_step  # train.checkpoint_every = 10
        out, lost, progress = work / "killed", 0, []
        kinds = {"kill": 0, "term": 0, "twin": 0}
        term_results, twins_refused = [], []
        final = out / "checkpoints" / f"step_{args.steps:08d}.safetensors"
        while not (final.exists() and (out / "loss.png").exists()):  # a kill may come after the end
            resume = (out / "config.json").exists()  # also before the first checkpoint
            if not resume:
                shutil.rmtree(out, ignore_errors=True)
            launched = time.time()
            process = subprocess.Popen(
                command(out, args.steps, resume),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until_training(process, out / "log.csv", launched)
            cycle = sum(kinds.values())
            if cycle < args.cycles:
                time.sleep(rng.uniform(0, 4 * checkpoint_s))  # a random moment of training
            if process.poll() is None and cycle < args.cycles:
                kind = rng.choice(list(kinds))
                kinds[kind] += 1
                if kind == "term":
                    term_results.append(sigterm(process, out / "log.csv", args.grace))
                else:
                    if kind == "twin":
                        twins_refused.append(second_writer(out, args.steps, process))
                    process.kill()
                    process.communicate()
                for path in list_checkpoints(out / "checkpoints"):
                    try:
                        load_checkpoint(path)
                    except DDPMError:
                        lost += 1
                saved = list_checkpoints(out / "checkpoints")
                progress.append(load_checkpoint(saved[-1]).step if saved else 0)
                continue
            _, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"training failed with exit code {process.returncode}: {err}")
        a, b = final_weights(work / "reference", args.steps), final_weights(out, args.steps)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        in_time = [past for ok, past in term_results if ok]
        print(
            f"cycles: {sum(kinds.values())} ({kinds['kill']} SIGKILL, {kinds['term']} SIGTERM + "
            f"SIGKILL after {args.grace:g} s, {kinds['twin']} second writers + SIGKILL)"
        )
        print(f"steps of the newest checkpoint after each cycle: {progress}")
        print(f"checkpoints lost: {lost}")
        print(
            f"SIGTERM: {len(in_time)} of {len(term_results)} saved and exited within the grace "
            f"period; steps saved past the last log line: {[p for p in in_time if p is not None]}"
        )
        tried = [t for t in twins_refused if t is not None]
        print(f"second writers refused naming the first: {sum(tried)} of {len(tried)}")
        print(
            f"final weights (model and EMA) equal to the uninterrupted run: {'yes' if equal else 'NO'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
