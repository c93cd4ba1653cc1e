"""Full causal vs block-local attention: forward + backward time and memory as T grows.

One attention call (B = 1, 8 heads of 64) at T = 1k, 2k, 4k, 8k with block length 256, each
measurement in a fresh process, and the growth exponent of each pattern (slope of log time against
log T): ~2 for full, ~1 for block-local. Three ways to attend:

    full         SDPA's fused causal kernel (flash on CPU and CUDA: no T x T matrix is stored)
    block_local  slmlab's block-local pattern (SDPA over 2B-key windows, block 0 plain causal)
    naive        explicit T x T scores, mask and softmax, as the seeds' notebooks computed it

Memory is what the call keeps for backward (the storages autograd saves, counted once each),
measured the same way on every device; on CUDA the peak allocated memory is reported too.

    python -m benchmarks.attention_scaling [--device cuda] [--block 256]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from benchmarks.timing import in_fresh_process, median_seconds
from slmlab.config import ModelConfig
from slmlab.model.accounting import bytes_kept_for_backward
from slmlab.registry import ATTENTION_PATTERNS
from slmlab.tables import human, markdown_table

LENGTHS = (1024, 2048, 4096, 8192)
PATTERNS = ("full", "block_local", "naive")


def naive_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v with the (T, T) matrices materialised."""
    T = q.shape[-2]
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-2, -1) * scale).masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def measure(pattern: str, T: int, block: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    device = torch.device(device)
    q, k, v = (torch.randn(1, 8, T, 64, device=device, requires_grad=True) for _ in range(3))
    scale = 1 / math.sqrt(64)
    if pattern == "naive":
        attend = lambda: naive_causal(q, k, v, scale)
    else:
        module = ATTENTION_PATTERNS[pattern](ModelConfig(local_block=block), 0)
        attend = lambda: module(q, k, v, scale, 0)

    def step():
        attend().sum().backward()

    step()
    _, saved = bytes_kept_for_backward(attend)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = median_seconds(step, repeats, device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {"seconds": seconds, "memory": saved, "peak": peak}


def collect(device: str, block: int, repeats: int, lengths=LENGTHS) -> dict[tuple[str, int], dict]:
    """(pattern, T) -> {"seconds", "memory", "peak"} for every pattern at every length."""
    return {(pattern, T): in_fresh_process(measure, pattern, T, block, device, repeats) for pattern in PATTERNS for T in lengths}


def growth_exponent(results: dict, pattern: str, lengths=LENGTHS) -> float:
    """Slope of log time against log T."""
    return float(np.polyfit(np.log(lengths), np.log([results[pattern, T]["seconds"] for T in lengths]), 1)[0])


def attention_arguments(description: str, block: int) -> argparse.Namespace:
    """--device, --block and --repeats of an attention benchmark."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--block", type=int, default=block)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = attention_arguments(__doc__, 256)
    print(f"device: {args.device}, torch {torch.__version__}, 1 x 8 heads x 64, block {args.block}, forward + backward")
    results = collect(args.device, args.block, args.repeats)
    print(
        markdown_table(
            ("T", "pattern", "ms", "time vs full", "kept for backward", "memory vs full", "CUDA peak"), table_rows(results)
        )
    )
    for pattern in PATTERNS:
        print(f"growth exponent of {pattern}: time ~ T^{growth_exponent(results, pattern):.2f}")


def table_rows(results: dict) -> list[tuple]:
    rows = []
    for T in LENGTHS:
        base = results["full", T]
        for pattern in PATTERNS:
            r = results[pattern, T]
            rows.append(
                (
                    T,
                    pattern,
                    f"{1000 * r['seconds']:.1f}",
                    f"{r['seconds'] / base['seconds']:.2f}x",
                    human(r["memory"], "B"),
                    f"{r['memory'] / base['memory']:.2f}x",
                    human(r["peak"], "B") if r["peak"] else "–",
                )
            )
    return rows


if __name__ == "__main__":
    main()
