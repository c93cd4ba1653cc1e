"""Training throughput of the baseline decoder: tokens/s, MFU and peak memory at two sizes.

MFU = tokens/s x training FLOPs per token (6 N + 12 L d T) / peak. The peak is measured in the
same run: on CPU the best fp32 matmul rate of this machine (square matmuls of a few sizes), on
CUDA the device's dense bf16 peak (989 TFLOP/s for an H100 SXM unless --peak-tflops says
otherwise), so the ratio says how much of what the hardware can do the model actually uses.
A reference column gives the same model with PyTorch's stock loss (logits + F.cross_entropy),
the nanoGPT formulation, measured in the same run.

    python benchmarks/throughput.py                 # CPU, fp32
    python benchmarks/throughput.py --device cuda --dtype bf16 --compile
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from timing import in_fresh_process, median_seconds, sync

from slmlab.config import ModelConfig
from slmlab.model import build_model, model_stats
from slmlab.model.accounting import human
from slmlab.runtime import autocast, peak_memory_bytes
from slmlab.tables import markdown_table

SIZES = {
    "quickstart (1.8M, char vocab)": dict(n_layer=4, n_head=4, d_model=192, d_ff=768, vocab_size=76),
    "~10M (6 x 384, 8k vocab)": dict(n_layer=6, n_head=6, d_model=384, vocab_size=8192),
}


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float:
    """Best FLOP/s of square matmuls of a few sizes on this device."""
    best = 0.0
    for n in (1024, 2048, 3072):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            for _ in range(5):
                a @ b
            sync(device)
            best = max(best, 5 * 2 * n**3 / (time.perf_counter() - start))
    return best


def stock_loss(model, x, y):
    """The nanoGPT formulation: full logits, then F.cross_entropy."""
    logits, _ = model(x)
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))


def measure(cfg: ModelConfig, batch: int, seq: int, device: torch.device, dtype: str, compile: bool,
            steps: int, stock: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compile else model
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def step():
        with autocast(device, dtype):
            loss = stock_loss(forward, x, y) if stock else forward(x, y)[1]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = median_seconds(step, steps, device)
    stats = model_stats(model, cfg)
    return {
        "params": stats.params, "tokens_per_s": batch * seq / seconds,
        "flops_per_s": batch * seq * stats.flops_per_token(seq) / seconds, "peak_bytes": peak_memory_bytes(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak; default: measured (CPU) or 989 (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops * 1e12, "given"
    elif device.type == "cuda":
        peak, peak_source = 989e12, "H100 dense bf16"
    else:
        peak, peak_source = matmul_peak(device, torch.float32), "measured fp32 matmul"
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"peak {peak / 1e9:,.0f} GFLOP/s ({peak_source}), batch {args.batch} x T={args.seq}, {args.dtype}"
          f"{', compiled' if args.compile else ''}")
    rows = []
    for name, shape in SIZES.items():
        cfg = ModelConfig(block_size=args.seq, **shape)
        ours = in_fresh_process(measure, cfg, args.batch, args.seq, device, args.dtype, args.compile, args.steps)
        ref = in_fresh_process(measure, cfg, args.batch, args.seq, device, args.dtype, args.compile, args.steps, stock=True)
        rows.append((
            name, human(ours["params"]), f"{ours['tokens_per_s']:,.0f}", f"{100 * ours['flops_per_s'] / peak:.1f}%",
            human(ours["peak_bytes"], "B"), human(ref["peak_bytes"], "B"), f"{ref['tokens_per_s']:,.0f}", f"{100 * ref['flops_per_s'] / peak:.1f}%",
            f"{ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x",
        ))
    print(markdown_table(
        ("model", "params", "tokens/s", "MFU", "peak memory", "stock-loss peak memory", "stock-loss tokens/s", "stock-loss MFU", "speed-up"), rows))
    if device.type == "cpu":
        print("peak memory on CPU: the peak resident set of the process that trained that model alone")


if __name__ == "__main__":
    main()
