#!/usr/bin/env bash
# The search against one-shot pruning, over seeds (issue 9 protocol): for each seed,
#   1. a search with the shipped search space (variant "plain"),
#   2. python -m evo_snn.baselines on it (uniform, global, random at equal evaluations),
#   3. each extra variant (VARIANTS: name=--set args) as a search from the same teacher,
#      its front measured on test with the same protocol (--methods none),
# then python -m evo_snn.results over every comparison.json, written to OUT/summary.md.
# Usage: benchmarks/search_vs_baselines.sh DATASET DATA_ROOT OUT "SEEDS" [EXTRA --set ARGS...]
#   e.g. benchmarks/search_vs_baselines.sh nmnist ../shared/data/nmnist_subset runs/cmp-nmnist "0 1 2"
# VARIANTS="seeded=--set genome.init_global_fraction=0.5" (';'-separated) adds variants;
# FINAL_EPOCHS=E also measures every front after E epochs of retraining (files -feE),
# from the same evaluation pass. BASE=name (default plain) names the base run that trains the
# teacher and holds the baselines; METHODS=uniform,global,... chooses them (default: all).
# RATIOS=0.5,0.7,... sets the baselines' --ratios (default theirs: 0.1, ..., 0.9, 0.95).
# VARIANT_METHODS=global_long also measures baselines in each variant's own run (default none:
# its front only). Needed when a variant changes the fitness itself (e.g. --set kd.mode=none):
# the base run's baselines were fine-tuned with the base's fitness, not the variant's.
# Heavy steps take /tmp/evo_cpu.lock so that two benchmarks never share the cores.
set -euo pipefail
DATASET=$1; ROOT=$2; OUT=$3; SEEDS=$4; shift 4
EXTRA=("$@")
LOCK=${LOCK:-/tmp/evo_cpu.lock}
mkdir -p "$OUT"
run() { echo "+ $*" >&2; flock "$LOCK" "$@"; }
for s in $SEEDS; do
  plain="$OUT/$DATASET-s$s-${BASE:-plain}"
  if [ ! -f "$plain/manifest.json" ] || ! grep -q '"completed"' "$plain/manifest.json"; then
    rm -rf "$plain"
    run python -m evo_snn.search --dataset "$DATASET" --data-root "$ROOT" --seed "$s" --out "$plain" --no-progress "${EXTRA[@]}"
  fi
  FE="0${FINAL_EPOCHS:+,$FINAL_EPOCHS}"
  [ -f "$plain/comparison.json" ] || run python -m evo_snn.baselines "$plain" --no-progress --final-epochs "$FE" ${METHODS:+--methods "$METHODS"} ${RATIOS:+--ratios "$RATIOS"}
  IFS=';' read -ra variants <<< "${VARIANTS:-}"
  for v in "${variants[@]}"; do
    [ -z "$v" ] && continue
    name=${v%%=*}; read -ra vargs <<< "${v#*=}"
    dir="$OUT/$DATASET-s$s-$name"
    if [ ! -f "$dir/manifest.json" ] || ! grep -q '"completed"' "$dir/manifest.json"; then
      rm -rf "$dir"
      run python -m evo_snn.search --dataset "$DATASET" --data-root "$ROOT" --seed "$s" --out "$dir" --no-progress \
        --teacher "$plain/teacher/teacher.pt" "${EXTRA[@]}" "${vargs[@]}"
    fi
    [ -f "$dir/comparison.json" ] || run python -m evo_snn.baselines "$dir" --methods "${VARIANT_METHODS:-none}" --no-progress --final-epochs "$FE" ${RATIOS:+--ratios "$RATIOS"}
  done
done
python -m evo_snn.results "$OUT" --markdown "$OUT/summary.md" || true
