"""`python -m benchmarks all`: every benchmark in one run, one Markdown table.

Groups, each with its own baseline measured in the same run (ratios are against it):
  variants   training step of the ~10M model (6 x 384, 6 heads of 64, 8k vocab, T = 256): the
             baseline, the stock-loss formulation, RoPE, and the SMAT variants
  long ctx   the same model at T = 2048: full vs block-local attention (block 256)
  kernels    that model at each --kernel-lengths (default 2048): full attention against each
             block-local kernel (SDPA windows, FlexAttention; timed by the function the trainer's
             "auto" choice uses, which names its pick): forward + backward where FlexAttention can
             train (CUDA), forward only elsewhere
  attention  one attention call: full (fused SDPA), block-local, naive T x T, T = 1k..8k
             (benchmarks/attention_scaling.py)
  presets    on CUDA only: the 64M and 80M presets (bf16 + compile where asked), the MFU target
  decoding   `generate` at the quickstart size and ~10M, block-local and Tape: cached, recomputing,
             8 prompts one at a time or as one left-padded batch, and with --compile compiled; time per token
             against the same model's full-sequence forward (benchmarks/decoding.py)
  step       on CPU only: slmlab's training loop against a minimal nanoGPT-style loop at nanoGPT's
             CPU recipe and at 6 x 384, taking turns over --rounds (benchmarks/step_overhead.py)
MFU = tokens/s x (6 N + 12 d sum_l T_l) / peak (measured fp32 matmul peak on CPU; on
CUDA the device's datasheet dense bf16 peak, benchmarks/timing.py),
where T_l is the keys layer l reaches: T, or 2B for block-local (slmlab.model.accounting).

    python -m benchmarks all [--out runs/bench.md] [--steps 6]
    python -m benchmarks all --device cuda --dtype bf16 --compile
    python -m benchmarks all --groups decoding,step --compile     # README's "Speed where users wait"
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch

from benchmarks import attention_scaling, decoding, step_overhead
from benchmarks.timing import (
    device_peak,
    in_fresh_process,
    kernel_batch,
    local_kernel_seconds,
    train_step_rate,
)
from slmlab.config import ModelConfig, load_config
from slmlab.tables import human, markdown_table
from slmlab.training.kernel_choice import flex_unavailable
from slmlab.variants.smat import SmatConfig

TEN_M = {"n_layer": 6, "n_head": 6, "d_model": 384, "vocab_size": 8192}
VARIANTS = {
    "baseline": {},
    "stock loss (nanoGPT formulation)": {"stock": True},
    "rope": {"cfg": {"pos": "rope"}},
    "smat s_only": {"cfg": {"smat": SmatConfig(use_S=True)}},
    "smat g_only": {"cfg": {"smat": SmatConfig(use_G=True)}},
    "smat full": {"cfg": {"smat": SmatConfig(use_S=True, use_G=True)}},
}
PRESETS = ("configs/smat_64m.toml", "configs/smt_80m.toml")
GROUPS = ("variants", "long-ctx", "kernels", "attention", "presets", "decoding", "step")


def preset(path: str, batch: int) -> tuple[ModelConfig, int, int, bool]:
    """A preset's model (GPT-2 vocabulary where the tokenizer would set it) at `batch`."""
    cfg = load_config(path)
    return dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size or 50257), batch, cfg.data.seq_len, False


def model_rows(args, peak: float) -> list[tuple]:
    rows = []

    def group(name: str, runs: dict[str, tuple[ModelConfig, int, int, bool]]):
        results = {}
        for label, (cfg, batch, seq, stock) in runs.items():
            r = in_fresh_process(train_step_rate, cfg, batch, seq, args.device, args.dtype, args.compile, args.steps, stock=stock)
            print(f"{name}, {label}: {r['tokens_per_s']:,.0f} tokens/s", flush=True)  # kept if a time cap stops the run
            results[label] = r
        base = next(iter(results.values()))
        for label, r in results.items():
            rows.append(
                (
                    name,
                    label,
                    human(r["params"]),
                    f"{r['tokens_per_s']:,.0f}",
                    f"{100 * r['flops_per_s'] / peak:.1f}%",
                    human(r["peak_bytes"], "B"),
                    f"{r['step_s'] / base['step_s']:.2f}x",
                    f"{r['peak_bytes'] / base['peak_bytes']:.2f}x",
                )
            )

    if "variants" in args.groups:
        group(
            "variants (T=256, batch 16)",
            {
                label: (ModelConfig(block_size=256, **TEN_M, **spec.get("cfg", {})), 16, 256, spec.get("stock", False))
                for label, spec in VARIANTS.items()
            },
        )
    if "long-ctx" in args.groups:
        group(
            "long ctx (T=2048, batch 2)",
            {
                pattern: (ModelConfig(block_size=2048, pos="rope", attention=pattern, local_block=256, **TEN_M), 2, 2048, False)
                for pattern in ("full", "block_local")
            },
        )
    if "presets" in args.groups and torch.device(args.device).type == "cuda":
        group(f"presets (batch {args.preset_batch})", {Path(path).stem: preset(path, args.preset_batch) for path in PRESETS})
    return rows


def kernel_rows(args) -> list[tuple]:
    """The long-context model (T at each --kernel-lengths, block 256) forward (+ backward): full
    attention (the baseline) vs each block-local kernel (SDPA windows, FlexAttention), and which
    one the trainer's "auto" would pick (the faster, where FlexAttention can train)."""
    cfg = ModelConfig(block_size=2048, pos="rope", attention="block_local", local_block=256, **TEN_M)
    why = flex_unavailable(torch.device(args.device), cfg)
    seconds = in_fresh_process(local_kernel_seconds, cfg, args.kernel_lengths, args.device, args.dtype, not why, args.steps)
    rows = []
    for T, times in seconds.items():
        batch = kernel_batch(T)
        picks = "windows" if why else min(("windows", "flex"), key=times.get)
        group = f"kernels (T={T}, batch {batch}, {'forward + backward' if not why else 'forward only'}; auto picks {picks})"
        for kernel in ("full", "windows", "flex"):
            label = "full attention (fused SDPA)" if kernel == "full" else f"block_local {kernel}"
            speed = f"{batch * T / times[kernel]:,.0f}"
            rows.append((group, label, "–", speed, "–", "–", f"{times[kernel] / times['full']:.2f}x", "–"))
    return rows


def attention_rows(args) -> tuple[list[tuple], dict[str, float]]:
    results = attention_scaling.collect(args.device, 256, 3)
    rows = []
    for T in attention_scaling.LENGTHS:
        base = results["full", T]
        for pattern in attention_scaling.PATTERNS:
            r = results[pattern, T]
            memory = human(r["peak"] or r["memory"], "B") + (" peak" if r["peak"] else " kept")
            rows.append(
                (
                    f"attention (T={T})",
                    pattern,
                    "–",
                    f"{T / r['seconds']:,.0f}",
                    "–",
                    memory,
                    f"{r['seconds'] / base['seconds']:.2f}x",
                    f"{(r['peak'] or r['memory']) / (base['peak'] or base['memory']):.2f}x",
                )
            )
    exponents = {p: attention_scaling.growth_exponent(results, p) for p in attention_scaling.PATTERNS}
    return rows, exponents


def decoding_rows(args) -> list[tuple]:
    """Per model, every decoding setting; time per token against its full-sequence forward's.
    Each model's figures are printed as soon as they are measured (a run stopped by a time cap
    keeps them)."""
    rows = []
    for name, shape in decoding.MODELS.items():
        results = in_fresh_process(decoding.measure, shape, args.new_tokens, 3, args.compile, args.device)
        forward = results["forward (T=512, batch 1)"][0]
        measured = decoding.settings(results)
        print(f"{name}: " + "; ".join(f"{setting} {median:,.0f} tokens/s" for setting, median, _, _ in measured), flush=True)
        for setting, median, _, _ in measured:
            rows.append(
                (
                    f"decoding, {name}",
                    setting,
                    human(results["params"]),
                    f"{median:,.0f}",
                    "–",
                    "–",
                    f"{forward / median:.2f}x",
                    "–",
                )
            )
    return rows


def step_rows(args) -> list[tuple]:
    """Per shape, the nanoGPT-style reference (the baseline) and slmlab's loop: medians over rounds."""
    rows = []
    for name, shape in step_overhead.SHAPES.items():
        measured = step_overhead.measure(shape, args.rounds, max(20, 10 * args.steps), args.compile)
        base = statistics.median(measured["nanoGPT-style reference"])
        for label, rates in measured.items():
            rate = statistics.median(rates)
            rows.append((f"step overhead, {name}", label, "–", f"{rate:,.0f}", "–", "–", f"{base / rate:.2f}x", "–"))
    return rows


def lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"lengths must be whole numbers, comma-separated, got {text!r}") from None
    if not values or min(values) < 256 or any(T % 256 for T in values):
        raise argparse.ArgumentTypeError(f"lengths must be multiples of the block (256), got {text!r}")
    return values


def groups(text: str) -> list[str]:
    chosen = [g.strip() for g in text.split(",")] if text != "all" else list(GROUPS)
    if unknown := [g for g in chosen if g not in GROUPS]:
        raise argparse.ArgumentTypeError(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("all",), help="run every benchmark")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement (median)")
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--out", default="runs/bench.md")
    parser.add_argument("--groups", type=groups, default="all", help=f"comma-separated, of: {', '.join(GROUPS)} (default all)")
    parser.add_argument("--new-tokens", type=int, default=512, help="decoding: tokens generated per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="step: turns each loop takes")
    parser.add_argument("--preset-batch", type=int, default=16, help="presets: sequences per step (default 16, the presets')")
    parser.add_argument(
        "--kernel-lengths", type=lengths, default=(2048,), help="kernels: sequence lengths, comma-separated (default 2048)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    peak, source = device_peak(device, args.peak_tflops)
    header = (
        f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, peak {peak / 1e9:,.0f} GFLOP/s "
        f"({source}), {args.dtype}{', compiled' if args.compile else ''}; ratios vs the first row of each group"
    )
    print(header, flush=True)
    rows, notes = model_rows(args, peak), []
    if "kernels" in args.groups:
        rows += kernel_rows(args)
    if "attention" in args.groups:
        more, exponents = attention_rows(args)
        rows += more
        notes.append(", ".join(f"{p} attention time ~ T^{e:.2f}" for p, e in exponents.items()))
        notes.append("attention rows' memory: the bytes autograd keeps for backward")
    if "decoding" in args.groups:
        rows += decoding_rows(args)
        notes.append(
            "decoding rows: fp32 (--dtype applies to training), time per token vs the same model's forward over 512 "
            "tokens (the group's first row)"
        )
    if "step" in args.groups:
        if device.type == "cpu":
            rows += step_rows(args)
            notes.append("step overhead rows: medians over rounds of each loop's median window; time vs the reference")
        else:
            notes.append("step overhead: measured on CPU only (its reference loop is nanoGPT's CPU recipe)")
    if device.type == "cpu":
        notes.append("peak memory on CPU: peak resident set of the measuring process")
    table = markdown_table(
        ("group", "setting", "params", "tokens/s", "MFU", "peak memory", "time vs baseline", "memory vs baseline"), rows
    )
    footer = "; ".join(notes)
    text = f"{header}\n\n{table}\n\n{footer}\n"
    print(table + "\n" + footer)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"saved: {args.out}")


if __name__ == "__main__":
    main()
