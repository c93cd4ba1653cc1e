"""Training throughput of the baseline decoder: tokens/s, MFU and peak memory at two sizes.

MFU = tokens/s x training FLOPs per token (6 N + 12 L d T) / peak. The peak is measured in the
same run: on CPU the best fp32 matmul rate of this machine (square matmuls of a few sizes), on
CUDA the device's datasheet dense bf16 peak (989 TFLOP/s for an H100 SXM or an H200; a device
not listed in timing.py gets its measured bf16 matmul rate, said so; --peak-tflops overrides), so the ratio says how much of what the hardware can do the model actually uses.
A reference row gives the same model with PyTorch's stock loss (logits + F.cross_entropy),
the nanoGPT formulation, measured in the same run.

    python -m benchmarks.throughput                 # CPU, fp32
    python -m benchmarks.throughput --device cuda --dtype bf16 --compile
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import device_peak, in_fresh_process, train_step_rate
from slmlab.config import ModelConfig
from slmlab.tables import human, markdown_table

SIZES = {
    "quickstart (1.8M, char vocab)": {"n_layer": 4, "n_head": 4, "d_model": 192, "d_ff": 768, "vocab_size": 76},
    "~10M (6 x 384, 8k vocab)": {"n_layer": 6, "n_head": 6, "d_model": 384, "vocab_size": 8192},
}


def collect(device: torch.device, dtype: str, compile: bool, batch: int, seq: int, steps: int) -> list[dict]:
    """Per size: our fused-loss model and the stock-loss reference, each in a fresh process."""
    rows = []
    for name, shape in SIZES.items():
        cfg = ModelConfig(block_size=seq, **shape)
        ours = in_fresh_process(train_step_rate, cfg, batch, seq, device, dtype, compile, steps)
        ref = in_fresh_process(train_step_rate, cfg, batch, seq, device, dtype, compile, steps, stock=True)
        rows += [{"size": name, "loss": "fused (slmlab)", **ours}, {"size": name, "loss": "stock (nanoGPT)", **ref}]
    return rows


def arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="device peak; default: measured (CPU) or the device's datasheet dense bf16 (CUDA)",
    )
    return parser


def main() -> None:
    args = arguments(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ).parse_args()
    device = torch.device(args.device)
    peak, peak_source = device_peak(device, args.peak_tflops)
    print(
        f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"peak {peak / 1e9:,.0f} GFLOP/s ({peak_source}), batch {args.batch} x T={args.seq}, {args.dtype}"
        f"{', compiled' if args.compile else ''}"
    )
    rows = collect(device, args.dtype, args.compile, args.batch, args.seq, args.steps)
    table = []
    for ours, ref in zip(rows[::2], rows[1::2]):
        table.append(
            (
                ours["size"],
                human(ours["params"]),
                f"{ours['tokens_per_s']:,.0f}",
                f"{100 * ours['flops_per_s'] / peak:.1f}%",
                human(ours["peak_bytes"], "B"),
                human(ref["peak_bytes"], "B"),
                f"{ref['tokens_per_s']:,.0f}",
                f"{100 * ref['flops_per_s'] / peak:.1f}%",
                f"{ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x",
            )
        )
    print(
        markdown_table(
            (
                "model",
                "params",
                "tokens/s",
                "MFU",
                "peak memory",
                "stock-loss peak memory",
                "stock-loss tokens/s",
                "stock-loss MFU",
                "speed-up",
            ),
            table,
        )
    )
    if device.type == "cpu":
        print("peak memory on CPU: the peak resident set of the process that trained that model alone")


if __name__ == "__main__":
    main()
