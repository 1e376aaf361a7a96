#!/bin/bash
# The runs behind README "Time to quality" (2026-12-02): time_to_quality.py's --curve procedure,
# each training process pinned to CPU 1 with one thread (taskset) while development went on on
# CPU 0; one run at a time. The alternatives' sampling (not timed) moved to CPU 0 once their last
# snapshot was saved. Then: python docs/time-to-quality/assemble.py RUNS docs/time-to-quality
set -e
RUNS=${1:-/tmp/ttq}
export OMP_NUM_THREADS=1
curve() {  # curve NAME MINUTES EVERY [--set ...]: FID every EVERY training minutes up to MINUTES
  name=$1; minutes=$2; every=$3; shift 3
  OUT=$RUNS/$name; rm -rf "$OUT"
  taskset -c 1 ddpm train --preset fashion-mnist --out "$OUT" --quiet \
    --set train.eval_every=${every}m --set train.eval_n=1000 --set train.eval_max_fraction=1000 \
    --set train.sample_every=1000000 --set train.checkpoint_every=1000000 --set train.log_every=25 "$@" &
  PID=$!
  while kill -0 $PID 2>/dev/null; do  # SIGTERM once the last evaluation is written
    sleep 10
    if [ -f "$OUT/eval/during_training.csv" ] && awk -F, -v s=$((minutes * 60)) \
        'NR > 1 && $3 >= s {f = 1} END {exit !f}' "$OUT/eval/during_training.csv"; then
      kill -TERM $PID; break
    fi
  done
  wait $PID || true
}
alternative() {  # alternative NAME SNAPSHOTS LAST
  name=$1; snaps=$2; last=$3; OUT=$RUNS/alt-$name; rm -rf "$OUT"
  taskset -c 1 python benchmarks/alternatives.py "$name" --snapshots "$snaps" --n 500 \
    --own-minutes 0 --out "$OUT" &
  PID=$!
  while kill -0 $PID 2>/dev/null && [ ! -f "$OUT/ema-${last}m.pt" ]; do sleep 5; done
  sleep 5; taskset -a -p -c 0 $PID >/dev/null  # sampling is not timed: off the measured CPU
}
# the fashion-mnist preset as it was (recipe previous-preset of time_to_quality.py)
curve preset-60m 60 10 --set diffusion.prediction=eps --set diffusion.loss=huber \
  --set diffusion.loss_weight=none --set train.t_sampling=uniform
# EDM's objective (recipe edm), the preset since
curve edm 20 5 --set diffusion.prediction=edm --set diffusion.loss_weight=edm \
  --set diffusion.sigma_data=0.71 --set diffusion.loss=l2 --set train.t_sampling=lognormal
alternative denoising-diffusion-pytorch 10,20 20
alternative diffusers 10 10
wait
