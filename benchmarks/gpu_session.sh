#!/usr/bin/env bash
# One prepared call on a lent GPU (the device tool's `run`), at most ~8.5 minutes, every result under $OUT as soon
# as its step ends (a run cut off still returns what it finished). The second lease (issue 37), on the 141 GB card
# (the released training loop at batch 20 may not fit 80 GB), skipping what the first lease measured:
#   run(command='GPU_SESSION_SKIP="memory e2e" bash benchmarks/gpu_session.sh', carry=[".whl", ".released"],
#       timeout_s=600, kind="nvidia-h200")
# Before it, here: `bash benchmarks/gpu_prepare.sh` (wheels the GPU image lacks -> .whl/) and a copy of the
# released IMR-HSNet in .released/ (both ignored by git). Without a GPU, every step on the CPU at tiny sizes:
#   GPU_SESSION_DRY=1 bash benchmarks/gpu_session.sh          (a test runs this; minutes on 2 cores, e2e the most)
#
# Steps, in order of value, each bounded in time (its limit, or what is left of GPU_SESSION_BUDGET):
#   train_test_resnet50  episodes/s at 400 px, batch 20: the released loops first (fp32, TF32 off), then ours
#                fp32 / --amp / --amp bf16 / --checkpoint-learner, the training loop's peak memory of each
#   train_test_vgg16     the same with VGG16, without --checkpoint-learner
#   micro_bsz    the released PASCAL step (ResNet50, 400 px, batch 40) whole and as train.py --micro-bsz 20 / 10,
#                fp32, --amp bf16 and --checkpoint-learner: each loop's peak (README "Which GPU"), the first
#                step's peak, what stays allocated and what the allocator reserved (the loop's memory over a
#                single step), episodes/s against the whole batch (out of memory: reported, not fatal)
#   profile      bench_profile.py: one ResNet50 training step (batch 20, stage 2) in fp32 and bf16, the top 30
#                kernels and the kernel time by operator group -> profile.tsv
#   compile      ours with --amp bf16 --compile (ResNet50), training only: its compile time is the least
#                predictable, so it has a step of its own
#   cuda_tests   pytest -m cuda (fp32 = released within 1e-4, TF32, AMP, DataParallel, fp16 CAMs, ...)
#   cam          CAMs in fp16: ours vs the released script, pairs/s and the files' largest difference
#   memory       bench_memory.py: max_memory_allocated of a training step at batch 1/10/20/40, both backbones,
#                with cuDNN's default and its deterministic algorithms (the training loop's: is that its extra?)
#   e2e          synthetic data -> CAMs -> one training epoch -> 1/5-shot test -> predict.py, on the device
# GPU_SESSION_SKIP="memory e2e" skips the steps it names (recorded as skipped).
# $OUT gets at most 8 files (the tool returns no more): device.txt, steps.tsv (step, exit status, seconds,
# limit), results.jsonl (every benchmark's RESULT line), session.log (all output), cuda_tests.txt, profile.tsv.
# The dry run uses a CLIP of RN50's layout with tiny widths (the real size costs minutes of CPU for the CAMs).
set -uo pipefail
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then  # mapfile, empty arrays
    echo "benchmarks/gpu_session.sh needs bash 4.4 or newer (this is bash $BASH_VERSION)" >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
DRY=${GPU_SESSION_DRY:-0}
PY=${PYTHON:-python3}
BUDGET=${GPU_SESSION_BUDGET:-540}   # seconds for all steps; the install and the device check come before
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_session.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/session.log"
: > "$LOG"
printf 'step\tstatus\tseconds\tlimit\n' > "$OUT/steps.tsv"

# the dry run's steps take a CPU several times a GPU's step time: their limits are stretched (budget too)
LIMIT_SCALE=1
if [ "$DRY" = 1 ]; then
    LIMIT_SCALE=${GPU_SESSION_LIMIT_SCALE:-4} BUDGET=${GPU_SESSION_BUDGET:-1200}
    DEVICE=cpu IMG=64 BSZ=2 NWORKER=0 BATCHES=1 MICRO_BSZ=(4 0 2) MEM_ARGS=(--size 64 --backbone resnet50 --measure memory)
    PROFILE_ARGS=(--size 64 --bsz 2 --warmup 1)
    E2E_IMG=64 E2E_EPISODES=4
    CLIP="$WORK/tiny_clip.pt"  # a CLIP of RN50's layout but tiny widths: the CPU check is about the plumbing
    "$PY" -c "import sys, torch; sys.path.insert(0, sys.argv[2]); from priors.recipes.clip_gradcam import random_clip_state_dict
torch.save(random_clip_state_dict(0, vision_width=8, vision_layers=(1, 1, 1, 1), embed_dim=256, text_width=64,
                                  text_layers=1), sys.argv[1])" "$CLIP" "$REPO"
    CAM_ARGS=(--max-pairs 4 --clip-weights "$CLIP")
    RELEASED=()  # the released model runs at 400 px only: too slow for a CPU check
    [ "${GPU_SESSION_DRY_RELEASED:-0}" = 1 ] && [ -d .released ] && RELEASED=(--released-repo "$REPO/.released")
else
    # bench_memory: max_memory_allocated only (--measure with nothing: no CPU-allocator profile)
    DEVICE=cuda IMG=400 BSZ=20 NWORKER=8 BATCHES=5 MICRO_BSZ=(40 0 20 10)
    MEM_ARGS=(--cuda-batches 1 10 20 40 --cudnn-deterministic both --measure)
    PROFILE_ARGS=(--size 400 --bsz 20 --warmup 2)
    E2E_IMG=200 E2E_EPISODES=40
    CLIP=random  # RN50 at its real size, random weights (offline)
    CAM_ARGS=()
    RELEASED=()
    [ -d .released ] && RELEASED=(--released-repo "$REPO/.released")  # absolute: the benchmarks run it elsewhere
    if compgen -G ".whl/*.whl" > /dev/null; then
        pip_status=0
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl >> "$LOG" 2>&1 || pip_status=$?
        printf 'install_wheels\t%s\t0\t0\n' "$pip_status" >> "$OUT/steps.tsv"
        export PYTHONPATH=/tmp/site
    fi
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO" PYTHONUNBUFFERED=1 IMRHSNET_PROGRESS=off
START=$(date +%s)

{ date -u; [ "$DRY" = 1 ] && echo "GPU_SESSION_DRY=1: CPU, tiny sizes"
  command -v nvidia-smi > /dev/null && nvidia-smi
  "$PY" -c "import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda)
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')" 2>&1 || true
} > "$OUT/device.txt" 2>&1

collect() { grep -h '^RESULT ' "$LOG" | cut -c8- > "$OUT/results.jsonl"; }

# run_limited SECONDS CMD...: CMD (a shell function too, which `timeout` cannot run) stopped after SECONDS with
# everything it started (TERM, then KILL 5 s later); status 124 then, as timeout's
run_limited() {
    local limit=$1; shift
    local flag="$WORK/timed_out.$$.$RANDOM" status=0 pid watchdog
    set -m  # each background job gets its own process group: a timeout stops all it started
    "$@" &
    pid=$!
    ( sleep "$limit"; kill -0 "$pid" 2> /dev/null && touch "$flag" && kill -TERM -- "-$pid" && sleep 5 &&
      kill -KILL -- "-$pid" ) > /dev/null 2>&1 &
    watchdog=$!
    set +m
    wait "$pid" || status=$?
    kill -TERM -- "-$watchdog" 2> /dev/null
    wait "$watchdog" 2> /dev/null
    if [ -e "$flag" ]; then
        rm -f "$flag"
        kill -KILL -- "-$pid" 2> /dev/null  # whatever is left of the group
        return 124
    fi
    return "$status"
}

# step NAME LIMIT CMD...: run CMD with at most LIMIT seconds (less when the budget runs out), log it, record it
step() {
    local name=$1 limit=$(($2 * LIMIT_SCALE)); shift 2
    if [[ " ${GPU_SESSION_SKIP:-} " == *" $name "* ]]; then
        printf '%s\tskipped (GPU_SESSION_SKIP)\t0\t0\n' "$name" >> "$OUT/steps.tsv"
        return 0
    fi
    local left=$((BUDGET - ($(date +%s) - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then  # counted as a failure at the end: the step did not run
        printf '%s\tnot run (budget spent)\t0\t0\n' "$name" >> "$OUT/steps.tsv"
        return 0
    fi
    echo "=== $name (limit ${limit}s) $*" >> "$LOG"
    local begin=$(date +%s) status=0
    run_limited "$limit" "$@" >> "$LOG" 2>&1 || status=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - begin))" "$limit" >> "$OUT/steps.tsv"
    collect
}

cuda_tests() {
    set -o pipefail
    "$PY" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$OUT/cuda_tests.txt"
}

train_test() {  # BACKBONE VARIANT...: the released loops first (bench_train_test.py runs them before ours)
    "$PY" benchmarks/bench_train_test.py --device "$DEVICE" --backbone "$1" --img-size "$IMG" --bsz "$BSZ" \
        --nworker "$NWORKER" --train-batches "$BATCHES" --test-batches "$BATCHES" --variants "${@:2}" \
        "${RELEASED[@]}"
}

micro_bsz() {  # MICRO_BSZ: the batch, then the micro-batch sizes (0: the whole batch)
    "$PY" benchmarks/bench_train_test.py --device "$DEVICE" --backbone resnet50 --img-size "$IMG" \
        --bsz "${MICRO_BSZ[0]}" --nworker "$NWORKER" --train-batches 2 --test-batches 0 \
        --variants fp32 amp-bf16 ckpt --micro-bsz "${MICRO_BSZ[@]:1}"
}

profile() {  # one file, both precisions (bf16 is skipped on the CPU)
    "$PY" benchmarks/bench_profile.py --device "$DEVICE" --backbone resnet50 --stage 2 --precision fp32 bf16 \
        --top 30 "${PROFILE_ARGS[@]}" --out "$OUT/profile.tsv"
}

memory() {  # a RESULT line per backbone as it ends
    local variants=(ours ours+ckpt)
    [ "${#RELEASED[@]}" -gt 0 ] && variants=(released ours ours+ckpt)
    "$PY" benchmarks/bench_memory.py --device "$DEVICE" --variants "${variants[@]}" "${RELEASED[@]}" "${MEM_ARGS[@]}"
}

cam() {  # the released script runs CLIP in float16 on a GPU: compared with ours in fp16 (ours fp32: measured)
    local precision=fp16
    [ "$DEVICE" = cpu ] && precision=fp32  # fp16 on the CPU: slow and not the question
    "$PY" benchmarks/bench_cam.py --device "$DEVICE" --precision "$precision" --released-pairs 4 "${CAM_ARGS[@]}" \
        "${RELEASED[@]}"
}

e2e() {
    local data="$WORK/e2e/data" run="$WORK/e2e/run" images
    mark() { echo "--- e2e at $(($(date +%s) - START)) s: $1"; }
    mark synthetic && "$PY" -m data.synthetic "$data" --benchmark pascal --images-per-class 6 &&
    mark cams && "$PY" generate_cam_voc.py --datapath "$data" --splitpath "$data/splits" --clip-weights "$CLIP" \
        --device "$DEVICE" --nworker 2 &&
    mark train && "$PY" train.py --datapath "$data" --splitpath "$data/splits" --backbone resnet50 \
        --backbone-weights none --img-size "$E2E_IMG" --bsz 4 --niter 1 --nepisodes "$E2E_EPISODES" --nworker 2 \
        --device "$DEVICE" --logpath "$run" &&
    mark test && "$PY" test.py --datapath "$data" --splitpath "$data/splits" --backbone resnet50 \
        --load "$run/best_model.pt" --nshot 1 5 --nepisodes "$E2E_EPISODES" --img-size "$E2E_IMG" --nworker 2 \
        --device "$DEVICE" --logpath "$WORK/e2e/test" &&
    mapfile -t images < <(ls "$data"/VOC2012/JPEGImages/*.jpg | head -2) &&
    mark predict && "$PY" predict.py --load "$run/best_model.pt" --backbone resnet50 --class-name aeroplane \
        --support "${images[0]}" --query "${images[1]}" --clip-weights "$CLIP" --img-size "$E2E_IMG" \
        --device "$DEVICE" --out "$WORK/e2e/predict" &&
    mark done && "$PY" -c "import json, sys
r = json.load(open(sys.argv[1]))
print('RESULT ' + json.dumps({'bench': 'e2e', 'device': sys.argv[2], 'table': r.get('table')}))" \
        "$WORK/e2e/test/results.json" "$DEVICE"
}

compile_variant() {  # training only: the test pass (no_grad) would compile a second graph
    "$PY" benchmarks/bench_train_test.py --device "$DEVICE" --backbone resnet50 --img-size "$IMG" --bsz "$BSZ" \
        --nworker "$NWORKER" --train-batches "$BATCHES" --test-batches 0 --variants amp-bf16-compile
}

# limits: the H200's measured step times (benchmarks/NOTES.md, "The prepared GPU call") with some room
step train_test_resnet50 150 train_test resnet50 fp32 amp amp-bf16 ckpt
step micro_bsz 150 micro_bsz
step train_test_vgg16 120 train_test vgg16 fp32 amp amp-bf16
step profile 60 profile
if [ "$DRY" = 1 ]; then  # inductor on a CPU compiles for minutes; tests/test_model.py checks --compile there
    printf 'compile\tskipped (dry run)\t0\t0\n' >> "$OUT/steps.tsv"
else
    step compile 100 compile_variant
fi
step cuda_tests 80 cuda_tests
step cam 75 cam
step memory 60 memory
step e2e 100 e2e
collect
echo "total $(($(date +%s) - START)) s of a ${BUDGET} s budget" | tee -a "$LOG"
column -t -s $'\t' "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
# exit status: 0 when every step ran (or was skipped by design: "skipped ...") and succeeded
failed=$(awk -F'\t' 'NR > 1 && $2 != "0" && $2 !~ /^skipped/ { print $1 }' "$OUT/steps.tsv") || failed="steps.tsv unreadable"
[ -z "$failed" ] || { echo "failed or not run: $failed" | tr '\n' ' ' | tee -a "$LOG"; echo; exit 1; }
