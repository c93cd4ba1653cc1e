"""Parameter counts, FLOPs per token and memory estimates for a decoder.

FLOPs (PaLM appendix B convention): a training token costs 6 N + 12 d sum_l T_l, where N is the
number of parameters used in matmuls (blocks + LM head; embedding lookups are free) and the
second term is attention's QK^T and AV over the keys a layer's queries can reach, counted as dense:
T_l = T for full attention, min(T, 2B) for a block-local layer (its 2B-key window), so a model of
L full layers costs 6 N + 12 L d T. Inference costs a third.

`measured_flops_per_token` counts what a model really runs (torch.utils.flop_counter), so a
plugin's cost shows without a formula; `slmlab info` prints both.

Memory: weights, gradients and AdamW's two moments are 4 bytes per parameter each in fp32;
activations kept for backward are about (9 d + 2 d_ff) values per token and layer (norm inputs
and outputs, q/k/v, attention output and its reshaped copy, MLP hidden before and after GELU;
fused attention keeps no T x T matrix) plus the final norm (2 d); the fused chunked head
(loss.py) keeps no (tokens, V) logits, only a d-wide gradient per token and one V x d matrix.
The decoding cache is counted on the caches a model makes (`cache_bytes`), never a formula.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig

BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


@dataclass
class ModelStats:
    params: int
    embedding_params: int
    matmul_params: int
    n_layer: int
    d_model: int
    d_ff: int
    vocab_size: int
    windows: tuple[int, ...]  # per attention layer: keys a query can reach (0 = the whole context)

    @property
    def non_embedding_params(self) -> int:
        return self.params - self.embedding_params

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        context = sum(min(seq_len, w) if w else seq_len for w in self.windows)
        forward = 2 * self.matmul_params + 4 * self.d_model * context
        return 3 * forward if training else forward

    def activation_bytes(self, batch_size: int, seq_len: int, dtype: str = "fp32") -> int:
        per_token = (self.n_layer * (9 * self.d_model + 2 * self.d_ff) + 3 * self.d_model) * BYTES[dtype]
        return batch_size * seq_len * per_token + 4 * self.vocab_size * self.d_model

    def training_bytes(self, batch_size: int, seq_len: int, dtype: str = "fp32", trainable: int | None = None) -> dict[str, int]:
        """fp32 master weights, gradients and AdamW state, plus activations at (batch, seq); only
        `trainable` parameters (default: all) have gradients and optimizer state."""
        trainable = self.params if trainable is None else trainable
        parts = {
            "weights": 4 * self.params,
            "gradients": 4 * trainable,
            "optimizer": 8 * trainable,
            "activations": self.activation_bytes(batch_size, seq_len, dtype),
        }
        parts["total"] = sum(parts.values())
        return parts


def model_stats(model: nn.Module, cfg: ModelConfig) -> ModelStats:
    """Count a built model's parameters (tied weights once); the attention term counts the
    model's attention modules, whatever the architecture (a TapeTransformer has dozens)."""
    from .attention import CausalSelfAttention
    from .block_local import BlockLocal

    params = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    head = model.get_submodule("head").weight.numel()
    matmul = params - embedding + (head if cfg.tie_embeddings else 0)
    windows = tuple(
        2 * m.pattern.block if isinstance(m.pattern, BlockLocal) else 0
        for m in model.modules()
        if isinstance(m, CausalSelfAttention)
    )
    return ModelStats(params, embedding, matmul, len(windows), cfg.d_model, cfg.ff_dim, cfg.vocab_size, windows)


def _storage_key(tensor) -> tuple[int, int]:
    """(identity, bytes) of the memory behind `tensor`: its storage, or on the meta device (where
    storages have no address) its base tensor."""
    if tensor.device.type == "meta":
        base = tensor._base if tensor._base is not None else tensor
        return id(base), base.numel() * base.element_size()
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def bytes_kept_for_backward(run: Callable[[], object], exclude: Iterable = ()) -> tuple[object, int]:
    """Call run() -> (its result, the bytes of the memory autograd keeps for backward, each
    storage counted once, leaving out the memory of `exclude`, e.g. the weights)."""
    import torch

    seen: dict[int, int] = {}

    def pack(tensor):
        key, size = _storage_key(tensor)
        seen[key] = size
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    skip = {_storage_key(t)[0] for t in exclude}
    return result, sum(size for key, size in seen.items() if key not in skip)


def traced_activation_bytes(model: nn.Module, batch_size: int, seq_len: int) -> int:
    """Bytes autograd keeps for backward in one training forward pass of `model` (built on the meta
    device: shapes only, no memory, no compute). For architectures without a closed-form estimate
    (the TapeTransformer's graph); within ~10% of a CPU run there."""
    import torch

    idx = torch.zeros(batch_size, seq_len, dtype=torch.long, device=next(model.parameters()).device)
    return bytes_kept_for_backward(lambda: model(idx, idx), exclude=model.parameters())[1]


def cache_bytes(model: nn.Module, seq_len: int, dtype: str = "fp32") -> int:
    """Bytes of the model's decoding caches once they hold `seq_len` tokens of one sequence,
    counted on the caches `make_caches()` gives and one forward fills (on a model built on the
    meta device: shapes only), each storage once, floating tensors at `dtype`'s size: what each
    architecture or plugin really keeps (a block-local layer its window, SMAT its wider keys and
    values, a TapeTransformer its every attention layer)."""
    device = next(model.parameters()).device
    caches = model.make_caches()
    with torch.no_grad():
        model(torch.zeros(1, seq_len, dtype=torch.long, device=device), caches=caches)
    storages = {}
    for tensor in _held_tensors(caches, set()):
        key, size = _storage_key(tensor)
        storages[key] = size // tensor.element_size() * BYTES[dtype] if tensor.is_floating_point() else size
    return sum(storages.values())


def _held_tensors(value, seen: set[int]) -> Iterable[torch.Tensor]:
    """Every tensor `value` holds: in lists, tuples, dicts and plain objects' attributes (caches
    are such objects), each object visited once."""
    if id(value) in seen or isinstance(value, nn.Module):
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _held_tensors(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _held_tensors(item, seen)
    elif hasattr(value, "__dict__"):
        yield from _held_tensors(vars(value), seen)


def measured_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) counted by torch.utils.flop_counter on one
    (1, seq_len) sequence: what any architecture or plugin really runs, whatever its graph. On a
    model built on the meta device it costs no memory and runs no arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    tokens = torch.zeros(1, seq_len, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        model(tokens, tokens)[1].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / seq_len
