"""Wide linear layers in the (in, out) layout while a CPU model decodes.

Decoding multiplies one row per sequence by every weight matrix: y (M, out) = x (M, in) · Wᵀ with
nn.Linear's W (out, in), M = the batch. For M ≤ 2 CPU BLAS runs this as a matrix-vector product,
whose speed depends on the layout: when out > in (attention's qkv, the MLP's fc, the LM head), the
same product against a contiguous (in, out) copy Wᵀ ran 1.8-2.8x faster on this project's CPU
(weights streamed from memory: 384 -> 8192 took 1.3 ms as nn.Linear, 0.6 ms from the copy), and
about as fast from M = 8 on, where BLAS packs both layouts alike (whole generations at batch 8
measured 0.95x with the copies, so generate lends them to batches of up to MAX_ROWS rows). When
out <= in the (out, in) layout is the faster one, so those layers are left as they are.

`DecodingLayout(model)`, entered for the length of a generation, swaps the data of each wide
nn.Linear's weight of a CPU model for the (out, in) view of such a copy: the same parameter, the
same values, strides (1, out) in place of (in, 1). Nothing else changes: the module's forward is
nn.Linear's, so eager and compiled decoding take it alike (torch.compile sees a parameter with other
strides, not a graph break), a weight tied to the embedding is swapped once for both, and an edit
made in place during the call lands in the copy and is read from the next product on. On leaving,
each weight gets its own storage back, with any such edit written into it (also after an error);
a nested layout finds the weights already swapped and leaves them to the outer one. While inside,
`state_dict()` returns those weights as non-contiguous views.

Skipped: layers whose forward is not nn.Linear's (a subclass that adds a low-rank term, another
library's hooks set on the instance: they may read the weight in ways that need its own layout),
parametrized layers (their weight is computed from other tensors at each use), layers on other
devices (GPU BLAS handles either layout), weights held as tensor subclasses (FSDP's DTensor
shards), and inference tensors outside inference mode (their storage cannot take an edit back
there).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

MAX_ROWS = 2  # the largest batch for which generate lends the copies (measured above)


def _is_wide_cpu_linear(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Linear)
        and module.out_features > module.in_features
        and module.weight.device.type == "cpu"
        and type(module.weight.data) is torch.Tensor  # not a tensor subclass (a DTensor shard, say)
        and type(module).forward is nn.Linear.forward  # a subclass's own forward (LoRA, say) computes more
        and "forward" not in module.__dict__
        and not parametrize.is_parametrized(module)  # its weight is recomputed from other tensors
    )


def _version(weight: torch.Tensor) -> int:
    """The weight's in-place version counter; -1 for an inference tensor, which keeps none."""
    return -1 if weight.is_inference() else weight._version


class DecodingLayout:
    """A context in which the wide CPU nn.Linear layers of `model` multiply by (in, out) copies
    of their weights (module docstring); `enabled=False` leaves every layer as it is."""

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.model, self.enabled = model, enabled
        self.lent: list[tuple[nn.Parameter, torch.Tensor, int]] = []  # (weight, its own data, version after the swap)

    def __enter__(self) -> DecodingLayout:
        if not self.enabled:
            return self
        try:
            for module in self.model.modules():
                if _is_wide_cpu_linear(module) and self._lendable(module.weight):
                    self._lend(module.weight)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _lendable(self, weight: nn.Parameter) -> bool:
        return (
            weight.is_contiguous()  # else already swapped (a tied weight, a nested layout)
            and (not weight.is_inference() or torch.is_inference_mode_enabled())
        )

    def _lend(self, weight: nn.Parameter) -> None:
        own = weight.data
        weight.data = own.t().contiguous().t()  # (out, in) view of an (in, out) copy
        self.lent.append((weight, own, _version(weight)))

    def __exit__(self, *exc) -> None:
        for weight, own, version in reversed(self.lent):
            if version < 0 or _version(weight) != version:  # edited in place (or no counter to tell)
                own.copy_(weight.data)
            weight.data = own
        self.lent.clear()
