"""SMAT's cost: training step time and peak memory of each variant relative to the baseline.

Variants baseline / s_only / g_only / full run through the fast path (extra q/k dimensions, no
T x T tensor); "full (naive T x T)" is the test suite's explicit reference (tests/test_smat.py)
for comparison. All at T = 256 and 1024 in one run, on a 4-layer model (default 192 wide with
4 heads, like the quickstart; --d-model/--n-head for others), s_dim 32. Each measurement runs in
a fresh process so peak memory is its own.

    python -m benchmarks.smat_overhead [--device cuda] [--steps 8] [--d-model 384 --n-head 6] [--dtype bf16 --compile]
    python -m benchmarks.smat_overhead --variants full   # the baseline and full SMAT only
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import in_fresh_process, train_step_rate
from slmlab.config import ModelConfig
from slmlab.tables import human, markdown_table
from slmlab.variants.smat import SmatConfig

VARIANTS = {
    "baseline": (False, False),
    "s_only": (True, False),
    "g_only": (False, True),
    "full": (True, True),
    "full (naive T x T)": (True, True),
}


def collect(
    device: str,
    seqs: tuple[int, ...],
    tokens: int,
    steps: int,
    d_model: int,
    n_head: int,
    dtype: str = "fp32",
    compile: bool = False,
    variants=tuple(VARIANTS),
) -> list[dict]:
    """Every (T, variant): the training-step measurement, `tokens` tokens per step."""
    rows = []
    for seq in seqs:
        for variant in variants:
            use_S, use_G = VARIANTS[variant]
            cfg = ModelConfig(
                vocab_size=76,
                n_layer=4,
                n_head=n_head,
                d_model=d_model,
                block_size=seq,
                smat=SmatConfig(use_S=use_S, use_G=use_G),
            )
            result = in_fresh_process(
                train_step_rate, cfg, tokens // seq, seq, device, dtype, compile, steps, naive="naive" in variant
            )
            rows.append({"seq": seq, "variant": variant, **result})
            print(f"T={seq} {variant}: {1000 * result['step_s']:.1f} ms per step", flush=True)  # kept if a time cap stops the run
    return rows


def variants(text: str) -> tuple[str, ...]:
    """--variants: names of VARIANTS, comma-separated; the baseline is always measured (ratios are against it)."""
    chosen = tuple(v.strip() for v in text.split(","))
    if unknown := [v for v in chosen if v not in VARIANTS]:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return ("baseline", *(v for v in chosen if v != "baseline"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step (batch = tokens / T)")
    parser.add_argument("--d-model", type=int, default=192)
    parser.add_argument("--n-head", type=int, default=4, help="SMAT's 64M model: --d-model 384 --n-head 6 (64-wide heads)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--variants", type=variants, default=tuple(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)} (default all)"
    )
    args = parser.parse_args()
    print(
        f"device: {args.device}, torch {torch.__version__}, {args.tokens} tokens per step, "
        f"model 4 x {args.d_model} x {args.n_head} heads, s_dim 32, {args.dtype}{', compiled' if args.compile else ''}"
    )
    rows = collect(
        args.device, (256, 1024), args.tokens, args.steps, args.d_model, args.n_head, args.dtype, args.compile, args.variants
    )
    table = []
    for r in rows:
        base = next(b for b in rows if b["seq"] == r["seq"] and b["variant"] == "baseline")
        table.append(
            (
                r["seq"],
                r["variant"],
                f"{1000 * r['step_s']:.0f}",
                f"{r['step_s'] / base['step_s']:.2f}x",
                human(r["peak_bytes"], "B"),
                f"{r['peak_bytes'] / base['peak_bytes']:.2f}x",
            )
        )
    print(markdown_table(("T", "variant", "step ms", "time vs baseline", "peak memory", "memory vs baseline"), table))


if __name__ == "__main__":
    main()
