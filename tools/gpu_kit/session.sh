#!/usr/bin/env bash
# The open issues' GPU figures in one call of a lease (after `. tools/gpu_kit/unpack.sh`), steps ordered by value, each
# run only where its expected time is still left before the deadline (docs/gpu.md):
#   KIT_START=$(date +%s); . tools/gpu_kit/unpack.sh && bash tools/gpu_kit/session.sh 560   # the default plan
#   STEPS="insta gaussians" bash tools/gpu_kit/session.sh 300
#   bash tools/gpu_kit/session.sh --dry-run                 # on any machine: the plan, its seconds, summary.json's names
# The deadline counts from KIT_START (set before unpack.sh: the call's limit covers both), else from now. $OUT gets two
# files, written however the call ends (a step past its limit, the call killed): summary.json (every figure by name,
# null where its step did not run in this call, beside the issue's targets) and logs.tar.gz (each step's log and small
# outputs); the steps work in $WORK, each clearing its outputs first. The printed tails hold the figures too.
set -u
DRY=0
if [ "${1:-}" = --dry-run ]; then DRY=1; shift; fi
START=${KIT_START:-$(date +%s)}; DEADLINE=${1:-560}; OUT=${OUT:-outputs/gpu_kit}; WORK=${WORK:-/tmp/gpu_kit_work}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
VIDEO=$WORK/video512
STEPS=${STEPS:-video insta gaussians cuda_tests}
PLAN=0
left() { echo $((DEADLINE - $(date +%s) + START)); }
record() { echo "$1 $2 $3 $4" >> "$WORK/steps.txt"; }  # name expected-seconds rc seconds
step() {  # step NAME EXPECTED_SECONDS COMMAND...: run where EXPECTED is left, within twice that
  local name=$1 expected=$2; shift 2
  PLAN=$((PLAN + expected))
  if [ "$DRY" = 1 ]; then echo "[kit] $name: ~${expected}s (plan ${PLAN}s): $*" | cut -c1-220; record "$name" "$expected" dry 0; return; fi
  local l; l=$(left)
  if [ "$l" -lt "$expected" ]; then echo "[kit] $name: skipped, ${l}s left of ${expected}s expected"; record "$name" "$expected" skipped 0; return; fi
  local limit=$((2 * expected)); [ "$limit" -gt "$((l - 10))" ] && limit=$((l - 10))
  local t; t=$(date +%s)
  rm -rf "${WORK:?}/$name" "$WORK/$name.json" "$WORK/$name.log"  # a warm machine's earlier call: not this call's figures
  echo "[kit] $name: start at $((t - START))s, limit ${limit}s"
  timeout -k 5 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "[kit] $name: rc=$rc in $(($(date +%s) - t))s"; record "$name" "$expected" "$rc" $(($(date +%s) - t))
  tail -n "${TAIL:-15}" "$WORK/$name.log" | cut -c1-220
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
: > "$WORK/steps.txt"
summarise() { trap - EXIT TERM INT; $PY tools/gpu_kit/summary.py --work "$WORK" --out "$OUT" --plan "$PLAN" --dry-run "$DRY"; }
trap summarise EXIT
trap 'exit 143' TERM INT  # (then EXIT writes the summary)
[ "$DRY" = 1 ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# 1. The synthetic video at 512², which the INSTA step trains on (kept on a warm machine; not a figure).
[ -d "$VIDEO" ] && [ "$DRY" = 0 ] && STEPS=${STEPS/video/}
want video && step video 60 $PY -c "from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video; \
make_synthetic_video('$VIDEO.part', SyntheticVideoConfig(resolution=512), device='cuda')" && mv "$VIDEO.part" "$VIDEO"
# 2. INSTA's paper recipe, eager for 2 minutes (held-out PSNR) and 900 steps as one CUDA graph, in one process: it/s as
#    the slope of log.jsonl over steps 600-900 (tools/gpu_kit/insta_pair.py).
want insta && step insta 240 $PY tools/gpu_kit/insta_pair.py --data "$VIDEO" --work "$WORK/insta" --json "$WORK/insta.json"
# 3. 100k Gaussians at 512², forward and forward + backward, against gsplat (built in the background by first_call.sh:
#    its build is awaited here, at most 60 s; importing gsplat during the build deletes it).
GS=
if want gaussians && [ "$DRY" = 0 ]; then
  for _ in $(seq 12); do grep -q "successfully\|built\|Error\|error:" /tmp/gsplat_build.log 2>/dev/null && break; sleep 5; done
  grep -q "^built <" /tmp/gsplat_build.log 2>/dev/null && GS=/tmp/gs: || echo "[kit] gsplat not built: ours alone"
fi
want gaussians && PYTHONPATH=$GS${PYTHONPATH:-} step gaussians 90 $PY benchmarks/gaussians.py --device cuda --sizes 512 \
  --per-face 10 --json "$WORK/gaussians.json"
# 4. The CUDA tests, the files of the GPU paths first, the rest in the time left (-rf names the failures at the end).
PRIORITY=(tests/unit/renderers/test_gaussian_rasterizer.py tests/unit/encoders/test_hashgrid.py
  tests/unit/training/test_step_graph.py tests/unit/core/test_kernels.py tests/unit/models/test_insta_recipe.py)
want cuda_tests && step cuda_tests 150 $PY -m pytest -q -p no:cacheprovider -k cuda -rfE -n 12 "${PRIORITY[@]}" tests
# Optional steps, named in STEPS: INSTA with bfloat16 products for a minute; INSTA's step under the profiler.
want insta_bf16 && step insta_bf16 120 $PY -m headfields train insta --device cuda --data "$VIDEO" \
  --out "$WORK/insta_bf16" --recipe paper --precision bfloat16 --max-minutes 1 --eval-every 0 --budget training
want insta_profile && step insta_profile 150 $PY tools/profile_step.py --train insta --warmup 250 --steps 20 \
  --json "$WORK/insta_profile.json" -- --device cuda --data "$VIDEO" --out "$WORK/insta_prof" --recipe paper --eval-every 0

summarise
echo "[kit] plan ${PLAN}s; done at $(( $(date +%s) - START ))s; $OUT: $(ls "$OUT" | tr '\n' ' ')"
