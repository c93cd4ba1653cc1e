"""Shared by the benchmarks: median step time with device syncs, and a fresh process per measurement."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch


def sync(device: str | torch.device) -> None:
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


def in_fresh_process(fn: Callable, *args, **kwargs):
    """Run fn in its own spawned process, so the CPU peak resident set is that measurement's alone."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()
