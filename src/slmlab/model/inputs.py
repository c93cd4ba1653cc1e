"""What an architecture's forward accepts, checked before the first kernel so that a wrong input
is one line that says what to fix instead of an IndexError from inside nn.Embedding or a loss that
pairs tokens with the wrong targets.

    idx      (B, T) token ids (torch.long or int32), B >= 1, T >= 1, 0 <= id < vocab_size
    targets  None, or idx's shape and kind of ids; an id < vocab_size, or negative (ignored: -100, -1)
    start + T <= max_positions (start: the tokens already in the KV cache; 0 = no limit)

The ids' range is read on CPU tensors only, in eager mode: on an accelerator it would cost a host
sync every step, and a compiled graph would break at it (generation and the data pipeline check
their ids before they reach the model)."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def outside_vocabulary(ids: torch.Tensor, vocab_size: int, ignored_below_zero: bool = False) -> int | None:
    """An id of non-empty `ids` outside 0..vocab_size - 1 (negative ids count as inside when
    `ignored_below_zero`: masked targets), or None. Reads two numbers back from the device. A
    dimension broadcast by `expand` (stride 0: one prompt as many rows) is read once, not copied."""
    ids = ids[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in ids.stride())]
    low, high = (int(value) for value in torch.aminmax(ids))
    low = max(low, 0) if ignored_below_zero else low
    return high if high >= vocab_size else low if low < 0 else None


def _check_range(name: str, ids: torch.Tensor, vocab_size: int, *, ignored_below_zero: bool) -> None:
    if ids.device.type != "cpu" or torch.compiler.is_compiling() or ids.numel() == 0:
        return
    bad = outside_vocabulary(ids, vocab_size, ignored_below_zero)
    if bad is not None:
        raise ConfigError(
            f"{name} holds token id {bad}, outside this model's vocabulary of {vocab_size} (ids 0..{vocab_size - 1}): "
            "encode the text with the run's own tokenizer"
        )


def check_inputs(
    idx: torch.Tensor, targets: torch.Tensor | None, *, vocab_size: int, start: int = 0, max_positions: int = 0
) -> None:
    """Refuse inputs a model cannot read (see the module docstring) with a ConfigError."""
    for name, ids in (("idx", idx), ("targets", targets)):
        if ids is not None and not isinstance(ids, torch.Tensor):
            raise ConfigError(f"{name} is a {type(ids).__name__}: give token ids as a torch tensor, e.g. torch.tensor([ids])")
    if idx.dim() != 2:
        raise ConfigError(f"idx of shape {tuple(idx.shape)}: give token ids as (batch, time), e.g. ids[None] for one sequence")
    for name, ids in (("idx", idx), ("targets", targets)):
        if ids is not None and ids.dtype not in (torch.long, torch.int):  # what nn.Embedding and gather read
            raise ConfigError(f"{name} of dtype {ids.dtype}: token ids are torch.long (or torch.int32) integers")
    if idx.numel() == 0:
        raise ConfigError(f"idx of shape {tuple(idx.shape)} holds no tokens: give at least one row of at least one token")
    if max_positions and start + idx.shape[1] > max_positions:
        raise ConfigError(
            f"sequence of {start + idx.shape[1]} tokens exceeds the {max_positions} positions this model knows (model.block_size)"
        )
    _check_range("idx", idx, vocab_size, ignored_below_zero=False)
    if targets is None:
        return
    if targets.shape != idx.shape:  # flattened, the loss would pair tokens with the wrong targets
        raise ConfigError(
            f"targets of shape {tuple(targets.shape)} for idx of shape {tuple(idx.shape)}: give one target per input token"
        )
    _check_range("targets", targets, vocab_size, ignored_below_zero=True)
