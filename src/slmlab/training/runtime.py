"""Device selection, autocast, seeding, RNG state capture, peak-memory readings and timing."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from ..config import ConfigError
from ..tables import counted


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if present, else mps, else cpu; an explicit device (cpu, cuda, cuda:N, mps)
    must exist on this machine. Anything else (meta, xpu, cpu:1, a typo) is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index):
        raise ConfigError(f"device '{name}' is not one slmlab runs on: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    count = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ConfigError(
            f"device '{name}' was asked for but this machine has {counted(count, 'CUDA devices')}; use cuda:0 up to cuda:{count - 1}"
        )
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device '{name}' was asked for but MPS is not available here; use 'auto' or 'cpu'")
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def autocast(device: torch.device, dtype: str):
    """bf16 autocast when asked for, else a no-op context."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def slow_bf16_warning(device: torch.device, dtype: str) -> str | None:
    """A warning when bf16 autocast would train on a CPU without bf16 matrix instructions
    (AVX512-BF16 or AMX): there each bf16 product is emulated, and the quickstart trained 17x
    slower than in fp32 (an AMD EPYC with AVX2, 2026-12-02)."""
    if dtype != "bf16" or device.type != "cpu" or _cpu_has_bf16_matmul():
        return None
    return (
        "train.dtype = 'bf16' on a CPU without bf16 matrix instructions (AVX512-BF16 or AMX): bf16 products are "
        "emulated there and training runs many times slower than fp32 (17x on the quickstart); use fp32 on this machine"
    )


def _cpu_has_bf16_matmul() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private names)
    return any(getattr(torch.cpu, name, lambda: True)() for name in probes)


def use_threads(threads: int) -> str | None:
    """Set torch's CPU thread count to `threads` (0: leave torch's default) -> a warning when it
    is more than the cores this process may run on: oversubscribed threads wait on each other
    (100 threads on 2 cores trained ~10x slower here)."""
    if not threads:
        return None
    torch.set_num_threads(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads <= cores:
        return None
    return (
        f"train.threads = {threads} is more than the {counted(cores, 'CPU cores')} this process may use: the extra threads "
        "wait on each other and slow training; set it at most to the core count, or 0 for torch's default"
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(_as_tuple(state["python"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated memory on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], None], repeats: int, device: str | torch.device) -> float:
    """Median wall time of `repeats` calls of step(), synchronising the device around each."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
