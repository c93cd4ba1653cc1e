"""Building modules on the meta device: shapes only (no memory, no arithmetic, no random initial
values), and no draw from the caller's generator, so that counting a model first changes nothing
of the run that then builds it for real."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

RANDOM_FILLS = {"normal_", "uniform_", "trunc_normal_", "exponential_", "bernoulli_", "random_"}


class _NoRandomFills(TorchFunctionMode):
    """Random initial values (nn.init's and Tensor's in-place fills) skipped on the meta device,
    where they would be shapes only anyway: meta's normal_ goes through torch._refs, which
    imports torch._dynamo (~2 s) on first use."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in RANDOM_FILLS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "meta":
                return tensor
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Modules built inside are on the meta device, without random fills, and the caller's CPU
    generator is as it was before (constructors that draw, SMAT's, SMT's and the
    TapeTransformer's, draw from a fork of it)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"), _NoRandomFills():
        yield


def parameters_of(build) -> int:
    """The parameters of the module `build()` returns, built on the meta device (tied ones once)."""
    with on_meta():
        return sum(p.numel() for p in build().parameters())


def building_bytes(build) -> int:
    """The memory the module `build()` returns holds on the meta device (its Python objects: no
    tensor has storage there), as tracemalloc counts it; built once before, so that first-use
    costs (imports, caches) are not counted."""
    with on_meta():
        build()
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            _alive = build()  # held while it is measured
            return max(0, tracemalloc.get_traced_memory()[0] - before)
        finally:
            if not tracing:
                tracemalloc.stop()
