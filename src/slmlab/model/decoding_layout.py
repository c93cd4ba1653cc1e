"""Wide linear layers in the (in, out) layout while a CPU model decodes.

Decoding multiplies one row per sequence by every weight matrix: y (M, out) = x (M, in) · Wᵀ with
nn.Linear's W (out, in), M = the batch. For M ≤ 2 CPU BLAS runs this as a matrix-vector product,
whose speed depends on the layout: when out > in (attention's qkv, the MLP's fc, the LM head), the
same product against a contiguous (in, out) copy Wᵀ ran 1.8-2.8x faster on this project's CPU
(weights streamed from memory: 384 -> 8192 took 1.3 ms as nn.Linear, 0.6 ms from the copy), and
about as fast from M = 8 on, where BLAS packs both layouts alike (whole generations at batch 8
measured 0.95x with the copies, so generate lends them to batches of up to MAX_ROWS rows). When
out <= in the (out, in) layout is the faster one, so those layers are left as they are.

`DecodingLayout(model)`, entered for the length of a generation, gives each wide nn.Linear of a
CPU model such a copy: its forward becomes F.linear with the copy's (out, in) view, a builtin call
with no Python frame of its own. The products are the same up to float rounding, the extra memory
(one more copy of the wide layers' weights) is held only while decoding, and on leaving, the
modules are as they were. `refresh()`, which generate calls before every step, remakes the copy of
a layer whose weight was changed in place since (through the tensor: a write through `.data`
bypasses its version counter, as it bypasses autograd's checks).

Skipped: layers whose forward is not nn.Linear's (a subclass that adds a low-rank term; another
library's hooks set on the instance), parametrized layers (their weight is computed from other
tensors at each use) and layers on other devices (GPU BLAS handles either layout).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

MAX_ROWS = 2  # the largest batch for which generate lends the copies (measured above)


def _is_wide_cpu_linear(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Linear)
        and module.out_features > module.in_features
        and module.weight.device.type == "cpu"
        and type(module).forward is nn.Linear.forward  # a subclass's own forward (LoRA, say) computes more
        and "forward" not in module.__dict__
        and not parametrize.is_parametrized(module)  # its weight is recomputed from other tensors
    )


def _version(weight: torch.Tensor) -> int:
    """The weight's in-place version counter; -1 for an inference tensor, which keeps none (and
    cannot be changed in place outside inference mode)."""
    return -1 if weight.is_inference() else weight._version


class DecodingLayout:
    """A context in which the wide CPU nn.Linear layers of `model` multiply by (in, out) copies
    of their weights (module docstring); `enabled=False` leaves every layer as it is (compiled
    decoding: a copy per call would be a new graph input, and a Python forward a graph break)."""

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.model, self.enabled = model, enabled
        self.versions: dict[nn.Linear, int] = {}  # layer -> weight version its copy was made from

    def __enter__(self) -> DecodingLayout:
        if self.enabled:
            for module in self.model.modules():
                if _is_wide_cpu_linear(module):
                    self._lend(module)
        return self

    def refresh(self) -> None:
        """Remake the copy of every layer whose weight changed in place since its copy was made."""
        for module, version in list(self.versions.items()):
            if _version(module.weight) != version:
                self._lend(module)

    def _lend(self, module: nn.Linear) -> None:
        transposed = module.weight.detach().t().contiguous()  # (in, out)
        module.forward = functools.partial(F.linear, weight=transposed.t(), bias=module.bias)
        self.versions[module] = _version(module.weight)

    def __exit__(self, *exc) -> None:
        for module in self.versions:
            del module.forward
        self.versions.clear()
