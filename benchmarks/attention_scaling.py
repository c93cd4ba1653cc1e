"""Full causal vs block-local attention: forward + backward time and peak memory as T grows.

One attention call (B = 1, 8 heads of 64) at T = 1k, 2k, 4k, 8k with block length 256, both
patterns in the same run, each measurement in a fresh process (so peak memory is its own), and
the growth exponent of each (slope of log time against log T): ~2 for full, ~1 for block-local.

    python benchmarks/attention_scaling.py [--device cuda] [--block 256]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from timing import in_fresh_process, median_seconds

from slmlab.config import ModelConfig
from slmlab.model import ATTENTION_PATTERNS
from slmlab.model.accounting import human
from slmlab.runtime import peak_memory_bytes
from slmlab.tables import markdown_table

LENGTHS = (1024, 2048, 4096, 8192)


def measure(pattern: str, T: int, block: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    module = ATTENTION_PATTERNS[pattern](ModelConfig(local_block=block), 0)
    q, k, v = (torch.randn(1, 8, T, 64, device=device, requires_grad=True) for _ in range(3))
    base = peak_memory_bytes(torch.device(device))

    def step():
        module(q, k, v, 1 / math.sqrt(64), 0).sum().backward()

    step()
    return {"seconds": median_seconds(step, repeats, device), "memory": peak_memory_bytes(torch.device(device)) - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {args.device}, torch {torch.__version__}, 1 x 8 heads x 64, block {args.block}, forward + backward")
    results = {}
    for pattern in ("full", "block_local"):
        for T in LENGTHS:
            results[pattern, T] = in_fresh_process(measure, pattern, T, args.block, args.device, args.repeats)
    rows = []
    for T in LENGTHS:
        full, local = results["full", T], results["block_local", T]
        rows.append((T, f"{1000 * full['seconds']:.1f}", f"{1000 * local['seconds']:.1f}", f"{full['seconds'] / local['seconds']:.2f}x",
                     human(full["memory"], "B"), human(local["memory"], "B"), f"{local['memory'] / max(full['memory'], 1):.2f}"))
    print(markdown_table(("T", "full ms", "block-local ms", "speed-up", "full attention memory", "block-local memory", "memory ratio"), rows))
    for pattern in ("full", "block_local"):
        slope = np.polyfit(np.log(LENGTHS), np.log([results[pattern, T]["seconds"] for T in LENGTHS]), 1)[0]
        print(f"growth exponent of {pattern}: time ~ T^{slope:.2f}")
    if args.device == "cpu":
        print("memory on CPU: growth of the process's peak resident set during the measurement")


if __name__ == "__main__":
    main()
