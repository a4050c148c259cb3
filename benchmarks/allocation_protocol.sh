#!/usr/bin/env bash
# Issue 23's protocol: the allocation search (smooth density laws at exact sparsity, forward-only
# BN-recalibrated screening, fine-tune once) against global_long, lamp_long, erk_long and
# energy_aware_long at equal counted compute, CIFAR-10, several search seeds, one shared teacher.
#   1. the shared dense teacher (allocation_pilot.py --teacher-only, 8 epochs, split seed 0), unless TEACHER is given;
#   2. per seed, a search ("plain") and its baselines (search_vs_baselines.sh, RATIOS below);
#   3. per seed, the same search with objectives [accuracy, energy] ("energy"), its front only.
# Then python -m evo_snn.results over every comparison.json, in OUT/summary.md.
# Usage: benchmarks/allocation_protocol.sh DATA_ROOT OUT "SEEDS"
#   e.g. benchmarks/allocation_protocol.sh ../shared/data/cifar10_jpeg runs/cmp-alloc "0 1 2"
# Measured 2026-12-06 on the 2-core machine: RESULTS.md, "Allocation search against ERK and LAMP".
set -euo pipefail
ROOT=$1; OUT=$2; SEEDS=$3
HERE=$(cd "$(dirname "$0")" && pwd)
TEACHER=${TEACHER:-$OUT/teacher/teacher.pt}
if [ ! -f "$TEACHER" ]; then
  python "$HERE/allocation_pilot.py" --dataset cifar10 --data-root "$ROOT" --teacher-epochs 8 \
    --save-teacher "$(dirname "$TEACHER")" --teacher-only --quiet
fi
P=(--teacher "$TEACHER" --set data.split_seed=0 --set kd.epochs=0.02
   --set genome.mutation=smooth --set "genome.init_allocations=[lamp,erk]" --set genome.init_allocation_fraction=1.0
   --set genome.init_global_fraction=0 --set genome.ratio_min=0.35 --set search.screen=bn_accuracy
   --set search.screen_bn_batches=2 --set search.screen_samples=256 --set search.screen_promote=2
   --population 12 --generations 3 ${PROTOCOL_EXTRA:-})
export METHODS=${METHODS:-global_long,lamp_long,erk_long,energy_aware_long} RATIOS=${RATIOS:-0.45,0.55,0.65,0.75,0.85,0.95} FINAL_EPOCHS=
bash "$HERE/search_vs_baselines.sh" cifar10 "$ROOT" "$OUT" "$SEEDS" "${P[@]}"
VARIANTS=${VARIANTS:-"energy=--set search.objectives=[accuracy,energy]"} \
  bash "$HERE/search_vs_baselines.sh" cifar10 "$ROOT" "$OUT" "$SEEDS" "${P[@]}"
