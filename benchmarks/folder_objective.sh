#!/usr/bin/env bash
# The A/B behind the folder preset's objective (docs/evaluation.md, Your own folder): on a real
# folder (benchmarks/fmnist_as_folder.py), EDM's preconditioning (sigma_data 0.5, EDM weighting)
# against v-prediction with a plain l2 loss (EDM's objective at sigma_data 1), the same auto U-Net
# and lognormal noise levels, 10 training minutes each, one after the other; then FID and
# precision/recall on 5,000 samples. Needs `ddpm featnet train --dataset fashion-mnist` first.
#     benchmarks/folder_objective.sh FOLDER OUT_DIR
set -euo pipefail
FOLDER=${1:?folder of images}; OUT=${2:?where the two runs go}
DDPM=${DDPM:-.venv/bin/ddpm}
COMMON=(--data-dir "$FOLDER" --quiet --set train.time_budget=10m --set train.num_steps=100000
        --set train.eval_every=2m --set train.eval_n=1000 --set train.eval_features=fashion-mnist
        --set train.eval_max_fraction=0.25)
lscpu | grep -E "Model name"
lscpu | grep Flags | tr ' ' '\n' | grep -E "^(avx512f|avx512_bf16|amx_bf16|avx2)$" | tr '\n' ' '; echo
$DDPM train "${COMMON[@]}" --out "$OUT/edm" --set diffusion.prediction=edm \
    --set diffusion.sigma_data=0.5 --set diffusion.loss_weight=edm
$DDPM train "${COMMON[@]}" --out "$OUT/v" --set diffusion.prediction=v --set diffusion.loss_weight=none
for arm in edm v; do
    $DDPM eval --run "$OUT/$arm" --features fashion-mnist --n 5000 --metrics fid,pr --quiet
done
