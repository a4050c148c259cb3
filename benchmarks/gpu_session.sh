#!/usr/bin/env bash
# The GPU checks of one lent device session (issue 12's CUDA paths and figures, issue 9 at
# a larger compute budget), run from the repository root on the GPU machine:
#   benchmarks/gpu_session.sh env            # install the carried wheels, print versions
#   benchmarks/gpu_session.sh checks         # CUDA tests + students_per_batch + fitness_overhead
#   benchmarks/gpu_session.sh hotpath        # issue 26, <= 8 min: sync audit, stage breakdown, per-step ms of
#                                            # each change, 1/2/4/8 workers per GPU at K=1 and 4, full-size
#                                            # DVS fp32 vs bf16 + channels_last; every ratio against a baseline
#                                            # timed in the same call. Without CUDA (or nvidia-smi) it runs
#                                            # to the end with the GPU parts skipped, each with its reason
#   benchmarks/gpu_session.sh search EPOCHS [GENERATIONS [SEARCH ARGS...]]
#                                            # issue 9: 3 seeds of the multi-fidelity search at
#                                            # kd.epochs=EPOCHS and global_long at its compute
# The GPU machine has torch but not spikingjelly, deap or moocore: they travel as wheels in
# .whl/ (git-ignored through .git/info/exclude), fetched here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl spikingjelly==2.0.0 deap moocore cffi pycparser platformdirs loguru
# Data travel in .gpudata/ (also excluded, never committed, deleted after the session):
# nmnist_subset/ for `recheck`; cifar10_jpeg/ and the CPU-trained teachers
# (teachers/sS/ from runs/cmp-cifar/*/teacher) for `search`. Both data sets together
# exceed the device tool's 64 MiB, so carry only what the mode needs.
# Logs go to $OUT (the device tool's return folder), else to runs/gpu.
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
py=python3

env_setup() {
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $py -c "import torch, deap, moocore; import spikingjelly.activation_based.functional; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" || exit 3
}

checks() {
  # every test of the hot-path files, the CUDA-only ones included (they skip without CUDA)
  timeout 90 $py -m pytest -q -p no:cacheprovider -rs tests/test_hot_path.py tests/models/test_models_backend.py \
    > "$OUT/pytest_cuda.log" 2>&1; tail -15 "$OUT/pytest_cuda.log"
  # K students per forward on the GPU (synthetic data of each net's real shape)
  timeout 75 $py benchmarks/students_per_batch.py --nets nmnist cifar10 --ks 1 2 4 8 --rounds 2 \
    2>&1 | grep -v Triton | tee "$OUT/students_per_batch.log"
  timeout 90 $py benchmarks/students_per_batch.py --nets dvs_gesture --ks 1 2 4 --rounds 2 --train-samples 160 \
    --val-samples 32 2>&1 | grep -v Triton | tee -a "$OUT/students_per_batch.log"
  # 1, 2 and 4 evaluations per GPU (processes side by side, K = 1 each): evals/s summed
  for p in ${PROCS:-2 4}; do
    for i in $(seq "$p"); do
      timeout 90 $py benchmarks/students_per_batch.py --nets dvs_gesture --ks 1 --rounds 2 --train-samples 160 \
        --val-samples 32 > "/tmp/procs$p-$i.log" 2>&1 &
    done
    wait
    echo "== $p processes side by side:" | tee -a "$OUT/students_per_batch.log"
    grep -h "^  1 " /tmp/procs"$p"-*.log | tee -a "$OUT/students_per_batch.log"
  done
  overhead
}

recheck() {  # the second device call of 2026-12-04: the tests after their fix, 4 processes, the plain overhead
  timeout 90 $py -m pytest -q -p no:cacheprovider -rfs tests/test_hot_path.py tests/models/test_models_backend.py \
    > "$OUT/pytest_cuda.log" 2>&1; tail -15 "$OUT/pytest_cuda.log"
  for i in 1 2 3 4; do
    timeout 100 $py benchmarks/students_per_batch.py --nets dvs_gesture --ks 1 --rounds 2 --train-samples 160 \
      --val-samples 32 > "/tmp/procs4-$i.log" 2>&1 &
  done
  wait
  echo "== 4 processes side by side:" | tee -a "$OUT/students_per_batch.log"
  grep -h "^  1 \|Error" /tmp/procs4-*.log | tee -a "$OUT/students_per_batch.log"
  timeout 60 $py benchmarks/fitness_overhead.py --device cuda --datasets synthetic nmnist --data-root .gpudata/nmnist_subset --rounds 7 --no-stages 2>&1 \
    | grep -v Triton | tee "$OUT/fitness_overhead_defaults.log"
  overhead
}

overhead() {
  # the fitness against the plain loop on the GPU, with each hot-path option
  timeout 75 $py benchmarks/fitness_overhead.py --device cuda --datasets nmnist --data-root .gpudata/nmnist_subset --rounds 5 --amp bf16 \
    --channels-last --no-teacher-acc --each --no-stages 2>&1 | grep -v Triton | tee "$OUT/fitness_overhead.log"
}

hotpath() {  # issue 26; timeouts sum to 470 s
  local gpu=1 log="$OUT/hotpath.log"
  $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || gpu=0
  : > "$log"
  say() { echo "$*" | tee -a "$log"; }
  skip() { say "== $1: skipped, no CUDA device (this machine: $(uname -n), torch CPU build or no GPU)"; }
  run() {
    local t=$1; shift
    timeout "$t" "$@" > /tmp/hot-step.log 2>&1; local rc=$?
    grep -v Triton /tmp/hot-step.log | tee -a "$log"
    [ $rc = 124 ] && say "   (stopped after ${t} s: $*)"
    return 0
  }
  say "== hotpath $(date -u +%FT%TZ) gpu=$gpu"
  # 1. the hot-path tests, the CUDA ones included (skipped without CUDA): 60 s
  run 60 $py -m pytest -q -p no:cacheprovider -rs tests/test_hot_path.py tests/test_hot_path_26.py -m "not slow"
  # 2. host syncs per phase: 30 s
  run 30 $py benchmarks/gpu_hotpath.py sync --net nmnist
  if [ $gpu = 1 ]; then
    # 3. the stage breakdown, each change on its own against the defaults, same call: 90 s
    local nm=.gpudata/nmnist_subset; [ -d $nm ] || nm=/nonexistent
    run 90 $py benchmarks/fitness_overhead.py --breakdown --device cuda --datasets synthetic nmnist --data-root $nm \
      --rounds 2 --compile
    # 4. per-step ms: baseline, fused Adam, one-call masks, device data, all, compiled: 2 x 60 s
    run 60 $py benchmarks/gpu_hotpath.py steps --net nmnist --steps 30
    run 60 $py benchmarks/gpu_hotpath.py steps --net cifar10 --steps 30
    # 5. 1, 2, 4 and 8 evaluations per GPU side by side at K = 1 and 4 (students_per_batch): 4 x 25 s
    for p in 1 2 4 8; do
      for i in $(seq "$p"); do
        timeout 25 $py benchmarks/students_per_batch.py --nets nmnist --ks 1 4 --rounds 1 --train-samples 256 \
          --val-samples 64 > "/tmp/hot-w$p-$i.log" 2>&1 &
      done
      wait
      say "== $p workers on one GPU (per worker: K, evaluations/s):"
      grep -h "^ *[14] " /tmp/hot-w"$p"-*.log | tee -a "$log"
    done
    # 6. full-size DVS: fp32 vs bf16 + channels_last: 90 s
    run 90 $py benchmarks/gpu_hotpath.py dvs --steps 10 --samples 64
  else
    skip "stage breakdown on the GPU (the CPU one: benchmarks/fitness_overhead.py --breakdown, BENCHMARKS.md)"
    run 90 $py benchmarks/gpu_hotpath.py steps --net nmnist --steps 2 --samples 64 --no-compile  # the CPU smoke check
    skip "workers per GPU (1, 2, 4, 8 at K = 1 and 4)"
    run 10 $py benchmarks/gpu_hotpath.py dvs
  fi
  say "== hotpath done"
}

search() {
  # each seed's search then its global_long, the 3 seeds side by side on the one GPU; a run
  # still going after LIMIT seconds (default 420) is stopped and what it wrote comes back
  local epochs=$1 gens=${2:-9} limit=${LIMIT:-420}
  local extra=("${@:3}")
  export OMP_NUM_THREADS=4
  mkdir -p /tmp/runs
  for s in 0 1 2; do
    (
      d=/tmp/runs/cifar10-s$s-mf-e$epochs
      end=$((SECONDS + limit))
      timeout $limit $py -m evo_snn.search --dataset cifar10 --data-root .gpudata/cifar10_jpeg --seed $s --out $d \
        --workers 1 --no-progress --teacher .gpudata/teachers/s$s/teacher.pt --set kd.mode=none \
        --set kd.epochs="$epochs" --set search.fidelity_fraction=0.25 --set search.promote_fraction=0.5 \
        --generations "$gens" "${extra[@]}" > /tmp/runs/search-s$s.log 2>&1 &&
      timeout $((end - SECONDS)) $py -m evo_snn.baselines $d --methods global_long --final-epochs 0 --no-progress \
        --workers 1 > /tmp/runs/baselines-s$s.log 2>&1
      echo "seed $s: exit $? after ${SECONDS}s" >> /tmp/runs/search-s$s.log
      tar czf "$OUT/run-s$s.tgz" --exclude='*.pt' --exclude='*.pkl' -C /tmp/runs "cifar10-s$s-mf-e$epochs" \
        search-s$s.log $(cd /tmp/runs && ls baselines-s$s.log 2>/dev/null)
    ) &
  done
  wait
  tail -n 4 /tmp/runs/search-s*.log /tmp/runs/baselines-s*.log
  for s in 0 1 2; do
    f=/tmp/runs/cifar10-s$s-mf-e$epochs/comparison.json
    [ -f $f ] && $py -c "import json; d=json.load(open('$f')); print($s, {k: round(v['test']['hypervolume'], 4) for k, v in d['methods'].items()})"
  done
}

if [ -z "${SKIP_ENV:-}" ] && { [ "${1:-}" != hotpath ] || command -v nvidia-smi > /dev/null; }; then env_setup; fi
[ "${1:-}" = hotpath ] && export PYTHONPATH=${PYTHONPATH:-$PWD}
case "${1:-}" in
  env) ;;
  hotpath) hotpath ;;
  checks) checks ;;
  recheck) recheck ;;
  search) shift; search "$@" ;;
  *) echo "usage: $0 env|checks|hotpath|search EPOCHS [GENERATIONS]" >&2; exit 2 ;;
esac
