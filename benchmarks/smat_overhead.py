"""SMAT's cost: training step time and peak memory of each variant relative to the baseline.

Variants baseline / s_only / g_only / full run through the fast path (extra q/k dimensions, no
T x T tensor); "full (naive T x T)" is the test suite's explicit reference (tests/test_smat.py)
for comparison. All at T = 256 and 1024 in one run, on a 4-layer model (default 192 wide with
4 heads, like the quickstart; --d-model/--n-head for others), s_dim 32. Each measurement runs in a fresh process so peak memory is its own.

    python benchmarks/smat_overhead.py [--device cuda] [--steps 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from timing import in_fresh_process, median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package, for the naive reference

from slmlab.config import ModelConfig, SmatConfig  # noqa: E402
from slmlab.model import build_model  # noqa: E402
from slmlab.model.accounting import human  # noqa: E402
from slmlab.runtime import peak_memory_bytes  # noqa: E402
from slmlab.tables import markdown_table  # noqa: E402

VARIANTS = {"baseline": (False, False), "s_only": (True, False), "g_only": (False, True), "full": (True, True),
            "full (naive T x T)": (True, True)}


def measure(variant: str, seq: int, batch: int, steps: int, device: str, d_model: int, n_head: int) -> dict:
    torch.manual_seed(0)
    use_S, use_G = VARIANTS[variant]
    cfg = ModelConfig(vocab_size=76, n_layer=4, n_head=n_head, d_model=d_model, block_size=seq,
                      smat=SmatConfig(use_S=use_S, use_G=use_G))
    if "naive" in variant:
        from slmlab.model.attention import CausalSelfAttention
        from tests.test_smat import naive_attention

        CausalSelfAttention.forward = lambda self, h, positions, cache=None: naive_attention(self, h)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 76, (batch, seq), device=device)

    def step():
        _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    return {"step_s": median_seconds(step, steps, device), "peak": peak_memory_bytes(torch.device(device))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step (batch = tokens / T)")
    parser.add_argument("--d-model", type=int, default=192)
    parser.add_argument("--n-head", type=int, default=4, help="SMAT's 64M model: --d-model 384 --n-head 6 (64-wide heads)")
    args = parser.parse_args()
    print(f"device: {args.device}, torch {torch.__version__}, {args.tokens} tokens per step, "
          f"model 4 x {args.d_model} x {args.n_head} heads, s_dim 32")
    rows = []
    for seq in (256, 1024):
        results = {variant: in_fresh_process(measure, variant, seq, args.tokens // seq, args.steps, args.device,
                                             args.d_model, args.n_head) for variant in VARIANTS}
        base = results["baseline"]
        for variant, r in results.items():
            rows.append((seq, variant, f"{1000 * r['step_s']:.0f}", f"{r['step_s'] / base['step_s']:.2f}x",
                         human(r["peak"], "B"), f"{r['peak'] / base['peak']:.2f}x"))
    print(markdown_table(("T", "variant", "step ms", "time vs baseline", "peak memory", "memory vs baseline"), rows))


if __name__ == "__main__":
    main()
