"""Which kernel computes the block-local layers: SDPA over 2B-key windows or FlexAttention.

Both compute the same attention (tested against an explicit T x T mask); they differ in speed.
`model.local_kernel` decides:

    "windows"  always the SDPA window kernel (any device, with attention dropout)
    "flex"     always FlexAttention (needs a device where it has a backward, i.e. CUDA, to train)
    "auto"     the trainer times one forward + backward of the model on a batch of the run's shape
               with each kernel, before training, and keeps the faster. Only where FlexAttention
               can train (CUDA with Triton, no attention dropout); elsewhere "windows".

The timing runs on every rank; under distributed training the ranks adopt the majority's choice,
so they all run the same kernel. The probe changes no weight and leaves no gradient.
"""

from __future__ import annotations

import functools
import statistics

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..model.block_local import BlockLocal
from .runtime import autocast, median_seconds


def block_local_layers(model: nn.Module) -> list[BlockLocal]:
    return [m for m in model.modules() if isinstance(m, BlockLocal)]


FLEX_MIN_HEAD_DIM = 16  # inductor's CUDA FlexAttention kernel: "NYI" below (torch 2.11, an H200)


def flex_unavailable(device: torch.device, cfg: ModelConfig) -> str:
    """Why FlexAttention cannot train `cfg`'s model here ("" when it can)."""
    if device.type != "cuda":
        return f"FlexAttention has no backward on {device.type}"
    if cfg.dropout:
        return f"FlexAttention applies no attention dropout (model.dropout = {cfg.dropout})"
    if cfg.head_dim < FLEX_MIN_HEAD_DIM:
        return f"FlexAttention on CUDA needs heads of at least {FLEX_MIN_HEAD_DIM} dimensions (the model's have {cfg.head_dim})"
    from torch.utils._triton import has_triton

    if not has_triton():
        return "FlexAttention needs Triton on CUDA"
    return ""


def forces_flex(cfg: ModelConfig) -> bool:
    """Whether the model has block-local layers and the config forces FlexAttention on them."""
    return cfg.local_kernel == "flex" and "block_local" in cfg.pattern_names


def check_local_kernel(cfg: ModelConfig, device: torch.device) -> None:
    """A one-line error when the config forces FlexAttention for training where it cannot train."""
    if forces_flex(cfg) and (why := flex_unavailable(device, cfg)):
        raise ConfigError(f"model.local_kernel = 'flex' cannot train here: {why}; use 'auto' or 'windows'")


def set_kernel(model: nn.Module, kernel: str) -> None:
    for layer in block_local_layers(model):
        layer.kernel = kernel


def forward_backward(model: nn.Module, tokens: torch.Tensor, dtype: str = "fp32", backward: bool = True) -> None:
    """One forward (+ backward) of `model` on `tokens` (B, T), predicting the tokens themselves
    (what a kernel's timing measures)."""
    with torch.set_grad_enabled(backward), autocast(tokens.device, dtype):
        _, loss = model(tokens, tokens)
    if backward:
        loss.backward()


def time_local_kernels(
    model: nn.Module, tokens: torch.Tensor, dtype: str = "fp32", backward: bool = True, repeats: int = 3
) -> dict[str, float]:
    """Median seconds of one model forward (+ backward) on `tokens` (B, T) with each block-local
    kernel, after one warm-up call each (which compiles FlexAttention); the kernels take turns, so
    a drift in the machine's speed affects both alike. Gradients are dropped, so the model is left
    as it was; the kernel in use afterwards is the one it had before."""
    device = tokens.device
    before = block_local_layers(model)[0].kernel

    def step(kernel: str) -> None:
        set_kernel(model, kernel)
        forward_backward(model, tokens, dtype, backward)

    for kernel in BlockLocal.KERNELS:
        step(kernel)
    times = {kernel: [] for kernel in BlockLocal.KERNELS}
    for _ in range(repeats):
        for kernel in BlockLocal.KERNELS:
            times[kernel].append(median_seconds(functools.partial(step, kernel), 1, device))
    model.zero_grad(set_to_none=True)
    set_kernel(model, before)
    return {kernel: statistics.median(t) for kernel, t in times.items()}


def choose_local_kernel(
    model: nn.Module,
    cfg: ModelConfig,
    rows: int,
    seq_len: int,
    device: torch.device,
    dtype: str = "fp32",
    vote=lambda flex_faster: flex_faster,
    earlier: dict | None = None,
) -> dict | None:
    """Set the kernel of every block-local layer of `model` (a config choice, or under "auto" the
    faster on a random batch of (rows, seq_len) tokens) -> what was chosen and why (None when the
    model has no block-local layer). `vote` turns this process's 0/1 preference into the share of
    processes that prefer FlexAttention (the world mean under distributed training). `earlier`:
    the choice a resumed run timed when it started; where the same kind of device can run it,
    it is kept, since the two kernels round differently and a resume that timed again and chose
    the other would not continue the run bit for bit."""
    if not block_local_layers(model):
        return None
    if cfg.local_kernel != "auto":
        check_local_kernel(cfg, device)
        set_kernel(model, cfg.local_kernel)
        return {"kernel": cfg.local_kernel, "chosen_by": "model.local_kernel"}
    if why := flex_unavailable(device, cfg):
        set_kernel(model, "windows")
        return {"kernel": "windows", "chosen_by": why}
    timed = isinstance(earlier, dict) and "seconds" in earlier and earlier.get("device") == device.type
    if timed and earlier.get("kernel") in BlockLocal.KERNELS:
        set_kernel(model, earlier["kernel"])
        return {**earlier, "chosen_by": "timing at the run's start (resumed)"}
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (rows, seq_len), generator=generator).to(device)
    seconds = time_local_kernels(model, tokens, dtype)
    share = float(vote(torch.tensor(float(seconds["flex"] < seconds["windows"]), device=device)))
    kernel = "flex" if share > 0.5 else "windows"
    set_kernel(model, kernel)
    return {"kernel": kernel, "chosen_by": "timing", "seconds": seconds, "device": device.type}
