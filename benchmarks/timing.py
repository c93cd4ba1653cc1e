"""Shared by the benchmarks: median step time with device syncs, a fresh process per measurement,
the device's peak FLOP/s, and the training-step measurement every model benchmark uses."""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F

from slmlab.config import ModelConfig, TrainConfig
from slmlab.model import build_model, model_stats
from slmlab.training.kernel_choice import forward_backward, time_local_kernels
from slmlab.training.optim import build_optimizer
from slmlab.training.runtime import autocast, median_seconds, peak_memory_bytes, sync

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' datasheets, by a part of the name CUDA
# reports; the first entry the name contains wins, so a variant precedes the name it extends.
DENSE_BF16_PEAKS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("GH200", 989e12),
    ("H200", 989e12),  # the H100's processor with more memory
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
)


def in_fresh_process(fn: Callable, *args, **kwargs):
    """Run fn in its own spawned process, so the CPU peak resident set is that measurement's alone."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 3) -> float:
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


def datasheet_peak(name: str) -> float | None:
    """A CUDA device's dense bf16 peak by its name ("NVIDIA H200" -> 989e12), None if not listed."""
    return next((peak for part, peak in DENSE_BF16_PEAKS if part in name), None)


def device_peak(device: torch.device, given_tflops: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): given; on CUDA the device's datasheet dense bf16 peak,
    or for a device not listed its measured bf16 matmul rate, said so; on CPU the measured fp32."""
    if given_tflops:
        return given_tflops * 1e12, "given"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if (peak := datasheet_peak(name)) is not None:
            return peak, f"{name}, datasheet dense bf16"
        return matmul_peak(device, torch.bfloat16), f"{name}: no datasheet peak known, measured bf16 matmul"
    return matmul_peak(device), "measured fp32 matmul"


def stock_loss(model, x, y):
    """The nanoGPT formulation: full logits, then F.cross_entropy."""
    logits, _ = model(x)
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))


def naive_smat() -> None:
    """Route every attention call through SMAT's explicit T x T reference."""
    from slmlab.model.attention import CausalSelfAttention
    from slmlab.variants.smat import naive_attention

    CausalSelfAttention.forward = lambda self, h, positions, cache=None: naive_attention(self, h)


def train_step_rate(
    cfg: ModelConfig,
    batch: int,
    seq: int,
    device: str | torch.device,
    dtype: str = "fp32",
    compile: bool = False,
    steps: int = 10,
    stock: bool = False,
    naive: bool = False,
) -> dict:
    """One training step (the trainer's AdamW) of a fresh model on random tokens: median time over
    `steps` after warm-up -> tokens/s, model FLOP/s (ModelStats.flops_per_token), peak memory, parameters."""
    device = torch.device(device)
    torch.manual_seed(0)
    if naive:
        naive_smat()
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4), device)
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
        "params": stats.params,
        "step_s": seconds,
        "tokens_per_s": batch * seq / seconds,
        "flops_per_s": batch * seq * stats.flops_per_token(seq) / seconds,
        "peak_bytes": peak_memory_bytes(device),
    }


def kernel_batch(seq: int) -> int:
    """Sequences per pass of the kernels group at length `seq`: 4,096 tokens, at least one sequence."""
    return max(1, 4096 // seq)


def local_kernel_seconds(
    cfg: ModelConfig, lengths: tuple[int, ...], device: str, dtype: str, backward: bool, repeats: int
) -> dict:
    """{T: {"full": s, "windows": s, "flex": s}}: median seconds of one forward (+ backward) of a
    fresh model at each length T (batch `kernel_batch(T)`) with full attention (fused SDPA) and
    with each block-local kernel of `cfg`'s block-local model, all in one process (FlexAttention
    compiles once per shape). The block-local kernels take turns (`time_local_kernels`, the
    trainer's "auto" choice)."""
    device = torch.device(device)
    seconds = {}
    for T in lengths:
        torch.manual_seed(0)
        local = build_model(dataclasses.replace(cfg, block_size=T)).to(device)
        tokens = torch.randint(0, cfg.vocab_size, (kernel_batch(T), T), device=device)
        seconds[T] = time_local_kernels(local, tokens, dtype, backward=backward, repeats=repeats)
        del local
        full = build_model(dataclasses.replace(cfg, block_size=T, attention="full")).to(device)
        step = functools.partial(forward_backward, full, tokens, dtype, backward)
        step()
        seconds[T]["full"] = median_seconds(step, repeats, device)
        del full
    return seconds
