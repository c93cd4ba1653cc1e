"""A left-padded batch of long prompts through block-local attention, as `generate_many` prefills
it (inference): slmlab's way (on CPU each row's tokens through the block-by-block kernel training
uses, written into the batch's output), against the same attention under one explicit
(rows, T, T) mask (slmlab's way before 2026-12-03, and a dense implementation's), and against the
rows one at a time, unpadded (the floor a batch should approach: it skips the padding).

One attention call of 4 rows of T, 7T/8, 3T/4 and 5T/8 tokens left-padded to T, 8 heads of 64,
block B, at T = 1k, 2k, 4k, 8k, each measurement in a fresh process; the median time of the
repeats and the growth exponent of each way (slope of log time against log T: ~1 is O(T B), ~2
is O(T^2)).

    python -m benchmarks.padded_prefill [--device cuda] [--block 64] [--repeats 3]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmarks.attention_scaling import LENGTHS, attention_arguments, growth_exponent
from benchmarks.timing import in_fresh_process, median_seconds
from slmlab.config import ModelConfig
from slmlab.model.attention import padded_visible
from slmlab.model.block_local import BlockLocal
from slmlab.tables import markdown_table

WAYS = ("slmlab", "one (rows, T, T) mask", "rows one at a time, unpadded")


def measure(way: str, T: int, block: int, device: str, repeats: int) -> float:
    """Median seconds of one attention call of the padded batch, the given way."""
    torch.manual_seed(0)
    device = torch.device(device)
    q, k, v = torch.randn(4, T, 3, 8, 64, device=device).permute(2, 0, 3, 1, 4)  # (4, 8, T, 64) as attention makes them
    padding = torch.tensor([0, T // 8, T // 4, 3 * T // 8], device=device)
    pattern, scale = BlockLocal(ModelConfig(local_block=block), 0), 1 / math.sqrt(64)
    if way == WAYS[0]:
        attend = lambda: pattern(q, k, v, scale, 0, padding=padding)
    elif way == WAYS[1]:
        attend = lambda: F.scaled_dot_product_attention(
            q, k, v, attn_mask=padded_visible(pattern.sees, T, T, 0, padding, device)[:, None], scale=scale
        )
    else:
        rows = [(q[r : r + 1, :, p:], k[r : r + 1, :, p:], v[r : r + 1, :, p:]) for r, p in enumerate(padding.tolist())]
        attend = lambda: [pattern(*row, scale, 0) for row in rows]
    with torch.no_grad():
        attend()  # warm-up
        return median_seconds(attend, repeats, device)


def main() -> None:
    args = attention_arguments(__doc__, 64)
    print(
        f"device: {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}; 4 rows x 8 heads x 64, block {args.block}"
    )
    results = {
        (way, T): {"seconds": in_fresh_process(measure, way, T, args.block, args.device, args.repeats)}
        for way in WAYS
        for T in LENGTHS
    }
    rows = [
        (
            T,
            way,
            f"{1000 * results[way, T]['seconds']:.1f}",
            f"{results[way, T]['seconds'] / results[WAYS[0], T]['seconds']:.2f}x",
        )
        for T in LENGTHS
        for way in WAYS
    ]
    print(markdown_table(("T", "way", "ms (median)", "vs slmlab"), rows))
    for way in WAYS:
        print(f"growth exponent of {way}: time ~ T^{growth_exponent(results, way):.2f}")


if __name__ == "__main__":
    main()
