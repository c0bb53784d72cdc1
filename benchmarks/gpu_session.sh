#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one call (the device tool's `run`), results under $OUT:
#   the CUDA tests (tests/test_cuda.py and every other `cuda`-marked test), the floor (FLOPs, matmul rates),
#   ours vs the released code (training and test episodes/s at 400 px, both backbones, fp32 and --amp),
#   the CAM job (pairs/s, fp32 and --precision fp16).
# The GPU machine reaches no network: carry what its image lacks as wheels in .whl/ and a copy of the released
# code in .released/ (both ignored by git; name them in `carry`), e.g.
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".released"], timeout_s=600)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
RELEASED=()
[ -d .released ] && RELEASED=(--released-repo .released)
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"; } 2>&1 | tee "$OUT/device.txt"
python3 -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$OUT/cuda_tests.txt"
for backbone in resnet50 vgg16; do
    python3 benchmarks/bench_floor.py --device cuda --backbone "$backbone" --profile 2>&1 | tee "$OUT/floor_$backbone.txt"
    for amp in "" "--amp"; do
        python3 benchmarks/bench_train_test.py --device cuda --backbone "$backbone" --bsz 20 --nworker 8 \
            --train-batches 10 --test-batches 10 $amp "${RELEASED[@]}" 2>&1 | tee -a "$OUT/train_test_$backbone.txt"
    done
done
for precision in fp32 fp16; do
    python3 benchmarks/bench_cam.py --device cuda --precision "$precision" "${RELEASED[@]}" 2>&1 | tee -a "$OUT/cam.txt"
done
