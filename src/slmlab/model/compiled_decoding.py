"""Decoding steps through torch.compile (`generate(..., compile=...)`): the compiled model, room for
its graphs, and when not to compile (hooks registered on the model, which its graphs would not see)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .hooks import hooked

log = logging.getLogger("slmlab")


def compiling_drops_hooks(model: nn.Module) -> bool:
    """Whether hooks are registered on `model` (a user's, or on every module), with a warning
    that it decodes eagerly: torch.compile's graphs do not see a hook added or removed after they
    are made (Dynamo does not guard on module hooks), so compiled decoding would drop the hook,
    or keep one removed since."""
    if not hooked(model):
        return False
    log.warning("hooks are registered on the model: decoding eagerly (torch.compile's graphs do not see hooks)")
    return True


def compiled(model: nn.Module, backend: str | Callable = "inductor") -> Callable:
    """`model` through torch.compile (with `backend`), for decoding steps (`generate` reads the
    prompt eagerly). Shapes are left to Dynamo's automatic dynamism: one graph for the first step,
    one for the steps after it (where the cache length turns symbolic) and one more wherever the
    code branches on the length (block-local's window move), never one per token or per prompt
    length. torch.compile keeps its graphs with the code, so a later call with this model (or
    another of its architecture and shapes) reuses them. A compiler that cannot run here (no C++
    compiler for inductor, say) is a one-line error."""
    try:
        fast = torch.compile(model, backend=backend)
    except torch._dynamo.exc.InvalidBackend:
        raise ConfigError(
            f"compile = {backend!r} is not a torch.compile backend: give True (inductor), a backend by name "
            "(torch._dynamo.list_backends()) or a callable"
        ) from None

    def step(*args, **kwargs):
        try:
            return fast(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            cause = str(getattr(err, "inner_exception", None) or err).strip().splitlines()[0]
            raise ConfigError(f"torch.compile cannot compile the decoder here ({cause}); decode without --compile") from None

    return step


DECODING_GRAPHS = 32  # graphs torch.compile may make of a model's forward while it decodes (its default: 8)


def room_for_graphs(compiling: bool) -> contextlib.AbstractContextManager:
    """While compiled steps decode, room for DECODING_GRAPHS graphs of the model's forward: each
    kind of batch takes graphs of its own (one row, two, more: decoding_layout.py; left-padded or
    not), a few each (the first step, the later ones, block-local's window move), and at
    torch.compile's default limit of 8 a process that decodes many batches (a prompt suite) went
    on eagerly after a warning. A model that recompiles at every step still stops there (and
    `slmlab check` names it)."""
    if not compiling:
        return contextlib.nullcontext()
    limit = torch._dynamo.config.recompile_limit
    return torch._dynamo.config.patch(recompile_limit=max(limit, DECODING_GRAPHS))
