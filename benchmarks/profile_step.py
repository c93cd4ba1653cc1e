"""Where one training step's time goes: a run config's own optimizer step under torch.profiler.

The step is the trainer's (`slmlab.experiments.budget.run_step`: its device, dtype, optimizer,
grad_accum micro-batches, clipping and, with --train.compile true, torch.compile) on one batch of
random tokens of the config's shape. After --warmup steps (which compile), --steps steps are
profiled. Printed: the wall time per step, its scalar reads (`.item()` and the like: on CUDA each
makes the host wait for the device), and on CUDA the host syncs, the kernels launched and the
summed kernel time (wall minus kernels is time the device waited on the host); then the operators
that cost the most host time and, on CUDA, device time. (On CPU, torch's fused AdamW reads one
scalar per parameter: 52 of the quickstart step's 56; the forward reads 4, its input checks.)

    python -m benchmarks.profile_step configs/smat_64m.toml --train.device cuda
    python -m benchmarks.profile_step configs/smat_64m.toml --train.compile true --steps 5
    python -m benchmarks.profile_step configs/quickstart.toml --model.smat.use_S true   # CPU: host time only
"""

from __future__ import annotations

import argparse
import time

from torch.profiler import ProfilerActivity, profile

from slmlab.config import load_config
from slmlab.experiments.budget import run_step
from slmlab.training.runtime import sync

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")  # the host waits for the device
SCALAR_READS = ("aten::_local_scalar_dense",)  # .item(), bool(t), float(t): a sync each on CUDA
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps before profiling (a compiled model compiles)")
    parser.add_argument("--top", type=int, default=15, help="operators listed per table")
    args, extra = parser.parse_known_args()
    cfg = load_config(args.config, extra)  # --section.key value overrides, as the CLI takes them
    step = run_step(cfg)
    device = step.device
    started = time.perf_counter()
    for n in range(args.warmup):
        step(n)
    sync(device)
    print(
        f"{args.config} on {device}, {cfg.train.dtype}{', compiled' if cfg.train.compile else ''}: "
        f"warm-up {time.perf_counter() - started:.1f} s"
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        for n in range(args.steps):
            step(args.warmup + n)
        sync(device)
        wall = (time.perf_counter() - started) / args.steps
    events = profiler.key_averages()

    def per_step(names: tuple[str, ...]) -> float:
        return sum(e.count for e in events if e.key in names) / args.steps

    line = f"wall {1000 * wall:.1f} ms per step; {per_step(SCALAR_READS):.0f} scalar reads per step"
    if device.type == "cuda":
        kernels = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") / 1000 / args.steps
        line += f", {per_step(SYNCS):.0f} host syncs, {per_step(LAUNCHES):.0f} kernel launches, {kernels:.1f} ms of kernel time"
        line += f" (the device idles {100 * max(0.0, 1 - kernels / (1000 * wall)):.0f}% of the step)"
    print(line)
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    if device.type == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
